"""Using the answers: the reviewed rows as gold for `llmlabel eval`, a dev slice, or an exemplar pool."""

from __future__ import annotations

from typing import Any

from llmlabel.errors import ConfigError, DataError, unknown
from llmlabel.review.run import POLICIES, ReviewLog, Run

#: prediction columns that become llm_* columns in the gold rows
_LLM_COLUMNS = ("label", "label_probs", "confidence", "status", "reason", "truncated", "raw_answer")


def reviewed_rows(run: Run, only: str | None = None) -> list[dict[str, Any]]:
    """The run's reviewed rows (latest answer per row): the input columns, `label` = the reviewer's label,
    `llm_label` / `llm_confidence` / `llm_label_probs` = the run's, plus `row`, `selected_by`, `sampling_prob` and
    `reviewer`. The data's own gold column (if any) is kept as `data_label`. `only` keeps one policy's rows (e.g.
    'random', the unbiased audit sample)."""
    if only is not None and only not in POLICIES:
        raise ConfigError(unknown("--only policy", only, POLICIES))
    latest = ReviewLog(run.reviews_path).latest()
    out = []
    for index in sorted(latest):
        record = latest[index]
        if only is not None and record["selected_by"] != only:
            continue
        if index >= len(run.rows):
            raise DataError(f"{run.reviews_path}: row {index} is past the end of {run.predictions_path}")
        source = dict(run.rows[index])
        row = {k: v for k, v in source.items() if k not in _LLM_COLUMNS and k != "gold_label"}
        if "gold_label" in source:
            row["data_label"] = source["gold_label"]
        row.update({"label": record["label"], "llm_label": source.get("label"),
                    "llm_confidence": source.get("confidence"), "llm_label_probs": source.get("label_probs"),
                    "row": index, "selected_by": record["selected_by"], "sampling_prob": record["sampling_prob"],
                    "reviewer": record["reviewer"]})
        out.append(row)
    return out

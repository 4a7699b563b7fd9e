"""A finished run as the review loop sees it, and the reviews log beside it.

A run folder holds `predictions.jsonl` (one labeled row per line) and `report.json`. The review loop adds:

- `reviews.jsonl`: one JSON object per answer a person gave, in the order given (the shared contract):
  `{"row": <0-based index into predictions.jsonl>, "id": <the row's id column or null>, "label": <reviewer label or
  null (= undo)>, "llm_label": <the prediction>, "selected_by": "random"|"uncertain"|"disagree"|"mixed",
  "sampling_prob": <probability the row was drawn into the sample>, "reviewer": <str>, "time": <ISO 8601>,
  "source": "serve"|"label_studio"|"argilla"|"jsonl"|"csv"}`. A later answer for a row supersedes earlier ones.
- `review_agreement.json`: the LLM's agreement with the reviewers, written by `review import`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmlabel.errors import DataError, unknown

REVIEWS_FILE = "reviews.jsonl"
AGREEMENT_FILE = "review_agreement.json"
POLICIES = ("random", "uncertain", "disagree", "mixed")
SOURCES = ("serve", "label_studio", "argilla", "jsonl", "csv")
RECORD_KEYS = ("row", "id", "label", "llm_label", "selected_by", "sampling_prob", "reviewer", "time", "source")


def now_iso() -> str:
    """The current UTC time as ISO 8601 (seconds precision, 'Z'-less offset form)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Run:
    """A run folder: its predictions, report and task (label names, text columns).

    Use `Run.load(folder)`; the label set comes from the report's task (or metrics) and, for runs written before
    the report carried it, from the rows' `label_probs` keys.
    """

    folder: Path
    rows: list[dict[str, Any]]
    labels: list[str]
    report: dict[str, Any] = field(default_factory=dict)
    text_field: str = "text"
    text_pair_field: str | None = None
    id_field: str | None = None
    predictions_path: Path | None = None

    @classmethod
    def load(cls, folder: str | Path, text_field: str | None = None, id_field: str | None = None) -> "Run":
        """Read a run folder written by `llmlabel run` / `llmlabel label` (one-line DataError when it is not one)."""
        from llmlabel.data import Dataset

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"run folder not found: {folder} (give the output folder of `llmlabel run`)")
        report: dict[str, Any] = {}
        if (folder / "report.json").exists():
            try:
                report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{folder / 'report.json'} is not valid JSON: {exc}") from None
        predictions = folder / "predictions.jsonl"
        if not predictions.exists() and report.get("predictions"):
            named = Path(report["predictions"])
            predictions = named if named.exists() else folder / named.name
        if not predictions.exists():
            raise DataError(f"no predictions in {folder}: expected {folder / 'predictions.jsonl'}")
        rows = list(Dataset(predictions))
        if not rows:
            raise DataError(f"{predictions} has no rows")
        if "label" not in rows[0]:
            raise DataError(f"{predictions} has no 'label' column: not the predictions of an llmlabel run")
        task = report.get("task") or {}
        if task.get("multi_label") or isinstance(rows[0].get("label"), list):
            raise DataError(f"{folder} is a multi-label run: the review loop supports single-label runs")
        labels = list(task.get("labels") or (report.get("metrics") or {}).get("labels") or [])
        if not labels:
            seen: dict[str, None] = {}
            for row in rows:
                for name in (row.get("label_probs") or {}):
                    seen.setdefault(str(name), None)
            labels = list(seen)
        if not labels:
            raise DataError(f"cannot tell the label set of {folder}: report.json has no task labels and the rows "
                            f"have no label_probs")
        text_field = text_field or task.get("text_field") or "text"
        if text_field not in rows[0]:
            raise DataError(unknown(f"text column in {predictions}", text_field, rows[0].keys()))
        pair = task.get("text_pair_field")
        if id_field is None:
            id_field = "id" if "id" in rows[0] else None
        elif id_field not in rows[0]:
            raise DataError(unknown(f"id column in {predictions}", id_field, rows[0].keys()))
        return cls(folder=folder, rows=rows, labels=labels, report=report, text_field=text_field,
                   text_pair_field=pair if pair and pair in rows[0] else None, id_field=id_field,
                   predictions_path=predictions)

    # -- what a reviewer sees ---------------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model id of the run (from its report), or 'unknown'."""
        return str(self.report.get("model") or "unknown")

    @property
    def prompt(self) -> str:
        """The prompt template id of the run (from its report), or 'unknown'."""
        return str(self.report.get("prompt") or "unknown")

    @property
    def name(self) -> str:
        """A short run name: the recipe name, else the folder name."""
        return str(self.report.get("recipe") or self.folder.name)

    def text(self, index: int) -> str:
        """The text of row `index`."""
        return str(self.rows[index].get(self.text_field, ""))

    def text_pair(self, index: int) -> str | None:
        """The second text of row `index` (pair tasks), else None."""
        return None if self.text_pair_field is None else str(self.rows[index].get(self.text_pair_field, ""))

    def row_id(self, index: int) -> Any:
        """The id column of row `index`, or None when the run has none."""
        return None if self.id_field is None else self.rows[index].get(self.id_field)

    def llm_label(self, index: int) -> str | None:
        """The prediction of row `index` (None when the row failed)."""
        value = self.rows[index].get("label")
        return None if value in (None, "") else str(value)

    def probs(self, index: int) -> dict[str, float]:
        """label_probs of row `index` (an empty dict when the row has none)."""
        value = self.rows[index].get("label_probs") or {}
        if isinstance(value, str):  # CSV predictions hold it as JSON text
            value = json.loads(value)
        return {str(k): float(v) for k, v in value.items()}

    def gold(self, index: int) -> str | None:
        """The run's gold label of row `index` when the data had one (column 'gold_label'), else None."""
        value = self.rows[index].get("gold_label")
        return None if value in (None, "") else str(value)

    @property
    def reviews_path(self) -> Path:
        """`reviews.jsonl` beside the predictions."""
        return (self.predictions_path or self.folder / "predictions.jsonl").parent / REVIEWS_FILE

    def check_label(self, label: Any, where: str) -> str:
        """`label` as a task label name; an unknown one raises a one-line DataError naming `where`."""
        text = str(label).strip()
        if text not in self.labels:
            raise DataError(f"{where}: " + unknown("label", text, self.labels))
        return text


def margin(probs: dict[str, float]) -> float:
    """Top-1 minus top-2 probability (0 for a row without probabilities: as unsure as it gets)."""
    values = sorted(probs.values(), reverse=True)
    if not values:
        return 0.0
    return values[0] - (values[1] if len(values) > 1 else 0.0)


def entropy(probs: dict[str, float]) -> float:
    """Shannon entropy (nats) of a label distribution; a row without probabilities gets +inf (most unsure)."""
    if not probs:
        return math.inf
    return -sum(p * math.log(p) for p in probs.values() if p > 0)


class ReviewLog:
    """`reviews.jsonl`: read, append (atomically: the whole file is rewritten through a temp file and renamed, under
    a file lock, so a killed writer or two writers at once never leave a torn or lost line), and resolve."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every record in order. A corrupt line raises a one-line DataError naming the line."""
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{self.path} line {number} is not valid JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("row"), int):
                raise DataError(f"{self.path} line {number} is not a review record (no integer 'row')")
            out.append(record)
        return out

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add `records` (each checked for the contract's keys) after the existing ones, atomically."""
        from filelock import FileLock

        from llmlabel.io import atomic_write, json_text

        for record in records:
            missing = [k for k in RECORD_KEYS if k not in record]
            if missing:
                raise ValueError(f"review record lacks {', '.join(missing)}: {record}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            old = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
            if old and not old.endswith("\n"):
                old += "\n"

            def write(handle: Any) -> None:
                handle.write(old)
                for record in records:
                    handle.write(json_text({k: record[k] for k in RECORD_KEYS}) + "\n")

            atomic_write(self.path, write)

    def latest(self) -> dict[int, dict[str, Any]]:
        """row -> its latest record with a label (a later record supersedes; a null label undoes the row)."""
        out: dict[int, dict[str, Any]] = {}
        for record in self.records():
            if record.get("label") is None:
                out.pop(record["row"], None)
            else:
                out[record["row"]] = record
        return out

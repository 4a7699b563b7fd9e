"""The review family's extension point: file formats a person labels in (Label Studio, Argilla, JSONL, CSV).

A format is one module with `export(items, run, folder) -> list[Path]` (write the chosen rows for a labeling tool)
and `read(path, run) -> list[Answer]` (read what people answered), registered here with one line. `export_review`
and `import_review` are the two entry points the CLI calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlabel.errors import ConfigError, DataError, unknown
from llmlabel.registry import Registry
from llmlabel.review.run import POLICIES, ReviewLog, Run, now_iso
from llmlabel.review.select import Pick

formats = Registry("review format")
formats.add("label_studio", "llmlabel.review.label_studio:FORMAT")
formats.add("argilla", "llmlabel.review.argilla:FORMAT")
formats.add("jsonl", "llmlabel.review.table:JSONL")
formats.add("csv", "llmlabel.review.table:CSV")

SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class Answer:
    """One label a person gave a row, as read from a tool's export (selected_by / sampling_prob when it carried
    them)."""

    row: int
    label: str | None
    reviewer: str
    time: str | None = None
    selected_by: str | None = None
    sampling_prob: float | None = None
    text: str | None = None


def review_items(run: Run, picks: list[Pick]) -> list[dict[str, Any]]:
    """What every exported row carries: its text, the LLM's label and probabilities, and its provenance (run, model,
    prompt version, why it was picked, its sampling probability)."""
    items = []
    for pick in picks:
        i = pick.row
        row = run.rows[i]
        items.append({
            "row": i, "id": run.row_id(i), "text": run.text(i), "text_pair": run.text_pair(i),
            "llm_label": run.llm_label(i), "confidence": float(row.get("confidence") or 0.0),
            "label_probs": run.probs(i), "status": row.get("status", "ok"),
            "selected_by": pick.selected_by, "sampling_prob": pick.sampling_prob, "why": pick.why,
            "run": run.name, "model": run.model, "prompt": run.prompt,
        })
    return items


def export_review(run: Run, picks: list[Pick], fmt: str, folder: str | Path) -> list[Path]:
    """Write `picks` in format `fmt` into `folder` and the selection manifest beside them; returns the files."""
    from llmlabel.io import write_json

    if fmt not in formats:
        raise ConfigError(unknown("review format", fmt, formats.names()))
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    items = review_items(run, picks)
    written = formats.get(fmt).export(items, run, folder)
    manifest = folder / SELECTION_FILE
    write_json({"run": str(run.folder), "format": fmt, "labels": run.labels, "rows": len(run.rows),
                "picks": [{"row": p.row, "selected_by": p.selected_by, "sampling_prob": p.sampling_prob,
                           "why": p.why} for p in picks]}, manifest)
    return [*written, manifest]


def detect_format(path: Path) -> str:
    """The format of an answers file from its name and content."""
    if path.is_dir():
        if (path / "records.json").exists():
            return "argilla"
        raise DataError(f"{path} is a folder without records.json: give the answers file itself")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from None
        first = data[0] if isinstance(data, list) and data else {}
        if isinstance(first, dict) and ("fields" in first or "responses" in first):
            return "argilla"
        return "label_studio"
    raise DataError(f"cannot tell the format of {path}: give --format ({', '.join(formats.names())})")


def _manifest_picks(path: Path, run: Run) -> dict[int, dict[str, Any]]:
    """row -> its pick from a selection.json beside `path` (or in the run's review folder), if one exists."""
    for folder in (path if path.is_dir() else path.parent, run.folder / "review"):
        manifest = folder / SELECTION_FILE
        if manifest.exists():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return {int(p["row"]): p for p in data.get("picks", [])}
    return {}


def import_review(path: str | Path, run: Run, fmt: str | None = None, reviewer: str | None = None,
                  latest: bool = False) -> list[dict[str, Any]]:
    """Read a person's answers from `path`, validate them against the run, and append them to `reviews.jsonl`.

    Every answer must name a row of the run whose text matches, and a label of the task; two different labels for
    one row in the same file are a conflict (a one-line DataError) unless `latest` keeps the latest of them.
    Returns the records written.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"answers file not found: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in formats:
        raise ConfigError(unknown("review format", fmt, formats.names()))
    answers = formats.get(fmt).read(path, run)
    picks = _manifest_picks(path, run)
    by_row: dict[int, Answer] = {}
    for answer in answers:
        where = f"{path.name} row {answer.row}"
        if not 0 <= answer.row < len(run.rows):
            raise DataError(f"{where}: no such row in {run.predictions_path} ({len(run.rows)} rows): "
                            f"answers from another run?")
        if answer.text is not None and answer.text != run.text(answer.row):
            raise DataError(f"{where}: its text differs from the run's row {answer.row}: answers from another run?")
        if answer.label is not None:
            run.check_label(answer.label, where)
        previous = by_row.get(answer.row)
        if previous is not None and previous.label != answer.label and not latest:
            raise DataError(f"{where}: conflicting labels '{previous.label}' ({previous.reviewer}) and "
                            f"'{answer.label}' ({answer.reviewer}); resolve them in the tool, or pass --latest to "
                            f"keep the latest answer")
        if previous is None or (answer.time or "") >= (previous.time or ""):
            by_row[answer.row] = answer
    records = []
    for row in sorted(by_row):
        answer = by_row[row]
        pick = picks.get(row, {})
        selected_by = answer.selected_by or pick.get("selected_by")
        prob = answer.sampling_prob if answer.sampling_prob is not None else pick.get("sampling_prob")
        if selected_by not in POLICIES or prob is None:
            raise DataError(f"{path.name} row {row}: no selected_by / sampling_prob (keep the columns that "
                            f"`llmlabel review export` wrote, or its selection.json beside the file)")
        records.append({"row": row, "id": run.row_id(row), "label": answer.label, "llm_label": run.llm_label(row),
                        "selected_by": selected_by, "sampling_prob": float(prob),
                        "reviewer": reviewer or answer.reviewer, "time": answer.time or now_iso(), "source": fmt})
    if not records:
        raise DataError(f"{path} holds no answers (nothing was labeled yet?)")
    ReviewLog(run.reviews_path).append(records)
    return records

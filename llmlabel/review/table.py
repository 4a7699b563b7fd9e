"""Plain JSONL and CSV review files, for a spreadsheet or a script.

Each exported row has the text, the LLM's label, confidence and probabilities, its provenance, and two empty
columns for the person: `label` (their label; leave it empty to skip the row) and `reviewer`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from llmlabel.io import write_rows
from llmlabel.errors import DataError
from llmlabel.review.base import Answer
from llmlabel.review.run import Run

COLUMNS = ("row", "id", "text", "text_pair", "llm_label", "confidence", "label_probs", "selected_by",
           "sampling_prob", "why", "run", "model", "prompt", "label", "reviewer")


class _Table:
    def __init__(self, suffix: str):
        self.suffix = suffix
        self.name = suffix.lstrip(".")

    def export(self, items: list[dict[str, Any]], run: Run, folder: Path) -> list[Path]:
        """`review.jsonl` / `review.csv` with one row per item and empty `label` / `reviewer` columns."""
        rows = [{c: ({**item, "label": "", "reviewer": ""}).get(c) for c in COLUMNS} for item in items]
        if self.suffix == ".csv":  # a spreadsheet shows the probabilities best as JSON text
            rows = [{**r, "label_probs": json.dumps(r["label_probs"])} for r in rows]
        return [write_rows(rows, folder / f"review{self.suffix}")]

    def read(self, path: Path, run: Run) -> list[Answer]:
        """The rows whose `label` is filled in."""
        if self.suffix == ".csv":
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = list(csv.DictReader(handle))
        else:
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise DataError(f"{path} line {number} is not valid JSON") from None
        if rows and ("row" not in rows[0] or "label" not in rows[0]):
            raise DataError(f"{path} needs the 'row' and 'label' columns that `llmlabel review export` writes; it "
                            f"has: {', '.join(rows[0])}")
        answers = []
        for number, row in enumerate(rows, 2 if self.suffix == ".csv" else 1):
            label = row.get("label")
            if label in (None, ""):
                continue
            try:
                index = int(row["row"])
            except (TypeError, ValueError):
                raise DataError(f"{path} line {number}: 'row' must be a row number, got {row['row']!r}") from None
            prob = row.get("sampling_prob")
            answers.append(Answer(row=index, label=str(label).strip(), reviewer=str(row.get("reviewer") or "unknown"),
                                  time=row.get("time") or None, selected_by=row.get("selected_by") or None,
                                  sampling_prob=float(prob) if prob not in (None, "") else None,
                                  text=row.get("text") if row.get("text") not in (None, "") else None))
        return answers


JSONL = _Table(".jsonl")
CSV = _Table(".csv")

"""What labeling produces: one row's `LabelResult`, a run's `LabelStats`, and how result columns join input rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: Columns the labeler adds to each row.
OUTPUT_COLUMNS = ("label", "label_probs", "confidence", "status", "reason", "raw_answer", "truncated")


@dataclass
class LabelResult:
    """The outcome for one row. `status` is 'ok', 'unparseable', 'failed', 'refused' (a decision endpoint declined)
    or 'skipped'; `reason` says why not ok."""

    label: str | list[str] | None
    label_probs: dict[str, float]
    confidence: float
    status: str = "ok"
    reason: str | None = None
    raw_answer: str | None = None
    truncated: bool = False

    @classmethod
    def without_label(cls, names: Sequence[str], status: str, reason: str | None,
                      truncated: bool = False) -> "LabelResult":
        """A row kept with no label and zero probabilities: 'failed', 'skipped' or 'refused', with the reason."""
        return cls(None, {n: 0.0 for n in names}, 0.0, status, reason, truncated=truncated)

    def as_columns(self, mode: str) -> dict[str, Any]:
        """Output columns for a row (generate mode adds `raw_answer`)."""
        cols = asdict(self)
        if mode != "generate":
            cols.pop("raw_answer")
        return cols


@dataclass
class LabelStats:
    """Counters for a run: rows, where results came from, and what went wrong."""

    rows: int = 0
    cached: int = 0
    computed: int = 0
    truncated: int = 0
    #: rows whose text held lone surrogates (invalid Unicode), shown to the model as U+FFFD
    invalid_text: int = 0
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        """Rows per second of wall time."""
        return self.rows / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return {"rows": self.rows, "cached": self.cached, "computed": self.computed, "truncated": self.truncated,
                "invalid_text": self.invalid_text, "statuses": dict(self.statuses), "seconds": round(self.seconds, 3),
                "items_per_second": round(self.items_per_second, 3)}


def gold_column(label_field: str | None) -> str | None:
    """Name of the gold column in merged output rows: `label_field`, renamed 'gold_<name>' when an output column
    has its name."""
    if label_field and label_field in OUTPUT_COLUMNS:
        return f"gold_{label_field}"
    return label_field


def merge_columns(row: dict[str, Any], columns: dict[str, Any], label_field: str | None) -> dict[str, Any]:
    """`row` plus output `columns`. An input column with an output column's name is kept, renamed: the gold column
    (`label_field`) to 'gold_<name>' (so a gold 'label' becomes 'gold_label'), any other to 'input_<name>'."""
    out = dict(row)
    for name in columns:
        if name in out:
            out[f"gold_{name}" if name == label_field else f"input_{name}"] = out.pop(name)
    out.update(columns)
    return out


def output_renames(columns: Iterable[str], mode: str, label_field: str | None) -> dict[str, str]:
    """Input columns that an output column would overwrite -> their new names (the rule of `merge_columns`)."""
    outputs = OUTPUT_COLUMNS if mode == "generate" else tuple(c for c in OUTPUT_COLUMNS if c != "raw_answer")
    return {c: (f"gold_{c}" if c == label_field else f"input_{c}") for c in columns if c in outputs}


def result_columns(results: list[LabelResult], mode: str) -> dict[str, list[Any]]:
    """The output columns of `results`, column by column."""
    columns = [r.as_columns(mode) for r in results]
    names = columns[0].keys() if columns else LabelResult(None, {}, 0.0).as_columns(mode).keys()
    return {name: [c[name] for c in columns] for name in names}


def with_result_columns(table: Any, kind: str, results: list[LabelResult], mode: str,
                        label_field: str | None) -> Any:
    """A pandas DataFrame (`kind` 'pandas') or a `datasets.Dataset` ('datasets') with the output columns added
    (input columns with an output column's name kept, renamed)."""
    if kind == "pandas":
        out = table.rename(columns=output_renames(table.columns, mode, label_field))
        for name, values in result_columns(results, mode).items():
            out[name] = values
        return out
    out = table.rename_columns(output_renames(table.column_names, mode, label_field))
    for name, values in result_columns(results, mode).items():
        out = out.add_column(name, values)
    return out

"""What the Python API accepts, checked at the boundary: `Labeler` arguments, rows, texts.

A wrong type is a one-line `ArgumentError` (also a `TypeError`) that says what to pass, raised where the value comes
in (construction, the `label` call), not a TypeError from deep inside the labeling loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from llmlabel.backends.base import Backend
from llmlabel.errors import ArgumentError, ConfigError, unknown
from llmlabel.core.task import LabelTask


def text_problem(value: Any) -> str | None:
    """Why a text value is not labeled, or None. Strings are texts; numbers and booleans are labeled as their text
    ("12345"); a missing value (None, NaN) or a blank string is "empty text"; a list, dict or bytes value is not
    text and is skipped with its type named (str() of it would label its Python repr)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "empty text"
    if isinstance(value, (str, int, float)):
        return None if str(value).strip() else "empty text"
    return f"text is a {type(value).__name__}, not a string"


def describe_value(value: Any) -> str:
    """A value named in an error: its type, and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + ('...' if len(text) > 40 else '')}"


def check_backend_and_task(backend: Any, task: Any) -> tuple[Backend | str | None, LabelTask]:
    """`Labeler(task)`, `Labeler(backend, task)`, `Labeler(task=..., backend=...)`: the backend (a Backend, a
    registered name, or None for the default) and the task, checked."""
    if isinstance(backend, LabelTask) and (task is None or isinstance(task, (Backend, str))):
        backend, task = task, backend  # Labeler(task) or Labeler(task, backend)
    if task is None:
        raise ArgumentError("Labeler needs a LabelTask: Labeler(task) labels with the embedded default model, "
                            "Labeler(backend, task) with another; e.g. task = LabelTask(labels=['negative', "
                            "'positive'])" + (f" (got only the backend {backend!r})" if backend is not None else ""))
    if not isinstance(task, LabelTask):
        raise ArgumentError(f"task must be a LabelTask, got {describe_value(task)}; e.g. "
                            "LabelTask(labels=['negative', 'positive'])")
    if isinstance(backend, str):
        from llmlabel.registry import backends

        if backend not in backends:
            raise ConfigError(unknown("backend", backend, backends.names()))
    elif backend is not None and not isinstance(backend, Backend):
        raise ArgumentError("backend must be a Backend (llmlabel.load_backend(...)), a backend name such as "
                            "'transformers' or 'fake', or None for the default model; got "
                            + describe_value(backend))
    return backend, task


def table_kind(rows: Any) -> str:
    """'pandas', 'datasets' or 'rows' for what `Labeler.label` accepts; a one-line ArgumentError otherwise."""
    module = type(rows).__module__.split(".")[0]
    name = type(rows).__name__
    if module == "pandas" and name == "DataFrame":
        return "pandas"
    if module == "datasets" and name == "DatasetDict":
        raise ArgumentError(f"label() takes one split, not a DatasetDict: pass e.g. data['{next(iter(rows), 'test')}'] "
                            f"(splits: {', '.join(rows)})")
    if module == "datasets" and name == "Dataset":
        return "datasets"
    if module == "pandas" and name == "Series":
        raise ArgumentError("label() takes rows, not a pandas Series: pass a DataFrame, or label_texts(series) for "
                            "a column of strings")
    checked_rows(rows, "label")  # the container itself; rows are checked as they are read
    return "rows"


def checked_rows(rows: Any, where: str) -> Iterator[Mapping[str, Any]]:
    """`rows` as an iterator of mappings; a string, one row, None or a non-mapping row is a one-line error."""
    if isinstance(rows, (str, bytes)):
        raise ArgumentError(f"{where}() takes a list of rows (dicts), not a string: pass a list; for plain strings "
                            "use label_texts(['...'])")
    if isinstance(rows, Mapping):
        raise ArgumentError(f"{where}() takes a list of rows, not one dict: pass a list, e.g. [row], or a pandas "
                            "DataFrame / datasets.Dataset for a table of columns")
    if type(rows).__module__.split(".")[0] == "pandas" and type(rows).__name__ == "DataFrame":
        rows = rows.to_dict("records")  # iterating a DataFrame yields its column names
    if rows is None or not isinstance(rows, Iterable):
        raise ArgumentError(f"{where}() takes a list of rows (dicts), a pandas DataFrame or a datasets.Dataset; "
                            f"got {describe_value(rows)}")

    def check() -> Iterator[Mapping[str, Any]]:
        for number, row in enumerate(rows, 1):
            if not isinstance(row, Mapping):
                hint = "; for plain strings use label_texts([...])" if isinstance(row, str) else ""
                raise ArgumentError(f"{where}(): row {number} is a {type(row).__name__}, not a dict{hint}")
            yield row

    return check()


def string_list(values: Any, name: str, where: str) -> list[Any]:
    """`values` (a list or any iterable of strings) as a list; one string or None is a one-line error."""
    if isinstance(values, (str, bytes)):
        raise ArgumentError(f"{where}: {name} is one string; pass a list: {where}([{str(values)[:30]!r}])")
    if values is None or not isinstance(values, Iterable) or isinstance(values, Mapping):
        raise ArgumentError(f"{where}: {name} must be a list of strings, got {describe_value(values)}")
    return list(values)


def check_labeler_options(task: LabelTask, mode: str, normalize: str, calibration: str | None, ordering: str,
                          restrict_labels: int | None, selector: Any) -> Any:
    """The Labeler's options checked, in the order a user reads them; returns the calibrator (or None)."""
    from llmlabel.calibration.base import make_calibrator
    from llmlabel.selection.ordering import ORDERINGS

    if mode not in ("score", "generate"):
        raise ConfigError(f"unknown mode '{mode}'; valid: generate, score")
    if normalize not in ("sum", "mean", "first"):
        raise ConfigError(unknown("normalize", normalize, ["first", "mean", "sum"]))
    calibrator = make_calibrator(calibration, mode, task.multi_label)
    if ordering not in ORDERINGS:
        raise ConfigError(unknown("ordering", ordering, ORDERINGS))
    if restrict_labels is not None and not hasattr(selector, "similarities"):
        raise ConfigError("restrict_labels needs an embedding selector (knn, mmr, votek or epr)")
    return calibrator


def checked_examples(examples: Iterable[Any] | None, task: LabelTask) -> list[dict[str, Any]]:
    """Fixed few-shot demonstrations: dicts with 'text' and a task 'label' (copied)."""
    out = []
    for ex in examples or []:
        if not isinstance(ex, Mapping) or "text" not in ex:
            raise ConfigError("a few-shot example must be a dict with 'text' and 'label', got " + describe_value(ex))
        if ex.get("label") not in task.names:
            raise ConfigError(f"few-shot example label '{ex.get('label')}' is not a task label; valid: "
                              + ", ".join(task.names))
        out.append(dict(ex))
    return out


def check_pool_labels(selector: Any, task: LabelTask) -> None:
    """Every exemplar pool label is a task label."""
    from llmlabel.errors import suggest

    if selector is not None:
        bad = sorted({ex.label for ex in selector.pool} - set(task.names))
        if bad:
            raise ConfigError(f"exemplar pool label '{bad[0]}' is not a task label" + suggest(bad[0], task.names))


def text_rows(task: LabelTask, texts: Iterable[str], text_pairs: Iterable[str | None] | None,
              where: str = "label_texts") -> list[dict[str, Any]]:
    """Plain strings (and their pairs) as rows of `task` (a list of strings: one string is an error)."""
    texts = string_list(texts, "texts", where)
    pairs = [None] * len(texts) if text_pairs is None else string_list(text_pairs, "text_pairs", where)
    if len(pairs) != len(texts):
        raise ArgumentError(f"{where}: {len(texts)} texts but {len(pairs)} text_pairs; give one pair per text")
    if pairs and any(p is not None for p in pairs) and not task.text_pair_field:
        raise ArgumentError(f"{where}: text_pairs given, but the task has no text_pair_field; set "
                            "LabelTask(text_pair_field=...) for pair tasks")
    return [{task.text_field: t, **({task.text_pair_field: p} if task.text_pair_field else {})}
            for t, p in zip(texts, pairs)]

"""Run a validated recipe: read data, build the task and backend, label with caching, write outputs, evaluate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llmlabel.config import Recipe
from llmlabel.data import Dataset, json_text, atomic_write, load_labels_file, write_rows
from llmlabel.errors import ConfigError, DataError
from llmlabel.task import LabelTask

log = logging.getLogger("llmlabel")


def build_task(recipe: Recipe, dataset: Dataset) -> LabelTask:
    """The LabelTask of a recipe; labels default to the dataset's labels.json."""
    labels: Any = recipe.task.labels
    if labels is None:
        if dataset.labels_file is None:
            raise ConfigError("no labels given: set task.labels in the recipe (or --labels), or put a labels.json "
                              "beside the data")
        labels = load_labels_file(dataset.labels_file)
    fields = recipe.task.model_dump(exclude={"labels"})
    try:
        return LabelTask(labels=labels, text_field=recipe.data.text_field,
                         text_pair_field=recipe.data.text_pair_field, label_field=recipe.data.label_field, **fields)
    except ValueError as exc:
        raise ConfigError(f"task: {str(exc).splitlines()[-1].strip()}") from None


def check_data(task: LabelTask, dataset: Dataset) -> bool:
    """Fail fast, before any model loads: empty data, missing columns, gold labels outside the label space.

    Returns whether the rows carry gold labels.
    """
    first = next(iter(dataset), None)
    if first is None:
        raise DataError(f"dataset {dataset.source} is empty")
    task.texts(first)
    has_gold = bool(task.label_field) and task.label_field in first
    if has_gold:
        for row in dataset:
            task.gold(row)
    return has_gold


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (temp file, fsync, rename: see `llmlabel.data.atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(json_text(data, indent=1)))


def run_recipe(recipe: Recipe, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run a label recipe end to end and return its summary (stats, metrics, output paths).

    `backend` may be given to reuse an already loaded backend.
    """
    from llmlabel.backends.base import load_backend
    from llmlabel.cache import ResultCache
    from llmlabel.labeler import Labeler
    from llmlabel.metrics import evaluate

    dataset = Dataset(recipe.data.path, split=recipe.data.split, limit=recipe.data.limit)
    task = build_task(recipe, dataset)
    has_gold = check_data(task, dataset)
    owns_backend = backend is None
    if backend is None:
        backend = load_backend(recipe.model.backend, model=recipe.model.name, **recipe.model.options)
    cache = ResultCache(recipe.output.path(recipe.output.cache)) if recipe.output.cache else None
    gold: list[Any] = []
    pred: list[Any] = []
    confidences: list[float] = []
    evaluating = recipe.evaluate and has_gold and not task.multi_label

    def labeled_rows() -> Any:
        # Streams: each row is written as it is labeled; only what evaluation needs stays in memory.
        for row, result in labeler.iter_label(dataset, total=total):
            if evaluating:
                gold.append(task.gold(row))
                pred.append(result.label)
                confidences.append(result.confidence)
            yield labeler.merge(row, result)

    try:
        labeler = Labeler(backend, task, mode=recipe.labeling.mode, normalize=recipe.labeling.normalize,
                          calibration=recipe.labeling.calibration, examples=recipe.labeling.examples,
                          prompt=recipe.labeling.prompt, cache=cache, chunk_size=recipe.labeling.chunk_size,
                          max_answer_tokens=recipe.labeling.max_answer_tokens, progress=progress)
        total = len(dataset)
        predictions = write_rows(labeled_rows(), recipe.output.path(recipe.output.predictions))
    finally:
        if cache is not None:
            cache.close()
        if owns_backend:
            backend.close()
    summary: dict[str, Any] = {
        "recipe": recipe.name, "backend": backend.name, "model": backend.model_id, "mode": recipe.labeling.mode,
        "rows": labeler.stats.rows, "predictions": str(predictions), "stats": labeler.stats.as_dict(),
        "invalid_utf8_rows": dataset.invalid_utf8_rows,
    }
    if evaluating:
        report = evaluate(gold, pred, task.names, confidences)
        report["cost"] = labeler.stats.as_dict()
        summary["metrics"] = report
    summary_path = recipe.output.path(recipe.output.report)
    write_json(summary, summary_path)
    summary["report"] = str(summary_path)
    return summary

"""Run a validated recipe: read data, build the task and backend, label with caching, write outputs, evaluate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llmlabel.config import Recipe
from llmlabel.data import Dataset, atomic_write, json_text, load_labels_file, write_rows
from llmlabel.errors import ConfigError, DataError, unknown
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


def read_pool(cfg: Any, recipe: Recipe, task: LabelTask, seed: int = 0) -> list[Any]:
    """The labeled pool of a selection or method config as `Example`s (gold mapped to task labels, subsampled)."""
    import random

    from llmlabel.selection.base import pool_from_rows

    if task.multi_label:
        raise ConfigError("a labeled pool (selection, method) supports single-label tasks only")
    pool_data = Dataset(cfg.path, split=cfg.split, limit=cfg.limit)
    text_field = cfg.text_field or recipe.data.text_field
    pair_field = cfg.text_pair_field or recipe.data.text_pair_field
    columns = pool_data.columns()
    for field_name in (text_field, cfg.label_field, pair_field):
        if field_name and columns and field_name not in columns:
            raise DataError(unknown(f"column in exemplar pool {cfg.path}", field_name, columns))
    pool_task = task.model_copy(update={"label_field": cfg.label_field})
    rows = list(pool_data)
    if cfg.min_confidence is not None:
        if columns and "confidence" not in columns:
            raise DataError(f"pool.min_confidence needs a 'confidence' column (a predictions file of an llmlabel run); "
                            f"{cfg.path} has: {', '.join(columns)}")
        rows = [r for r in rows if r.get("status", "ok") == "ok" and (r.get("confidence") or 0) >= cfg.min_confidence]
        if not rows:
            raise DataError(f"no pool row of {cfg.path} has confidence >= {cfg.min_confidence}")
    if cfg.sample is not None and cfg.sample < len(rows):
        rows = random.Random(seed).sample(rows, cfg.sample)
    return pool_from_rows(rows, text_field, cfg.label_field, pair_field, label_of=pool_task.gold)


def build_selector(selection: Any, recipe: Recipe, task: LabelTask, scorer: Any = None) -> Any:
    """Read the exemplar pool and fit the configured selector.

    `scorer` is a Labeler whose `demo_scores` rates demonstrations, for selectors that learn from the LM (EPR).
    """
    from llmlabel.selection.base import make_selector

    pool = read_pool(selection.pool, recipe, task, selection.seed)
    selector = make_selector(selection.method, seed=selection.seed, **selection.options)
    return selector.fit(pool, scorer=scorer.demo_scores if scorer is not None else None)


def build_method(config: Any, recipe: Recipe, labeler: Any) -> Any:
    """Read the method's pool and fit the configured labeling method around `labeler` (its settings are
    cross-fitted over the whole pool, `config.folds` folds)."""
    from llmlabel.methods.base import make_method

    pool = read_pool(config.pool, recipe, labeler.task, config.seed)
    return make_method(config.name, labeler, seed=config.seed, **{"folds": config.folds, **config.options}).fit(pool)


def build_engine(recipe: Recipe, task: LabelTask, backend: Any, cache: Any = None,
                 progress: bool = False) -> tuple[Any, Any]:
    """The recipe's `Labeler` over `backend` and the engine that labels rows: the labeler itself, or the labeling
    method wrapped around it. Every executor builds its engines here, so they label alike."""
    from llmlabel.labeler import Labeler

    options = dict(mode=recipe.labeling.mode, normalize=recipe.labeling.normalize,
                   calibration=recipe.labeling.calibration, examples=recipe.labeling.examples,
                   prompt=recipe.labeling.prompt, cache=cache, chunk_size=recipe.labeling.chunk_size,
                   max_answer_tokens=recipe.labeling.max_answer_tokens, progress=progress,
                   answer_prefix=recipe.labeling.answer_prefix)
    selection = recipe.labeling.selection
    if selection is not None:
        selector = build_selector(selection, recipe, task, Labeler(backend, task, cache=cache))
        options.update(selector=selector, k=selection.k, ordering=selection.ordering,
                       restrict_labels=selection.restrict_labels, seed=selection.seed)
    labeler = Labeler(backend, task, **options)
    engine = labeler
    if recipe.labeling.method is not None:
        engine = build_method(recipe.labeling.method, recipe, labeler)
    return labeler, engine


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (temp file, fsync, rename: see `llmlabel.data.atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(json_text(data, indent=1)))


def run_recipe(recipe: Recipe, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run a label recipe end to end and return its summary (stats, metrics, output paths).

    `backend` may be given to reuse an already loaded backend.
    """
    from llmlabel.backends.base import load_backend
    from llmlabel.cache import ResultCache
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
        for row, result in engine.iter_label(dataset, total=total):
            if evaluating:
                gold.append(task.gold(row))
                pred.append(result.label)
                confidences.append(result.confidence)
            yield engine.merge(row, result)

    try:
        labeler, engine = build_engine(recipe, task, backend, cache, progress)
        total = len(dataset)
        predictions = write_rows(labeled_rows(), recipe.output.path(recipe.output.predictions))
    finally:
        if cache is not None:
            cache.close()
        if owns_backend:
            backend.close()
    summary: dict[str, Any] = {
        "recipe": recipe.name, "backend": backend.name, "model": backend.model_id, "mode": recipe.labeling.mode,
        "rows": engine.stats.rows, "predictions": str(predictions), "stats": engine.stats.as_dict(),
        "invalid_utf8_rows": dataset.invalid_utf8_rows,
    }
    if engine is not labeler:
        summary["mode"] = f"{recipe.labeling.method.name} over {recipe.labeling.mode}"
        summary["method"] = dict(engine.report)  # the chosen settings and their cross-fitted evidence
        summary["llm_stats"] = labeler.stats.as_dict()
    if evaluating:
        report = evaluate(gold, pred, task.names, confidences)
        report["cost"] = engine.stats.as_dict()
        summary["metrics"] = report
    summary_path = recipe.output.path(recipe.output.report)
    write_json(summary, summary_path)
    summary["report"] = str(summary_path)
    return summary

"""Run a validated recipe: read data, build the task and backend, label with caching, write outputs, evaluate."""

from __future__ import annotations

import logging
from typing import Any

from llmlabel.config import Recipe
from llmlabel.data import Dataset, load_labels_file
from llmlabel.io import write_json, write_rows
from llmlabel.errors import ConfigError, DataError, Interrupted, unknown
from llmlabel.core.task import LabelTask

log = logging.getLogger("llmlabel")


def build_task(recipe: Recipe, dataset: Dataset) -> LabelTask:
    """The LabelTask of a recipe; labels default to the dataset's labels.json."""
    from pydantic import ValidationError

    labels: Any = recipe.task.labels
    where = "task"
    if labels is None:
        if dataset.labels_file is None:
            raise ConfigError("no labels given: set task.labels in the recipe (or --labels), or put a labels.json "
                              "beside the data")
        labels = load_labels_file(dataset.labels_file)
        where = str(dataset.labels_file)
    fields = recipe.task.model_dump(exclude={"labels"})
    try:
        return LabelTask(labels=labels, text_field=recipe.data.text_field,
                         text_pair_field=recipe.data.text_pair_field, label_field=recipe.data.label_field, **fields)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {validation_reason(exc)}") from None


def validation_reason(exc: Any) -> str:
    """The reasons of a pydantic ValidationError in one line (its text ends in a documentation URL, not a reason)."""
    reasons = []
    for err in exc.errors():
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()))
        if err.get("type") == "too_short" and loc == "labels":
            msg = "no labels given (the list is empty)"
        reasons.append(msg if not loc or err.get("type") == "value_error" or loc == "labels" else f"{loc}: {msg}")
    return "; ".join(reasons) or str(exc).splitlines()[0]


def check_data(task: LabelTask, dataset: Dataset) -> bool:
    """Fail fast, before any model loads: empty data, missing columns, gold labels outside the label space.

    Returns whether the rows carry gold labels.
    """
    first = next(iter(dataset), None)
    if first is None:
        raise DataError(f"dataset {dataset.source} is empty")
    task.texts(first)
    if not task.label_field:
        return False
    has_gold = False
    for row in dataset:  # every gold value is checked; rows without one are labeled, not evaluated
        has_gold = task.gold(row) is not None or has_gold
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
    from llmlabel.labeling.labeler import Labeler

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


def _interrupted(recipe: Recipe, engine: Any, cache: Any) -> Interrupted:
    """The interrupt of a run, saying what was kept: rows labeled so far are in the cache, outputs untouched."""
    done = engine.stats.rows if engine is not None else 0
    predictions = recipe.output.path(recipe.output.predictions)
    kept = f"the previous {predictions.name} is kept" if predictions.exists() else f"no {predictions.name} written"
    if cache is None:
        return Interrupted(f"interrupted after {done} rows; output.cache is off, so nothing was kept ({kept})")
    return Interrupted(f"interrupted after {done} rows; finished rows are cached in {cache.path}: run the same "
                       f"command again to resume ({kept})")


def run_recipe(recipe: Recipe, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run a label recipe end to end and return its summary (stats, metrics, output paths).

    `backend` may be given to reuse an already loaded backend. The output folder is held for the run (see
    `llmlabel.outputs`): a second run into it fails at once, naming this one.
    """
    from llmlabel.outputs import hold_output_folder

    with hold_output_folder(recipe.output.dir):
        return _run_recipe(recipe, progress, backend)


def _run_recipe(recipe: Recipe, progress: bool, backend: Any) -> dict[str, Any]:
    from llmlabel.backends.lazy import lazy_backend
    from llmlabel.cache import ResultCache
    from llmlabel.metrics import evaluate

    dataset = Dataset(recipe.data.path, split=recipe.data.split, limit=recipe.data.limit)
    task = build_task(recipe, dataset)
    has_gold = check_data(task, dataset)
    owns_backend = backend is None
    if backend is None:
        # Loaded only when a row needs computing: a fully cached re-run never loads the model.
        backend = lazy_backend(recipe.model.backend, model=recipe.model.name, **recipe.model.options)
    cache = ResultCache(recipe.output.path(recipe.output.cache)) if recipe.output.cache else None
    gold: list[Any] = []
    pred: list[Any] = []
    confidences: list[float] = []
    evaluating = recipe.evaluate and has_gold and not task.multi_label

    without_gold = 0

    def labeled_rows() -> Any:
        # Streams: each row is written as it is labeled; only what evaluation needs stays in memory.
        nonlocal without_gold
        for row, result in engine.iter_label(dataset, total=total):
            if evaluating:
                row_gold = task.gold(row)
                if row_gold is None:
                    without_gold += 1
                else:
                    gold.append(row_gold)
                    pred.append(result.label)
                    confidences.append(result.confidence)
            yield engine.merge(row, result)

    engine = None
    try:
        labeler, engine = build_engine(recipe, task, backend, cache, progress)
        loaded_before_labeling = float(getattr(backend, "load_seconds", 0.0))  # a method's fit may load it
        total = len(dataset)
        predictions = write_rows(labeled_rows(), recipe.output.path(recipe.output.predictions))
    except KeyboardInterrupt:
        raise _interrupted(recipe, engine, cache) from None
    finally:
        if cache is not None:
            cache.close()
        if owns_backend:
            backend.close()
    # The model loads inside the first chunk that needs it; its load time is reported apart from labeling time.
    load_seconds = float(getattr(backend, "load_seconds", 0.0))
    engine.stats.seconds = max(engine.stats.seconds - (load_seconds - loaded_before_labeling), 0.0)
    summary: dict[str, Any] = {
        "recipe": recipe.name, "backend": backend.name, "model": backend.model_id, "mode": recipe.labeling.mode,
        "rows": engine.stats.rows, "predictions": str(predictions), "stats": engine.stats.as_dict(),
        "invalid_utf8_rows": dataset.invalid_utf8_rows,
        # False when every row (and calibration probe) came from the cache and the model was never loaded
        "model_loaded": bool(getattr(backend, "loaded", True)),
        "model_load_seconds": round(load_seconds, 3),
        # what the review loop and the HTML report need to read the run back: the label set, columns, prompt
        "task": {"labels": task.names, "text_field": task.text_field, "text_pair_field": task.text_pair_field,
                 "label_field": task.label_field, "multi_label": task.multi_label},
        "prompt": labeler.template.id,
    }
    if engine is not labeler:
        summary["mode"] = f"{recipe.labeling.method.name} over {recipe.labeling.mode}"
        summary["method"] = dict(engine.report)  # the chosen settings and their cross-fitted evidence
        summary["llm_stats"] = labeler.stats.as_dict()
    # API endpoints: how labels were asked, and the token and cost ledger. Asked through the class-level capability
    # first: any other attribute of a lazy backend would load the model that a fully cached run never needed.
    if getattr(backend, "supports_decide", False) and hasattr(backend, "api_report"):
        summary["api"] = backend.api_report(engine.stats.computed)
        if getattr(labeler, "_option_plan", None) is not None:
            summary["api"]["options"] = labeler._option_plan.describe()
    if evaluating:
        report = evaluate(gold, pred, task.names, confidences)
        report["rows_without_gold"] = without_gold
        report["cost"] = engine.stats.as_dict()
        summary["metrics"] = report
    if recipe.output.hf_dataset:
        from llmlabel.hub import write_hf_dataset

        summary["hf_dataset"] = str(write_hf_dataset(predictions, recipe.output.path(recipe.output.hf_dataset),
                                                     recipe, labeler, summary))
    summary_path = recipe.output.path(recipe.output.report)
    write_json(summary, summary_path)
    summary["report"] = str(summary_path)
    return summary

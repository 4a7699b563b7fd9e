"""From a recipe's `labeling:` section to a Labeler: the only place that maps `LabelingConfig` fields to
`Labeler(...)` keyword arguments, and that builds the selector or labeling method around it. Every recipe kind that
labels with the LLM (label, tnt_llm, distill_student, weak_to_strong, audit, estimate) builds its Labeler here, so a
setting such as `labeling.calibration` travels one way: recipe -> `labeler_options` -> `Labeler`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llmlabel.errors import ConfigError, DataError, unknown


class LabelingSetup(NamedTuple):
    """The recipe's Labeler and the engine that labels rows: the labeler itself, or a method wrapped around it."""

    labeler: Any
    engine: Any

    @property
    def has_method(self) -> bool:
        """Whether a labeling method (knn_prompting, fusion, stacking) wraps the labeler."""
        return self.engine is not self.labeler


def labeler_options(labeling: Any, cache: Any = None, progress: bool = False, **overrides: Any) -> dict[str, Any]:
    """`Labeler(backend, task, **labeler_options(...))` for a `LabelingConfig`; `overrides` replace fields (e.g. the
    demonstrations an audit draws itself)."""
    options = dict(mode=labeling.mode, normalize=labeling.normalize, calibration=labeling.calibration,
                   examples=labeling.examples, prompt=labeling.prompt, cache=cache, chunk_size=labeling.chunk_size,
                   max_answer_tokens=labeling.max_answer_tokens, progress=progress,
                   answer_prefix=labeling.answer_prefix)
    options.update(overrides)
    return options


def read_pool(cfg: Any, data: Any, task: Any, seed: int = 0) -> list[Any]:
    """The labeled pool of a selection or method config as `Example`s (gold mapped to task labels, subsampled);
    `data` (a `DataConfig`) gives the text columns the pool does not name."""
    import random

    from llmlabel.data import Dataset
    from llmlabel.selection.base import pool_from_rows

    if task.multi_label:
        raise ConfigError("a labeled pool (selection, method) supports single-label tasks only")
    pool_data = Dataset(cfg.path, split=cfg.split, limit=cfg.limit)
    text_field = cfg.text_field or data.text_field
    pair_field = cfg.text_pair_field or data.text_pair_field
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


def build_selector(selection: Any, data: Any, task: Any, scorer: Any = None) -> Any:
    """Read the exemplar pool and fit the configured selector.

    `scorer` is a Labeler whose `demo_scores` rates demonstrations, for selectors that learn from the LM (EPR).
    """
    from llmlabel.selection.base import make_selector

    pool = read_pool(selection.pool, data, task, selection.seed)
    selector = make_selector(selection.method, seed=selection.seed, **selection.options)
    return selector.fit(pool, scorer=scorer.demo_scores if scorer is not None else None)


def build_method(config: Any, data: Any, labeler: Any) -> Any:
    """Read the method's pool and fit the configured labeling method around `labeler` (its settings are
    cross-fitted over the whole pool, `config.folds` folds)."""
    from llmlabel.methods.base import make_method

    pool = read_pool(config.pool, data, labeler.task, config.seed)
    return make_method(config.name, labeler, seed=config.seed, **{"folds": config.folds, **config.options}).fit(pool)


def build_labeling(labeling: Any, data: Any, task: Any, backend: Any, cache: Any = None, progress: bool = False,
                   **overrides: Any) -> LabelingSetup:
    """The Labeler of a `labeling:` section over `backend`, with its selector, and the method around it if any.
    Every executor and every kind builds its engines here, so they label alike."""
    from llmlabel.labeling.labeler import Labeler

    options = labeler_options(labeling, cache, progress, **overrides)
    selection = labeling.selection
    if selection is not None:
        selector = build_selector(selection, data, task, Labeler(backend, task, cache=cache))
        options.update(selector=selector, k=selection.k, ordering=selection.ordering,
                       restrict_labels=selection.restrict_labels, seed=selection.seed)
    labeler = Labeler(backend, task, **options)
    engine = labeler
    if labeling.method is not None:
        engine = build_method(labeling.method, data, labeler)
    return LabelingSetup(labeler, engine)


def build_engine(recipe: Any, task: Any, backend: Any, cache: Any = None, progress: bool = False) -> LabelingSetup:
    """`build_labeling` for a label recipe (its `labeling` and `data` sections)."""
    return build_labeling(recipe.labeling, recipe.data, task, backend, cache, progress)

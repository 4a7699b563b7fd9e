"""The labeling-method family: wrap a `Labeler` (the LLM) and use a labeled pool beyond what fits in the prompt.

`fit(pool)` once (pool: labeled `Example`s; settings such as fusion's weight are cross-fitted over the whole pool by
`llmlabel.tuning`, so nothing is held out), then `label_texts(texts, pairs)` -> `LabelResult`s with a distribution
over the task's labels, like the Labeler's. `report` says what was chosen and on which cross-fitted evidence.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from llmlabel.errors import ConfigError
from llmlabel.core.results import LabelResult, LabelStats
from llmlabel.labeling.engine import ChunkedEngine
from llmlabel.labeling.labeler import Labeler
from llmlabel.selection.base import Example


class LabelingMethod(ChunkedEngine, ABC):
    """Base class; subclasses set `name` and implement `_fit` and `_probs`. An `Engine`: `iter_label` is the one
    chunk loop (`llmlabel.labeling.engine`), `labeling.chunk_size` rows at a time."""

    name: ClassVar[str] = "base"

    def __init__(self, labeler: Labeler, seed: int = 0):
        self.labeler = labeler
        self.task = labeler.task
        self.seed = seed
        self.fitted = False
        self.report: dict[str, Any] = {}
        self.stats = LabelStats()

    def fit(self, pool: Sequence[Example], dev: Sequence[Example] | None = None) -> "LabelingMethod":
        """Fit on the labeled pool (`dev`, if given, is added to it: settings are cross-fitted over all labeled
        rows, none held out). Returns self."""
        if not pool:
            raise ConfigError(f"method '{self.name}' needs a non-empty labeled pool")
        bad = sorted({ex.label for ex in [*pool, *(dev or [])]} - set(self.task.names))
        if bad:
            raise ConfigError(f"method '{self.name}': pool label '{bad[0]}' is not a task label")
        self._fit(list(pool), list(dev or []))
        self.fitted = True
        return self

    def label_texts(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None) -> list[LabelResult]:
        """Label texts (and their pairs)."""
        if not self.fitted:
            raise ConfigError(f"method '{self.name}' is not fit: call fit(pool) first")
        pairs = list(text_pairs) if text_pairs is not None else [None] * len(texts)
        probs = self._probs(list(texts), pairs)
        names = self.task.names
        out = []
        for row in probs:
            best = int(np.argmax(row))
            out.append(LabelResult(names[best], dict(zip(names, row.tolist())), float(row[best])))
        return out

    @property
    def chunk_size(self) -> int:  # type: ignore[override]
        """Rows labeled at a time: the wrapped Labeler's (`labeling.chunk_size`)."""
        return self.labeler.chunk_size

    @property
    def progress(self) -> bool:  # type: ignore[override]
        return self.labeler.progress

    def progress_label(self) -> str:
        return f"labeling ({self.name})"

    def label_chunk(self, chunk: list[dict[str, Any]]) -> list[LabelResult]:
        """The chunk's results; rows with an empty text are 'skipped'."""
        texts = [self.task.texts(r) for r in chunk]
        keep = [i for i, (t, _) in enumerate(texts) if t is not None and str(t).strip()]
        results = self.label_texts([str(texts[i][0]) for i in keep],
                                   [None if texts[i][1] is None else str(texts[i][1]) for i in keep])
        by_index = dict(zip(keep, results))
        return [by_index.get(i) or LabelResult.without_label(self.task.names, "skipped", "empty text")
                for i in range(len(chunk))]

    def merge(self, row: dict[str, Any], result: LabelResult) -> dict[str, Any]:
        """`row` plus the result's columns (see `Labeler.merge`)."""
        return self.labeler.merge(row, result)

    def label(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Label dataset rows; returns rows merged with the output columns (as `Labeler.label`)."""
        texts, pairs = zip(*(self.task.texts(r) for r in rows)) if rows else ((), ())
        results = self.label_texts([str(t) for t in texts], [None if p is None else str(p) for p in pairs])
        return [self.labeler.merge(r, res) for r, res in zip(rows, results)]

    @abstractmethod
    def _fit(self, pool: list[Example], dev: list[Example]) -> None:
        """Fit; the pool's and dev's labels are task label names."""

    @abstractmethod
    def _probs(self, texts: list[str], pairs: list[str | None]) -> np.ndarray:
        """(len(texts), n_labels) distributions in task label order."""

    # Helpers ------------------------------------------------------------------------------------------------------
    def llm_probs(self, texts: list[str], pairs: list[str | None]) -> np.ndarray:
        """The wrapped Labeler's distributions (its calibration applied; cached like any labeling)."""
        results = self.labeler.label_texts(texts, pairs)
        return np.asarray([[r.label_probs[n] for n in self.task.names] for r in results])

    def accuracy(self, probs: np.ndarray, examples: Sequence[Example]) -> float:
        """Share of `examples` whose label is the argmax of `probs`."""
        gold = np.asarray([self.task.names.index(ex.label) for ex in examples])
        return float((probs.argmax(axis=1) == gold).mean()) if len(gold) else 0.0


def split_dev(pool: Sequence[Example], dev_size: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """A random held-out slice of `dev_size` (at most a fifth of the pool) and the rest (methods no longer need one:
    they cross-fit over the whole pool; this serves evaluations that want a held-out slice)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    n_dev = min(dev_size, len(pool) // 5)
    return [pool[i] for i in order[n_dev:]], [pool[i] for i in order[:n_dev]]


def make_method(name: str, labeler: Labeler, seed: int = 0, **options: Any) -> LabelingMethod:
    """A labeling method by registry name; unknown names and options give a one-line error."""
    from llmlabel.registry import methods

    return methods.checked(name, options, fixed=("labeler", "seed"))(labeler, seed=seed, **options)

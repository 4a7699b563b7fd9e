"""The selector family: pick in-context demonstrations for a query from a labeled pool.

A `Selector` is fit once on a pool of `Example`s (embeddings, indexes and any training happen there), then answers
`select(query, k)`. Selectors whose choice does not depend on the query (`per_query = False`: random, balanced) give
every prompt the same demonstrations, so the backend computes that shared prefix once per batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from llmlabel.errors import ConfigError


@dataclass(frozen=True)
class Example:
    """One labeled demonstration. `index` is its position in the pool (for caching and analysis)."""

    text: str
    label: str
    text_pair: str | None = None
    index: int = -1

    def as_dict(self) -> dict[str, Any]:
        """The form the Labeler and prompts use."""
        return {"text": self.text, "text_pair": self.text_pair, "label": self.label}


#: Scores demonstrations with the LM, for selectors that learn from it (EPR): given (query example, demonstration
#: list) pairs, return log P(query's gold label | demonstrations, query) for each pair (one batched call).
DemoScorer = Callable[[list[tuple[Example, list[Example]]]], list[float]]


@dataclass
class Selection:
    """What a selector chose for one query: demonstrations (in the selector's preference order, best first) and
    their similarity to the query where the method has one."""

    examples: list[Example]
    scores: list[float] = field(default_factory=list)


class Selector(ABC):
    """Base class of exemplar selectors. Subclasses set `name`, implement `_fit` and `_select` (or `select_many`).

    Args:
        seed: random seed (random choices, tie breaks, training).
    """

    name: ClassVar[str] = "base"
    #: False when every query gets the same demonstrations (lets backends share the prompt prefix).
    per_query: ClassVar[bool] = True
    #: True when `fit` needs a `DemoScorer` (an LM) to learn.
    needs_scorer: ClassVar[bool] = False

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.pool: list[Example] = []

    def fit(self, pool: Sequence[Example], scorer: DemoScorer | None = None) -> "Selector":
        """Index the labeled pool (once). Returns self."""
        if not pool:
            raise ConfigError(f"selector '{self.name}' needs a non-empty exemplar pool")
        self.pool = [ex if ex.index >= 0 else Example(ex.text, ex.label, ex.text_pair, i) for i, ex in enumerate(pool)]
        if self.needs_scorer and scorer is None:
            raise ConfigError(f"selector '{self.name}' learns from the LM: fit it with a scorer (the Labeler does)")
        self._fit(scorer)
        return self

    def _fit(self, scorer: DemoScorer | None) -> None:  # noqa: B027 - optional hook
        """Build indexes; the pool is in `self.pool`."""

    def select(self, query: str, k: int, query_pair: str | None = None) -> Selection:
        """The k demonstrations for one query."""
        return self.select_many([query], k, [query_pair])[0]

    def select_many(self, queries: Sequence[str], k: int,
                    query_pairs: Sequence[str | None] | None = None) -> list[Selection]:
        """The k demonstrations for each query (selectors vectorize this)."""
        if not self.pool:
            raise ConfigError(f"selector '{self.name}' is not fit: call fit(pool) first")
        pairs = list(query_pairs) if query_pairs is not None else [None] * len(queries)
        k = min(k, len(self.pool))
        if k <= 0:
            return [Selection([]) for _ in queries]
        return self._select_many(list(queries), k, pairs)

    @abstractmethod
    def _select_many(self, queries: list[str], k: int, pairs: list[str | None]) -> list[Selection]:
        """Selections for `queries` (k <= pool size, k > 0)."""

    # Helpers for subclasses -------------------------------------------------------------------------------------
    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    @staticmethod
    def _joined(text: str, pair: str | None) -> str:
        return text if pair is None else f"{text}\n{pair}"


def pool_from_rows(rows: Sequence[dict[str, Any]], text_field: str = "text", label_field: str = "label",
                   text_pair_field: str | None = None, label_of: Callable[[Any], str] | None = None) -> list[Example]:
    """Examples from dataset rows; `label_of` maps a raw gold value to a label name (e.g. `LabelTask.gold`)."""
    pool = []
    for i, row in enumerate(rows):
        text = row.get(text_field)
        label = row.get(label_field)
        if text is None or label is None or not str(text).strip():
            continue
        pair = row.get(text_pair_field) if text_pair_field else None
        name = label_of(row) if label_of else str(label)
        pool.append(Example(str(text), str(name), None if pair is None else str(pair), len(pool)))
    return pool


def make_selector(name: str, seed: int = 0, **options: Any) -> Selector:
    """A selector by registry name; unknown names and options give a one-line error with the closest valid one."""
    from llmlabel.registry import selectors

    return selectors.checked(name, options, fixed=("seed",))(seed=seed, **options)

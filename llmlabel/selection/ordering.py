"""Orderings of selected demonstrations. The query comes right after the last demonstration, and small models copy
the nearest demonstrations most, so order matters.

- `as_selected`: the selector's order (most similar first for retrievers).
- `similar_last`: reversed, so the most similar demonstration sits next to the query (Liu et al. 2021).
- `round_robin`: interleave labels (no long runs of one label; the last label is not always the same).
- EASE-style search over orderings on a dev set lives in `search_order`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from llmlabel.errors import ConfigError, unknown
from llmlabel.selection.base import Example

ORDERINGS = ("as_selected", "similar_last", "round_robin")


def order_examples(examples: Sequence[Example], ordering: str = "as_selected") -> list[Example]:
    """`examples` (best first, as selected) arranged by `ordering`."""
    examples = list(examples)
    if ordering == "as_selected":
        return examples
    if ordering == "similar_last":
        return examples[::-1]
    if ordering == "round_robin":
        by_label: dict[str, list[Example]] = defaultdict(list)
        for ex in examples:
            by_label[ex.label].append(ex)
        queues = list(by_label.values())
        out: list[Example] = []
        while any(queues):
            for queue in queues:
                if queue:
                    out.append(queue.pop(0))
        # The most relevant demonstrations go last (nearest the query) while labels stay interleaved.
        return out[::-1]
    raise ConfigError(unknown("ordering", ordering, ORDERINGS))


def search_order(examples: Sequence[Example], evaluate: Callable[[list[Example]], float], budget: int = 8,
                 seed: int = 0) -> tuple[list[Example], list[tuple[float, list[int]]]]:
    """EASE-style ordering search: try up to `budget` permutations of a fixed demonstration set, score each with
    `evaluate` (e.g. dev-set accuracy), keep the best. Returns the best order and the trail (score, permutation)."""
    n = len(examples)
    if n <= 1:
        return list(examples), []
    rng = np.random.default_rng(seed)
    all_perms = None
    if n <= 6:
        all_perms = list(itertools.permutations(range(n)))
    trail: list[tuple[float, list[int]]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(budget):
        if all_perms is not None:
            if len(seen) == len(all_perms):
                break
            perm = all_perms[int(rng.integers(len(all_perms)))]
            while perm in seen:
                perm = all_perms[int(rng.integers(len(all_perms)))]
        else:
            perm = tuple(int(i) for i in rng.permutation(n))
            if perm in seen:
                continue
        seen.add(perm)
        trail.append((float(evaluate([examples[i] for i in perm])), list(perm)))
    best = max(trail, key=lambda t: t[0])
    return [examples[i] for i in best[1]], trail

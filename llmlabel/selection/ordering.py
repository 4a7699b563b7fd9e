"""Orderings of selected demonstrations. The query comes right after the last demonstration, and small models copy
the nearest demonstrations most, so order matters.

- `as_selected`: the selector's order (most similar first for retrievers).
- `similar_last`: reversed, so the most similar demonstration sits next to the query (Liu et al. 2021).
- `round_robin`: interleave labels (no long runs of one label; the last label is not always the same).
- EASE-style search over orderings on a dev set lives in `search_order` (guarded: the given order stays unless
  another is better beyond the noise).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

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


def search_order(examples: Sequence[Example], evaluate: Callable[[list[Example]], Any], budget: int = 8,
                 seed: int = 0, z: float | None = None) -> tuple[list[Example], list[tuple[float, list[int]]]]:
    """EASE-style ordering search: try up to `budget` orders of a fixed demonstration set (the given order first),
    score each with `evaluate`, keep the best. Returns the best order and the trail (mean score, permutation).

    When `evaluate` returns per-row scores on the dev rows (e.g. 1.0 / 0.0 per row for right / wrong), the given
    order is kept unless the best one's paired gain over it is beyond the row-to-row noise (`llmlabel.tuning.choose`,
    `z` standard errors, default 2): with a few dozen dev rows, one order beats another by chance. A single number
    per order cannot be tested, so it picks the plain best.
    """
    from llmlabel.tuning import Z, choose

    n = len(examples)
    if n <= 1:
        return list(examples), []
    rng = np.random.default_rng(seed)
    all_perms = None
    if n <= 6:
        all_perms = list(itertools.permutations(range(n)))
    trail: list[tuple[float, list[int]]] = []
    per_row: dict[tuple[int, ...], np.ndarray] = {}
    seen: set[tuple[int, ...]] = set()
    for step in range(budget):
        if step == 0:
            perm = tuple(range(n))  # the given order: the baseline a searched order has to beat
        elif all_perms is not None:
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
        value = np.asarray(evaluate([examples[i] for i in perm]), dtype=np.float64)
        per_row[perm] = value
        trail.append((float(value.mean()), list(perm)))
    if all(v.ndim == 1 and len(v) > 1 for v in per_row.values()):
        best = choose(per_row, [], baseline=tuple(range(n)), metric="row_mean", z=Z if z is None else z).chosen
    else:
        best = tuple(max(trail, key=lambda t: t[0])[1])
    return [examples[i] for i in best], trail

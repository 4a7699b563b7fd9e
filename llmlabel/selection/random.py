"""Random demonstrations: one fixed random draw from the pool (per seed), shared by every query."""

from __future__ import annotations

from llmlabel.selection.base import Selection, Selector


class RandomSelector(Selector):
    """k pool examples drawn uniformly at random, the same for every query (so prompts share a prefix).

    Args:
        seed: which draw.
        per_query: draw anew for each query instead (no shared prefix; slower).
    """

    name = "random"
    per_query = False

    def __init__(self, seed: int = 0, per_query: bool = False):
        super().__init__(seed)
        self.per_query = per_query  # type: ignore[misc]

    def _select_many(self, queries, k, pairs):
        rng = self._rng()
        if not self.per_query:
            chosen = [self.pool[i] for i in rng.choice(len(self.pool), size=k, replace=False)]
            return [Selection(list(chosen)) for _ in queries]
        return [Selection([self.pool[i] for i in rng.choice(len(self.pool), size=k, replace=False)])
                for _ in queries]

"""Maximal marginal relevance: relevant to the query but not redundant with each other (Carbonell & Goldstein 1998),
over sentence embeddings."""

from __future__ import annotations

import numpy as np

from llmlabel.selection.base import Selection
from llmlabel.selection.knn import KNNSelector


class MMRSelector(KNNSelector):
    """Greedy MMR: pick argmax  λ·sim(query, d) − (1−λ)·max_{s ∈ chosen} sim(d, s)  among the `fetch` nearest.

    Args:
        diversity_weight: 1 − λ; 0 reduces to kNN.
        fetch: candidates considered per query (top by similarity), at least k.
        embedder: as for `knn`.
    """

    name = "mmr"

    def __init__(self, seed: int = 0, embedder: object = "minilm", diversity_weight: float = 0.3, fetch: int = 32):
        super().__init__(seed, embedder)
        self.diversity_weight = diversity_weight
        self.fetch = fetch

    def _select_many(self, queries, k, pairs):
        sims = self.similarities(queries, pairs)
        lam = 1.0 - self.diversity_weight
        out = []
        for row in sims:
            n = min(max(self.fetch, k), len(row))
            cand = np.argpartition(-row, n - 1)[:n]
            cand = cand[np.argsort(-row[cand], kind="stable")]
            cand_vecs = self.vectors[cand]
            pairwise = cand_vecs @ cand_vecs.T
            chosen: list[int] = []
            redundancy = np.full(n, -np.inf)
            for _ in range(k):
                value = lam * row[cand] - (1 - lam) * np.where(np.isinf(redundancy), 0.0, redundancy)
                value[chosen] = -np.inf
                best = int(np.argmax(value))
                chosen.append(best)
                redundancy = np.maximum(redundancy, pairwise[best])
            out.append(Selection([self.pool[int(cand[j])] for j in chosen], [float(row[cand[j]]) for j in chosen]))
        return out

"""Vote-k selective annotation (Su et al. 2022): choose a small, diverse, representative subset of the pool to
annotate, then retrieve demonstrations from that subset by similarity.

Stage 1 of the paper: in the kNN graph of the pool, every not-yet-chosen item votes for its neighbours, and a vote from
an item whose neighbourhood already holds chosen items is discounted by ρ per chosen neighbour; the highest-voted item
is chosen, until the budget is spent. (The paper's optional stage 2, confidence-based, is not implemented.)
"""

from __future__ import annotations

import numpy as np

from llmlabel.selection.base import Selection
from llmlabel.selection.knn import KNNSelector


def knn_graph(vectors: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """(n, k) indices of each row's k nearest other rows by dot product (vectors are normalized)."""
    n = len(vectors)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not your own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def votek_select(vectors: np.ndarray, budget: int, k: int = 10, rho: float = 10.0) -> list[int]:
    """Indices of `budget` items chosen by vote-k from normalized embeddings `vectors` (in choice order)."""
    n = len(vectors)
    budget = min(budget, n)
    if n <= 1:
        return list(range(n))
    neighbours = knn_graph(vectors, k)
    kg = neighbours.shape[1]
    chosen_mask = np.zeros(n, dtype=bool)
    covered = np.zeros(n, dtype=np.int64)  # per voter: how many of its neighbours are chosen
    chosen: list[int] = []
    flat = neighbours.reshape(-1)
    for _ in range(budget):
        weight = np.where(chosen_mask, 0.0, rho ** (-covered.astype(np.float64)))
        votes = np.bincount(flat, weights=np.repeat(weight, kg), minlength=n)
        votes[chosen_mask] = -np.inf
        best = int(np.argmax(votes))
        chosen.append(best)
        chosen_mask[best] = True
        covered += (neighbours == best).any(axis=1)
    return chosen


class VoteKSelector(KNNSelector):
    """Annotate `budget` pool items chosen by vote-k; each query's demonstrations are its nearest annotated items.

    Args:
        budget: how many pool items are annotated (only their labels are ever used).
        graph_k: neighbours per item in the vote graph.
        rho: discount per already-chosen neighbour.
        embedder: as for `knn`.
    """

    name = "votek"

    def __init__(self, seed: int = 0, embedder: object = "minilm", budget: int = 100, graph_k: int = 10,
                 rho: float = 10.0):
        super().__init__(seed, embedder)
        self.budget = budget
        self.graph_k = graph_k
        self.rho = rho
        self.annotated: list[int] = []

    def _fit(self, scorer) -> None:
        super()._fit(scorer)
        self.annotated = votek_select(self.vectors, self.budget, self.graph_k, self.rho)

    def _select_many(self, queries, k, pairs):
        sims = self.similarities(queries, pairs)[:, self.annotated]
        k = min(k, len(self.annotated))
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            out.append(Selection([self.pool[self.annotated[i]] for i in top], [float(row[i]) for i in top]))
        return out

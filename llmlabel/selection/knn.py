"""KATE (Liu et al. 2021): the k pool examples nearest to the query in sentence-embedding space."""

from __future__ import annotations

import numpy as np

from llmlabel.selection.base import Selection, Selector


class KNNSelector(Selector):
    """Nearest neighbours by cosine similarity of sentence embeddings (default MiniLM, cached on disk).

    Args:
        embedder: an object with `encode(texts) -> normalized array` (e.g. `llmlabel.embeddings.Embedder`), a model
            name ('minilm', a sentence-transformers folder), or 'hashing' (bag of words, no model).
        seed: unused (deterministic).
    """

    name = "knn"

    def __init__(self, seed: int = 0, embedder: object = "minilm"):
        super().__init__(seed)
        self._embedder_spec = embedder
        self.embedder = None
        self.vectors: np.ndarray | None = None

    def _get_embedder(self):
        if self.embedder is None:
            from llmlabel.embeddings import make_embedder

            self.embedder = make_embedder(self._embedder_spec)
        return self.embedder

    def _fit(self, scorer) -> None:
        self.vectors = self._get_embedder().encode([self._joined(e.text, e.text_pair) for e in self.pool])

    def similarities(self, queries: list[str], pairs: list[str | None]) -> np.ndarray:
        """(queries x pool) cosine similarities."""
        q = self._get_embedder().encode([self._joined(t, p) for t, p in zip(queries, pairs)])
        return q @ self.vectors.T

    def _select_many(self, queries, k, pairs):
        sims = self.similarities(queries, pairs)
        out = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append(Selection([self.pool[i] for i in top], [float(row[i]) for i in top]))
        return out

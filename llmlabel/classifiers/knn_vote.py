"""The retrieval-only baseline: the label distribution of the k nearest labeled texts by sentence embedding."""

from __future__ import annotations

import numpy as np

from llmlabel.classifiers.base import TextClassifier


class KNNVoteClassifier(TextClassifier):
    """Vote of the k nearest neighbours (cosine similarity of MiniLM embeddings, cached on disk).

    Args:
        k: neighbours.
        weighted: weight votes by similarity (ties between equal counts go to the closer neighbours).
        smoothing: added to every label's vote, so no label has probability exactly 0 (matters for fusion).
        embedder: 'minilm', a sentence-transformers folder, 'hashing', or an object with `encode`.
    """

    name = "knn_vote"

    def __init__(self, labels=None, seed: int = 0, k: int = 4, weighted: bool = False, smoothing: float = 0.1,
                 embedder: object = "minilm"):
        super().__init__(labels, seed)
        self.k = k
        self.weighted = weighted
        self.smoothing = smoothing
        self._embedder_spec = embedder

    def _fit(self, texts, y):
        from llmlabel.embeddings import make_embedder

        self.embedder = make_embedder(self._embedder_spec)
        self.vectors = self.embedder.encode(texts)
        self.y = y

    def neighbours(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities) of each text's k nearest fitted texts, nearest first."""
        sims = self.embedder.encode(texts) @ self.vectors.T
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)

    def _predict_proba(self, texts):
        idx, sims = self.neighbours(texts)
        votes = np.full((len(texts), len(self.labels)), self.smoothing, dtype=np.float64)
        weights = np.maximum(sims, 0.0) if self.weighted else 1.0 + 1e-3 * sims  # tiny term breaks count ties
        for row in range(len(texts)):
            np.add.at(votes[row], self.y[idx[row]], weights[row])
        return votes / votes.sum(axis=1, keepdims=True)

"""Logistic regression on sentence embeddings (MiniLM): the strong cheap baseline and a fast student."""

from __future__ import annotations

from llmlabel.classifiers.logreg import LogRegClassifier


class LogRegEmbeddingsClassifier(LogRegClassifier):
    """Multinomial logistic regression on L2-normalized sentence embeddings.

    Args:
        c: inverse regularization strength.
        embedder: 'minilm', a sentence-transformers folder, 'hashing', or an object with `encode`.
    """

    name = "logreg_embeddings"

    def __init__(self, labels=None, seed: int = 0, c: float = 10.0, embedder: object = "minilm"):
        super().__init__(labels, seed)
        self.c = c
        self._embedder_spec = embedder

    def _fit_features(self, texts):
        from llmlabel.embeddings import make_embedder

        self.embedder = make_embedder(self._embedder_spec)
        return self.embedder.encode(texts)

    def _features(self, texts):
        return self.embedder.encode(texts)

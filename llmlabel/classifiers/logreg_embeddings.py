"""Logistic regression on sentence embeddings (MiniLM): the strong cheap baseline and a fast student."""

from __future__ import annotations

from llmlabel.classifiers.base import TextClassifier
from llmlabel.errors import MissingDependencyError


class LogRegEmbeddingsClassifier(TextClassifier):
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

    def _fit(self, texts, y):
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise MissingDependencyError("scikit-learn", "logistic-regression classifiers") from None
        from llmlabel.embeddings import make_embedder

        self.embedder = make_embedder(self._embedder_spec)
        self.model = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        self.model.fit(self.embedder.encode(texts), y)

    def _predict_proba(self, texts):
        return self._full(self.model.predict_proba(self.embedder.encode(texts)), self.model.classes_)

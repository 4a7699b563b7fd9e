"""Logistic regression on TF-IDF word and bigram features: no neural model at all."""

from __future__ import annotations

from llmlabel.classifiers.base import TextClassifier
from llmlabel.errors import MissingDependencyError


class LogRegTfidfClassifier(TextClassifier):
    """Multinomial logistic regression on sublinear TF-IDF of word 1-2 grams.

    Args:
        c: inverse regularization strength.
        max_features: vocabulary cap.
    """

    name = "logreg_tfidf"

    def __init__(self, labels=None, seed: int = 0, c: float = 10.0, max_features: int = 50000):
        super().__init__(labels, seed)
        self.c = c
        self.max_features = max_features

    def _fit(self, texts, y):
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise MissingDependencyError("scikit-learn", "logistic-regression classifiers") from None
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=self.max_features)
        self.model = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        self.model.fit(self.vectorizer.fit_transform(texts), y)

    def _predict_proba(self, texts):
        return self._full(self.model.predict_proba(self.vectorizer.transform(texts)), self.model.classes_)

"""Logistic regression on TF-IDF word and bigram features: no neural model at all."""

from __future__ import annotations

from llmlabel.classifiers.logreg import LogRegClassifier, require_sklearn


class LogRegTfidfClassifier(LogRegClassifier):
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

    def _fit_features(self, texts):
        require_sklearn()
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=self.max_features)
        return self.vectorizer.fit_transform(texts)

    def _features(self, texts):
        return self.vectorizer.transform(texts)

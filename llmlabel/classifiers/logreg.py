"""The logistic-regression half the `logreg_*` classifiers share: they differ only in their features."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlabel.classifiers.base import TextClassifier
from llmlabel.errors import MissingDependencyError


def require_sklearn() -> None:
    """A one-line MissingDependencyError when scikit-learn is not installed."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise MissingDependencyError("scikit-learn", "logistic-regression classifiers") from None


class LogRegClassifier(TextClassifier):
    """Multinomial logistic regression (C = `c`, up to 2000 iterations) on the features a subclass computes:
    `_fit_features(texts)` while fitting, `_features(texts)` afterwards."""

    c: float

    def _fit_features(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def _features(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def _fit(self, texts: list[str], y: np.ndarray) -> None:
        require_sklearn()
        from sklearn.linear_model import LogisticRegression

        features = self._fit_features(texts)
        self.model = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        self.model.fit(features, y)

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        return self._full(self.model.predict_proba(self._features(texts)), self.model.classes_)

"""The classifier family: cheap models fit on labeled texts that return a distribution over the label names.

They are the baselines every accuracy table reports (a kNN vote over sentence embeddings, logistic regression on
embeddings or TF-IDF), the retrieval prior that fusion combines with LLM scores, and the students that apply an
LLM-induced labeling at scale. `fit(texts, labels)` once, then `predict_proba(texts)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from llmlabel.errors import ConfigError


class TextClassifier(ABC):
    """Base class. Subclasses set `name` and implement `_fit` and `_predict_proba`.

    Args:
        labels: the label names, in output order (default: sorted labels seen in `fit`).
        seed: random seed where the method has randomness.
    """

    name: ClassVar[str] = "base"

    def __init__(self, labels: Sequence[str] | None = None, seed: int = 0):
        self.labels = list(labels) if labels is not None else None
        self.seed = seed
        self._fitted = False

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> "TextClassifier":
        """Fit on texts and their label names. Returns self."""
        texts, labels = [str(t) for t in texts], [str(y) for y in labels]
        if not texts or len(texts) != len(labels):
            raise ConfigError(f"classifier '{self.name}' needs as many labels as texts (got {len(texts)} texts, "
                              f"{len(labels)} labels)")
        if self.labels is None:
            self.labels = sorted(set(labels))
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise ConfigError(f"classifier '{self.name}': label '{unknown[0]}' is not one of the labels")
        self._fit(texts, np.asarray([self.labels.index(y) for y in labels]))
        self._fitted = True
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(labels)) probabilities; rows sum to 1."""
        if not self._fitted:
            raise ConfigError(f"classifier '{self.name}' is not fit: call fit(texts, labels) first")
        if not len(texts):
            return np.zeros((0, len(self.labels)))
        return self._predict_proba([str(t) for t in texts])

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable label name per text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    @abstractmethod
    def _fit(self, texts: list[str], y: np.ndarray) -> None:
        """Fit on texts and label indices."""

    @abstractmethod
    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities over `self.labels`."""

    def _full(self, proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Spread sklearn's per-seen-class columns over all labels (labels never seen in fit get 0)."""
        out = np.zeros((proba.shape[0], len(self.labels)))
        out[:, classes] = proba
        return out


def make_classifier(name: str, labels: Sequence[str] | None = None, seed: int = 0, **options: Any) -> TextClassifier:
    """A classifier by registry name; unknown names and options give a one-line error with the closest valid one."""
    from llmlabel.registry import classifiers

    return classifiers.checked(name, options, fixed=("labels", "seed"))(labels=labels, seed=seed, **options)

"""Small, fast classifiers on cheap text features: the weak supervisors of weak-to-strong experiments, and the
out-of-fold probabilities confident learning needs.

Features are TF-IDF word n-grams (no model, milliseconds) or MiniLM sentence embeddings (`llmlabel.embeddings`,
cached on disk); the classifier is scikit-learn's logistic regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from llmlabel.errors import ConfigError

FEATURES = ("tfidf", "minilm")


def _one_thread() -> Any:
    """Single-threaded BLAS for these small fits: on a busy 2-core machine a multi-threaded BLAS spins and makes a
    0.5 s logistic regression take 15 s."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


class WeakSupervisor:
    """Logistic regression on TF-IDF n-grams or MiniLM embeddings, trained on gold labels (class indices): the
    `logreg_tfidf` / `logreg_embeddings` classifiers of `llmlabel.classifiers`, on class indices, single-threaded.

    Args:
        features: 'tfidf' (word 1-2 grams, sublinear tf) or 'minilm' (all-MiniLM-L6-v2 sentence embeddings).
        C: inverse regularization strength of the logistic regression.
        seed: random state of the solver.
        embedder: an `llmlabel.embeddings.Embedder` to reuse (features='minilm'); one is created when None.
    """

    def __init__(self, features: Literal["tfidf", "minilm"] = "tfidf", C: float = 1.0, seed: int = 0,
                 embedder: Any = None):
        if features not in FEATURES:
            from llmlabel.errors import unknown

            raise ConfigError(unknown("weak supervisor features", features, FEATURES))
        self.features = features
        self.C = C
        self.seed = seed
        self._embedder = embedder
        self._model: Any = None
        self.n_classes = 0

    def fit(self, texts: Sequence[str], labels: Sequence[int], n_classes: int) -> WeakSupervisor:
        """Train on `texts` with gold class indices `labels` (0 .. n_classes-1)."""
        from llmlabel.classifiers.base import make_classifier

        labels = np.asarray(labels, dtype=np.int64)
        if len(texts) != len(labels) or not len(texts):
            raise ConfigError(f"weak supervisor needs matching, non-empty texts and labels "
                              f"(got {len(texts)} texts, {len(labels)} labels)")
        self.n_classes = n_classes
        self._classes = np.unique(labels)
        if len(self._classes) == 1:  # one class seen: predict it; sklearn refuses to fit a single class
            self._model = None
            return self
        if self.features == "minilm":
            name, options = "logreg_embeddings", {"embedder": self._embedder if self._embedder is not None
                                                  else "minilm"}
        else:
            name, options = "logreg_tfidf", {}
        self._model = make_classifier(name, labels=[str(i) for i in range(n_classes)], seed=self.seed, c=self.C,
                                      **options)
        with _one_thread():
            self._model.fit(list(texts), [str(y) for y in labels])
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n_classes) probabilities; classes never seen in training get probability 0."""
        out = np.zeros((len(texts), self.n_classes), dtype=np.float64)
        if not len(texts):
            return out
        if self._model is None:
            out[:, self._classes[0]] = 1.0
            return out
        with _one_thread():
            return self._model.predict_proba(list(texts))


def out_of_fold_probs(texts: Sequence[str], labels: Sequence[int], n_classes: int, features: str = "tfidf",
                      folds: int = 5, seed: int = 0, C: float = 1.0, embedder: Any = None) -> np.ndarray:
    """Probabilities for every row from a `WeakSupervisor` that did not see that row (k-fold cross-fitting).

    Confident learning needs such out-of-sample probabilities: a model scoring its own training rows agrees with their
    (possibly wrong) labels.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    folds = max(2, min(folds, len(labels)))
    counts = np.bincount(labels, minlength=n_classes)
    # Stratify when every present class can appear in every fold; else plain shuffled folds.
    splitter: Any = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts[counts > 0].min() >= folds
                     else KFold(folds, shuffle=True, random_state=seed))
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    texts = list(texts)
    for train, held in splitter.split(np.zeros(len(labels)), labels):
        model = WeakSupervisor(features, C=C, seed=seed, embedder=embedder)  # type: ignore[arg-type]
        model.fit([texts[i] for i in train], labels[train], n_classes)
        out[held] = model.predict_proba([texts[i] for i in held])
    return out

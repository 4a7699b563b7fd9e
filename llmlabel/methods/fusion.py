"""LLM + classifier fusion: a weighted product of experts of the LLM's label distribution and a cheap classifier's
(by default logistic regression on MiniLM embeddings), with the weight cross-fitted over the whole labeled pool.

    p(y | x)  ∝  p_LLM(y | x)^w · p_classifier(y | x)^(1 − w)

w = 1 is the LLM alone, w = 0 the classifier alone. The weight is chosen by `llmlabel.tuning.choose`: every pool
row gets the classifier's out-of-fold distribution (k folds) and the LLM's (the LLM is not fit on the pool), each
weight is scored by cross-fitted log-loss, and the LLM gets a weight only when the best weight's paired gain over
the classifier alone is beyond the row-to-row noise. The classifier alone is taken at its best exponent
(p_classifier^(1−w), renormalized), so the LLM has to beat what merely softening an overconfident classifier gives.
The classifier is then refit on the whole pool; with weight 0 the results are exactly the classifier's.
"""

from __future__ import annotations

import copy

import numpy as np

from llmlabel.methods.base import LabelingMethod
from llmlabel.tuning import FOLDS, Z, choose, cross_fit, fold_ids, score

#: candidate weights of the LLM (0: the classifier alone)
GRID = tuple(round(w, 1) for w in np.linspace(0, 1, 11))


class Fusion(LabelingMethod):
    """Weighted product of the Labeler's distribution and a classifier's.

    Args:
        classifier: registry name ('logreg_embeddings', 'knn_vote', 'logreg_tfidf') or an unfitted
            `TextClassifier` (copied for each fold).
        classifier_options: options for a classifier given by name.
        weight: the LLM's weight w in [0, 1]; None cross-fits it over the pool (grid of 0.1).
        folds: cross-fitting folds.
        metric: what the weight is chosen by: 'log_loss' (default), 'macro_f1' or 'accuracy'.
        z: the paired z the best weight's gain over the classifier alone needs.
    """

    name = "fusion"

    def __init__(self, labeler, seed: int = 0, classifier: object = "logreg_embeddings",
                 classifier_options: dict | None = None, weight: float | None = None, folds: int = FOLDS,
                 metric: str = "log_loss", z: float = Z):
        super().__init__(labeler, seed)
        from llmlabel.classifiers.base import make_classifier
        from llmlabel.tuning import check_metric

        if isinstance(classifier, str):
            classifier = make_classifier(classifier, labels=self.task.names, seed=seed, **(classifier_options or {}))
        check_metric(metric)
        self.classifier = classifier
        self.weight = weight
        self.folds = folds
        self.metric = metric
        self.z = z

    @staticmethod
    def _joined(texts, pairs):
        return [t if p is None else f"{t}\n{p}" for t, p in zip(texts, pairs)]

    def classifier_out_of_fold(self, joined: list[str], labels: list[str], folds: np.ndarray,
                               keep: list | None = None) -> np.ndarray:
        """Every pool row's distribution from a copy of the classifier fit on the other folds (the fitted copies are
        appended to `keep` when given)."""
        def fit_predict(train, held):
            clf = copy.deepcopy(self.classifier).fit([joined[i] for i in train], [labels[i] for i in train])
            if keep is not None:
                keep.append(clf)
            return clf.predict_proba([joined[i] for i in held])

        return cross_fit(fit_predict, folds)

    def _fit(self, pool, dev):
        pool = pool + dev  # cross-fitting uses every labeled row; nothing is held out
        texts, pairs = [e.text for e in pool], [e.text_pair for e in pool]
        joined, labels = self._joined(texts, pairs), [e.label for e in pool]
        if self.weight is None:
            gold = np.asarray([self.task.names.index(y) for y in labels])
            folds = fold_ids(gold, self.folds, self.seed)
            cls = self.classifier_out_of_fold(joined, labels, folds)
            llm = self.llm_probs(texts, pairs)
            # The classifier alone at its best exponent: the LLM must beat softening, not only the raw classifier.
            alone = {w: self._combine(np.ones_like(cls), cls, w) for w in GRID[:-1]}
            exponent_w = min(alone, key=lambda w: (score(alone[w], gold, "log_loss"), w))
            candidates = {0.0: alone[exponent_w], **{w: self._combine(llm, cls, w) for w in GRID[1:]}}
            choice = choose(candidates, gold, baseline=0.0, metric=self.metric, z=self.z)
            self.weight = float(choice.chosen)
            choice.extra.update(folds=self.folds, classifier_exponent=round(1 - exponent_w, 1),
                                classifier_alone_log_loss=round(score(cls, gold, "log_loss"), 5),
                                llm_alone_log_loss=round(score(llm, gold, "log_loss"), 5))
            self.report["selection"] = choice.as_dict()
            self.report["llm_earned_weight"] = choice.earned
        self.classifier.fit(joined, labels)
        self.report["weight"] = self.weight

    @staticmethod
    def _combine(llm: np.ndarray, cls: np.ndarray, w: float) -> np.ndarray:
        logp = w * np.log(np.maximum(llm, 1e-12)) + (1 - w) * np.log(np.maximum(cls, 1e-12))
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def _probs(self, texts, pairs):
        cls = self.classifier.predict_proba(self._joined(texts, pairs))
        if self.weight == 0:
            return cls  # the classifier alone: its results exactly, and no LLM call
        return self._combine(self.llm_probs(texts, pairs), cls, self.weight)

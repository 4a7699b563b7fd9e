"""Stacking: a logistic regression on the classifier's and the LLM's cross-fitted log-probabilities.

Where fusion has one weight for the LLM, the stacker has one per (label, source label) pair, so it can learn
per-label trust: follow the LLM on the labels it knows, the classifier elsewhere. The classifier's features of pool
rows are out-of-fold (k folds), the LLM's need no folds (it is not fit on the pool). The stacker itself is judged by
a second, nested cross-fit, against the better of the classifier's own out-of-fold distribution and the same
stacker on the classifier's features alone (so the LLM's features must beat mere recalibration), through
`llmlabel.tuning.choose`; when the LLM does not earn its place beyond the noise, the method is the classifier alone,
exactly (refit on the whole pool). When the stacker is used, new rows' classifier features come from the k fold
classifiers (averaged in log space), the same kind of features the stacker was trained on.
"""

from __future__ import annotations

import numpy as np

from llmlabel.errors import MissingDependencyError
from llmlabel.methods.base import LabelingMethod
from llmlabel.methods.fusion import Fusion
from llmlabel.tuning import FOLDS, Z, choose, cross_fit, fold_ids, score


class Stacking(LabelingMethod):
    """Logistic regression on [log p_classifier, log p_LLM], used only when it beats the classifier alone.

    Args:
        classifier: registry name ('logreg_embeddings', 'knn_vote', 'logreg_tfidf') or an unfitted
            `TextClassifier` (copied for each fold).
        classifier_options: options for a classifier given by name.
        c: the stacker's inverse regularization strength.
        folds: cross-fitting folds.
        z: the paired z the stacker's log-loss gain over the classifier-only stacker needs.
        force: use the stacker even when the LLM did not earn it (for ablations).
    """

    name = "stacking"

    def __init__(self, labeler, seed: int = 0, classifier: object = "logreg_embeddings",
                 classifier_options: dict | None = None, c: float = 1.0, folds: int = FOLDS, z: float = Z,
                 force: bool = False):
        super().__init__(labeler, seed)
        self._fusion = Fusion(labeler, seed, classifier=classifier, classifier_options=classifier_options,
                              weight=0.0, folds=folds)  # holds the classifier and its cross-fitting
        self.classifier = self._fusion.classifier
        self.c = c
        self.folds = folds
        self.z = z
        self.force = force
        self.stacker = None

    def _features(self, cls: np.ndarray, llm: np.ndarray | None) -> np.ndarray:
        parts = [np.log(np.maximum(cls, 1e-6))] + ([] if llm is None else [np.log(np.maximum(llm, 1e-6))])
        return np.concatenate(parts, axis=1)

    def _fit_stacker(self, features: np.ndarray, y: np.ndarray):
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise MissingDependencyError("scikit-learn", "the stacking method") from None
        return LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed).fit(features, y)

    def _stacker_proba(self, model, features: np.ndarray) -> np.ndarray:
        out = np.full((len(features), len(self.task.names)), 0.0)
        out[:, model.classes_] = model.predict_proba(features)
        return out

    def _fit(self, pool, dev):
        pool = pool + dev
        texts, pairs = [e.text for e in pool], [e.text_pair for e in pool]
        joined, labels = Fusion._joined(texts, pairs), [e.label for e in pool]
        gold = np.asarray([self.task.names.index(y) for y in labels])
        folds = fold_ids(gold, self.folds, self.seed)
        self.fold_classifiers: list = []
        cls = self._fusion.classifier_out_of_fold(joined, labels, folds, keep=self.fold_classifiers)
        llm = self.llm_probs(texts, pairs)
        both, alone = self._features(cls, llm), self._features(cls, None)
        # Nested: the stacker's own out-of-fold predictions (new folds, so no row's features and stacker share one).
        inner = fold_ids(gold, self.folds, self.seed + 1)

        def stacked(features):
            return cross_fit(lambda train, held: self._stacker_proba(
                self._fit_stacker(features[train], gold[train]), features[held]), inner)

        # The classifier alone is the better of its own out-of-fold distribution and the stacker on its features.
        recalibrated = stacked(alone)
        raw_loss, recalibrated_loss = score(cls, gold, "log_loss"), score(recalibrated, gold, "log_loss")
        candidates = {"classifier": recalibrated if recalibrated_loss < raw_loss else cls, "stacked": stacked(both)}
        choice = choose(candidates, gold, baseline="classifier", metric="log_loss", z=self.z)
        choice.extra.update(folds=self.folds, classifier_alone_log_loss=round(raw_loss, 5),
                            classifier_recalibrated_log_loss=round(recalibrated_loss, 5),
                            llm_alone_log_loss=round(score(llm, gold, "log_loss"), 5))
        self.classifier.fit(joined, labels)
        self.stacker = self._fit_stacker(both, gold) if choice.earned or self.force else None
        self.report.update(selection=choice.as_dict(), llm_earned_weight=choice.earned,
                           used=("stacked" if self.stacker is not None else "classifier"))

    def _probs(self, texts, pairs):
        joined = Fusion._joined(texts, pairs)
        if self.stacker is None:
            return self.classifier.predict_proba(joined)
        # The stacker learned on fold classifiers' outputs (each fit on 1 - 1/k of the pool); a classifier refit on
        # the whole pool is more confident than those, so new rows get the same kind of features: the fold
        # classifiers' distributions, averaged in log space.
        logs = np.mean([np.log(np.maximum(c.predict_proba(joined), 1e-6)) for c in self.fold_classifiers], axis=0)
        return self._stacker_proba(self.stacker, self._features(np.exp(logs), self.llm_probs(texts, pairs)))

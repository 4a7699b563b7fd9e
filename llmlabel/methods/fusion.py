"""LLM + retrieval fusion: a weighted product of experts of the LLM's label distribution and a cheap classifier's
(by default the kNN label vote over sentence embeddings), with the weight chosen on a held-out dev slice.

    p(y | x)  ∝  p_LLM(y | x)^w · p_retrieval(y | x)^(1 − w)

w = 1 is the LLM alone, w = 0 the retrieval baseline alone, so on the dev slice fusion is never worse than either.
"""

from __future__ import annotations

import numpy as np

from llmlabel.methods.base import LabelingMethod


class Fusion(LabelingMethod):
    """Weighted product of the Labeler's distribution and a classifier's.

    Args:
        classifier: registry name ('knn_vote', 'logreg_embeddings', 'logreg_tfidf') or a fitted-able
            `TextClassifier`.
        classifier_options: options for a classifier given by name.
        weight: the LLM's weight w in [0, 1]; None chooses it on the dev slice (grid of 0.1), else 0.5.
    """

    name = "fusion"

    def __init__(self, labeler, seed: int = 0, classifier: object = "knn_vote",
                 classifier_options: dict | None = None, weight: float | None = None):
        super().__init__(labeler, seed)
        from llmlabel.classifiers.base import make_classifier

        if isinstance(classifier, str):
            classifier = make_classifier(classifier, labels=self.task.names, seed=seed, **(classifier_options or {}))
        self.classifier = classifier
        self.weight = weight

    @staticmethod
    def _joined(texts, pairs):
        return [t if p is None else f"{t}\n{p}" for t, p in zip(texts, pairs)]

    def _fit(self, pool, dev):
        self.classifier.fit(self._joined([e.text for e in pool], [e.text_pair for e in pool]),
                            [e.label for e in pool])
        if self.weight is None and dev:
            texts, pairs = [e.text for e in dev], [e.text_pair for e in dev]
            llm = self.llm_probs(texts, pairs)
            cls = self.classifier.predict_proba(self._joined(texts, pairs))
            grid = [round(w, 1) for w in np.linspace(0, 1, 11)]
            scores = {w: self.accuracy(self._combine(llm, cls, w), dev) for w in grid}
            best = max(scores.values())
            # Among equally good weights, the one nearest the middle (both experts kept) generalizes best.
            self.weight = min((w for w in grid if scores[w] == best), key=lambda w: abs(w - 0.5))
            self.report["dev_accuracy_by_weight"] = scores
        elif self.weight is None:
            self.weight = 0.5
        self.report["weight"] = self.weight

    @staticmethod
    def _combine(llm: np.ndarray, cls: np.ndarray, w: float) -> np.ndarray:
        logp = w * np.log(np.maximum(llm, 1e-12)) + (1 - w) * np.log(np.maximum(cls, 1e-12))
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def _probs(self, texts, pairs):
        return self._combine(self.llm_probs(texts, pairs), self.classifier.predict_proba(self._joined(texts, pairs)),
                             self.weight)

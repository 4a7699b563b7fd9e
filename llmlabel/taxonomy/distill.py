"""TnT-LLM phase 2: label a sample with the taxonomy through the core `Labeler` (score mode, label descriptions in the
prompt), train cheap students on those LLM labels, and measure them: agreement with the LLM (Cohen's kappa on held-out
LLM-labeled rows), throughput, and, where gold exists, ARI / NMI (and accuracy when the label names are gold names).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

import numpy as np

#: Separator between a parent and a child label in two-level label names ("Travel > Flights").
LEVEL_SEP = " > "


class TntStudent(ABC):
    """A cheap classifier trained on LLM labels: one of `llmlabel.classifiers` (the family every baseline and fusion
    prior comes from) plus what phase 2 needs around it -- a sample where the LLM used one label only, rows the LLM
    left unlabeled (None), and a joblib-able state. Registered by name in `llmlabel.taxonomy.students`."""

    name = "student"
    #: the `llmlabel.classifiers` registry name this student trains
    classifier = ""

    def __init__(self, seed: int = 0, embedder: Any = None):
        self.seed = seed
        self.embedder = embedder
        self.constant: str | None = None
        self.model: Any = None

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """Options of the underlying classifier."""

    def fit(self, texts: list[str], labels: list[Any]) -> "TntStudent":
        """Train; with a single class in `labels`, predict it always (logistic regression needs two)."""
        from llmlabel.classifiers.base import make_classifier

        if len(set(labels)) < 2:
            self.constant = labels[0] if labels else None
            return self
        names = [_NONE if y is None else str(y) for y in labels]
        self.model = make_classifier(self.classifier, seed=self.seed, **self.options()).fit(texts, names)
        return self

    def predict(self, texts: list[str]) -> tuple[list[str | None], list[float]]:
        """(label, confidence) for each text."""
        if self.constant is not None or self.model is None:
            return [self.constant] * len(texts), [1.0] * len(texts)
        probs = self.model.predict_proba(texts)
        best = probs.argmax(axis=1)
        labels = [None if self.model.labels[b] == _NONE else self.model.labels[b] for b in best]
        return labels, [float(p[b]) for p, b in zip(probs, best)]

    def state(self) -> dict[str, Any]:
        """What `joblib` saves: enough to predict again (the fitted scikit-learn model and its class names)."""
        return {"classifier": self.name, "model": getattr(self.model, "model", None), "constant": self.constant,
                "classes": None if self.model is None else self.model.labels}


#: Stands in for rows the LLM left unlabeled, so they can be a class of their own.
_NONE = "\x00none"


class EmbeddingLR(TntStudent):
    """Logistic regression on MiniLM sentence embeddings (`logreg_embeddings`)."""

    name = "embedding_lr"
    classifier = "logreg_embeddings"

    def options(self) -> dict[str, Any]:
        """C = 4; the shared (disk-cached) embedder."""
        return {"c": 4.0, "embedder": self.embedder if self.embedder is not None else "minilm"}

    def state(self) -> dict[str, Any]:
        """Adds the embedding model's name."""
        return {**super().state(), "embedder": getattr(self.embedder, "model_name", None)}


class TfidfLR(TntStudent):
    """Logistic regression on word and bigram TF-IDF (`logreg_tfidf`)."""

    name = "tfidf_lr"
    classifier = "logreg_tfidf"

    def options(self) -> dict[str, Any]:
        """C = 4."""
        return {"c": 4.0}

    def state(self) -> dict[str, Any]:
        """Adds the fitted vectorizer."""
        return {**super().state(), "vectorizer": getattr(self.model, "vectorizer", None)}


# -- metrics ------------------------------------------------------------------------------------------------------
def cluster_scores(gold: list[Any], pred: list[Any]) -> dict[str, float]:
    """Adjusted Rand index and NMI between two assignments of the same rows (label names need not match)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = ["\x00none" if p is None else str(p) for p in pred]
    return {"ari": round(float(adjusted_rand_score(gold, pred)), 4),
            "nmi": round(float(normalized_mutual_info_score(gold, pred)), 4), "rows": len(gold)}


def coverage(pred: list[Any], other: str | None) -> float:
    """Share of rows given a label other than the catch-all (and not None)."""
    if not pred:
        return 0.0
    return round(sum(p is not None and p != other and not str(p).endswith(f"{LEVEL_SEP}{other}")
                     for p in pred) / len(pred), 4)


def agreement(a: list[Any], b: list[Any]) -> dict[str, float]:
    """Raw agreement and Cohen's kappa between two labelings."""
    from llmlabel.metrics import cohen_kappa

    if not a:
        return {"agreement": 0.0, "kappa": 0.0, "rows": 0}
    a = ["\x00none" if x is None else x for x in a]
    b = ["\x00none" if x is None else x for x in b]
    return {"agreement": round(sum(x == y for x, y in zip(a, b)) / len(a), 4),
            "kappa": round(float(cohen_kappa(a, b)), 4), "rows": len(a)}


def gold_report(gold: list[Any], pred: list[Any], names: list[str], gold_names: set[str] | None = None
                ) -> dict[str, Any]:
    """ARI / NMI against gold; accuracy too when every taxonomy name is a gold label name (a person's taxonomy).

    `gold_names`: every gold label of the corpus (default: those in `gold`)."""
    report: dict[str, Any] = cluster_scores([str(g) for g in gold], pred)
    gold_names = gold_names or {str(g) for g in gold}
    if names and set(names) <= gold_names:
        report["accuracy"] = round(sum(str(g) == p for g, p in zip(gold, pred)) / len(gold), 4) if gold else 0.0
    return report


def label_counts(pred: list[Any]) -> dict[str, int]:
    """How many rows got each label, most frequent first."""
    return dict(Counter("(none)" if p is None else str(p) for p in pred).most_common())


def time_student(student: TntStudent, texts: list[str]) -> float:
    """Items/s of `student.predict` on `texts` (features computed from scratch: the embedding cache is bypassed)."""
    holder = student.model if hasattr(student.model, "embedder") else student
    embedder = getattr(holder, "embedder", None)
    if embedder is not None and getattr(embedder, "cache_path", None) is not None:
        from llmlabel.embeddings import Embedder

        fresh = Embedder.__new__(Embedder)
        fresh.__dict__.update(embedder.__dict__)
        fresh.cache_path, fresh._db = None, None  # same loaded model, no disk cache
        holder.embedder = fresh
    try:
        student.predict(texts[:8])  # warm-up: first-call costs (thread pools, lazy init) are not throughput
        start = time.perf_counter()
        student.predict(texts)
        seconds = time.perf_counter() - start
    finally:
        if embedder is not None:
            holder.embedder = embedder
    return len(texts) / seconds if seconds > 0 else float("inf")


def split_holdout(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) index lists; at least one row on each side when n >= 2."""
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(n)]
    held = min(max(int(round(n * share)), 1 if n >= 2 and share > 0 else 0), max(n - 1, 0))
    return sorted(order[held:]), sorted(order[:held])

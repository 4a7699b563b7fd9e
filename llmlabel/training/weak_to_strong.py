"""Weak-to-strong generalization (Burns et al. 2023): can a strong student trained on a weak supervisor's labels beat
the supervisor, and how much of the gap to a gold-trained student does it recover?

One seed of the experiment (`run_seed`):

1. shuffle the labeled pool and split it into halves A and B;
2. train the weak supervisor on gold labels from A (TF-IDF or MiniLM logistic regression; or skip training and use a
   zero-shot LLM labeler's probabilities), and label half B with it;
3. train the strong student on B's weak labels: (a) plain cross-entropy, (b) the auxiliary confidence loss, and
   optionally (c) bootstrapping through intermediate students;
4. train the same student on B's gold labels: the ceiling;
5. report test accuracy of each and PGR = (w2s - weak) / (ceiling - weak).

Bootstrapping (Burns et al. section 4.3.1) goes through intermediate students: each is cross-fitted on the two halves
of B (trained on one half's current labels, it labels the other), so every row of B gets a label from an intermediate
that never saw it; the strong student then trains on the last intermediate's labels with cross-entropy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmlabel.errors import ConfigError
from llmlabel.training.student import FeatureCache, Student, StudentConfig


class WeakConfig(BaseModel):
    """The weak supervisor of a weak-to-strong run."""

    model_config = ConfigDict(extra="forbid")
    #: 'tfidf' / 'minilm': logistic regression on gold labels of half A; 'labeler': the recipe's zero-shot LLM
    kind: Literal["tfidf", "minilm", "labeler"] = "tfidf"
    #: gold rows of half A it trains on (None = all of A); few rows keep it clearly below the ceiling
    train_size: int | None = Field(None, gt=1)
    #: logistic-regression inverse regularization; 'auto' picks it by 3-fold cross-validated log-loss, so the soft
    #: labels are calibrated rather than flattened by a default regularizer
    C: float | Literal["auto"] = "auto"
    #: train students on the weak model's probabilities ('soft', as Burns et al.) or its argmax ('hard')
    targets: Literal["soft", "hard"] = "soft"


def pgr(weak: float, w2s: float, ceiling: float, min_gap: float = 1e-9) -> float:
    """Performance gap recovered: (w2s - weak) / (ceiling - weak); NaN when the ceiling is not above the weak model
    (the ratio is undefined there)."""
    gap = ceiling - weak
    if gap <= min_gap:
        return float("nan")
    return (w2s - weak) / gap


def split_halves(n: int, half_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets A and B of `half_size` rows each, from a seeded shuffle of `n` pool rows."""
    if 2 * half_size > n:
        raise ConfigError(f"half_size {half_size} needs {2 * half_size} labeled rows, the pool has {n}")
    order = np.random.default_rng(seed).permutation(n)
    return order[:half_size], order[half_size:2 * half_size]


def _choose_c(features: str, texts: Sequence[str], labels: np.ndarray, n_classes: int, seed: int,
              embedder: Any = None) -> float:
    """Regularization with the best 3-fold cross-validated log-loss, from a small grid."""
    from llmlabel.training.weak import out_of_fold_probs

    best, best_loss = 1.0, float("inf")
    for c in (0.1, 1.0, 10.0, 100.0):
        probs = out_of_fold_probs(texts, labels, n_classes, features, folds=3, seed=seed, C=c, embedder=embedder)
        loss = -np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-9, None)))
        if loss < best_loss:
            best, best_loss = c, loss
    return best


def train_weak(kind: str, texts: Sequence[str], labels: np.ndarray, n_classes: int, C: float | str = "auto",
               seed: int = 0, embedder: Any = None) -> tuple[Any, float]:
    """A fitted `WeakSupervisor` on gold (texts, labels), and the C it used."""
    from llmlabel.training.weak import WeakSupervisor

    c = _choose_c(kind, texts, labels, n_classes, seed, embedder) if C == "auto" else float(C)
    return WeakSupervisor(kind, C=c, seed=seed, embedder=embedder).fit(texts, labels, n_classes), c  # type: ignore


def accuracy(probs: np.ndarray, gold: np.ndarray) -> float:
    """Share of rows whose most probable class is the gold one."""
    return float((np.asarray(probs).argmax(axis=1) == gold).mean()) if len(gold) else 0.0


def _targets(probs: np.ndarray, kind: str) -> np.ndarray:
    if kind == "soft":
        return probs
    return np.asarray(probs).argmax(axis=1)


def _cross_fit(texts: list[str], targets: np.ndarray, labels: Sequence[str], config: StudentConfig,
               features: FeatureCache, seed: int, progress: bool) -> np.ndarray:
    """Out-of-sample probabilities on every row: a student per half, each labeling the other half."""
    order = np.random.default_rng(seed + 7).permutation(len(texts))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    out = np.zeros((len(texts), len(labels)), dtype=np.float32)
    for train, held in (halves, halves[::-1]):
        student = Student(labels, config, features=features)
        student.fit([texts[i] for i in train], targets[train], progress=progress)
        out[held] = student.predict_proba([texts[i] for i in held])
        del student
    return out


def _weak_labels(pool_texts: Sequence[str], pool_gold: np.ndarray, test_texts: list[str], a_idx: np.ndarray,
                 b_idx: np.ndarray, n_classes: int, seed: int, weak: WeakConfig,
                 weak_probs: tuple[np.ndarray, np.ndarray] | None, embedder: Any,
                 record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The weak supervisor's probabilities on half B and the test rows (precomputed, or a weak model trained on A)."""
    if weak_probs is not None:
        record["weak_train_rows"] = 0
        return weak_probs[0][b_idx], weak_probs[1]
    if weak.kind == "labeler":
        raise ConfigError("weak.kind 'labeler' needs the labeler's probabilities (weak_probs)")
    train = a_idx[: weak.train_size] if weak.train_size else a_idx
    model, c = train_weak(weak.kind, [pool_texts[i] for i in train], pool_gold[train], n_classes, weak.C, seed,
                          embedder)
    record["weak_train_rows"], record["weak_C"] = len(train), c
    return model.predict_proba([pool_texts[i] for i in b_idx]), model.predict_proba(test_texts)


def run_seed(pool_texts: Sequence[str], pool_gold: Sequence[int], test_texts: Sequence[str],
             test_gold: Sequence[int], labels: Sequence[str], half_size: int, seed: int,
             weak: WeakConfig | None = None, student: StudentConfig | None = None,
             losses: Sequence[str] = ("ce", "aux"), bootstrap: Sequence[dict[str, Any]] = (),
             features: FeatureCache | None = None, weak_probs: tuple[np.ndarray, np.ndarray] | None = None,
             embedder: Any = None, progress: bool = True) -> dict[str, Any]:
    """One seed of the weak-to-strong experiment; returns accuracies, PGRs and timings.

    Args:
        pool_texts, pool_gold: the labeled pool (gold class indices) that is split into halves A and B.
        test_texts, test_gold: held-out rows every model is scored on.
        labels: class names.
        half_size: rows per half.
        weak: the weak supervisor (ignored when `weak_probs` is given).
        student: the strong student's settings (its `loss` and `seed` are set per variant).
        losses: w2s variants to train: 'ce' and/or 'aux'.
        bootstrap: intermediate students (StudentConfig overrides, e.g. [{"method": "head"}]); empty = no
            bootstrapping variant.
        features: a shared `FeatureCache` for the student's base model.
        weak_probs: precomputed weak probabilities (pool rows, test rows), e.g. from a zero-shot labeler.
        embedder: an `Embedder` to reuse for MiniLM features.
    """
    weak = weak or WeakConfig()
    student = student or StudentConfig()
    for loss in losses:
        if loss not in ("ce", "aux"):
            from llmlabel.errors import unknown

            raise ConfigError(unknown("weak-to-strong loss", loss, ["aux", "ce"]))
    pool_gold_a = np.asarray(pool_gold, dtype=np.int64)
    test_gold_a = np.asarray(test_gold, dtype=np.int64)
    n_classes = len(labels)
    a_idx, b_idx = split_halves(len(pool_texts), half_size, seed)
    b_texts = [pool_texts[i] for i in b_idx]
    b_gold = pool_gold_a[b_idx]
    seconds: dict[str, float] = {}
    record: dict[str, Any] = {"seed": seed, "half_size": half_size}

    start = time.perf_counter()
    b_weak, test_weak = _weak_labels(pool_texts, pool_gold_a, list(test_texts), a_idx, b_idx, n_classes, seed, weak,
                                     weak_probs, embedder, record)
    seconds["weak"] = time.perf_counter() - start
    record["weak"] = accuracy(test_weak, test_gold_a)
    record["weak_label_accuracy"] = accuracy(b_weak, b_gold)  # how noisy the labels the student learns from are
    weak_test_pred = test_weak.argmax(axis=1)

    if features is None:
        features = FeatureCache(student.model, student.max_length, student.feature_dtype, student.device)

    def train_eval(name: str, targets: Any, config: StudentConfig) -> None:
        begin = time.perf_counter()
        model = Student(labels, config, features=features)
        model.fit(b_texts, targets, progress=progress)
        probs = model.predict_proba(list(test_texts))
        record[name] = accuracy(probs, test_gold_a)
        record.setdefault("agreement_with_weak", {})[name] = float((probs.argmax(axis=1) == weak_test_pred).mean())
        seconds[name] = time.perf_counter() - begin

    weak_targets = _targets(b_weak, weak.targets)
    for loss in losses:
        train_eval(f"w2s_{loss}", weak_targets, student.model_copy(update={"loss": loss, "seed": seed}))
    if bootstrap:
        begin = time.perf_counter()
        current = b_weak
        for step, overrides in enumerate(bootstrap):
            inter = StudentConfig(**{**student.model_dump(), "loss": "ce", "seed": seed + step, **overrides})
            current = _cross_fit(b_texts, _targets(current, weak.targets), labels, inter, features, seed + step,
                                 progress)
        record["bootstrap_label_accuracy"] = accuracy(current, b_gold)
        seconds["bootstrap_intermediates"] = time.perf_counter() - begin
        train_eval("w2s_boot", _targets(current, weak.targets), student.model_copy(update={"loss": "ce",
                                                                                           "seed": seed}))
    train_eval("ceiling", b_gold, student.model_copy(update={"loss": "ce", "seed": seed}))
    record["pgr"] = {name: pgr(record["weak"], record[name], record["ceiling"])
                     for name in record["agreement_with_weak"] if name.startswith("w2s_")}
    record["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return record


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if not np.isnan(v)], dtype=np.float64)
    if not len(array):
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": int(len(array))}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and seed standard deviation of every accuracy and PGR, and the paired aux - CE difference.

    "aux beats CE beyond the spread" means the mean paired difference exceeds its own seed standard deviation and
    is positive in every seed.
    """
    if not records:
        return {}
    names = ["weak", "ceiling"] + [k for k in records[0] if k.startswith("w2s_")]
    out: dict[str, Any] = {name: _mean_std([r[name] for r in records]) for name in names}
    out["pgr"] = {name: _mean_std([r["pgr"][name] for r in records]) for name in records[0]["pgr"]}
    if "w2s_aux" in records[0] and "w2s_ce" in records[0]:
        diffs = [r["w2s_aux"] - r["w2s_ce"] for r in records]
        stats = _mean_std(diffs)
        stats["aux_beats_ce_beyond_spread"] = bool(len(diffs) > 1 and min(diffs) > 0 and stats["mean"] > stats["std"])
        out["aux_minus_ce"] = stats
    return out

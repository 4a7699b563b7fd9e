"""Audit a labeled dataset: rank its rows by how likely their given label is wrong, with the evidence for each.

Signals, each an (N, C) matrix of out-of-sample label probabilities (no signal has seen a row's given label when it
scores that row):

- classifier signals: cheap text classifiers from `llmlabel.classifiers`, cross-fitted over k folds (confident
  learning's classic input, Northcutt et al. 2021);
- LLM signals: the LLM's label probabilities, zero-shot or few-shot (demonstrations drawn from the other fold of the
  data, or from a separate pool, never the row itself), each prompt variant calibrated (batch or contextual
  calibration, then a temperature fit by cross-fitting on the given labels);
- the ensemble: the mean of the classifier ensemble and the LLM ensemble (each the mean of its signals).

cleanlab does the confident learning: `cleanlab.rank.get_label_quality_scores` scores each row's given label (the
suspect score is 1 - quality) and `cleanlab.filter.find_label_issues` flags rows per signal. The ranked output
(`suspects.jsonl`) names, per row, the given label, the suggested label (the ensemble's most likely other label),
the score and which signals agree (flag the row, or put another label first).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from llmlabel.errors import ConfigError, MissingDependencyError

#: cleanlab's label-quality scores (see cleanlab.rank.get_label_quality_scores)
QUALITY_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
#: cleanlab's issue filters (see cleanlab.filter.find_label_issues)
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")


def _cleanlab() -> Any:
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise MissingDependencyError("cleanlab", "label audits") from None
    return cleanlab


def _one_thread() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


# -- signals -------------------------------------------------------------------------------------------------------
def fold_ids(n_rows: int, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold id per row: stratified by label when every present label has at least `folds` rows, else shuffled."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = np.asarray(labels)
    counts = np.bincount(labels)
    folds = max(2, min(folds, n_rows))
    splitter: Any = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts[counts > 0].min() >= folds
                     else KFold(folds, shuffle=True, random_state=seed))
    out = np.zeros(n_rows, dtype=np.int64)
    for part, (_, held) in enumerate(splitter.split(np.zeros(n_rows), labels)):
        out[held] = part
    return out


def classifier_signal(texts: Sequence[str], labels: np.ndarray, names: Sequence[str], classifier: str = "logreg_tfidf",
                      folds: int = 5, seed: int = 0, options: dict[str, Any] | None = None) -> np.ndarray:
    """Out-of-fold probabilities of a registered cheap classifier trained on the given labels (k-fold cross-fitting):
    every row is scored by a model that did not train on it."""
    from llmlabel.classifiers.base import make_classifier

    labels = np.asarray(labels, dtype=np.int64)
    options = dict(options or {})
    if "embedder" in options or classifier in ("logreg_embeddings", "knn_vote"):
        from llmlabel.embeddings import make_embedder

        options["embedder"] = make_embedder(options.get("embedder", "minilm"))  # one embedder for every fold
    fold = fold_ids(len(texts), labels, folds, seed)
    out = np.zeros((len(texts), len(names)))
    texts = [str(t) for t in texts]
    with _one_thread():
        for part in np.unique(fold):
            train, held = np.flatnonzero(fold != part), np.flatnonzero(fold == part)
            model = make_classifier(classifier, labels=list(names), seed=seed, **options)
            model.fit([texts[i] for i in train], [names[labels[i]] for i in train])
            out[held] = model.predict_proba([texts[i] for i in held])
    return _normalized(out)


def _normalized(probs: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    probs = np.clip(np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0), floor, None)
    return probs / probs.sum(axis=1, keepdims=True)


def temperature_calibrate(probs: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Probabilities re-tempered p^(1/T) (renormalized) with T fit by maximum likelihood on the given labels of the
    other folds (cross-fitted: a row's own label never sets its temperature). Mostly-right labels are enough to fix
    an LLM that is far too sure or too flat; a label error costs a fit only its small share of the likelihood."""
    logp = np.log(_normalized(probs))
    labels = np.asarray(labels, dtype=np.int64)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    fold = np.random.default_rng(seed).permutation(len(labels)) % max(2, folds)
    out = np.empty_like(logp)
    for part in np.unique(fold):
        train, held = fold != part, fold == part
        best, best_ll = 1.0, -np.inf
        for t in grid:
            scaled = logp[train] / t
            scaled -= scaled.max(axis=1, keepdims=True)
            ll = (scaled[np.arange(train.sum()), labels[train]] - np.log(np.exp(scaled).sum(axis=1))).mean()
            if ll > best_ll:
                best, best_ll = t, ll
        scaled = logp[held] / best
        scaled -= scaled.max(axis=1, keepdims=True)
        out[held] = np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True)
    return out


def llm_signal(label_rows: Callable[[list[int], list[dict[str, Any]] | None], np.ndarray], labels: np.ndarray,
               names: Sequence[str], texts: Sequence[str], shots: int = 0, folds: int = 2, seed: int = 0,
               pool: list[dict[str, Any]] | None = None) -> np.ndarray:
    """LLM probabilities for every row, zero-shot (`shots` 0) or few-shot with `shots` demonstrations that exclude
    the row: drawn from the given labels of the rows in the other folds (or from `pool`, a separate labeled list of
    {text, label} dicts), one fixed set per fold.

    `label_rows(indices, examples)` returns the (len(indices), C) probabilities of those rows with those
    demonstrations (see `llmlabel.stats.recipes` for the one over a Labeler).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_rows = len(labels)
    if shots <= 0:
        return _normalized(label_rows(list(range(n_rows)), None))
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n_rows) % max(2, folds)
    out = np.zeros((n_rows, len(names)))
    for part in np.unique(fold):
        mine = [int(i) for i in np.flatnonzero(fold == part)]
        if pool is not None:
            picks = rng.choice(len(pool), size=min(shots, len(pool)), replace=False)
            examples = [dict(pool[int(j)]) for j in picks]
        else:
            others = np.flatnonzero(fold != part)
            picks = _distinct_label_picks(others, labels, shots, rng)
            examples = [{"text": str(texts[j]), "label": names[labels[j]]} for j in picks]
        out[mine] = label_rows(mine, examples)
    return _normalized(out)


def _distinct_label_picks(candidates: np.ndarray, labels: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Up to `k` rows of `candidates`, of different labels as far as there are enough labels."""
    order = rng.permutation(candidates)
    picks, seen = [], set()
    for i in order:
        if labels[i] not in seen:
            picks.append(int(i))
            seen.add(labels[i])
        if len(picks) == k:
            return picks
    for i in order:
        if int(i) not in picks:
            picks.append(int(i))
        if len(picks) == k:
            break
    return picks


# -- cleanlab ------------------------------------------------------------------------------------------------------
def suspicion(labels: np.ndarray, probs: np.ndarray, method: str = "self_confidence") -> np.ndarray:
    """1 - cleanlab's label-quality score of each row's given label (higher: more likely a label error)."""
    if method not in QUALITY_METHODS:
        from llmlabel.errors import unknown

        raise ConfigError(unknown("label-quality method", method, QUALITY_METHODS))
    cleanlab = _cleanlab()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quality = cleanlab.rank.get_label_quality_scores(np.asarray(labels, dtype=np.int64), _normalized(probs),
                                                         method=method)
    return 1.0 - np.asarray(quality, dtype=np.float64)


def flag_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """cleanlab's `find_label_issues` mask (True: the row's label is likely wrong)."""
    if filter_by not in FILTERS:
        from llmlabel.errors import unknown

        raise ConfigError(unknown("cleanlab filter", filter_by, FILTERS))
    cleanlab = _cleanlab()
    labels = np.asarray(labels, dtype=np.int64)
    with warnings.catch_warnings(), _one_thread():
        warnings.simplefilter("ignore")
        try:
            mask = cleanlab.filter.find_label_issues(labels, _normalized(probs), filter_by=filter_by, n_jobs=1)
        except (ValueError, IndexError):  # e.g. a class with too few rows for the noise-rate estimate
            mask = cleanlab.filter.find_label_issues(labels, _normalized(probs), filter_by="predicted_neq_given",
                                                     n_jobs=1)
    return np.asarray(mask, dtype=bool)


def combine(signals: dict[str, np.ndarray], groups: dict[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Ensemble probabilities: each group's mean over its signals, and 'ensemble' = the mean of the group means
    (so a group with more members does not outvote the other)."""
    out: dict[str, np.ndarray] = {}
    for group, members in groups.items():
        members = [m for m in members if m in signals]
        if members:
            out[group] = _normalized(np.mean([signals[m] for m in members], axis=0))
    if len(out) > 1:
        out["ensemble"] = _normalized(np.mean(list(out.values()), axis=0))
    elif out:
        out["ensemble"] = next(iter(out.values()))
    return out


def rank_suspects(labels: np.ndarray, names: Sequence[str], signals: dict[str, np.ndarray],
                  groups: dict[str, Sequence[str]], quality: str = "self_confidence",
                  filter_by: str = "prune_by_noise_rate", ids: Sequence[Any] | None = None,
                  top: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows ranked by the ensemble's suspect score, with each one's evidence, and per-signal counts.

    Returns (suspects, summary). Each suspect: row (0-based index), id, given_label, suggested_label (the ensemble's
    most likely label other than the given one), score (1 - label quality under the ensemble), flagged (cleanlab's
    find_label_issues on the ensemble), agree (signals that flag the row or rank another label first), and per-signal
    probabilities of the given and the suggested label. `top` keeps the first rows only (None: every row).
    """
    labels = np.asarray(labels, dtype=np.int64)
    merged = combine(signals, groups)
    ensemble = merged["ensemble"]
    score = suspicion(labels, ensemble, quality)
    every = {**signals, **{k: v for k, v in merged.items() if k not in signals}}
    flags = {name: flag_issues(labels, probs, filter_by) for name, probs in every.items()}
    others = ensemble.copy()
    others[np.arange(len(labels)), labels] = -1.0
    suggested = others.argmax(axis=1)
    order = np.argsort(-score, kind="stable")
    if top is not None:
        order = order[:top]
    suspects = []
    for i in order:
        agree = [name for name, probs in signals.items()
                 if flags[name][i] or int(probs[i].argmax()) != int(labels[i])]
        suspects.append({
            "row": int(i), "id": None if ids is None else ids[i], "given_label": names[labels[i]],
            "suggested_label": names[suggested[i]], "score": round(float(score[i]), 6),
            "flagged": bool(flags["ensemble"][i]), "agree": agree,
            "signals": {name: {"given": round(float(probs[i, labels[i]]), 4),
                               "suggested": round(float(probs[i, suggested[i]]), 4),
                               "top": names[int(probs[i].argmax())]} for name, probs in signals.items()}})
    summary = {"rows": int(len(labels)), "flagged": {name: int(mask.sum()) for name, mask in flags.items()},
               "signals": list(signals), "groups": {k: list(v) for k, v in groups.items()}}
    return suspects, summary


# -- measuring an audit where the truth is known -------------------------------------------------------------------
def plant_noise(labels: np.ndarray, n_classes: int, rate: float, kind: str = "uniform", seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Flip a `rate` share of the labels (rows chosen at random). 'uniform': to a random other label;
    'class_conditional': every label flips to one fixed partner label (a seeded permutation without fixed points,
    the asymmetric "pair" noise of the confident-learning literature). Returns (noisy labels, flipped mask)."""
    if kind not in ("uniform", "class_conditional"):
        from llmlabel.errors import unknown

        raise ConfigError(unknown("noise kind", kind, ("uniform", "class_conditional")))
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"noise rate must be in [0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    flipped = np.zeros(len(labels), dtype=bool)
    chosen = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    flipped[chosen] = True
    if kind == "uniform":
        shift = rng.integers(1, n_classes, size=len(chosen))
        noisy[chosen] = (labels[chosen] + shift) % n_classes
    else:
        partner = (np.arange(n_classes) + 1) % n_classes  # a fixed-point-free map, relabeled at random
        perm = rng.permutation(n_classes)
        mapping = np.empty(n_classes, dtype=np.int64)
        mapping[perm] = perm[partner]
        noisy[chosen] = mapping[labels[chosen]]
    return noisy, flipped


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the `positives` mask (ties count half)."""
    from scipy.stats import rankdata

    positives = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def audit_metrics(scores: np.ndarray, flagged: np.ndarray, truth: np.ndarray, k: int | None = None
                  ) -> dict[str, float]:
    """AUROC of the scores, precision@k / recall@k of the top-k rows (k: the number of true errors by default), and
    precision / recall of cleanlab's flagged set."""
    truth = np.asarray(truth, dtype=bool)
    k = int(truth.sum()) if k is None else k
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    hits = int(truth[top].sum())
    n_flagged = int(np.sum(flagged))
    flagged_hits = int(np.sum(truth & np.asarray(flagged, dtype=bool)))
    return {"auroc": auroc(scores, truth), "k": k,
            "precision_at_k": hits / k if k else float("nan"),
            "recall_at_k": hits / int(truth.sum()) if truth.sum() else float("nan"),
            "flagged": n_flagged,
            "flagged_precision": flagged_hits / n_flagged if n_flagged else float("nan"),
            "flagged_recall": flagged_hits / int(truth.sum()) if truth.sum() else float("nan")}

"""Settings chosen from labeled data, in one place: k-fold cross-fitting, a score per candidate, and a paired test
that keeps the default unless the data shows a gain beyond the noise.

Everything llmlabel picks from labels goes through `choose`: fusion's weight, stacking, kNN prompting's k, the
calibration of `choose_calibration`, the ordering of `search_order`.

- **Cross-fitting** (`fold_ids`, `cross_fit`): the labeled pool is dealt into k stratified folds and every row is
  predicted by a model fit on the other folds, so every candidate is judged on all labeled rows and none of them is
  lost to a dev slice; the final model is then refit on the whole pool.
- **A proper score**: log-loss (or macro-F1 where candidates give votes rather than probabilities). Accuracy on a
  few hundred rows moves by whole points from noise alone.
- **A paired test against the baseline** (the default: the LLM's weight 0, the default k, the default
  calibration): the best candidate replaces it only when its gain, row by row on the same rows, is at least `z`
  standard errors (z = 2: about a 2% one-sided false-alarm rate). A setting chosen on noise helps on the rows it was
  chosen on and hurts on new ones; this is what makes "never worse than the baseline" hold on data never tuned on.

`Choice` records the outcome for reports: the chosen and baseline settings, every candidate's cross-fitted score,
the best challenger's gain, its standard error and z, and `earned` (did anything beat the baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmlabel.errors import ConfigError, unknown

#: log_loss and macro_f1 judge (rows, labels) probabilities; accuracy too; row_mean judges per-row scores
#: (higher is better) given directly, e.g. 1.0 / 0.0 for right / wrong.
METRICS = ("log_loss", "macro_f1", "accuracy", "row_mean")
#: z a challenger's paired gain needs (one-sided, about 2%): the default.
Z = 2.0
#: folds of cross-fitting: the default.
FOLDS = 5


def fold_ids(labels: Sequence[Any], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Stratified fold index per row: each label's rows, in a seeded random order, are dealt round the folds."""
    labels = np.asarray(labels)
    if folds < 2:
        raise ConfigError(f"folds must be at least 2 (got {folds})")
    if len(labels) < folds:
        raise ConfigError(f"cross-fitting with {folds} folds needs at least {folds} labeled rows (got {len(labels)})")
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=int)
    offset = 0
    for value in sorted(set(labels.tolist()), key=str):
        idx = rng.permutation(np.flatnonzero(labels == value))
        out[idx] = (offset + np.arange(len(idx))) % folds  # continue the deal, so small labels spread over folds
        offset += len(idx)
    return out


def cross_fit(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], folds: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions: for each fold, `fit_predict(train_index, held_out_index)` fits on the other folds and
    returns predictions for the held-out rows; they are stacked back in row order."""
    out: np.ndarray | None = None
    for fold in np.unique(folds):
        held = np.flatnonzero(folds == fold)
        pred = np.asarray(fit_predict(np.flatnonzero(folds != fold), held), dtype=np.float64)
        if out is None:
            out = np.zeros((len(folds), *pred.shape[1:]))
        out[held] = pred
    assert out is not None
    return out


def check_metric(metric: str) -> None:
    """A one-line `ConfigError` unless `metric` is one of `METRICS`."""
    if metric not in METRICS:
        raise ConfigError(unknown("selection metric", metric, METRICS))


def row_goodness(values: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    """Per-row score, higher is better: log p(gold) for log_loss, 1/0 for accuracy, the values for row_mean."""
    values = np.asarray(values, dtype=np.float64)
    if metric == "row_mean":
        return values
    if metric == "log_loss":
        return np.log(np.maximum(values[np.arange(len(gold)), gold], 1e-12))
    if metric == "accuracy":
        return (values.argmax(axis=1) == gold).astype(np.float64)
    raise ConfigError(f"metric '{metric}' has no per-row score")


def _macro_f1(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 over the labels present in gold or predictions; `pred`, `gold` are (resamples, rows) or (rows,)."""
    pred, gold = np.atleast_2d(pred), np.atleast_2d(gold)
    offset = np.arange(pred.shape[0])[:, None] * n_labels
    size = pred.shape[0] * n_labels
    tp = np.bincount((gold + offset)[pred == gold], minlength=size).reshape(-1, n_labels)
    n_pred = np.bincount((pred + offset).ravel(), minlength=size).reshape(-1, n_labels)
    n_gold = np.bincount((gold + offset).ravel(), minlength=size).reshape(-1, n_labels)
    present = (n_pred + n_gold) > 0
    f1 = np.where(present, 2 * tp / np.maximum(n_pred + n_gold, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def score(values: np.ndarray, gold: np.ndarray, metric: str) -> float:
    """The metric of one candidate on all rows (log_loss: lower is better; the others: higher is better)."""
    check_metric(metric)
    values = np.asarray(values, dtype=np.float64)
    if metric == "macro_f1":
        return float(_macro_f1(values.argmax(axis=1), gold, values.shape[1])[0])
    mean = float(row_goodness(values, gold, metric).mean())
    return -mean if metric == "log_loss" else mean


def paired_gain(candidate: np.ndarray, baseline: np.ndarray, gold: np.ndarray, metric: str,
                folds: np.ndarray | None = None, unit: str = "rows", resamples: int = 1000,
                seed: int = 0) -> tuple[float, float]:
    """(gain, standard error) of `candidate` over `baseline` on the same rows, in the metric's better direction.

    unit="rows": mean of the per-row differences and its standard error (macro-F1 is not a mean over rows: a paired
    bootstrap over rows gives its standard error). unit="folds": the per-fold differences of the metric and the
    standard error of their mean (fewer, coarser units: fold-to-fold noise, a stricter test).
    """
    check_metric(metric)
    if unit == "folds":
        if folds is None:
            raise ConfigError("unit='folds' needs the fold of every row")
        diffs = [_better(score(candidate[folds == f], gold[folds == f], metric),
                                score(baseline[folds == f], gold[folds == f], metric), metric)
                 for f in np.unique(folds)]
        d = np.asarray(diffs)
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    if unit != "rows":
        raise ConfigError(unknown("test unit", unit, ("rows", "folds")))
    if metric == "macro_f1":
        n_labels = candidate.shape[1]
        pc, pb = candidate.argmax(axis=1), baseline.argmax(axis=1)
        gain = float(_macro_f1(pc, gold, n_labels)[0] - _macro_f1(pb, gold, n_labels)[0])
        idx = np.random.default_rng(seed).integers(0, len(gold), size=(resamples, len(gold)))
        boot = _macro_f1(pc[idx], gold[idx], n_labels) - _macro_f1(pb[idx], gold[idx], n_labels)
        return gain, float(boot.std(ddof=1))
    d = row_goodness(candidate, gold, metric) - row_goodness(baseline, gold, metric)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def _better(a: float, b: float, metric: str) -> float:
    """How much better a is than b (positive: better)."""
    return b - a if metric == "log_loss" else a - b


@dataclass
class Choice:
    """The outcome of `choose`: what was chosen, against what, on which evidence.

    Iterates as `(chosen, scores)`, the pair `choose_calibration` returned before it returned a Choice.
    """

    chosen: Any
    baseline: Any
    metric: str
    #: every candidate's score on all rows (cross-fitted where a model is fit): log_loss lower is better
    scores: dict[Any, float]
    #: the best candidate other than the baseline, its paired gain over the baseline, standard error and z
    challenger: Any = None
    gain: float = 0.0
    se: float = 0.0
    z: float = 0.0
    z_needed: float = Z
    rows: int = 0
    unit: str = "rows"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def earned(self) -> bool:
        """True when a candidate beat the baseline beyond the noise (so `chosen` is not the baseline)."""
        return bool(self.chosen != self.baseline)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record for reports (candidate keys as strings, scores rounded)."""
        return {"chosen": self.chosen, "baseline": self.baseline, "earned": self.earned, "metric": self.metric,
                "scores": {str(k): round(v, 5) for k, v in self.scores.items()},
                "challenger": self.challenger, "gain": round(self.gain, 5), "se": round(self.se, 5),
                "z": round(self.z, 3) if np.isfinite(self.z) else str(self.z), "z_needed": self.z_needed,
                "rows": self.rows, "test_unit": self.unit, **self.extra}

    def __iter__(self):
        return iter((self.chosen, self.scores))


def describe(selection: dict[str, Any]) -> str:
    """One line for a `Choice.as_dict()` record, e.g. "chose 0.4 over 0.0 (log_loss 0.4576 vs 0.4705, z 2.83 >= 2,
    1000 rows)" or "kept 0.0 (best challenger 0.1: z 0.41 < 2, 1000 rows)"."""
    scores = selection["scores"]
    if selection["earned"]:
        chosen, base = str(selection["chosen"]), str(selection["baseline"])
        return (f"chose {chosen} over {base} ({selection['metric']} {scores[chosen]:.4f} vs {scores[base]:.4f}, "
                f"z {selection['z']} >= {selection['z_needed']:g}, {selection['rows']} rows)")
    challenger = "" if selection["challenger"] is None else \
        f"best challenger {selection['challenger']}: z {selection['z']} < {selection['z_needed']:g}, "
    return f"kept {selection['baseline']} ({challenger}{selection['rows']} rows)"


def choose(candidates: Mapping[Hashable, np.ndarray], gold: Sequence[int] | np.ndarray, baseline: Hashable,
           metric: str = "log_loss", z: float = Z, folds: np.ndarray | None = None, unit: str = "rows",
           seed: int = 0) -> Choice:
    """The candidate to use: the best by `metric` if its paired gain over `baseline` is at least `z` standard
    errors, else `baseline`.

    Args:
        candidates: setting -> its predictions on every labeled row (out-of-fold where a model is fit):
            (rows, labels) probabilities, or per-row scores (higher is better) for metric="row_mean".
            Among equally good challengers the first in order is kept (list the cautious ones first).
        gold: the rows' label indices (ignored by row_mean).
        baseline: the default setting, one of `candidates`.
        folds: the rows' folds, for unit="folds".
    """
    check_metric(metric)
    if baseline not in candidates:
        raise ConfigError(f"baseline {baseline!r} is not one of the candidates")
    gold = np.asarray(gold, dtype=int) if metric != "row_mean" else np.zeros(len(candidates[baseline]), dtype=int)
    values = {key: np.asarray(v, dtype=np.float64) for key, v in candidates.items()}
    scores = {key: score(v, gold, metric) for key, v in values.items()}
    choice = Choice(chosen=baseline, baseline=baseline, metric=metric, scores=scores, z_needed=z, rows=len(gold),
                    unit=unit)
    others = [key for key in values if key != baseline]
    if not others:
        return choice
    best = others[0]
    for key in others[1:]:
        if _better(scores[key], scores[best], metric) > 0:
            best = key
    gain, se = paired_gain(values[best], values[baseline], gold, metric, folds=folds, unit=unit, seed=seed)
    choice.challenger, choice.gain, choice.se = best, gain, se
    # se ~ 0: the challenger differs from the baseline the same way on every row (no noise to test against)
    choice.z = gain / se if se > 1e-9 else (float("inf") if gain > 0 else 0.0)
    if gain > 0 and choice.z >= z:
        choice.chosen = best
    return choice

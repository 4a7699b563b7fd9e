"""Estimates with valid confidence intervals from LLM labels on every row plus gold labels on a small sample.

Two kinds of target: the share of each label in a corpus (a mean of one-hot labels), and a coefficient of a logistic
or linear regression of "the label is k" on covariates. Methods:

- `naive`: count the LLM's labels (fit the regression to them) as if they were gold. Biased whenever the LLM errs;
  its interval is the textbook one and is wrong too. Shown for contrast.
- `classical`: the gold sample alone (the LLM is ignored).
- `ppi`, `ppi++`: prediction-powered inference (Angelopoulos et al. 2023) and its power-tuned form PPI++
  (Angelopoulos, Duchi & Zrnic 2024): the LLM's prediction on every row, corrected by the gold sample's residuals
  gold - lambda * prediction. `ppi` fixes lambda = 1; `ppi++` picks the lambda that minimizes the estimated variance
  (clipped to [0, 1]; 0 is the classical estimate, so PPI++ is never much worse than classical).
- `dsl`: design-based supervised learning (Egami et al. 2023): a supervised model g, cross-fitted on the gold
  sample, predicts gold from the LLM's output (and the covariates); the pseudo-outcome g + (R / pi) (gold - g)
  replaces the outcome. Unlike PPI it can fix an LLM that is systematically wrong in a learnable way.

Every method works with two designs for the gold sample: `srs`, a simple random sample of n of the N rows
(inclusion probability n / N; the review loop's random audit sample), and `poisson`, rows drawn independently with
known probabilities `pi_i` (the active variant: probabilities tilted toward rows the LLM is unsure about, Zrnic &
Candes 2024, "Active Statistical Inference"); the gold terms are then weighted by 1 / pi_i (Horvitz-Thompson).

All estimators solve one estimating equation over the N rows (Z-estimation):

    sum_i lambda psi(f_i; theta) + sum_{i in gold} (1 / pi_i) [psi(y_i; theta) - lambda psi(f_i; theta)] = 0

with psi(o; theta) = theta - o for shares and x (mu(x'theta) - o) for regressions. The design variance of the gold
term gives the interval for the corpus's own value (`population="finite"`, the default: the corpus is the population
and the gold sample is drawn from it); `population="superpopulation"` adds H^-1 Var(psi(y)) H^-1 / N, the variance of
the corpus itself as a draw from a larger population (ppi-python's convention, for generalizing beyond the corpus).
Intervals are Wald intervals: for a share whose gold sample holds no or very few rows of that label they are too
short (their standard error is estimated as ~0); read them with the gold counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

from llmlabel.errors import ConfigError, DataError

METHODS = ("naive", "classical", "ppi", "ppi++", "dsl")
DESIGNS = ("srs", "poisson")
POPULATIONS = ("finite", "superpopulation")
REGRESSIONS = ("logistic", "linear")


@dataclass
class Interval:
    """One estimate with its confidence interval."""

    method: str
    #: what is estimated, e.g. "share[positive]" or "coef[length]"
    target: str
    estimate: float
    lower: float
    upper: float
    se: float
    #: gold rows used (0 for naive)
    n_gold: int
    n_rows: int
    #: the power-tuning parameter (ppi: 1, ppi++: tuned; None for the other methods)
    lam: float | None = None
    #: why there is no usable estimate (separation, a singular design), else None
    note: str | None = None

    @property
    def width(self) -> float:
        """Upper minus lower bound."""
        return self.upper - self.lower

    def covers(self, value: float) -> bool:
        """Whether the interval holds `value`."""
        return self.lower <= value <= self.upper

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields (rounded), with the width."""
        out = asdict(self)
        out["width"] = self.width
        for key in ("estimate", "lower", "upper", "se", "lam", "width"):
            if out[key] is not None:  # NaN / inf (no finite estimate: see `note`) is written as null
                out[key] = round(float(out[key]), 6) if np.isfinite(out[key]) else None
        return out


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (0.95 -> 1.96)."""
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


# -- sampling ------------------------------------------------------------------------------------------------------
def uncertainty(probs: np.ndarray) -> np.ndarray:
    """Per-row uncertainty of an LLM's label distribution: sqrt(1 - sum_k p_k^2), the root of the expected squared
    error of its one-hot label under its own probabilities (sqrt(p (1 - p)) for a binary outcome probability)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        return np.sqrt(np.clip(probs * (1.0 - probs), 0.0, None))
    return np.sqrt(np.clip(1.0 - (probs ** 2).sum(axis=1), 0.0, None))


def sampling_probabilities(scores: np.ndarray, budget: float, mix: float = 0.2) -> np.ndarray:
    """Inclusion probabilities proportional to `scores` (e.g. `uncertainty`), mixed with uniform so every row keeps
    at least `mix * budget / N` (bounded weights), summing to `budget` (the expected gold sample size), capped at 1.

    Used by the active variant: rows the LLM is unsure about are reviewed more often and weighted back by 1 / pi.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_rows = len(scores)
    if not 0 < budget <= n_rows:
        raise ConfigError(f"the gold budget must be between 1 and the number of rows ({n_rows}), got {budget}")
    if not 0.0 <= mix <= 1.0:
        raise ConfigError(f"mix must be between 0 and 1, got {mix}")
    scores = np.clip(scores, 0.0, None)
    total = scores.sum()
    shape = scores / total if total > 0 else np.full(n_rows, 1.0 / n_rows)
    shape = (1.0 - mix) * shape + mix / n_rows
    probs = budget * shape
    # Cap at 1 and hand the excess to the uncapped rows (a few rounds settle it).
    for _ in range(50):
        over = probs > 1.0
        if not over.any():
            break
        probs[over] = 1.0
        free = ~over & (probs < 1.0)
        left = budget - probs[~free].sum()
        probs[free] = shape[free] / shape[free].sum() * left
    return np.clip(probs, 1e-12, 1.0)


# -- the shared Z-estimation core ----------------------------------------------------------------------------------
def _check_sample(n_rows: int, rows: np.ndarray, probs: np.ndarray | None, design: str, population: str
                  ) -> np.ndarray:
    if design not in DESIGNS:
        from llmlabel.errors import unknown

        raise ConfigError(unknown("gold sample design", design, DESIGNS))
    if population not in POPULATIONS:
        from llmlabel.errors import unknown

        raise ConfigError(unknown("population", population, POPULATIONS))
    if len(rows) < 2:
        raise ConfigError(f"a gold sample needs at least 2 rows, got {len(rows)}")
    if len(np.unique(rows)) != len(rows):
        raise ConfigError("the gold sample lists a row twice (keep one gold label per row)")
    if rows.min() < 0 or rows.max() >= n_rows:
        raise ConfigError(f"gold sample rows must be indices of the {n_rows} rows")
    if probs is None:
        if design == "poisson":
            raise ConfigError("design 'poisson' needs the sampling probability of every gold row")
        return np.full(len(rows), len(rows) / n_rows)
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) != len(rows) or not np.all((probs > 0) & (probs <= 1)):
        raise ConfigError("sampling probabilities must be in (0, 1], one per gold row")
    return probs


def _design_cov(z: np.ndarray, pi: np.ndarray, n_rows: int, design: str) -> np.ndarray:
    """Design covariance of (1/N) sum_{gold} z_i / pi_i: SRS without replacement, or Poisson (independent draws)."""
    n = len(z)
    if design == "srs":
        return (1.0 - n / n_rows) * np.atleast_2d(np.cov(z.T, ddof=1)) / n
    w = (1.0 - pi) / pi ** 2
    return (z * w[:, None]).T @ z / n_rows ** 2


def _weighted_cov(z: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """Covariance of z over the population, estimated from the gold rows weighted by 1 / pi."""
    w = 1.0 / pi
    mean = (w[:, None] * z).sum(0) / w.sum()
    centered = z - mean
    return (centered * w[:, None]).T @ centered / w.sum() * len(z) / max(len(z) - 1, 1)


def _tuned_lambda(a: np.ndarray, b: np.ndarray, pi: np.ndarray, design: str) -> np.ndarray:
    """The lambda minimizing the design variance of a - lambda b, per column (a = H^-1 psi(y), b = H^-1 psi(f) on the
    gold rows), clipped to [0, 1]."""
    if design == "srs":
        ac, bc = a - a.mean(0), b - b.mean(0)
        num, den = (ac * bc).sum(0), (bc * bc).sum(0)
    else:
        w = ((1.0 - pi) / pi ** 2)[:, None]
        num, den = (w * a * b).sum(0), (w * b * b).sum(0)
    lam = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-15)
    return np.clip(lam, 0.0, 1.0)


def _mean_core(f: np.ndarray, rows: np.ndarray, y: np.ndarray, pi: np.ndarray, lam: np.ndarray, design: str,
               population: str) -> tuple[np.ndarray, np.ndarray]:
    """Shares (means of vector outcomes): estimate and standard error per coordinate for a given lambda."""
    n_rows = len(f)
    w = 1.0 / pi
    f_gold = f[rows]
    theta = (lam * f.sum(0) + (w[:, None] * (y - lam * f_gold)).sum(0)) / (lam * n_rows + (1.0 - lam) * w.sum())
    psi_y, psi_f = theta - y, theta - f_gold
    z = psi_y - lam * psi_f
    var = np.diag(_design_cov(z, pi, n_rows, design)).copy()
    if population == "superpopulation":
        var += np.diag(_weighted_cov(psi_y, pi)) / n_rows
    return theta, np.sqrt(np.clip(var, 0.0, None))


def _mean_estimate(f: np.ndarray, rows: np.ndarray, y: np.ndarray, pi: np.ndarray, lam: float | None, design: str,
                   population: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares with lambda fixed (a number) or tuned per coordinate (None)."""
    dim = f.shape[1]
    if lam is None:
        theta, _ = _mean_core(f, rows, y, pi, np.ones(dim), design, population)
        lam_vec = _tuned_lambda(theta - y, theta - f[rows], pi, design)
    else:
        lam_vec = np.full(dim, float(lam))
    theta, se = _mean_core(f, rows, y, pi, lam_vec, design, population)
    return theta, se, lam_vec


def _mu(kind: str, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean function and its derivative of the regression (logistic: the canonical logit link)."""
    if kind == "linear":
        return eta, np.ones_like(eta)
    p = 0.5 * (1.0 + np.tanh(0.5 * eta))  # a stable sigmoid
    return p, p * (1.0 - p)


def _solve_glm(kind: str, X: np.ndarray, c: np.ndarray, o: np.ndarray, ridge: float = 0.0,
               start: np.ndarray | None = None) -> np.ndarray:
    """Solve sum_i x_i (c_i mu(x_i'theta) - o_i) + ridge theta = 0 (Newton with step halving for the logistic)."""
    d = X.shape[1]
    penalty = ridge * np.eye(d)
    if kind == "linear":
        return np.linalg.solve((X * c[:, None]).T @ X + penalty + 1e-10 * np.eye(d), X.T @ o)
    theta = np.zeros(d) if start is None else start.copy()

    def objective_grad(t: np.ndarray) -> np.ndarray:
        mu, _ = _mu(kind, X @ t)
        return X.T @ (c * mu - o) + penalty @ t

    grad = objective_grad(theta)
    for _ in range(100):
        _, dmu = _mu(kind, X @ theta)
        hess = (X * (c * dmu)[:, None]).T @ X + penalty + 1e-10 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:
            candidate = theta - scale * step
            new_grad = objective_grad(candidate)
            if np.linalg.norm(new_grad) <= np.linalg.norm(grad) or scale <= 2e-4:
                break
            scale /= 2.0
        theta, grad = candidate, new_grad
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return theta


def _glm_core(kind: str, X: np.ndarray, f: np.ndarray, rows: np.ndarray, y: np.ndarray, pi: np.ndarray, lam: float,
              design: str, population: str, start: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regression coefficients for a given lambda: (theta, covariance, H^-1, psi(y), psi(f)) on the gold rows."""
    n_rows = len(X)
    xi_w = np.zeros(n_rows)
    xi_w[rows] = 1.0 / pi
    y_all = np.zeros(n_rows)
    y_all[rows] = y
    c = lam + xi_w * (1.0 - lam)
    o = lam * f + xi_w * (y_all - lam * f)
    theta = _solve_glm(kind, X, c, o, start=start)
    _check_solution(kind, X, c, o, theta)
    mu, dmu = _mu(kind, X @ theta)
    h_inv = np.linalg.inv((X * dmu[:, None]).T @ X / n_rows + 1e-12 * np.eye(X.shape[1]))
    Xg = X[rows]
    psi_y = Xg * (mu[rows] - y)[:, None]
    psi_f = Xg * (mu[rows] - f[rows])[:, None]
    z = psi_y - lam * psi_f
    cov = h_inv @ _design_cov(z, pi, n_rows, design) @ h_inv
    if population == "superpopulation":
        cov = cov + h_inv @ _weighted_cov(psi_y, pi) @ h_inv / n_rows
    return theta, cov, h_inv, psi_y, psi_f


def _glm_estimate(kind: str, X: np.ndarray, f: np.ndarray, rows: np.ndarray, y: np.ndarray, pi: np.ndarray,
                  lam: float | None, design: str, population: str, coord: int
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Regression with lambda fixed or tuned (None) for coefficient `coord`."""
    if lam is None:
        # The tuning statistics at the lambda = 1 fit; where that equation has no finite root (few gold rows,
        # pseudo-outcomes no logistic curve matches), at the gold-only fit instead.
        try:
            theta, _, h_inv, psi_y, psi_f = _glm_core(kind, X, f, rows, y, pi, 1.0, design, population)
        except _NoEstimate:
            theta, _, h_inv, psi_y, psi_f = _glm_core(kind, X, f, rows, y, pi, 0.0, design, population)
        a = (psi_y @ h_inv.T)[:, [coord]]
        b = (psi_f @ h_inv.T)[:, [coord]]
        lam = float(_tuned_lambda(a, b, pi, design)[0])
        theta, cov, *_ = _glm_core(kind, X, f, rows, y, pi, lam, design, population, start=theta)
    else:
        theta, cov, *_ = _glm_core(kind, X, f, rows, y, pi, float(lam), design, population)
    return theta, np.sqrt(np.clip(np.diag(cov), 0.0, None)), float(lam)


# -- DSL: the cross-fitted supervised model ------------------------------------------------------------------------
def _folds(n_rows: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_rows) % k


def _dsl_folds(n_gold: int, folds: int) -> int:
    return max(2, min(folds, n_gold // 10)) if n_gold >= 20 else 2


def dsl_share_predictions(probs: np.ndarray, rows: np.ndarray, y: np.ndarray, folds: int = 5, prior: float = 5.0,
                          seed: int = 0) -> np.ndarray:
    """Cross-fitted predictions g_i of each row's one-hot gold label: among the gold rows of the other folds that the
    LLM gave the same label, the gold label distribution, shrunk toward the LLM's own probabilities with weight
    `prior` (a Dirichlet prior; it learns the LLM's confusion matrix, so a systematic mix-up is corrected)."""
    n_rows, n_classes = probs.shape
    hard = probs.argmax(1)
    k = _dsl_folds(len(rows), folds)
    fold = _folds(n_rows, k, seed)
    out = np.empty_like(probs, dtype=np.float64)
    for part in range(k):
        train = fold[rows] != part
        counts = np.zeros((n_classes, n_classes))
        np.add.at(counts, (hard[rows[train]], y[train].argmax(1)), 1.0)
        mine = fold == part
        seen = counts[hard[mine]]
        out[mine] = (seen + prior * probs[mine]) / (seen.sum(1, keepdims=True) + prior)
    return out


def dsl_regression_predictions(kind: str, X: np.ndarray, f: np.ndarray, rows: np.ndarray, y: np.ndarray,
                               folds: int = 5, seed: int = 0, ridge: float = 1.0) -> np.ndarray:
    """Cross-fitted predictions g_i of the outcome from the LLM's prediction and the covariates: a ridge logistic
    (linear) regression of gold on [logit(f) (f), covariates], fit on the gold rows of the other folds."""
    n_rows = len(X)
    if kind == "logistic":
        clipped = np.clip(f, 1e-4, 1 - 1e-4)
        feature = np.log(clipped / (1 - clipped))
    else:
        feature = f
    Z = np.column_stack([X, feature])
    k = _dsl_folds(len(rows), folds)
    fold = _folds(n_rows, k, seed)
    out = np.empty(n_rows)
    for part in range(k):
        train = rows[fold[rows] != part]
        y_train = y[fold[rows] != part]
        theta = _solve_glm(kind, Z[train], np.ones(len(train)), y_train, ridge=ridge)
        mine = fold == part
        out[mine] = _mu(kind, Z[mine] @ theta)[0]
    return out


# -- public estimators ---------------------------------------------------------------------------------------------
def _check_methods(methods: Sequence[str]) -> None:
    for method in methods:
        if method not in METHODS:
            from llmlabel.errors import unknown

            raise ConfigError(unknown("estimate method", method, METHODS))


def estimate_shares(probs: np.ndarray, gold_rows: Sequence[int], gold_labels: Sequence[int], labels: Sequence[str],
                    methods: Sequence[str] = METHODS, sampling_probs: Sequence[float] | None = None,
                    design: Literal["srs", "poisson"] = "srs", population: str = "finite",
                    confidence: float = 0.95, dsl_folds: int = 5, seed: int = 0) -> list[Interval]:
    """Intervals for the share of each label.

    Args:
        probs: (N, C) the LLM's label probabilities on every row (rows it failed on: all zeros, or uniform).
        gold_rows: indices (into the N rows) of the gold sample.
        gold_labels: the gold class index of each gold row.
        labels: the C label names.
        methods: any of naive, classical, ppi, ppi++, dsl.
        sampling_probs: each gold row's inclusion probability (design 'poisson'); default n / N.
        design: 'srs' (simple random sample) or 'poisson' (independent draws with `sampling_probs`).
        population: 'finite' (the corpus's own shares) or 'superpopulation'.
    """
    _check_methods(methods)
    probs = np.asarray(probs, dtype=np.float64)
    n_rows, n_classes = probs.shape
    if len(labels) != n_classes:
        raise ConfigError(f"{len(labels)} label names for {n_classes} probability columns")
    rows = np.asarray(gold_rows, dtype=np.int64)
    gold = np.asarray(gold_labels, dtype=np.int64)
    if len(rows) != len(gold):
        raise ConfigError(f"{len(rows)} gold rows but {len(gold)} gold labels")
    if len(gold) and (gold.min() < 0 or gold.max() >= n_classes):
        raise ConfigError("gold labels must be class indices of the label names")
    pi = _check_sample(n_rows, rows, sampling_probs, design, population)
    z = z_value(confidence)
    y = np.eye(n_classes)[gold]
    out: list[Interval] = []

    def add(method: str, theta: np.ndarray, se: np.ndarray, n_gold: int, lam: np.ndarray | None) -> None:
        for k, name in enumerate(labels):
            out.append(Interval(method, f"share[{name}]", float(theta[k]), float(theta[k] - z * se[k]),
                                float(theta[k] + z * se[k]), float(se[k]), n_gold, n_rows,
                                None if lam is None else float(lam[k])))

    for method in methods:
        if method == "naive":
            hard = np.eye(n_classes)[probs.argmax(1)]
            theta = hard.mean(0)
            add(method, theta, np.sqrt(theta * (1 - theta) / n_rows), 0, None)
        elif method == "classical":
            theta, se, _ = _mean_estimate(probs, rows, y, pi, 0.0, design, population)
            add(method, theta, se, len(rows), None)
        elif method in ("ppi", "ppi++"):
            theta, se, lam = _mean_estimate(probs, rows, y, pi, 1.0 if method == "ppi" else None, design,
                                            population)
            add(method, theta, se, len(rows), lam)
        else:
            g = dsl_share_predictions(probs, rows, y, dsl_folds, seed=seed)
            theta, se, _ = _mean_estimate(g, rows, y, pi, 1.0, design, population)
            add(method, theta, se, len(rows), None)
    return out


def estimate_regression(covariates: np.ndarray, names: Sequence[str], probs: np.ndarray, gold_rows: Sequence[int],
                        gold_outcome: Sequence[float], kind: Literal["logistic", "linear"] = "logistic",
                        methods: Sequence[str] = METHODS, sampling_probs: Sequence[float] | None = None,
                        design: Literal["srs", "poisson"] = "srs", population: str = "finite",
                        confidence: float = 0.95, dsl_folds: int = 5, seed: int = 0,
                        llm_outcome: Sequence[float] | None = None) -> list[Interval]:
    """Intervals for each covariate's coefficient in a regression of the outcome ("the label is k", 0/1) on the
    covariates (an intercept is added).

    Args:
        covariates: (N, d) covariate values of every row.
        names: the d covariate names (targets are "coef[name]").
        probs: (N,) the LLM's probability that the outcome is 1 (PPI uses it as the prediction; naive its
            rounding, the LLM's hard label).
        gold_rows, gold_outcome: the gold sample and its 0/1 outcomes (any real outcome for `linear`).
        kind: 'logistic' or 'linear' (a linear probability model for a 0/1 outcome).
        llm_outcome: (N,) the LLM's own 0/1 outcome for naive (its label is k); default: probs >= 0.5.

    PPI++ tunes one lambda, for the first covariate's coefficient. A fit with no finite answer (perfect separation, a
    singular design) comes back as an interval of NaNs with a `note`, not an exception.
    """
    _check_methods(methods)
    if kind not in REGRESSIONS:
        from llmlabel.errors import unknown

        raise ConfigError(unknown("regression", kind, REGRESSIONS))
    covariates = np.asarray(covariates, dtype=np.float64)
    if covariates.ndim == 1:
        covariates = covariates[:, None]
    n_rows, d = covariates.shape
    if len(names) != d:
        raise ConfigError(f"{len(names)} covariate names for {d} covariate columns")
    if not np.all(np.isfinite(covariates)):
        raise DataError("covariates must be finite numbers on every row")
    for j, name in enumerate(names):
        if np.ptp(covariates[:, j]) == 0:
            raise DataError(f"covariate '{name}' has the same value on every row: it has no coefficient")
    X = np.column_stack([np.ones(n_rows), covariates])
    f = np.asarray(probs, dtype=np.float64)
    rows = np.asarray(gold_rows, dtype=np.int64)
    y = np.asarray(gold_outcome, dtype=np.float64)
    if len(rows) != len(y):
        raise ConfigError(f"{len(rows)} gold rows but {len(y)} gold outcomes")
    pi = _check_sample(n_rows, rows, sampling_probs, design, population)
    z = z_value(confidence)
    out: list[Interval] = []

    def add(method: str, theta: np.ndarray, se: np.ndarray, n_gold: int, lam: float | None) -> None:
        for j, name in enumerate(names, start=1):
            out.append(Interval(method, f"coef[{name}]", float(theta[j]), float(theta[j] - z * se[j]),
                                float(theta[j] + z * se[j]), float(se[j]), n_gold, n_rows, lam))

    hard = (f >= 0.5).astype(np.float64) if llm_outcome is None else np.asarray(llm_outcome, dtype=np.float64)
    for method in methods:
        try:
            _regression_method(method, kind, X, f, hard, rows, y, pi, design, population, dsl_folds, seed, add)
        except (np.linalg.LinAlgError, _NoEstimate) as exc:
            nan = float("nan")
            note = str(exc) if isinstance(exc, _NoEstimate) else ("singular design: no finite estimate (a covariate "
                                                                  "is constant or collinear within the rows used)")
            for name in names:
                out.append(Interval(method, f"coef[{name}]", nan, nan, nan, nan, 0 if method == "naive" else
                                    len(rows), n_rows, None, note=note))
    return out


class _NoEstimate(Exception):
    """A regression with no finite answer (perfect separation, or an estimating equation without a root)."""


#: a logistic fit whose linear predictor passes this on some row has run off to infinity (probabilities within
#: 1e-13 of 0 or 1): no finite estimate
MAX_LOGIT = 30.0


def _check_solution(kind: str, X: np.ndarray, c: np.ndarray, o: np.ndarray, theta: np.ndarray) -> None:
    """Refuse a logistic solution that diverged or does not solve its equation. With few gold rows the corrected
    pseudo-outcomes (PPI, DSL, inverse-probability weights) can lie where no logistic curve matches them, and the
    equation has no finite root: that is reported as no estimate, never as a huge interval."""
    if kind != "logistic":
        return
    eta = X @ theta
    mu, _ = _mu(kind, eta)
    grad = X.T @ (c * mu - o) / len(X)
    if not np.all(np.isfinite(theta)) or np.max(np.abs(eta)) > MAX_LOGIT or np.max(np.abs(grad)) > 1e-6:
        raise _NoEstimate("no finite estimate: the estimating equation has no finite root (too few gold rows for "
                          "this regression, or the covariates separate the outcome)")


def _check_separation(kind: str, X: np.ndarray, y: np.ndarray, what: str) -> None:
    """Refuse a logistic fit whose 0/1 outcome the covariates separate perfectly (the maximum-likelihood coefficient
    is infinite): the unpenalized fit then drives every fitted probability to its row's outcome."""
    if kind != "logistic":
        return
    if len(np.unique(y)) < 2:
        raise _NoEstimate(f"no finite estimate: every {what} outcome is {int(y[0])}")
    theta = _solve_glm(kind, X, np.ones(len(X)), y)
    if np.max(np.abs(_mu(kind, X @ theta)[0] - y)) < 1e-3:
        raise _NoEstimate(f"no finite estimate: the covariates separate the {what} outcomes perfectly")


def _regression_method(method: str, kind: str, X: np.ndarray, f: np.ndarray, hard: np.ndarray, rows: np.ndarray,
                       y: np.ndarray, pi: np.ndarray, design: str, population: str, dsl_folds: int, seed: int,
                       add: Any) -> None:
    """One method's regression intervals, handed to `add(method, theta, se, n_gold, lam)`."""
    n_rows = len(X)
    if method == "naive":
        # The textbook fit and sandwich interval, as if the LLM's labels were gold.
        _check_separation(kind, X, hard, "LLM")
        theta = _solve_glm(kind, X, np.ones(n_rows), hard)
        mu, dmu = _mu(kind, X @ theta)
        h_inv = np.linalg.inv((X * dmu[:, None]).T @ X / n_rows)
        psi = X * (mu - hard)[:, None]
        cov = h_inv @ np.atleast_2d(np.cov(psi.T)) @ h_inv / n_rows
        add(method, theta, np.sqrt(np.clip(np.diag(cov), 0, None)), 0, None)
    elif method == "classical":
        _check_separation(kind, X[rows], y, "gold")
        theta, se, _ = _glm_estimate(kind, X, f, rows, y, pi, 0.0, design, population, 1)
        add(method, theta, se, len(rows), None)
    elif method in ("ppi", "ppi++"):
        theta, se, lam = _glm_estimate(kind, X, f, rows, y, pi, 1.0 if method == "ppi" else None, design,
                                       population, 1)
        add(method, theta, se, len(rows), lam)
    else:
        g = dsl_regression_predictions(kind, X[:, 1:], f, rows, y, dsl_folds, seed=seed)
        theta, se, _ = _glm_estimate(kind, X, g, rows, y, pi, 1.0, design, population, 1)
        add(method, theta, se, len(rows), None)


def true_shares(gold_labels: Sequence[int], n_classes: int) -> np.ndarray:
    """The shares of a fully gold-labeled population (for simulations)."""
    return np.bincount(np.asarray(gold_labels, dtype=np.int64), minlength=n_classes) / max(len(gold_labels), 1)


def true_coefficients(covariates: np.ndarray, outcome: Sequence[float], kind: str = "logistic") -> np.ndarray:
    """The regression coefficients (without the intercept) fit to a fully gold-labeled population."""
    covariates = np.asarray(covariates, dtype=np.float64)
    if covariates.ndim == 1:
        covariates = covariates[:, None]
    X = np.column_stack([np.ones(len(covariates)), covariates])
    y = np.asarray(outcome, dtype=np.float64)
    return _solve_glm(kind, X, np.ones(len(X)), y)[1:]


def standardize(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(values - mean) / sd with the mean and sd (coefficients are then per standard deviation)."""
    values = np.asarray(values, dtype=np.float64)
    mean, sd = float(values.mean()), float(values.std())
    return (values - mean) / (sd if sd > 0 else 1.0), mean, sd if sd > 0 else 1.0


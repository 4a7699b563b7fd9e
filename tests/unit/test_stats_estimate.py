"""Estimators against known answers on synthetic data: coverage over many draws (not one), widths, the active
design, exact cases, the reference implementation (ppi-python) and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from llmlabel.errors import ConfigError, DataError
from llmlabel.stats import estimate as es

DRAWS = 300
#: 300 draws: a 95% coverage has a standard error of ~1.3 points; bounds leave ~3 of them below and above
LOW, HIGH = 0.905, 0.99


def _population(n_rows: int = 2000, informative: bool = True, seed: int = 0):
    """Three labels depending on a covariate; an LLM whose probabilities are informative but biased (too fond of
    label 0), or pure noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_rows)
    logits = np.column_stack([np.zeros(n_rows), 1.2 * x, -0.6 * x + 0.4])
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    gold = (rng.random(n_rows)[:, None] > np.cumsum(p, 1)).sum(1)
    if informative:
        llm = np.log(p) + rng.normal(scale=0.5, size=p.shape) + 1.5 * np.eye(3)[gold]
        llm[:, 0] += 1.0
    else:
        llm = rng.normal(size=p.shape)
    q = np.exp(llm)
    q /= q.sum(1, keepdims=True)
    return x, gold, q


def _simulate(x, gold, q, n, design="srs", draws=DRAWS, methods=es.METHODS, seed=1):
    rng = np.random.default_rng(seed)
    n_rows, n_classes = q.shape
    names = list("abc"[:n_classes])
    shares = es.true_shares(gold, n_classes)
    y1 = (gold == 1).astype(float)
    coef = es.true_coefficients(x, y1)[0]
    pi_all = es.sampling_probabilities(es.uncertainty(q), n) if design == "poisson" else None
    out = {m: {"share": [], "share_w": [], "coef": [], "coef_w": []} for m in methods}
    for _ in range(draws):
        if design == "srs":
            rows, pis = rng.choice(n_rows, n, replace=False), None
        else:
            rows = np.flatnonzero(rng.random(n_rows) < pi_all)
            pis = pi_all[rows]
        for item in es.estimate_shares(q, rows, gold[rows], names, methods, pis, design):
            out[item.method]["share"].append(item.covers(shares[names.index(item.target[6])]))
            out[item.method]["share_w"].append(item.width)
        for item in es.estimate_regression(x, ["x"], q[:, 1], rows, y1[rows], "logistic", methods, pis, design,
                                           llm_outcome=(q.argmax(1) == 1).astype(float)):
            out[item.method]["coef"].append(item.covers(coef))
            out[item.method]["coef_w"].append(item.width)
    return {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in out.items()}


@pytest.fixture(scope="module")
def informative_srs():
    x, gold, q = _population()
    return _simulate(x, gold, q, 200)


def test_valid_methods_cover_near_95_and_naive_does_not(informative_srs):
    res = informative_srs
    for method in ("classical", "ppi", "ppi++", "dsl"):
        assert LOW <= res[method]["share"] <= HIGH, (method, res[method])
        assert LOW <= res[method]["coef"] <= HIGH, (method, res[method])
    # The LLM is biased toward label 0: counting its labels misses the true shares nearly always.
    assert res["naive"]["share"] < 0.5
    assert res["naive"]["coef"] < 0.5


def test_ppi_plus_plus_is_narrower_than_classical_when_the_llm_is_informative(informative_srs):
    res = informative_srs
    assert res["ppi++"]["share_w"] < 0.85 * res["classical"]["share_w"]
    assert res["dsl"]["share_w"] < 0.85 * res["classical"]["share_w"]
    assert res["ppi++"]["coef_w"] < res["classical"]["coef_w"]
    # Power tuning never loses much to lambda = 1.
    assert res["ppi++"]["share_w"] <= res["ppi"]["share_w"] * 1.02


def test_a_useless_llm_costs_ppi_plus_plus_nothing_but_plain_ppi_pays():
    x, gold, q = _population(informative=False)
    res = _simulate(x, gold, q, 200, methods=("classical", "ppi", "ppi++"), draws=150)
    assert LOW - 0.02 <= res["ppi++"]["share"] <= HIGH
    assert res["ppi++"]["share_w"] <= res["classical"]["share_w"] * 1.03
    assert res["ppi"]["share_w"] > res["classical"]["share_w"] * 1.1


def test_active_sampling_covers_and_is_narrower_at_the_same_budget():
    rng = np.random.default_rng(3)
    n_rows = 3000
    p = rng.beta(0.4, 0.4, size=n_rows)  # many confident rows, some unsure: where tilting pays
    gold = (rng.random(n_rows) < p).astype(int)
    q = np.column_stack([1 - p, p])  # a calibrated LLM
    x = rng.normal(size=n_rows)
    srs = _simulate(x, gold, q, 200, methods=("ppi++",), draws=200)
    active = _simulate(x, gold, q, 200, design="poisson", methods=("ppi++", "classical"), draws=200)
    assert LOW <= active["ppi++"]["share"] <= HIGH
    assert LOW <= active["classical"]["share"] <= HIGH  # inverse-probability weighting keeps classical valid
    assert active["ppi++"]["share_w"] < 0.9 * srs["ppi++"]["share_w"]


def test_finite_population_intervals_cover_when_the_sample_is_half_the_corpus():
    x, gold, q = _population(n_rows=600)
    res = _simulate(x, gold, q, 300, methods=("classical", "ppi++"), draws=200)
    assert LOW <= res["classical"]["share"] <= HIGH
    assert LOW <= res["ppi++"]["share"] <= HIGH
    wide = es.estimate_shares(q, np.arange(300), gold[:300], ["a", "b", "c"], ["classical"],
                              population="superpopulation")
    narrow = es.estimate_shares(q, np.arange(300), gold[:300], ["a", "b", "c"], ["classical"])
    assert all(n.width < w.width for n, w in zip(narrow, wide))


def test_exact_answers():
    gold = np.array([0, 1, 1, 0, 1, 1, 0, 1])
    perfect = np.eye(2)[gold]
    rows = np.array([0, 1, 2, 3])
    est = {(e.method, e.target): e for e in es.estimate_shares(perfect, rows, gold[rows], ["n", "p"])}
    # Classical = the gold sample's share; PPI with perfect predictions = the truth, with no uncertainty left.
    assert est["classical", "share[p]"].estimate == pytest.approx(0.5)
    assert est["ppi", "share[p]"].estimate == pytest.approx(5 / 8)
    assert est["ppi", "share[p]"].width == pytest.approx(0.0, abs=1e-12)
    assert est["naive", "share[p]"].estimate == pytest.approx(5 / 8)
    # A gold sample of every row: the finite-population interval has no width.
    every = es.estimate_shares(perfect[::-1], np.arange(8), gold, ["n", "p"], ["classical", "ppi++"])
    assert all(e.width == pytest.approx(0.0, abs=1e-12) for e in every)
    assert {round(e.estimate, 6) for e in every if e.target == "share[p]"} == {0.625}


def test_sampling_probabilities_sum_to_the_budget_and_stay_bounded():
    scores = np.r_[np.zeros(50), np.ones(50), np.full(5, 100.0)]
    pi = es.sampling_probabilities(scores, 40, mix=0.2)
    assert pi.sum() == pytest.approx(40)
    assert pi.max() <= 1.0 and pi.min() >= 0.2 * 40 / len(scores) - 1e-12
    assert np.all(pi[-5:] == 1.0)


def test_against_ppi_python():
    # The mean only: ppi-python's logistic path compiles numba kernels for over a minute (checked by hand: our
    # PPI / PPI++ logistic intervals match its ppi_logistic_ci within 1% of the width at N = 20,000, n = 300).
    ppi = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(1)
    n_rows, n = 20000, 300
    x = rng.normal(size=n_rows)
    p = 1 / (1 + np.exp(-(0.3 + x)))
    y = (rng.random(n_rows) < p).astype(float)
    f = np.clip(p + rng.normal(scale=0.15, size=n_rows), 0.01, 0.99)
    rows = rng.choice(n_rows, n, replace=False)
    rest = np.setdiff1d(np.arange(n_rows), rows)
    ours = {e.method: e for e in es.estimate_shares(np.column_stack([1 - f, f]), rows, y[rows].astype(int),
                                                     ["0", "1"], ["ppi", "ppi++"], population="superpopulation")
            if e.target == "share[1]"}
    for method, lam in (("ppi", 1.0), ("ppi++", None)):
        lo, hi = ppi.ppi_mean_ci(y[rows], f[rows], f[rest], alpha=0.05, lam=lam)
        assert ours[method].lower == pytest.approx(float(np.squeeze(lo)), abs=0.004)
        assert ours[method].upper == pytest.approx(float(np.squeeze(hi)), abs=0.004)


def test_errors_are_one_line():
    q = np.full((10, 2), 0.5)
    with pytest.raises(ConfigError, match=r"^unknown estimate method 'ppi\+\+\+'.*did you mean 'ppi\+\+'"):
        es.estimate_shares(q, [0, 1], [0, 1], ["a", "b"], ["ppi+++"])
    with pytest.raises(ConfigError, match="^design 'poisson' needs the sampling probability of every gold row$"):
        es.estimate_shares(q, [0, 1], [0, 1], ["a", "b"], design="poisson")
    with pytest.raises(ConfigError, match=r"^the gold sample lists a row twice"):
        es.estimate_shares(q, [1, 1], [0, 1], ["a", "b"])
    with pytest.raises(DataError, match="^covariate 'k' has the same value on every row: it has no coefficient$"):
        es.estimate_regression(np.ones(10), ["k"], q[:, 1], [0, 1], [0, 1])


def test_separation_is_a_note_not_a_crash():
    x = np.arange(40, dtype=float)
    y = (x >= 20).astype(float)
    rows = np.arange(0, 40, 2)
    out = es.estimate_regression(x, ["x"], y, rows, y[rows], methods=["classical"])
    assert out[0].note == "no finite estimate: the covariates separate the gold outcomes perfectly"
    assert out[0].as_dict()["estimate"] is None and out[0].as_dict()["width"] is None

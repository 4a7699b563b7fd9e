"""The audit against planted noise: synthetic probabilities of known quality, cross-fitting that never lets a row
see its own label, and the ranked suspects."""

from __future__ import annotations

import numpy as np
import pytest

from llmlabel.errors import ConfigError
from llmlabel.stats import audit as au


def _signal(true: np.ndarray, n_classes: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(size=(len(true), n_classes))
    logits[np.arange(len(true)), true] += strength
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("kind", ["uniform", "class_conditional"])
def test_plant_noise_flips_exactly_the_rate(kind):
    labels = np.repeat(np.arange(5), 40)
    noisy, flipped = au.plant_noise(labels, 5, 0.1, kind, seed=3)
    assert flipped.sum() == 20
    assert np.all((noisy != labels) == flipped)  # no flip lands on its own label
    if kind == "class_conditional":  # every label flips to one partner
        partners = {int(a): {int(b) for b in noisy[flipped & (labels == a)]} for a in range(5)}
        assert all(len(p) <= 1 for p in partners.values())


def test_ensemble_of_independent_signals_beats_each_against_planted_noise():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 800)
    noisy, flipped = au.plant_noise(true, 4, 0.1, "uniform", seed=1)
    signals = {"clf": _signal(true, 4, 1.5, rng), "llm": _signal(true, 4, 1.5, rng)}
    single = {name: au.auroc(au.suspicion(noisy, p), flipped) for name, p in signals.items()}
    merged = au.combine(signals, {"classifiers": ["clf"], "llm": ["llm"]})
    both = au.auroc(au.suspicion(noisy, merged["ensemble"]), flipped)
    assert all(0.8 < v < 0.95 for v in single.values()), single
    assert both > max(single.values()) + 0.02
    metrics = au.audit_metrics(au.suspicion(noisy, merged["ensemble"]),
                               au.flag_issues(noisy, merged["ensemble"]), flipped)
    assert metrics["k"] == 80 and metrics["precision_at_k"] > 0.6
    assert metrics["flagged_recall"] > 0.6 and metrics["flagged_precision"] > 0.5


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    scores, truth = rng.random(300).round(1), rng.random(300) < 0.2  # rounded: ties count half
    assert au.auroc(scores, truth) == pytest.approx(roc_auc_score(truth, scores))


def test_temperature_calibration_undoes_overconfidence():
    rng = np.random.default_rng(4)
    true = rng.integers(0, 3, 1000)
    p = _signal(true, 3, 1.0, rng)
    labels = (rng.random(1000)[:, None] > np.cumsum(p, 1)).sum(1)  # labels drawn from p: p is calibrated
    sharp = p ** 4 / (p ** 4).sum(1, keepdims=True)
    fixed = au.temperature_calibrate(sharp, labels)

    def nll(q):
        return -np.mean(np.log(q[np.arange(1000), labels]))

    assert nll(fixed) < nll(sharp) - 0.2
    assert nll(fixed) == pytest.approx(nll(p), abs=0.03)


def test_classifier_signal_is_out_of_fold():
    # Each text is a unique token whose label a model can only memorize: out of fold it must not know it.
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 200)
    texts = [f"tok{i}" for i in range(200)]
    probs = au.classifier_signal(texts, labels, ["a", "b"], "logreg_tfidf", folds=5)
    assert np.all(np.abs(probs[np.arange(200), labels] - 0.5) < 0.2)


def test_llm_demonstrations_never_include_the_row():
    texts = [f"text {i}" for i in range(40)]
    labels = np.arange(40) % 2
    seen = []

    def label_rows(indices, examples):
        shown = {ex["text"] for ex in examples}
        assert not shown & {texts[i] for i in indices}
        seen.append((indices, examples))
        return np.full((len(indices), 2), 0.5)

    probs = au.llm_signal(label_rows, labels, ["a", "b"], texts, shots=4, folds=2, seed=0)
    assert probs.shape == (40, 2) and len(seen) == 2
    assert sorted(i for idx, _ in seen for i in idx) == list(range(40))
    assert all({ex["label"] for ex in examples} == {"a", "b"} for _, examples in seen)


def test_rank_suspects_orders_rows_and_names_the_evidence():
    labels = np.array([0, 0, 1, 1])
    signals = {"clf": np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]),
               "llm": np.array([[0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])}
    suspects, summary = au.rank_suspects(labels, ["neg", "pos"], signals, {"c": ["clf"], "l": ["llm"]},
                                         ids=["a", "b", "c", "d"])
    assert [s["row"] for s in suspects][:2] == [1, 3]
    top = suspects[0]
    assert top["id"] == "b" and top["given_label"] == "neg" and top["suggested_label"] == "pos"
    assert top["agree"] == ["clf", "llm"] and top["score"] == pytest.approx(1 - 0.15)
    assert suspects[1]["agree"] == ["clf"]  # the LLM keeps row 3's label first
    assert summary["rows"] == 4 and set(summary["flagged"]) == {"clf", "llm", "c", "l", "ensemble"}


def test_unknown_names_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^unknown noise kind 'pair'"):
        au.plant_noise(np.zeros(4, int), 2, 0.1, "pair")
    with pytest.raises(ConfigError, match=r"^unknown label-quality method 'margin'"):
        au.suspicion(np.zeros(2, int), np.full((2, 2), 0.5), "margin")

"""Answer parsing and evaluation metrics against hand-computed values."""

from __future__ import annotations

import pytest

from llmlabel.metrics import cohen_kappa, confusion, evaluate, expected_calibration_error, per_class
from llmlabel.core.parsing import parse_answer

LABELS = ["card_arrival", "card", "lost_or_stolen_card"]


@pytest.mark.parametrize("answer, expected", [
    ("card_arrival", "card_arrival"),
    ("Card arrival.", "card_arrival"),
    ("  CARD  ", "card"),
    ("lost or stolen card - the user lost it", "lost_or_stolen_card"),
    ("The label is card arrival", "card_arrival"),
])
def test_parse_answer_finds_the_label(answer, expected):
    assert parse_answer(answer, LABELS) == (expected, None)


def test_parse_answer_failures_have_reasons():
    assert parse_answer("", LABELS) == (None, "empty answer")
    assert parse_answer("no clue", LABELS) == (None, "no label in answer 'no clue'")
    label, reason = parse_answer("either positive or negative", ["positive", "negative"])
    assert label is None and reason.startswith("ambiguous answer")


def test_metrics_match_hand_computation():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", None]
    assert confusion(gold, pred, ["a", "b", "c"]) == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    classes = per_class(gold, pred, ["a", "b", "c"])
    assert classes["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert classes["b"]["precision"] == pytest.approx(2 / 3) and classes["b"]["recall"] == 1.0
    report = evaluate(gold, pred, ["a", "b", "c"], [0.9, 0.6, 0.8, 0.7, 0.0])
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert report["unlabeled"] == 1
    assert report["majority_accuracy"] == pytest.approx(2 / 5)


def test_kappa_and_ece():
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    # observed 0.5, expected 0.5 -> 0
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    # two bins: conf 0.95 all right (gap .05), conf 0.55 half right (gap .05)
    assert expected_calibration_error([0.95, 0.95, 0.55, 0.55], [True, True, True, False]) == pytest.approx(0.05)

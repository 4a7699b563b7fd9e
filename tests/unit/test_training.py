"""Students without a model: losses, the adaptive threshold, confident learning, weak supervisors, PGR, recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmlabel.config import load_recipe
from llmlabel.errors import ConfigError
from llmlabel.training.filters import confidence_weights, confident_joint, find_label_issues
from llmlabel.training.losses import aux_alpha, aux_confidence_loss, harden, quotas, soft_cross_entropy
from llmlabel.training.student import _as_targets, left_pad, length_batches
from llmlabel.training.weak import WeakSupervisor, out_of_fold_probs
from llmlabel.training.weak_to_strong import pgr, split_halves, summarize


# -- losses ----------------------------------------------------------------------------------------------------------
def test_soft_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    row0 = math.log(2)
    log_p = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]
    row1 = -(0.25 * log_p[0] + 0.75 * log_p[1])
    assert soft_cross_entropy(logits, targets).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    weighted = soft_cross_entropy(logits, targets, torch.tensor([3.0, 1.0])).item()
    assert weighted == pytest.approx((3 * row0 + row1) / 4, rel=1e-6)
    # hard labels equal torch's cross-entropy
    hard = torch.tensor([1, 0])
    assert soft_cross_entropy(logits, torch.nn.functional.one_hot(hard, 2).float()).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, hard).item(), rel=1e-6)


def test_quotas_sum_to_n_and_follow_proportions():
    assert quotas(np.array([0.5, 0.5]), 5).tolist() == [3, 2]  # tie in remainders -> lower index
    assert quotas(np.array([0.7, 0.2, 0.1]), 10).tolist() == [7, 2, 1]
    assert quotas(np.array([1 / 3] * 3), 4).sum() == 4
    assert quotas(np.array([0.0, 0.0]), 3).tolist() == [2, 1]  # no information: uniform


def test_harden_binary_is_the_quantile_threshold():
    p0 = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3])
    probs = np.stack([p0, 1 - p0], axis=1)
    # weak labels say 1/3 class 0: the two rows with the highest p(class 0) become class 0, even 0.7 > 0.5 does not
    assert harden(probs, np.array([1 / 3, 2 / 3])).tolist() == [0, 0, 1, 1, 1, 1]
    # weak labels all class 1: everything is hardened to class 1, however confident the student is in class 0
    assert harden(probs, np.array([0.0, 1.0])).tolist() == [1] * 6
    # a 50/50 batch thresholds at the median
    assert harden(probs, np.array([0.5, 0.5])).tolist() == [0, 0, 0, 1, 1, 1]


def test_harden_multiclass_matches_batch_proportions():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1, 1], size=40)
    proportions = np.array([0.1, 0.2, 0.3, 0.4])
    hard = harden(probs, proportions)
    assert np.bincount(hard, minlength=4).tolist() == [4, 8, 12, 16]
    # with proportions equal to the argmax counts, hardening is the argmax
    argmax = probs.argmax(axis=1)
    assert (harden(probs, np.bincount(argmax, minlength=4) / 40) == argmax).mean() > 0.9


def test_aux_alpha_warms_up_linearly_then_stays():
    assert aux_alpha(0, 100, 0.75, 0.2) == 0.0
    assert aux_alpha(10, 100, 0.75, 0.2) == pytest.approx(0.375)
    assert aux_alpha(20, 100, 0.75, 0.2) == pytest.approx(0.75)
    assert aux_alpha(99, 100, 0.75, 0.2) == pytest.approx(0.75)
    assert aux_alpha(0, 100, 0.5, 0.0) == 0.5


def test_aux_loss_on_known_tensors():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]], requires_grad=True)
    weak = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # weak disagrees everywhere, 50/50
    # alpha 0: plain CE on the weak labels
    assert aux_confidence_loss(logits, weak, 0.0).item() == pytest.approx(soft_cross_entropy(logits, weak).item())
    # alpha 1: CE on the student's hardened predictions (rows 0, 1 -> class 0; rows 2, 3 -> class 1)
    own = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert aux_confidence_loss(logits, weak, 1.0).item() == pytest.approx(soft_cross_entropy(logits, own).item())
    mixed = aux_confidence_loss(logits, weak, 0.75)
    expected = 0.25 * soft_cross_entropy(logits, weak) + 0.75 * soft_cross_entropy(logits, own)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
    mixed.backward()  # the hardened target is detached: gradients flow only through the logits
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_aux_loss_threshold_follows_weak_proportions_not_zero_point_five():
    # The student leans to class 0 everywhere; the weak labels say half the batch is class 1. The adaptive threshold
    # hardens the two least class-0 rows to class 1, so the aux target pulls those rows toward class 1.
    logits = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    weak = torch.tensor([[0.5, 0.5]] * 4)
    own = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert aux_confidence_loss(logits, weak, 1.0).item() == pytest.approx(soft_cross_entropy(logits, own).item())


# -- confident learning and selection ----------------------------------------------------------------------------
def _noisy_problem():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 3, size=60)
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), true] = 0.9
    given = true.copy()
    flipped = np.array([3, 17, 31, 45])
    given[flipped] = (true[flipped] + 1) % 3
    return given, probs, flipped


def test_confident_joint_counts_given_vs_confident_class():
    given, probs, flipped = _noisy_problem()
    joint, confident = confident_joint(given, probs)
    assert joint.sum() == 60 and np.trace(joint) == 56
    assert set(np.flatnonzero(confident != given)) == set(flipped.tolist())


@pytest.mark.parametrize("method", ["prune_by_noise_rate", "confident_learning"])
def test_find_label_issues_flags_exactly_the_flipped_rows(method):
    given, probs, flipped = _noisy_problem()
    issues = find_label_issues(given, probs, method=method)
    assert np.flatnonzero(issues).tolist() == sorted(flipped.tolist())


def test_find_label_issues_keeps_a_minimum_per_class_and_names_bad_methods():
    labels = np.array([0, 0, 1, 1, 1, 1])
    probs = np.array([[0.05, 0.95], [0.08, 0.92]] + [[0.1, 0.9]] * 4)  # both rows labeled 0 confidently say 1
    assert find_label_issues(labels, probs, "confident_learning", min_keep_per_class=0).tolist() == [True, True] + [
        False] * 4
    # label 0 must keep one row: the one with the higher p(0) is un-flagged
    issues = find_label_issues(labels, probs, method="confident_learning", min_keep_per_class=1)
    assert issues.tolist() == [True, False, False, False, False, False]
    message = (r"^unknown label-issue method 'prune_by_noise' \(did you mean 'prune_by_noise_rate'\?\); "
               r"valid: confident_learning, prune_by_noise_rate$")
    with pytest.raises(ConfigError, match=message):
        find_label_issues(labels, probs, method="prune_by_noise")  # type: ignore[arg-type]


def test_confidence_weights():
    conf = np.array([0.2, 0.6, 0.9])
    assert confidence_weights(conf).tolist() == [1, 1, 1]
    assert confidence_weights(conf, min_confidence=0.5).tolist() == [0, 1, 1]
    assert confidence_weights(conf, min_confidence=0.5, weight=True).tolist() == [0, 0.6, 0.9]


def test_weak_supervisor_and_out_of_fold_probs():
    texts = [f"great film {i}" for i in range(10)] + [f"awful film {i}" for i in range(10)]
    labels = [1] * 10 + [0] * 10
    model = WeakSupervisor("tfidf").fit(texts, labels, n_classes=3)  # class 2 never seen
    probs = model.predict_proba(["a great movie", "an awful movie"])
    assert probs.shape == (2, 3) and probs[:, 2].tolist() == [0.0, 0.0]
    assert probs.argmax(axis=1).tolist() == [1, 0]
    oof = out_of_fold_probs(texts, labels, 2, folds=5)
    assert oof.shape == (20, 2) and (oof.argmax(axis=1) == np.array(labels)).all()
    with pytest.raises(ConfigError, match=r"^unknown weak supervisor features 'tfid' \(did you mean 'tfidf'\?\)"):
        WeakSupervisor("tfid")  # type: ignore[arg-type]


# -- weak-to-strong bookkeeping -----------------------------------------------------------------------------------
def test_pgr_math():
    assert pgr(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert pgr(0.6, 0.8, 0.8) == pytest.approx(1.0)
    assert pgr(0.6, 0.55, 0.8) == pytest.approx(-0.25)
    assert math.isnan(pgr(0.8, 0.7, 0.8))  # no gap: undefined


def test_split_halves_are_disjoint_seeded_and_checked():
    a, b = split_halves(10, 4, seed=3)
    assert len(a) == len(b) == 4 and not set(a) & set(b)
    assert split_halves(10, 4, seed=3)[0].tolist() == a.tolist()
    with pytest.raises(ConfigError, match=r"^half_size 6 needs 12 labeled rows, the pool has 10$"):
        split_halves(10, 6, seed=0)


def test_summarize_reports_spread_and_the_paired_aux_verdict():
    records = [{"weak": 0.6, "ceiling": 0.8, "w2s_ce": 0.65 + d, "w2s_aux": 0.7 + d,
                "pgr": {"w2s_ce": pgr(0.6, 0.65 + d, 0.8), "w2s_aux": pgr(0.6, 0.7 + d, 0.8)}}
               for d in (0.0, 0.01, 0.02)]
    summary = summarize(records)
    assert summary["w2s_aux"]["mean"] == pytest.approx(0.71)
    assert summary["pgr"]["w2s_aux"]["mean"] == pytest.approx(0.55)
    assert summary["aux_minus_ce"]["aux_beats_ce_beyond_spread"] is True
    records[1]["w2s_aux"] = 0.6  # one seed where aux loses: not beyond the spread
    assert summarize(records)["aux_minus_ce"]["aux_beats_ce_beyond_spread"] is False


# -- tensors and batching without a model ------------------------------------------------------------------------
def test_left_pad_positions_count_real_tokens():
    ids, mask, positions = left_pad([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    hidden, mask, _ = left_pad([torch.ones(2, 4), torch.ones(1, 4)])
    assert hidden.shape == (2, 2, 4) and hidden[1, 0].abs().sum() == 0


def test_length_batches_respect_the_token_budget():
    batches = length_batches([10, 50, 20, 50, 5], batch_tokens=100, max_batch=8)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    assert batches[0] == [1, 3]


def test_targets_from_indices_and_distributions():
    assert _as_targets([1, 0], 2).tolist() == [[0, 1], [1, 0]]
    assert _as_targets(np.array([[2.0, 2.0], [0.0, 0.0]]), 2).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ConfigError, match=r"^target class index out of range 0\.\.1$"):
        _as_targets([2], 2)


# -- recipes ------------------------------------------------------------------------------------------------------
def test_training_recipes_validate_with_did_you_mean():
    base = {"kind": "weak_to_strong", "data": {"path": "x"}, "eval_data": {"path": "y"}}
    recipe = load_recipe(data=base, overrides=["student.method=head", "seeds=[0, 1]"], source="r.yaml")
    assert recipe.student.method == "head" and recipe.seeds == [0, 1]
    with pytest.raises(ConfigError, match=r"^r\.yaml: unknown key 'student\.metod' \(did you mean 'method'\?\)$"):
        load_recipe(data={**base, "student": {"metod": "lora"}}, source="r.yaml")
    with pytest.raises(ConfigError, match=r"^r\.yaml: 'losses\.0': Input should be 'ce' or 'aux' \(got 'mse'\)$"):
        load_recipe(data={**base, "losses": ["mse"]}, source="r.yaml")
    distill = {"kind": "distill_student", "data": {"path": "x"}}
    with pytest.raises(ConfigError, match=r"^r\.yaml: unknown key 'filter\.min_confidance' "
                                          r"\(did you mean 'min_confidence'\?\)$"):
        load_recipe(data={**distill, "filter": {"min_confidance": 0.5}}, source="r.yaml")
    assert load_recipe(data=distill).student.model == "smollm2"


def test_importing_the_recipes_stays_light():
    import subprocess
    import sys

    code = ("import sys; from llmlabel.config import load_recipe; "
            "load_recipe(data={'kind': 'distill_student', 'data': {'path': 'x'}}); "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_card_names_the_method_settings_and_metrics(tmp_path):
    from llmlabel.training.card import write_model_card

    record = {"name": "demo", "labels": ["neg", "pos"], "base_model": "/models/SmolLM2-135M-Instruct-bf16",
              "trained_layers": 2, "num_layers": 30,
              "config": {"method": "lora", "lora_r": 16, "lora_targets": ["q_proj", "v_proj"], "epochs": 2.0},
              "training": {"lr": 0.003, "rows": 256}, "selection": {"rows_kept": 256, "kept_accuracy": 0.69140625},
              "metrics": {"accuracy": 0.66, "eval_rows": 200}, "label_source": "soft labels from a teacher"}
    card = write_model_card(tmp_path, record).read_text()
    assert "base_model: SmolLM2-135M-Instruct-bf16" in card and "# demo" in card
    assert "LoRA (r=16, on q_proj, v_proj) on the top 2 of 30 layers, plus the head" in card
    for row in ("| epochs | 2 |", "| lr | 0.003 |", "| kept_accuracy | 0.6914 |", "| accuracy | 0.6600 |",
                "| eval_rows | 200 |", "soft labels from a teacher"):
        assert row in card


def test_zero_shot_labeler_as_weak_supervisor_gives_probabilities(tmp_path):
    recipe = load_recipe(data={"kind": "weak_to_strong", "data": {"path": "x"}, "eval_data": {"path": "y"},
                               "weak": {"kind": "labeler"}, "model": {"backend": "fake"},
                               "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path)}})
    names = ["negative", "positive"]
    pool = ["so negative and negative", "positive vibes, positive", "meh"]
    from llmlabel.kinds.base import RunContext

    ctx = RunContext(recipe, progress=False)
    try:
        pool_probs, test_probs = recipe._labeler_probs(ctx, pool, ["a positive, positive one"], [0, 1], names)
    finally:
        ctx.close()
    assert pool_probs.shape == (3, 2) and pool_probs[2].tolist() == [0.5, 0.5]  # not needed: not labeled
    assert pool_probs[0].argmax() == 0 and pool_probs[1].argmax() == 1 and test_probs[0].argmax() == 1
    assert pool_probs.sum(axis=1) == pytest.approx([1, 1, 1])
    assert (tmp_path / "cache.sqlite").exists()

"""Exemplar selectors, orderings, calibrators and their use by the Labeler, on the fake backend and a hashing
embedder (no model)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llmlabel.backends.fake import FakeBackend
from llmlabel.errors import ConfigError, DataError
from llmlabel.labeling.labeler import Labeler
from llmlabel.selection.base import Example, make_selector
from llmlabel.selection.ordering import order_examples, search_order
from llmlabel.selection.votek import votek_select
from llmlabel.core.task import LabelTask

POOL = [Example(t, lab) for t, lab in [
    ("the movie was great fun", "positive"), ("a great and moving film", "positive"),
    ("loved every minute of it", "positive"), ("brilliant acting and a great story", "positive"),
    ("the movie was dull and slow", "negative"), ("a boring waste of time", "negative"),
    ("terrible acting and a dull story", "negative"), ("i hated every minute", "negative"),
]]
TASK = LabelTask(labels=["negative", "positive"])


def fit(name, **options):
    if name in ("knn", "mmr", "votek", "epr"):
        options.setdefault("embedder", "hashing")
    return make_selector(name, **options).fit(POOL, scorer=Labeler(FakeBackend(), TASK).demo_scores)


def test_random_is_one_fixed_draw_per_seed():
    sel = fit("random", seed=1)
    a, b = sel.select_many(["x", "y"], 3)
    assert a.examples == b.examples and len(a.examples) == 3 and not sel.per_query
    assert fit("random", seed=2).select("x", 3).examples != a.examples
    assert len(sel.select("x", 50).examples) == len(POOL)  # k is capped at the pool size
    assert sel.select("x", 0).examples == []


def test_balanced_spreads_labels_evenly():
    for k in (2, 3, 5):
        counts = Counter(ex.label for ex in fit("balanced", seed=k).select("x", k).examples)
        assert max(counts.values()) - min(counts.get("positive", 0), counts.get("negative", 0)) <= 1


def test_knn_and_bm25_retrieve_the_overlapping_texts():
    for name in ("knn", "bm25"):
        got = fit(name).select("dull story and terrible acting", 2).examples
        assert got[0].text == "terrible acting and a dull story", name


def test_mmr_trades_relevance_for_diversity():
    pool = [Example("great great film", "positive"), Example("great great film", "positive"),
            Example("great film but slow", "negative"), Example("unrelated words here", "negative")]
    knn = make_selector("knn", embedder="hashing").fit(pool).select("great film", 2).examples
    mmr = make_selector("mmr", embedder="hashing", diversity_weight=0.7).fit(pool).select("great film", 2).examples
    assert knn[0].text == knn[1].text == "great great film"
    assert len({ex.text for ex in mmr}) == 2


def test_votek_covers_every_cluster_first():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 16)
    vecs = np.concatenate([c + 0.05 * rng.standard_normal((20, 16)) for c in centers])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    chosen = votek_select(vecs.astype(np.float32), budget=4, k=5)
    assert sorted(i // 20 for i in chosen) == [0, 1, 2, 3]
    sel = fit("votek", budget=4)
    assert len(sel.annotated) == 4 and len(sel.select("great", 8).examples) == 4


def test_epr_learns_from_lm_scores():
    sel = fit("epr", train_queries=8, candidates=4, epochs=5)
    assert sel.train_log["triples"] > 0 and "final_loss" in sel.train_log
    assert not np.allclose(sel.projection, np.eye(sel.projection.shape[0]))
    assert len(sel.select("great film", 3).examples) == 3
    with pytest.raises(ConfigError, match="^selector 'epr' learns from the LM: fit it with a scorer"):
        make_selector("epr", embedder="hashing").fit(POOL)


def test_unknown_selector_and_option_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"^unknown selector 'kn' \(did you mean 'knn'\?\); valid: balanced, bm25"):
        make_selector("kn")
    with pytest.raises(ConfigError, match=r"^unknown option for selector 'votek' 'budgit' \(did you mean 'budget'\?\)"):
        make_selector("votek", budgit=3)
    with pytest.raises(ConfigError, match="^selector 'knn' needs a non-empty exemplar pool$"):
        make_selector("knn").fit([])


def test_orderings():
    exs = [Example("a", "x"), Example("b", "x"), Example("c", "y"), Example("d", "z")]
    assert [e.text for e in order_examples(exs, "similar_last")] == ["d", "c", "b", "a"]
    rr = [e.label for e in order_examples(exs, "round_robin")]
    assert sorted(rr) == ["x", "x", "y", "z"] and rr[-1] == "x" and rr[0] == "x" and rr[1] != "x"
    with pytest.raises(ConfigError, match=r"^unknown ordering 'last'; valid: as_selected, round_robin, similar_last$"):
        order_examples(exs, "last")
    best, trail = search_order(exs[:3], lambda order: -[e.text for e in order].index("a"), budget=6)
    assert best[0].text == "a" and len(trail) == 6


def test_labeler_puts_selected_demonstrations_in_each_prompt():
    prompts = []
    backend = FakeBackend()
    original = backend.score

    def spy(ps, cands):
        prompts.extend(ps)
        return original(ps, cands)

    backend.score = spy
    labeler = Labeler(backend, TASK, selector=fit("knn"), k=2, ordering="similar_last", calibration="none")
    results = labeler.label_texts(["dull and slow movie", "great fun film"])
    assert "the movie was dull and slow" in prompts[0] and "great fun" in prompts[1]
    # The fake backend favours labels that occur in the prompt: the neighbours' labels win, as small LMs copy them.
    assert [r.label for r in results] == ["negative", "positive"]


def test_restricted_labels_score_only_candidates():
    task = LabelTask(labels=["negative", "positive", "neutral", "mixed"])
    labeler = Labeler(FakeBackend(), task, selector=fit("knn"), k=2, restrict_labels=2)
    result = labeler.label_texts(["boring and dull"])[0]
    assert result.label_probs["neutral"] == result.label_probs["mixed"] == 0.0
    assert result.label in ("negative", "positive") and sum(result.label_probs.values()) == pytest.approx(1)
    with pytest.raises(ConfigError, match="^restrict_labels needs an embedding selector"):
        Labeler(FakeBackend(), task, selector=fit("random"), restrict_labels=2)


@pytest.mark.parametrize("calibration", ["contextual", "domain", "incontext", "batch"])
def test_every_calibrator_gives_distributions(calibration):
    for selector in (None, fit("random"), fit("knn")):
        labeler = Labeler(FakeBackend(), TASK, calibration=calibration, selector=selector, k=2)
        results = labeler.label_texts(["great film", "dull film", "fine"])
        for r in results:
            assert sum(r.label_probs.values()) == pytest.approx(1) and r.label in TASK.names


def test_batch_calibration_removes_a_skewed_prior():
    # Every text mentions "positive", so raw predictions all say positive; the batch mean divides that out.
    texts = ["positive positive bad", "positive good good", "positive positive positive", "positive fine"] * 4
    raw = [r.label for r in Labeler(FakeBackend(), TASK, calibration="none").label_texts(texts)]
    calibrated = [r.label for r in Labeler(FakeBackend(), TASK, calibration="batch").label_texts(texts)]
    assert set(raw) == {"positive"} and set(calibrated) == {"negative", "positive"}


def test_unknown_calibration_is_one_line():
    with pytest.raises(ConfigError, match=r"^unknown calibration 'contextal' \(did you mean 'contextual'\?\); "
                                          r"valid: auto, batch, contextual, domain, incontext, none$"):
        Labeler(FakeBackend(), TASK, calibration="contextal")
    with pytest.raises(ConfigError, match="^calibration 'domain' needs mode 'score'$"):
        Labeler(FakeBackend(), TASK, mode="generate", calibration="domain")


def _write(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_recipe_with_selection_runs_and_validates(tmp_path):
    from llmlabel.config import load_recipe

    pool = _write(tmp_path / "pool.jsonl", [{"text": e.text, "label": e.label} for e in POOL])
    data = _write(tmp_path / "test.jsonl", [{"text": "dull slow story", "label": "negative"},
                                            {"text": "great fun film", "label": "positive"}])
    recipe = {"name": "t", "model": {"backend": "fake"}, "data": {"path": str(data)},
              "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path / "out")},
              "labeling": {"calibration": "batch", "selection": {
                  "method": "knn", "k": 2, "pool": {"path": str(pool), "sample": 6},
                  "options": {"embedder": "hashing"}}}}
    summary = load_recipe(data=recipe).run(progress=False)
    assert summary["rows"] == 2 and summary["metrics"]["n"] == 2
    bad = {**recipe, "labeling": {"calibration": "contextal", "selection": {"method": "kn", "pool": {"path": "x"}}}}
    with pytest.raises(ConfigError) as err:
        load_recipe(data=bad, source="r.yaml")
    assert str(err.value) == (
        "r.yaml: 'labeling.calibration': unknown calibration 'contextal' (did you mean 'contextual'?); valid: auto, batch, "
        "contextual, domain, incontext, none; 'labeling.selection.method': unknown selector 'kn' (did you mean "
        "'knn'?); valid: balanced, bm25, epr, knn, mmr, random, votek")
    wrong = {**recipe, "labeling": {"selection": {"pool": {"path": str(pool), "label_field": "lable"}}}}
    with pytest.raises(DataError, match=r"^unknown column in exemplar pool .*pool.jsonl 'lable' \(did you mean "
                                        r"'label'\?\); valid: label, text$"):
        load_recipe(data=wrong).run(progress=False)


def test_batch_calibration_of_a_few_rows_falls_back_to_the_content_free_prior():
    one = Labeler(FakeBackend(), TASK, calibration="batch").label_texts(["negative negative"])[0]
    contextual = Labeler(FakeBackend(), TASK, calibration="contextual").label_texts(["negative negative"])[0]
    assert one.label == "negative" and one.label_probs == pytest.approx(contextual.label_probs)


def test_self_generated_pool_from_an_earlier_run(tmp_path):
    """Self-generated ICL: label unlabeled texts, then use the confident predictions as the exemplar pool."""
    from llmlabel.config import load_recipe

    unlabeled = _write(tmp_path / "u.jsonl", [{"text": e.text} for e in POOL])
    first = {"name": "a", "model": {"backend": "fake"}, "data": {"path": str(unlabeled), "label_field": None},
             "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path / "a")}}
    predictions = load_recipe(data=first).run(progress=False)["predictions"]
    data = _write(tmp_path / "test.jsonl", [{"text": "dull slow story", "label": "negative"}])
    second = {"name": "b", "model": {"backend": "fake"}, "data": {"path": str(data)},
              "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path / "b")},
              "labeling": {"selection": {"method": "knn", "k": 2, "options": {"embedder": "hashing"},
                                         "pool": {"path": predictions, "min_confidence": 0.5}}}}
    assert load_recipe(data=second).run(progress=False)["rows"] == 1
    second["labeling"]["selection"]["pool"]["min_confidence"] = 1.0
    with pytest.raises(DataError, match=r"^no pool row of .* has confidence >= 1.0$"):
        load_recipe(data=second).run(progress=False)


def test_choose_calibration_picks_the_best_dev_macro_f1():
    from llmlabel.calibration.select import choose_calibration

    # Every dev text mentions "positive": uncalibrated labels are all positive, batch calibration splits them.
    texts = ["positive positive bad", "positive good good", "positive positive positive", "positive fine"] * 4
    gold = ["negative", "positive", "positive", "negative"] * 4
    best, scores = choose_calibration(FakeBackend(), TASK, texts, gold, candidates=("none", "batch"))
    assert set(scores) == {"none", "batch"} and scores["batch"] > scores["none"] and best == "batch"
    with pytest.raises(ConfigError, match=r"^dev label 'postive' is not a task label \(did you mean 'positive'\?\)"):
        choose_calibration(FakeBackend(), TASK, ["x"], ["postive"])

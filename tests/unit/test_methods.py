"""Classifiers (baselines, retrieval priors) and labeling methods (kNN prompting, fusion) on the fake backend and a
hashing embedder."""

from __future__ import annotations

import numpy as np
import pytest

from llmlabel.backends.fake import FakeBackend
from llmlabel.classifiers.base import make_classifier
from llmlabel.errors import ConfigError
from llmlabel.labeling.labeler import Labeler
from llmlabel.methods.base import split_dev
from llmlabel.methods.fusion import Fusion
from llmlabel.methods.knn_prompting import KNNPrompting
from llmlabel.selection.base import Example
from llmlabel.core.task import LabelTask

WORDS = {"sports": "match team goal coach league score", "business": "market stock profit bank shares trade",
         "science": "space physics lab cell gene research"}
TASK = LabelTask(labels=list(WORDS))


def make_pool(n: int, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = list(WORDS)[i % 3]
        words = rng.choice(WORDS[label].split(), size=4).tolist() + rng.choice(["the", "a", "of", "news"], 2).tolist()
        out.append(Example(" ".join(rng.permutation(words)), label))
    return out


@pytest.mark.parametrize("name", ["knn_vote", "logreg_embeddings", "logreg_tfidf"])
def test_classifiers_learn_a_separable_task(name):
    options = {} if name == "logreg_tfidf" else {"embedder": "hashing"}
    pool, test = make_pool(90), make_pool(30, seed=1)
    clf = make_classifier(name, labels=TASK.names, **options).fit([e.text for e in pool], [e.label for e in pool])
    proba = clf.predict_proba([e.text for e in test])
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1)
    assert np.mean([p == e.label for p, e in zip(clf.predict([e.text for e in test]), test)]) >= 0.9


def test_classifier_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"^unknown classifier 'knn_vot' \(did you mean 'knn_vote'\?\)"):
        make_classifier("knn_vot")
    with pytest.raises(ConfigError, match=r"^unknown option for classifier 'knn_vote' 'kk' \(did you mean 'k'\?\)"):
        make_classifier("knn_vote", kk=3)
    with pytest.raises(ConfigError, match="^classifier 'logreg_tfidf' is not fit: call fit"):
        make_classifier("logreg_tfidf").predict_proba(["x"])


def test_knn_prompting_votes_in_the_lm_output_space():
    pool, test = make_pool(60), make_pool(30, seed=1)
    method = KNNPrompting(Labeler(FakeBackend(), TASK)).fit(pool)
    assert method.report["k"] in (1, 3, 5, 9, 17, 33) and method.report["anchors"] == len(pool)
    results = method.label_texts([e.text for e in test])
    assert np.mean([r.label == e.label for r, e in zip(results, test)]) >= 0.8
    assert all(sum(r.label_probs.values()) == pytest.approx(1) for r in results)


def test_fusion_cross_fits_the_weight_over_pool_and_dev():
    pool, test = make_pool(60), make_pool(30, seed=1)
    train, dev = split_dev(pool, 12)
    method = Fusion(Labeler(FakeBackend(), TASK), classifier="knn_vote",
                    classifier_options={"embedder": "hashing"}).fit(train, dev)
    selection = method.report["selection"]
    assert selection["rows"] == 60 and selection["metric"] == "log_loss" and selection["baseline"] == 0.0
    assert method.report["weight"] == selection["chosen"] and len(selection["scores"]) == 11
    rows = method.label([{"text": e.text, "label": e.label} for e in test])
    assert np.mean([r["label"] == r["gold_label"] for r in rows]) >= 0.8


def test_knn_prompting_needs_a_full_distribution_backend():
    class NoDist(FakeBackend):
        next_token_logprobs = FakeBackend.__mro__[1].next_token_logprobs

    with pytest.raises(NotImplementedError, match="does not return full next-token distributions"):
        KNNPrompting(Labeler(NoDist(), TASK)).fit(make_pool(6))


def test_recipe_with_a_method_runs(tmp_path):
    import json

    from llmlabel.config import load_recipe

    def write(path, examples):
        path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in examples))
        return str(path)

    recipe = {"name": "t", "model": {"backend": "fake"}, "data": {"path": write(tmp_path / "t.jsonl", make_pool(20, 1))},
              "task": {"labels": TASK.names}, "output": {"dir": str(tmp_path / "out")},
              "labeling": {"method": {"name": "fusion", "pool": {"path": write(tmp_path / "p.jsonl", make_pool(60))},
                                      "folds": 3, "options": {"classifier": "logreg_tfidf"}}}}
    summary = load_recipe(data=recipe).run(progress=False)
    assert summary["rows"] == 20 and summary["metrics"]["accuracy"] >= 0.8
    assert summary["mode"] == "fusion over score" and 0 <= summary["method"]["weight"] <= 1
    json.dumps(summary)
    assert summary["method"]["selection"]["rows"] == 60 and summary["method"]["selection"]["folds"] == 3
    with pytest.raises(ConfigError, match=r"'labeling.method.name': unknown method 'fusoin' \(did you mean 'fusion'"):
        load_recipe(data={**recipe, "labeling": {"method": {"name": "fusoin", "pool": {"path": "x"}}}})
    with pytest.raises(ConfigError, match=r"dev_size is gone: settings are cross-fitted over the whole pool \(set fo"):
        load_recipe(data={**recipe, "labeling": {"method": {"name": "fusion", "pool": {"path": "x"}, "dev_size": 9}}})

"""Settings chosen from labeled data (llmlabel.tuning) and the methods that use it, on planted LLM scores: a useless
LLM (random scores) earns no weight and the result is the classifier's exactly; an informative one earns weight."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from llmlabel.backends.fake import FakeBackend
from llmlabel.classifiers.base import make_classifier
from llmlabel.errors import ConfigError
from llmlabel.labeling.labeler import Labeler
from llmlabel.methods.fusion import Fusion
from llmlabel.methods.stacking import Stacking
from llmlabel.selection.base import Example
from llmlabel.core.task import LabelTask
from llmlabel.tuning import choose, cross_fit, fold_ids, paired_gain

WORDS = {"sports": "match team goal coach league", "business": "market stock profit bank shares",
         "science": "space physics lab cell gene"}
NAMES = list(WORDS)
TASK = LabelTask(labels=NAMES)
FILLER = "the a of news today report said new big small old".split()


def make_rows(n: int, seed: int) -> list[Example]:
    """A 3-label task the classifier half-solves: 45% of rows carry one word of their label, the rest only filler."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = NAMES[i % 3]
        words = rng.choice(FILLER, size=5).tolist()
        if rng.random() < 0.45:
            words.append(str(rng.choice(WORDS[label].split())))
        out.append(Example(f"row{seed}x{i} " + " ".join(rng.permutation(words)), label))
    return out


class PlantedLLM(FakeBackend):
    """Scores planted per row: `informative` puts the gold label ahead on about 85% of rows; otherwise every
    label's score is random (seeded by the row), whatever the text says."""

    def __init__(self, rows: list[Example], informative: bool):
        super().__init__(model=f"planted-{informative}")
        self.gold = {re.search(r"row\d+x\d+", e.text).group(): e.label for e in rows}
        self.informative = informative

    def score(self, prompts, candidates, first_token=False):
        out = []
        for prompt, cands in zip(prompts, candidates):
            row = re.findall(r"row\d+x\d+", prompt)[-1]
            rng = np.random.default_rng(zlib.crc32(row.encode()))
            noise = rng.normal(0, 1.0, len(cands))
            if self.informative:
                noise += np.array([2.0 if c == self.gold[row] else 0.0 for c in cands])
            out.append((3.0 * noise).tolist() if not self.informative else noise.tolist())
        return out


POOL, TEST = make_rows(300, 0), make_rows(240, 1)


def classifier_probs() -> np.ndarray:
    clf = make_classifier("logreg_embeddings", labels=NAMES, embedder="hashing")
    clf.fit([e.text for e in POOL], [e.label for e in POOL])
    return clf.predict_proba([e.text for e in TEST])


def accuracy(probs: np.ndarray) -> float:
    return float(np.mean([NAMES[i] == e.label for i, e in zip(probs.argmax(axis=1), TEST)]))


def method_probs(method) -> np.ndarray:
    return np.asarray([[r.label_probs[n] for n in NAMES] for r in method.label_texts([e.text for e in TEST])])


def labeler(informative: bool) -> Labeler:
    return Labeler(PlantedLLM(POOL + TEST, informative), TASK, calibration="none")


@pytest.mark.parametrize("kind", [Fusion, Stacking])
def test_a_useless_llm_earns_no_weight_and_the_result_is_the_classifiers(kind):
    method = kind(labeler(False), classifier="logreg_embeddings",
                  classifier_options={"embedder": "hashing"}).fit(POOL)
    report = method.report
    assert report["llm_earned_weight"] is False and report["selection"]["chosen"] == report["selection"]["baseline"]
    assert report.get("weight", 0.0) == 0.0 and report["selection"]["rows"] == len(POOL)
    calls = method.labeler.backend.calls["score"]
    assert np.allclose(method_probs(method), classifier_probs())
    assert method.labeler.backend.calls["score"] == calls  # weight 0: the LLM is not even asked


@pytest.mark.parametrize("kind", [Fusion, Stacking])
def test_an_informative_llm_earns_weight_and_beats_the_classifier(kind):
    method = kind(labeler(True), classifier="logreg_embeddings",
                  classifier_options={"embedder": "hashing"}).fit(POOL)
    selection = method.report["selection"]
    assert method.report["llm_earned_weight"] is True and selection["z"] >= selection["z_needed"]
    assert selection["scores"][str(selection["chosen"])] < selection["scores"][str(selection["baseline"])]
    if kind is Fusion:
        assert 0 < method.report["weight"] <= 1 and set(selection["scores"]) == {str(w / 10) for w in range(11)}
    assert accuracy(method_probs(method)) > accuracy(classifier_probs()) + 0.1


def test_folds_are_stratified_and_cross_fit_never_predicts_a_row_from_itself():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 3)
    folds = fold_ids(labels, 5, seed=3)
    assert sorted(np.bincount(folds)) == [3, 3, 4, 4, 4]
    assert all(len(set(folds[labels == y])) == min(5, (labels == y).sum()) for y in (0, 1, 2))
    seen = cross_fit(lambda train, held: np.array([[float(h in train)] for h in held]), folds)
    assert seen.sum() == 0
    with pytest.raises(ConfigError, match=r"^cross-fitting with 5 folds needs at least 5 labeled rows \(got 3\)$"):
        fold_ids([0, 1, 0], 5)


def test_choose_keeps_the_baseline_on_noise_and_takes_a_real_gain():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 400)
    base = np.where(rng.random(400) < 0.7, gold, 1 - gold)
    onehot = lambda pred: np.eye(2)[pred] * 0.8 + 0.1  # noqa: E731
    noisy = base.copy()
    flip = rng.choice(400, 6, replace=False)
    noisy[flip] = gold[flip]  # 6 rows fixed: +1.5 points, within the noise at 400 rows
    better = np.where(rng.random(400) < 0.6, gold, base)  # most wrong rows fixed
    for metric in ("macro_f1", "accuracy", "log_loss"):
        kept = choose({"base": onehot(base), "noisy": onehot(noisy)}, gold, "base", metric=metric)
        assert kept.chosen == "base" and kept.challenger == "noisy" and 0 < kept.gain and not kept.earned
        taken = choose({"base": onehot(base), "noisy": onehot(noisy), "better": onehot(better)}, gold, "base",
                       metric=metric)
        assert taken.chosen == "better" and taken.earned and taken.z > 2
        assert set(taken.as_dict()["scores"]) == {"base", "noisy", "better"}
    gain, se = paired_gain(onehot(better), onehot(base), gold, "accuracy", folds=fold_ids(gold, 5), unit="folds")
    assert gain > 0 and se > 0
    with pytest.raises(ConfigError,
                       match=r"^unknown selection metric 'f1'; valid: accuracy, log_loss, macro_f1, row_mean$"):
        choose({"a": onehot(base)}, gold, "a", metric="f1")


def test_knn_prompting_cross_fits_k_over_the_whole_pool():
    from llmlabel.methods.knn_prompting import KNNPrompting

    pool = make_rows(60, 2)
    method = KNNPrompting(Labeler(FakeBackend(), TASK)).fit(pool[:48], pool[48:])
    selection = method.report["selection"]
    assert method.report["anchors"] == 60 and selection["rows"] == 60 and selection["metric"] == "macro_f1"
    assert selection["baseline"] == 9 and method.report["k"] == selection["chosen"]
    assert set(selection["scores"]) == {"1", "3", "5", "9", "17", "33"}


def test_search_order_keeps_the_given_order_unless_beaten_beyond_noise():
    from llmlabel.selection.ordering import search_order

    exs = [Example(t, "x") for t in "abcd"]
    rng = np.random.default_rng(0)
    rows = rng.random(60)

    def tiny(order):  # 'a' first is slightly better on 2 of 60 rows: noise
        return (rows < 0.5).astype(float) + (order[0].text == "a") * np.r_[np.ones(2), np.zeros(58)]

    best, trail = search_order(exs[1:] + exs[:1], tiny, budget=10)
    assert [e.text for e in best] == ["b", "c", "d", "a"] and len(trail) == 10

    def clear(order):
        return np.full(60, 1.0 if order[0].text == "a" else 0.2) * (rows < 0.9)

    best, _ = search_order(exs[1:] + exs[:1], clear, budget=24)
    assert best[0].text == "a"


def test_describe_says_what_was_chosen_and_why():
    from llmlabel.tuning import describe

    gold = np.array([0, 1] * 50)
    good, bad = np.eye(2)[gold] * 0.8 + 0.1, np.full((100, 2), 0.5)
    assert describe(choose({0.0: bad, 0.5: good}, gold, 0.0).as_dict()).startswith(
        "chose 0.5 over 0.0 (log_loss 0.1054 vs 0.6932, z inf >= 2, 100 rows)")
    assert describe(choose({0.0: good, 0.5: bad}, gold, 0.0).as_dict()) == \
        "kept 0.0 (best challenger 0.5: z 0.0 < 2, 100 rows)"  # worse on every row alike: no test needed

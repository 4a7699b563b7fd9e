"""Exemplar selection and the pool-based methods on the real default model, MiniLM and shared TREC data."""

from __future__ import annotations

import os
import random

import pytest

from helpers import SHARED_DATA, read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup():
    from llmlabel.backends.transformers import TransformersBackend
    from llmlabel.data import load_labels_file
    from llmlabel.selection.base import pool_from_rows
    from llmlabel.core.task import LabelTask

    shared_data = SHARED_DATA
    if not shared_data.exists():
        pytest.fail(f"shared data not found at {shared_data}") if os.environ.get("LLMLABEL_REQUIRE_SHARED") == "1" \
            else pytest.skip(f"shared data not found at {shared_data}")
    task = LabelTask(labels=load_labels_file(shared_data / "trec" / "labels.json"),
                     instruction="Classify the type of answer the question asks for.", text_name="Question")
    train = random.Random(0).sample(read_jsonl(shared_data / "trec" / "train.jsonl"), 300)
    test = read_jsonl(shared_data / "trec" / "test.jsonl")[:16]
    return TransformersBackend(), task, pool_from_rows(train, label_of=task.gold), test


def test_knn_demonstrations_are_the_neighbours_and_labels_are_valid(setup):
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.selection.base import make_selector

    backend, task, pool, test = setup
    selector = make_selector("knn").fit(pool)
    picked = selector.select_many([r["text"] for r in test], 4)
    assert all(s.scores == sorted(s.scores, reverse=True) and s.scores[0] > 0.3 for s in picked)
    assert len({tuple(e.index for e in s.examples) for s in picked}) > 8  # per-row demonstrations
    rows = Labeler(backend, task, selector=selector, k=4, ordering="similar_last", calibration="batch").label(test)
    assert all(r["label"] in task.names and r["status"] == "ok" for r in rows)


def test_epr_trains_on_real_lm_scores(setup):
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.selection.base import make_selector

    backend, task, pool, test = setup
    selector = make_selector("epr", train_queries=8, candidates=3, epochs=5)
    selector.fit(pool, scorer=Labeler(backend, task).demo_scores)
    assert selector.train_log["triples"] >= 4
    assert len(selector.select(test[0]["text"], 4).examples) == 4


def test_knn_prompting_and_fusion_on_the_real_model(setup):
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.methods.base import split_dev
    from llmlabel.methods.fusion import Fusion
    from llmlabel.methods.knn_prompting import KNNPrompting

    backend, task, pool, test = setup
    train, dev = split_dev(pool[:60], 12)
    texts = [r["text"] for r in test[:8]]
    knnp = KNNPrompting(Labeler(backend, task)).fit(train, dev)
    assert knnp.report["anchors"] == 60 and knnp.report["columns"] >= 64 and knnp.report["selection"]["rows"] == 60
    assert all(r.label in task.names for r in knnp.label_texts(texts))
    fusion = Fusion(Labeler(backend, task, calibration="batch"), classifier="knn_vote").fit(train, dev)
    selection = fusion.report["selection"]
    assert selection["rows"] == 60 and fusion.report["weight"] == selection["chosen"]
    assert selection["scores"][str(selection["chosen"])] <= selection["scores"]["0.0"]  # log-loss: lower is better
    assert len(fusion.label_texts(texts)) == len(texts)

"""The pieces around the Labeler: the Engine protocol and its one chunk loop, typed raw results and their cache
form, prompting, and label shortlists."""

from __future__ import annotations

import numpy as np
import pytest

from llmlabel.backends.fake import FakeBackend
from llmlabel.core.results import LabelResult, LabelStats
from llmlabel.core.task import LabelTask
from llmlabel.labeling.engine import ChunkedEngine, Engine, chunks
from llmlabel.labeling.labeler import Labeler
from llmlabel.labeling.raw import Answer, Refused, Scores, YesNo, from_cache
from llmlabel.selection.candidates import shortlist

TASK = LabelTask(labels=["negative", "positive"])


class Counting(ChunkedEngine):
    """An engine that labels every row 'positive' and records its chunk sizes."""

    def __init__(self, chunk_size: int):
        self.stats, self.chunk_size, self.sizes = LabelStats(), chunk_size, []

    def label_chunk(self, chunk):
        self.sizes.append(len(chunk))
        return [LabelResult("positive", {"positive": 1.0}, 1.0, truncated=i == 0) for i in range(len(chunk))]


def test_the_chunk_loop_chunks_counts_and_keeps_order():
    engine = Counting(chunk_size=4)
    rows = [{"text": str(i)} for i in range(10)]
    out = list(engine.iter_label(rows))
    assert [row for row, _ in out] == rows and engine.sizes == [4, 4, 2]
    assert engine.stats.rows == 10 and engine.stats.truncated == 3 and engine.stats.statuses["ok"] == 10
    assert engine.bar is None and engine.stats.seconds > 0
    assert list(chunks(iter(range(5)), 2)) == [[0, 1], [2, 3], [4]]


def test_labeler_and_methods_are_engines():
    from llmlabel.methods.base import make_method

    labeler = Labeler(FakeBackend(), TASK, chunk_size=3)
    method = make_method("fusion", labeler, classifier="logreg_tfidf")
    assert isinstance(labeler, Engine) and isinstance(method, Engine)
    assert method.chunk_size == 3  # labeling.chunk_size, not a fixed size of its own


def test_raw_results_round_trip_through_their_cached_form():
    cached = {"scores": [-1.0, None], "usage": {"tokens": 3}, "note": "sampled"}
    raw = from_cache(cached)
    assert isinstance(raw, Scores) and raw.scores == [-1.0, None] and raw.note == "sampled"
    assert raw.as_dict() == cached
    for value in ({"yes_no": [[-0.1, -2.0]]}, {"answer": "positive"}, {"refused": "no", "usage": {}}):
        assert from_cache(value).as_dict() == value
    assert [type(from_cache(v)) for v in ({"yes_no": []}, {"answer": ""}, {"refused": ""})] == [YesNo, Answer, Refused]
    with pytest.raises(ValueError, match="not a raw result"):
        from_cache({"other": 1})


def test_a_note_becomes_the_rows_reason_and_a_refusal_is_a_refused_row():
    labeler = Labeler(FakeBackend(), TASK)
    noted = Scores([-0.1, -3.0], info={"note": "sampled"}).result(labeler.reading, truncated=False)
    assert noted.label == "negative" and noted.reason == "sampled" and noted.status == "ok"
    refused = Refused("policy", info={"note": "x"}).result(labeler.reading, truncated=True)
    assert refused.status == "refused" and refused.reason == "policy" and refused.truncated and refused.label is None


def test_prompting_renders_the_answer_prefix_and_continuations():
    labeler = Labeler(FakeBackend(), TASK, answer_prefix="Label:")
    prompt = labeler.prompting.render("a fine film", None)
    assert prompt.endswith("Label:") and "a fine film" in prompt
    assert labeler.prompting.continuations(None) == [" negative", " positive"]
    assert labeler.prompting.continuations((1,)) == [" positive"]
    text, pair, invalid = labeler.prompting.clean("bad \udc80 byte", None)
    assert invalid and "\ufffd" in text and pair is None


def test_a_shortlist_starts_with_the_demonstrations_labels_then_neighbour_votes():
    sims = np.asarray([0.9, 0.8, 0.7, 0.1])
    pool_labels = [2, 2, 3, 0]
    assert shortlist([1], sims, pool_labels, size=2) == (1, 2)
    assert shortlist([1], sims, pool_labels, size=3) == (1, 2, 3)
    assert shortlist([3, 1], sims, pool_labels, size=1) == (1, 3)  # demonstrations' labels always stay

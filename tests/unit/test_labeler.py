"""The labeling engine on the fake backend: modes, probabilities, calibration, caching, bad rows."""

from __future__ import annotations

import logging

import pytest

from llmlabel.backends.fake import FakeBackend
from llmlabel.cache import ResultCache
from llmlabel.errors import ConfigError, DataError
from llmlabel.labeling.labeler import Labeler
from llmlabel.core.task import LabelTask

TASK = LabelTask(labels=["negative", "positive"], instruction="Classify the sentiment.")


def test_score_mode_labels_and_probabilities(sentiment_rows):
    rows = Labeler(FakeBackend(), TASK).label(sentiment_rows)
    assert [r["label"] for r in rows] == [r["gold_label"] for r in rows]
    for r in rows:
        assert set(r["label_probs"]) == {"negative", "positive"}
        assert sum(r["label_probs"].values()) == pytest.approx(1.0)
        assert r["confidence"] == max(r["label_probs"].values())
        assert r["status"] == "ok" and r["reason"] is None


def test_gold_column_is_kept_under_a_new_name(sentiment_rows):
    labeler = Labeler(FakeBackend(), TASK)
    row = labeler.label(sentiment_rows[:1])[0]
    assert labeler.gold_column == "gold_label"
    assert row["gold_label"] == "positive" and row["text"] == sentiment_rows[0]["text"]


def test_mean_normalization_divides_by_label_tokens():
    task = LabelTask(labels=["good", "very bad indeed"])
    backend = FakeBackend()
    summed = Labeler(backend, task).label_texts(["neutral words"])[0]
    mean = Labeler(backend, task, normalize="mean").label_texts(["neutral words"])[0]
    # The fake penalizes every token: summing favours the short label, per-token averaging less so.
    assert summed.label_probs["good"] > mean.label_probs["good"]


def test_generate_mode_parses_and_records_failures():
    backend = FakeBackend(responses=["I think: Positive!"])
    backend.supports_choices = False  # force free generation + parsing
    ok = Labeler(backend, TASK, mode="generate").label_texts(["whatever"])[0]
    assert (ok.label, ok.status, ok.raw_answer) == ("positive", "ok", "I think: Positive!")
    backend.responses = ["no idea, sorry"]
    bad = Labeler(backend, TASK, mode="generate").label_texts(["something else"])[0]
    assert bad.label is None and bad.status == "unparseable"
    assert bad.reason == "no label in answer 'no idea, sorry'"


def test_generate_mode_uses_constrained_choices_when_backend_allows():
    result = Labeler(FakeBackend(), TASK, mode="generate").label_texts(["negative negative"])[0]
    assert result.label == "negative" and result.raw_answer == "negative"


def test_contextual_calibration_removes_the_content_free_prior():
    task = LabelTask(labels=["x", "y"], instruction="Pick x or y, x is popular.")  # "x" occurs more in every prompt
    plain = Labeler(FakeBackend(), task, calibration="none").label_texts(["y"])[0]
    calibrated = Labeler(FakeBackend(), task, calibration="contextual").label_texts(["y"])[0]
    assert calibrated.label_probs["y"] > plain.label_probs["y"]
    assert sum(calibrated.label_probs.values()) == pytest.approx(1.0)


def test_multi_label_gives_independent_probabilities():
    task = LabelTask(labels=["sports", "politics", "tech"], multi_label=True)
    result = Labeler(FakeBackend(), task).label_texts(["sports and politics"])[0]
    assert isinstance(result.label, list)
    assert set(result.label_probs) == {"sports", "politics", "tech"}
    assert all(0 <= p <= 1 for p in result.label_probs.values())


def test_empty_and_missing_text():
    labeler = Labeler(FakeBackend(), TASK)
    rows = labeler.label([{"text": ""}, {"text": None}, {"text": "   "}, {"text": "positive"}])
    assert [r["status"] for r in rows] == ["skipped", "skipped", "skipped", "ok"]
    assert rows[0]["reason"] == "empty text"
    assert labeler.stats.statuses == {"skipped": 3, "ok": 1}
    with pytest.raises(DataError, match=r"^unknown text column 'text' \(did you mean 'txt'\?\); valid: txt$"):
        labeler.label([{"txt": "hello"}])


def test_long_text_is_truncated_with_a_warning(caplog):
    labeler = Labeler(FakeBackend(max_context=120), TASK)
    with caplog.at_level(logging.WARNING, logger="llmlabel"):
        rows = labeler.label([{"text": "word " * 1000}, {"text": "short positive"}])
    assert [r["truncated"] for r in rows] == [True, False]
    assert rows[0]["status"] == "ok"
    assert labeler.stats.truncated == 1
    assert "1 text(s) were longer than the model's context and were truncated" in caplog.text


def test_cache_reuses_results(tmp_path, sentiment_rows):
    cache = ResultCache(tmp_path / "c.sqlite")
    backend = FakeBackend()
    first = Labeler(backend, TASK, cache=cache, calibration="none")  # counts backend calls: no probes
    out1 = first.label(sentiment_rows)
    assert first.stats.computed == 4 and first.stats.cached == 0
    calls = backend.calls["prompts_scored"]
    second = Labeler(backend, TASK, cache=cache, calibration="none")
    out2 = second.label(sentiment_rows)
    assert second.stats.cached == 4 and second.stats.computed == 0
    assert backend.calls["prompts_scored"] == calls
    assert out1 == out2
    # Anything that shapes the result changes the key: a new instruction recomputes.
    other = Labeler(backend, LabelTask(labels=["negative", "positive"], instruction="Other."), cache=cache)
    other.label(sentiment_rows)
    assert other.stats.computed == 4


def test_few_shot_examples_go_into_the_prompt_and_are_checked():
    labeler = Labeler(FakeBackend(), TASK, examples=[{"text": "great", "label": "positive"}])
    assert "great" in labeler.prompting.render("new text", None)
    with pytest.raises(ConfigError, match="few-shot example label 'meh' is not a task label; valid: negative, positive"):
        Labeler(FakeBackend(), TASK, examples=[{"text": "x", "label": "meh"}])


def test_backend_failures_become_failed_rows(monkeypatch):
    from llmlabel.errors import BackendError

    backend = FakeBackend()

    def boom(prompts, candidates):
        raise BackendError("server returned 503 five times")

    monkeypatch.setattr(backend, "score", boom)
    rows = Labeler(backend, TASK).label([{"text": "a"}, {"text": "b"}])
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["reason"] == "server returned 503 five times"


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="^unknown mode 'scroe'; valid: generate, score$"):
        Labeler(FakeBackend(), TASK, mode="scroe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^calibration 'contextual' needs mode 'score'$"):
        Labeler(FakeBackend(), TASK, mode="generate", calibration="contextual")


def test_gold_labels_are_validated():
    assert TASK.gold({"label": "positive"}) == "positive"
    assert TASK.gold({"label": 0}) == "negative"  # class index
    with pytest.raises(DataError, match=r"^unknown gold label in column 'label' 'postive' \(did you mean 'positive'\?\)"):
        TASK.gold({"label": "postive"})


def test_humanized_labels_are_shown_and_scored_as_words_but_output_as_names():
    task = LabelTask(labels=["card_arrival", "lost_or_stolen_card"], humanize_labels=True)
    assert task.texts_shown == ["card arrival", "lost or stolen card"]
    labeler = Labeler(FakeBackend(), task, examples=[{"text": "where is it", "label": "card_arrival"}])
    prompt = labeler.prompting.render("my card was stolen", None)
    assert "- card arrival" in prompt and "Label: card arrival" in prompt and "card_arrival" not in prompt
    result = labeler.label_texts(["lost or stolen card, lost or stolen card"])[0]
    assert result.label == "lost_or_stolen_card" and set(result.label_probs) == {"card_arrival", "lost_or_stolen_card"}
    backend = FakeBackend(responses=["Card arrival."])
    backend.supports_choices = False
    generated = Labeler(backend, task, mode="generate").label_texts(["x"])[0]
    assert generated.label == "card_arrival"


def test_default_calibration_is_batch_in_score_mode_only():
    # Every text mentions "positive": uncalibrated scores all say positive; the default divides the batch mean out.
    texts = ["positive positive bad", "positive good good", "positive positive positive", "positive fine"] * 4
    default = Labeler(FakeBackend(), TASK)
    assert default.calibration == "batch"
    assert {r.label for r in default.label_texts(texts)} == {"negative", "positive"}
    assert {r.label for r in Labeler(FakeBackend(), TASK, calibration="none").label_texts(texts)} == {"positive"}
    assert Labeler(FakeBackend(), TASK, mode="generate").calibration is None
    assert Labeler(FakeBackend(), LabelTask(labels=["a", "b"], multi_label=True)).calibration is None


def test_answer_prefix_ends_the_prompt_and_labels_follow_it_as_words():
    seen = {}
    backend = FakeBackend()
    original = backend.score

    def spy(prompts, candidates, first_token=False):
        seen.update(prompts=prompts, candidates=candidates, first_token=first_token)
        return original(prompts, candidates, first_token)

    backend.score = spy
    Labeler(backend, TASK, answer_prefix="Label:", calibration="none").label_texts(["fine"])
    assert seen["prompts"][0].endswith("Label:") and seen["candidates"][0] == [" negative", " positive"]
    Labeler(backend, TASK, answer_prefix="Label: ", calibration="none").label_texts(["fine"])
    assert seen["candidates"][0] == ["negative", "positive"]


def test_first_token_scoring_ties_labels_that_start_alike():
    task = LabelTask(labels=["card arrival", "card linking", "refund"])
    result = Labeler(FakeBackend(), task, normalize="first", calibration="none").label_texts(["my card"])[0]
    assert result.label_probs["card arrival"] == pytest.approx(result.label_probs["card linking"])
    full = Labeler(FakeBackend(), task, calibration="none").label_texts(["my card"])[0]
    assert full.label_probs["card arrival"] != pytest.approx(full.label_probs["card linking"])
    with pytest.raises(ConfigError, match=r"^unknown normalize 'frist' \(did you mean 'first'\?\); valid: first, "
                                          r"mean, sum$"):
        Labeler(FakeBackend(), task, normalize="frist")

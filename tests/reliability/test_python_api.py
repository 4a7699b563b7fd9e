"""The Python API takes what a user would pass (a pandas DataFrame, a `datasets.Dataset`, an iterable of dicts) and
refuses the rest at once, in one line that says what to pass: never 10 per-character results for one string, never
a TypeError from deep inside."""

from __future__ import annotations

import pytest

from llmlabel import Labeler, LabelTask, load_backend
from llmlabel.errors import ArgumentError, ConfigError, LLMLabelError

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(60)]

TASK = LabelTask(labels=["negative", "positive"])


@pytest.fixture
def labeler() -> Labeler:
    return Labeler(load_backend("fake"), TASK)


@pytest.mark.parametrize("call, message", [
    (lambda lab: lab.label_texts("great film"),
     "label_texts: texts is one string; pass a list: label_texts(['great film'])"),
    (lambda lab: lab.label_texts(None), "label_texts: texts must be a list of strings, got NoneType None"),
    (lambda lab: lab.label_texts(["a", "b"], ["x"]),
     "label_texts: 2 texts but 1 text_pairs; give one pair per text"),
    (lambda lab: lab.label_texts(["a"], ["x"]),
     "label_texts: text_pairs given, but the task has no text_pair_field; set LabelTask(text_pair_field=...) for "
     "pair tasks"),
    (lambda lab: lab.label("great film"),
     "label() takes a list of rows (dicts), not a string: pass a list; for plain strings use label_texts(['...'])"),
    (lambda lab: lab.label(["a string"]), "label(): row 1 is a str, not a dict; for plain strings use "
                                          "label_texts([...])"),
    (lambda lab: lab.label({"text": "one row"}), "label() takes a list of rows, not one dict: pass a list, e.g. "
                                                 "[row], or a pandas DataFrame / datasets.Dataset for a table of "
                                                 "columns"),
    (lambda lab: lab.label(None), "label() takes a list of rows (dicts), a pandas DataFrame or a datasets.Dataset; "
                                  "got NoneType None"),
    (lambda lab: lab.label(42), "label() takes a list of rows (dicts), a pandas DataFrame or a datasets.Dataset; "
                                "got int 42"),
])
def test_wrong_inputs_are_one_line_errors(labeler, call, message):
    with pytest.raises(ArgumentError) as err:
        call(labeler)
    assert str(err.value) == message
    assert isinstance(err.value, TypeError) and isinstance(err.value, LLMLabelError)


def test_a_dataset_dict_asks_for_one_split(labeler):
    import datasets

    split = datasets.Dataset.from_list([{"text": "a"}])
    with pytest.raises(ArgumentError, match=r"label\(\) takes one split, not a DatasetDict: pass e.g. "
                                            r"data\['train'\] \(splits: train, test\)"):
        labeler.label(datasets.DatasetDict({"train": split, "test": split}))


@pytest.mark.parametrize("args, error, message", [
    ((None,), ArgumentError, "Labeler needs a LabelTask: Labeler(task) labels with the embedded default model, "
                             "Labeler(backend, task) with another; e.g. task = LabelTask(labels=['negative', "
                             "'positive'])"),
    (("fake",), ArgumentError, "Labeler needs a LabelTask: Labeler(task) labels with the embedded default model, "
                               "Labeler(backend, task) with another; e.g. task = LabelTask(labels=['negative', "
                               "'positive']) (got only the backend 'fake')"),
    (("fkae", TASK), ConfigError, "unknown backend 'fkae' (did you mean 'fake'?); valid: chat, decisions, "
                                  "fake, openai, systemone, transformers, vllm"),
    ((42, TASK), ArgumentError, "backend must be a Backend (llmlabel.load_backend(...)), a backend name such as "
                                "'transformers' or 'fake', or None for the default model; got int 42"),
    (("fake", ["negative", "positive"]), ArgumentError, "task must be a LabelTask, got list ['negative', "
                                                         "'positive']; e.g. LabelTask(labels=['negative', "
                                                         "'positive'])"),
])
def test_constructor_arguments_are_checked_at_construction(args, error, message):
    with pytest.raises(error) as err:
        Labeler(*args)
    assert str(err.value) == message


def test_a_backend_name_is_accepted_and_loaded_at_first_use():
    labeler = Labeler("fake", TASK)
    assert labeler._backend is None  # nothing loaded yet
    assert [r.status for r in labeler.label_texts(["a positive film"])] == ["ok"]
    assert labeler.backend.name == "fake"
    labeler.close()


def test_labeler_of_a_task_alone_uses_the_default_backend_lazily(monkeypatch):
    """`Labeler(task)`: the embedded default (transformers) backend, loaded at the first label call, not before."""
    from llmlabel.backends import base
    from llmlabel.backends.fake import FakeBackend

    loaded = []

    def fake_load(name="transformers", model=None, **options):
        loaded.append((name, model))
        return FakeBackend()

    monkeypatch.setattr(base, "load_backend", fake_load)
    labeler = Labeler(TASK)
    assert loaded == []
    labeler.label_texts(["a positive film"])
    labeler.label_texts(["another"])
    assert loaded == [("transformers", None)]  # once, with the default model


def test_any_iterable_of_strings_works_for_label_texts(labeler):
    assert len(labeler.label_texts(("a", "b", "c"))) == 3
    assert len(labeler.label_texts(t for t in ["a", "b"])) == 2
    assert labeler.label_texts([]) == []


def test_a_pandas_dataframe_comes_back_as_a_dataframe_with_the_output_columns(labeler):
    import pandas as pd

    frame = pd.DataFrame({"text": ["a positive film", None, "so negative"], "label": ["positive", "negative", None],
                          "id": [7, 8, 9]})
    out = labeler.label(frame)
    assert isinstance(out, pd.DataFrame) and list(out.index) == list(frame.index)
    assert list(out.columns) == ["text", "gold_label", "id", "label", "label_probs", "confidence", "status",
                                 "reason", "truncated"]
    assert list(out["status"]) == ["ok", "skipped", "ok"] and list(out["id"]) == [7, 8, 9]
    assert out["reason"][1] == "empty text"  # NaN text is missing, not the word "nan"
    assert list(frame.columns) == ["text", "label", "id"]  # the input is not modified


def test_a_datasets_dataset_comes_back_as_a_dataset(labeler):
    import datasets

    data = datasets.Dataset.from_list([{"text": "a positive film", "label": "positive"},
                                       {"text": "so negative", "label": "negative"}])
    out = labeler.label(data)
    assert isinstance(out, datasets.Dataset) and len(out) == 2
    assert out.column_names == ["text", "gold_label", "label", "label_probs", "confidence", "status", "reason",
                                "truncated"]
    assert out[0]["gold_label"] == "positive" and set(out[0]["label_probs"]) == {"negative", "positive"}


def test_an_iterable_of_dicts_comes_back_as_a_list_of_dicts(labeler):
    rows = ({"text": t} for t in ["a positive film", "so negative"])
    out = labeler.label(rows)
    assert isinstance(out, list) and [r["status"] for r in out] == ["ok", "ok"]

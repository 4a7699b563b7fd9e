"""TnT-LLM on the fake backend: structured JSON (parse, repair, retry), the generate/update/review loop with malformed
answers, the clustering baseline, the tnt_llm recipe end to end, and the taxonomy YAML round trip."""

from __future__ import annotations

import json
import re

import pytest

from helpers import read_jsonl, write_jsonl
from llmlabel.backends.fake import FakeBackend
from llmlabel.cli import main
from llmlabel.config import load_recipe
from llmlabel.errors import ConfigError
from llmlabel.structured import close_truncated, extract_json, generate_structured
from llmlabel.taxonomy.base import (
    InductionContext,
    LabelOut,
    TaxonomyError,
    TaxonomyOut,
    check_taxonomy,
    taxonomy_schema,
)
from llmlabel.taxonomy.cluster import ClusterMethod
from llmlabel.taxonomy.llm import LLMMethod
from llmlabel.taxonomy.model import Taxonomy
from llmlabel.taxonomy.recipe import TaxonomyConfig

GOOD = json.dumps({"labels": [{"name": "Person", "description": "asks who someone is"},
                              {"name": "Place", "description": "asks where something is"},
                              {"name": "Number", "description": "asks how many or how much"}],
                   "changes": [{"action": "add", "label": "Person", "rationale": "many who-questions"}]})
UPDATED = json.dumps({"labels": [{"name": "Person", "description": "asks who someone is"},
                                 {"name": "Place", "description": "asks where a place or thing is"},
                                 {"name": "Number", "description": "asks how many or how much"},
                                 {"name": "Definition", "description": "asks what a word or thing means"}],
                      "changes": [{"action": "add", "label": "Definition", "rationale": "what-is questions"},
                                  {"action": "edit", "label": "Place", "rationale": "clearer"}]})
QUESTIONS = [f"Who wrote book number {i} ?" for i in range(10)] + [f"Where is city {i} ?" for i in range(10)] + \
    [f"How many people live in town {i} ?" for i in range(10)] + [f"What is an {w} ?" for w in
                                                                    ["atom", "ion", "acid", "enzyme", "gene"]]


def ctx(backend, **overrides):
    config = TaxonomyConfig(**{"minibatch_size": 10, "minibatches": 3, "min_labels": 3, "max_labels": 6,
                               **overrides})
    return InductionContext(config=config, get_backend=lambda: backend)


# -- structured JSON --------------------------------------------------------------------------------------------
def test_extract_json_tolerates_fences_prose_and_truncation():
    assert extract_json('```json\n{"a": 1}\n```') == ({"a": 1}, None)
    assert extract_json('Sure! {"a": [1, 2]} hope it helps') == ({"a": [1, 2]}, "dropped text around the JSON")
    value, note = extract_json('{"labels": [{"name": "a"}, {"name": "b", "desc')
    assert value == {"labels": [{"name": "a"}]} and note.startswith("closed JSON cut short")
    with pytest.raises(ValueError, match="no JSON in answer 'candy canes are red'"):
        extract_json("candy canes are red")
    with pytest.raises(ValueError, match="empty answer"):
        extract_json("   ")
    assert close_truncated('{"a": 1}') is None  # nothing to close


def test_generate_structured_retries_malformed_then_records_repair():
    backend = FakeBackend(script=["no JSON here, only prose about candy canes", GOOD])
    result = generate_structured(backend, ["make a taxonomy"], TaxonomyOut, max_tokens=50)[0]
    assert result.ok and result.status == "repaired" and result.reason == "valid on retry 1"
    assert [a["error"] for a in result.attempts] == ["no JSON in answer 'no JSON here, only prose about candy canes'",
                                                     None]
    assert result.value.labels[0].name == "Person"


def test_generate_structured_failure_is_data_not_an_exception():
    backend = FakeBackend(script=['{"labels": []}'])
    result = generate_structured(backend, ["x"], TaxonomyOut, retries=2)[0]
    assert not result.ok and result.status == "failed" and len(result.attempts) == 3
    assert result.reason == "schema violation at 'labels': List should have at least 1 item after validation, not 0"


def test_unconstrained_backend_gets_no_schema_and_is_parsed():
    backend = FakeBackend(constrained_json=False, responses=['Here you go: ' + GOOD])
    result = generate_structured(backend, ["x"], TaxonomyOut)[0]  # would raise if the schema were passed
    assert result.ok and result.status == "repaired" and result.attempts[0]["constrained"] is False


def test_fake_backend_answers_a_schema_with_a_valid_instance():
    config = TaxonomyConfig()
    schema = taxonomy_schema(config, 3, 6)
    raw = FakeBackend().generate(["questions about cities and people and numbers"], json_schema=schema)[0]
    value = TaxonomyOut.model_validate(json.loads(raw))
    pattern = re.compile(schema["properties"]["labels"]["items"]["properties"]["name"]["pattern"])
    assert 3 <= len(value.labels) <= 6 and all(pattern.match(lab.name) for lab in value.labels)
    with pytest.raises(NotImplementedError):
        FakeBackend(constrained_json=False).generate(["x"], json_schema=schema)


# -- the LLM method: generate, update, review -----------------------------------------------------------------
def test_minibatch_loop_updates_reviews_and_keeps_taxonomy_after_malformed_answer():
    # generate -> update 1 (malformed 3 times: kept previous) -> update 2 -> review (cut short, closed)
    cut = UPDATED[: UPDATED.index('{"name": "Definition"') + 30]
    backend = FakeBackend(script=[GOOD, "{not json", "{still not", "nope", UPDATED, cut])
    induced = LLMMethod().induce(QUESTIONS, ctx(backend, retries=2), max_labels=6)
    tax = induced.taxonomy
    steps = [(s.step, s.status) for s in tax.history]
    assert steps == [("generate", "ok"), ("update 1", "failed"), ("update 2", "ok"), ("review", "repaired")]
    assert tax.history[1].reason.endswith("kept the previous taxonomy")
    assert tax.history[1].labels == ["Person", "Place", "Number"]
    update = {c.label: (c.action, c.rationale) for c in tax.history[2].changes}
    assert update == {"Definition": ("add", "what-is questions"), "Place": ("edit", "clearer")}
    # The review answer was cut inside the 4th label: closed after the 3rd, so Definition is removed again.
    assert tax.names == ["Person", "Place", "Number"]
    assert tax.history[3].changes[0].action == "remove" and tax.history[3].changes[0].label == "Definition"
    assert check_taxonomy(tax, TaxonomyConfig()) == []


def test_duplicate_and_reserved_names_are_cleaned_and_recorded():
    dup = json.dumps({"labels": [{"name": "Person", "description": "who"}, {"name": "person ", "description": "x"},
                                 {"name": "Other", "description": "rest"}, {"name": "Place", "description": "where"},
                                 {"name": "1. Number", "description": "how many"}], "changes": []})
    induced = LLMMethod().induce(QUESTIONS[:10], ctx(FakeBackend(script=[dup]), review=False), max_labels=6)
    step = induced.taxonomy.history[0]
    assert step.status == "repaired" and induced.taxonomy.names == ["Person", "Place", "Number"]
    assert "dropped duplicate label 'person'" in step.reason and "dropped reserved label 'Other'" in step.reason
    assert step.changes[0].rationale == "(no rationale given)"


def test_every_step_failing_is_a_one_line_error():
    with pytest.raises(TaxonomyError, match=r"^no valid taxonomy: all 3 step\(s\) failed \(last: no taxonomy to "
                                            r"review\)$"):
        LLMMethod().induce(QUESTIONS[:20], ctx(FakeBackend(script=["{bad"]), retries=0, minibatches=2),
                           max_labels=6)


def test_summaries_only_for_long_texts():
    backend = FakeBackend(script=["a short summary", GOOD])
    config_ctx = ctx(backend, summarize_min_words=5, minibatches=1, review=False)
    LLMMethod().induce(["one two three", "this text has many more than five words in it"], config_ctx, 6)
    summaries = [r for r in config_ctx.log if r["step"] == "summarize"]
    assert [(r["request"], r["value"]) for r in summaries] == [(1, "a short summary")]


# -- the clustering baseline ------------------------------------------------------------------------------------
def test_cluster_method_names_clusters_and_merges_duplicates():
    # The model names every cluster the same: merged down to min_labels, the rest kept apart under distinct names.
    backend = FakeBackend(script=[json.dumps({"name": "Questions", "description": "questions people ask"})])
    induced = ClusterMethod().induce(QUESTIONS, ctx(backend, k=5, min_labels=3), max_labels=6)
    tax = induced.taxonomy
    assert len(tax.names) == 3 and len({n.lower() for n in tax.names}) == 3
    assert sorted(set(induced.assignments)) == [0, 1, 2] and len(induced.assignments) == len(QUESTIONS)
    merge = tax.history[-1]
    assert [c.action for c in merge.changes].count("merge") == 2
    assert any(c.action == "rename" for c in merge.changes) and merge.status == "repaired"
    assert check_taxonomy(tax, TaxonomyConfig()) == []


def test_cluster_naming_failure_falls_back_to_top_words():
    backend = FakeBackend(script=["{broken"])
    induced = ClusterMethod().induce(QUESTIONS, ctx(backend, k=3, retries=1), max_labels=6)
    named = induced.taxonomy.history[1]
    assert named.status == "repaired" and "naming failed" in named.reason
    assert all(" / " in n for n in induced.taxonomy.names)
    assert check_taxonomy(induced.taxonomy, TaxonomyConfig()) == []


# -- the recipe -------------------------------------------------------------------------------------------------
def corpus(tmp_path):
    rows = [{"text": q, "label": "human" if q.startswith("Who") else "location" if q.startswith("Where") else
             "numeric" if q.startswith("How") else "description"} for q in QUESTIONS]
    return write_jsonl(tmp_path / "questions.jsonl", rows)


def recipe(tmp_path, **taxonomy):
    return load_recipe(data={
        "kind": "tnt_llm", "model": {"backend": "fake"}, "data": {"path": str(corpus(tmp_path))},
        "taxonomy": {"use_case": "Categorize questions.", "sample": 30, "minibatch_size": 10, "minibatches": 2,
                     **taxonomy},
        "labeling": {"sample": 24}, "output": {"dir": str(tmp_path / "out")}})


@pytest.mark.parametrize("method", ["llm", "cluster"])
def test_recipe_runs_both_phases_and_writes_every_output(tmp_path, method):
    summary = recipe(tmp_path, method=method).run(progress=False)
    out = tmp_path / "out"
    for name in ("taxonomy.yaml", "taxonomy_log.jsonl", "llm_labels.jsonl", "labeled.jsonl", "classifier.joblib",
                 "metrics.json"):
        assert (out / name).exists(), name
    assert summary["taxonomy"]["schema_valid"] and summary["taxonomy"]["method"] == method
    labeled = read_jsonl(out / "labeled.jsonl")
    assert len(labeled) == len(QUESTIONS) and "gold_label" in labeled[0] and labeled[0]["label"] is not None
    assert sum(r["llm_label"] is not None for r in labeled) == 24
    assert set(summary["classifiers"]) == {"embedding_lr", "tfidf_lr"}
    assert summary["classifiers"]["tfidf_lr"]["holdout_rows"] == 6
    assert {"ari", "nmi"} <= set(summary["gold"]["classifier_corpus"])
    assert ("clusters" in summary["gold"]) == (method == "cluster")
    assert json.loads((out / "metrics.json").read_text())["taxonomy"] == summary["taxonomy"]
    Taxonomy.load(out / "taxonomy.yaml")  # the YAML reads back


def test_edited_taxonomy_yaml_feeds_the_given_method(tmp_path):
    recipe(tmp_path, method="llm").run(progress=False)
    path = tmp_path / "out" / "taxonomy.yaml"
    tax = Taxonomy.load(path)
    edited = Taxonomy(labels=[{"name": "human", "description": "a person"},
                              {"name": "location", "description": "a place"}, *tax.labels[:1]], history=tax.history)
    edited.save(path)
    summary = recipe(tmp_path, method="given", path=str(path)).run(progress=False)
    assert summary["taxonomy"]["names"][:2] == ["human", "location"] and summary["taxonomy"]["llm_requests"] == 0
    assert summary["taxonomy"]["steps"]["ok"] >= 1


def test_given_gold_names_report_accuracy(tmp_path):
    summary = recipe(tmp_path, method="given", labels=["human", "location", "numeric", "description"]).run(
        progress=False)
    assert "accuracy" in summary["gold"]["llm_sample"] and "accuracy" in summary["gold"]["classifier_corpus"]


def test_two_levels_add_children(tmp_path):
    summary = recipe(tmp_path, method="cluster", k=2, levels=2, max_children=3, min_children_texts=4).run(
        progress=False)
    tax = Taxonomy.load(tmp_path / "out" / "taxonomy.yaml")
    assert tax.depth == 2 and summary["taxonomy"]["children"] >= 2
    assert any(" > " in str(r["label"]) for r in read_jsonl(tmp_path / "out" / "llm_labels.jsonl"))


def test_recipe_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown taxonomy method 'clustr' \(did you mean 'cluster'\?\); valid: "
                                          r"cluster, given, llm"):
        recipe(tmp_path, method="clustr")
    with pytest.raises(ConfigError, match=r"unknown key 'taxonomy.max_lables' \(did you mean 'max_labels'\?\)"):
        recipe(tmp_path, max_lables=4)
    with pytest.raises(ConfigError, match=r"taxonomy.method 'given' needs taxonomy.labels or taxonomy.path"):
        recipe(tmp_path, method="given").run(progress=False)


def test_cli_runs_the_shipped_recipe_on_the_fake_backend(tmp_path, capsys):
    main(["run", "tnt_llm", "-q", "--set", "model.backend=fake", "--set", "model.options={}",
          "--set", f"data.path={corpus(tmp_path)}",
          "--set", "labeling.sample=20", "--set", f"output.dir={tmp_path / 'cli'}", "--set", "taxonomy.sample=20"])
    printed = capsys.readouterr().out
    assert printed.startswith("taxonomy (llm, ") and "kappa vs LLM" in printed and "vs gold (classifier_corpus)" \
        in printed
    assert (tmp_path / "cli" / "metrics.json").exists()


def test_label_out_model_matches_the_name_schema():
    assert LabelOut(name="Person", description="who").name == "Person"

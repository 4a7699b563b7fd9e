"""The audit and estimate recipe kinds and their CLI commands, on the fake backend (no model)."""

from __future__ import annotations

import json
import random

import pytest

from helpers import REPO, read_jsonl, run_cli as _cli, write_jsonl
from llmlabel.config import load_recipe
from llmlabel.errors import ConfigError

#: no MiniLM download or load in unit tests: the embeddings classifier uses the hashing embedder
HASHING = "audit.classifier_options.logreg_embeddings.embedder=hashing"




@pytest.fixture
def reviews_data(tmp_path):
    """160 rows whose text mentions their label most of the time (the fake backend then mostly labels them right)."""
    rng = random.Random(0)
    words = "good film story plot actor scene music long short fun dull bright dark".split()
    rows = []
    for i in range(160):
        label = rng.choice(["negative", "positive"])
        other = "negative" if label == "positive" else "positive"
        text = [rng.choice(words) for _ in range(rng.randint(3, 9))]
        text.insert(rng.randrange(len(text)), label if rng.random() < 0.85 else other)
        rows.append({"id": f"r{i}", "text": " ".join(text) + (" great" if label == "positive" else " awful"),
                     "label": label, "score": rng.random()})
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    (tmp_path / "labels.json").write_text(json.dumps(["negative", "positive"]))
    return path


def test_audit_recipe_ranks_planted_errors_first(tmp_path, capsys, reviews_data):
    recipe = tmp_path / "audit.yaml"
    recipe.write_text(f"""
name: audit-test
kind: audit
model: {{backend: fake}}
data: {{path: {reviews_data}}}
audit:
  shots: [0, 2]
  plant: {{rate: 0.1, kind: uniform, seed: 0}}
output: {{dir: {tmp_path / 'out'}}}
""")
    code, out, err = _cli(capsys, "run", str(recipe), "-q", "--set", HASHING)
    assert code == 0, err
    assert "audited 160 rows (2 labels) with 4 signals: logreg_tfidf, logreg_embeddings, llm:0shot, llm:2shot" in out
    assert "planted 16 uniform flips (10%):" in out
    suspects = read_jsonl(tmp_path / "out" / "suspects.jsonl")
    assert len(suspects) == 160
    assert [s["score"] for s in suspects] == sorted((s["score"] for s in suspects), reverse=True)
    first = suspects[0]
    assert set(first) >= {"row", "id", "given_label", "suggested_label", "score", "flagged", "agree", "signals",
                          "text", "planted_error"}
    assert first["suggested_label"] != first["given_label"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    metrics = report["planted"]["metrics"]
    assert metrics["ensemble"]["auroc"] > 0.9
    assert sum(s["planted_error"] for s in suspects[:16]) >= 12  # precision@k of the ranked file itself


def test_audit_command_classifiers_only(tmp_path, capsys, reviews_data):
    code, out, err = _cli(capsys, "audit", str(reviews_data), "--no-llm", "--classifiers", "logreg_tfidf",
                          "--top", "5", "-o", str(tmp_path / "a"), "-q")
    assert code == 0, err
    assert "with 1 signals: logreg_tfidf" in out and "suspects:" in out
    assert len(read_jsonl(tmp_path / "a" / "suspects.jsonl")) == 5


def test_estimate_command_with_a_simulated_gold_budget(tmp_path, capsys, reviews_data):
    code, out, err = _cli(capsys, "estimate", str(reviews_data), "--backend", "fake", "--gold-column", "label",
                          "--gold-size", "60", "--regress", "positive:score", "-o", str(tmp_path / "e"), "-q")
    assert code == 0, err
    assert "160 rows with LLM labels (labeled now with fake:smollm2); gold sample 60 rows" in out
    estimates = read_jsonl(tmp_path / "e" / "estimates.jsonl")
    targets = {(e["method"], e["target"]) for e in estimates}
    for method in ("naive", "classical", "ppi", "ppi++", "dsl"):
        assert {(method, "share[negative]"), (method, "share[positive]"), (method, "coef[score]")} <= targets
    for e in estimates:
        assert e["lower"] <= e["estimate"] <= e["upper"] and "truth" in e
    classical = next(e for e in estimates if e["method"] == "classical" and e["target"] == "share[positive]")
    assert classical["n_gold"] == 60
    # Active: gold rows drawn with probabilities, weighted back.
    code, out, err = _cli(capsys, "estimate", str(reviews_data), "--backend", "fake", "--gold-column", "label",
                          "--gold-size", "60", "--active", "-o", str(tmp_path / "e2"), "-q")
    assert code == 0, err
    assert "design poisson" in out


def test_estimate_reads_the_review_loops_answers(tmp_path, capsys, reviews_data):
    code, _, err = _cli(capsys, "label", str(reviews_data), "--backend", "fake", "-o", str(tmp_path / "run"), "-q")
    assert code == 0, err
    predictions = tmp_path / "run" / "predictions.jsonl"
    rows = read_jsonl(predictions)
    reviews = []
    for i in range(0, 100, 2):  # 50 random rows, the gold label as the reviewer's
        reviews.append({"row": i, "id": rows[i]["id"], "label": rows[i]["gold_label"], "llm_label": rows[i]["label"],
                        "selected_by": "random", "sampling_prob": 50 / 160, "reviewer": "t", "time": 0.0,
                        "source": "test"})
    for i in range(101, 121, 2):  # 10 rows drawn for uncertainty
        reviews.append({"row": i, "label": rows[i]["gold_label"], "selected_by": "uncertain", "sampling_prob": 0.5})
    reviews.append({"row": 0, "label": None, "selected_by": "random", "sampling_prob": 50 / 160})  # undo row 0
    reviews.append({"row": 2, "label": "negative", "selected_by": "random", "sampling_prob": 50 / 160})  # redo
    write_jsonl(tmp_path / "run" / "reviews.jsonl", reviews)
    code, out, err = _cli(capsys, "estimate", str(predictions), "-o", str(tmp_path / "e"), "-q")
    assert code == 0, err
    assert "gold sample 49 rows" in out and "(random rows)" in out and "design srs" in out
    code, out, err = _cli(capsys, "estimate", str(predictions), "--weighted", "-o", str(tmp_path / "w"), "-q")
    assert code == 0, err
    assert "gold sample 59 rows" in out and "design poisson" in out
    # A review label outside the label space is one line, exit 2.
    write_jsonl(tmp_path / "run" / "reviews.jsonl", reviews + [{"row": 4, "label": "postive",
                                                                 "selected_by": "random"}])
    code, _, err = _cli(capsys, "estimate", str(predictions), "-o", str(tmp_path / "x"), "-q")
    assert code == 2 and "review label 'postive' of row 4 is not a task label (did you mean 'positive'?)" in err
    code, _, err = _cli(capsys, "estimate", str(reviews_data), "--backend", "fake", "-o", str(tmp_path / "y"), "-q")
    assert code == 2 and err.startswith("error: no reviews file ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("section, message", [
    ({"labeling": {"mode": "generate"}}, "audit needs label probabilities: labeling.mode must be 'score' "
                                         "(got 'generate')"),
    ({"labeling": {"examples": [{"text": "x", "label": "a"}]}}, "labeling.examples is not supported by kind audit"),
    ({"task": {"multi_label": True}}, "kind audit supports single-label tasks only"),
    ({"audit": {"classifiers": ["logreg_tfdf"]}}, "unknown classifier 'logreg_tfdf' (did you mean 'logreg_tfidf'?)"),
    ({"audit": {"classifiers": [], "llm": False}}, "the audit has no signal"),
])
def test_audit_refuses_what_it_cannot_honour(section, message):
    data = {"kind": "audit", "data": {"path": "x.jsonl"}, **section}
    with pytest.raises(ConfigError) as err:
        load_recipe(data=data, source="r.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("section, message", [
    ({"estimate": {"methods": ["dls"]}}, "unknown estimate method 'dls' (did you mean 'dsl'?)"),
    ({"estimate": {"shares": False}}, "nothing to estimate"),
    ({"estimate": {"gold": {"design": "active"}}}, "estimate.gold.design applies to source 'column'"),
    ({"labeling": {"selection": {"pool": {"path": "p.jsonl"}}}}, "labeling.selection is not supported by kind "
                                                                  "estimate"),
])
def test_estimate_refuses_what_it_cannot_honour(section, message):
    data = {"kind": "estimate", "data": {"path": "x.jsonl"}, **section}
    with pytest.raises(ConfigError) as err:
        load_recipe(data=data, source="r.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_shipped_stats_recipes_load():
    audit = load_recipe(REPO / "recipes" / "audit.yaml")
    estimate = load_recipe(REPO / "recipes" / "estimate.yaml")
    assert audit.kind == "audit" and audit.audit.shots == [0, 4]
    assert estimate.kind == "estimate" and estimate.estimate.regression.covariates == ["log_words"]


@pytest.mark.parametrize("name", ["audit", "estimate"])
def test_shipped_recipes_run_on_the_fake_backend(shared_data, tmp_path, capsys, name):
    dataset = "trec" if name == "audit" else "sst2"
    code, out, err = _cli(capsys, "run", name, "-q", "--set", "model.backend=fake", "--set", "model.options={}",
                          "--set", f"data.path={shared_data / dataset / 'test.jsonl'}", "--set", "data.limit=120",
                          "--set", "estimate.gold.size=50" if name == "estimate" else HASHING,
                          "--set", f"output.dir={tmp_path / name}")
    assert code == 0, err
    assert f"report: {tmp_path / name / 'report.json'}" in out
    assert ("share[positive]:" in out and "coef[log_words]:" in out) if name == "estimate" else "suspects:" in out

"""The audit and estimate kinds on the real default model (SmolLM2-135M on CPU), tiny data: the shipped audit
recipe and the estimate command run end to end through the CLI and write what they promise. float32, not the
recipes' int8: for 40-60 rows the int8 calibration at load costs more than it saves."""

from __future__ import annotations

import json

import pytest

from helpers import read_jsonl, run_cli as _cli

pytestmark = pytest.mark.slow




def test_shipped_audit_recipe_on_the_default_model(shared_data, tmp_path, capsys):
    code, out, err = _cli(capsys, "run", "audit", "-q", "--set", f"data.path={shared_data / 'sst2' / 'test.jsonl'}",
                          "--set", "data.limit=40", "--set", "task.instruction=Classify the sentiment of the review.",
                          "--set", "audit.shots=[0, 2]", "--set", "audit.classifiers=[logreg_tfidf]",
                          "--set", "audit.plant.rate=0.1", "--set", "model.options.quantize=null",
                          "--set", f"output.dir={tmp_path / 'audit'}")
    assert code == 0, err
    assert "with 3 signals: logreg_tfidf, llm:0shot, llm:2shot" in out
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["llm_failed_rows"] == 0 and report["planted"]["flipped"] == 4
    assert "llm" in report["planted"]["metrics"] and "ensemble" in report["planted"]["metrics"]
    suspects = read_jsonl(tmp_path / "audit" / "suspects.jsonl")
    assert len(suspects) == 40 and {s["given_label"] for s in suspects} <= {"negative", "positive"}


def test_estimate_command_on_the_default_model(shared_data, tmp_path, capsys):
    code, out, err = _cli(capsys, "estimate", str(shared_data / "sst2" / "test.jsonl"), "--limit", "60",
                          "--labels", "negative,positive", "--instruction", "Classify the sentiment of the review.",
                          "--option", "dtype=float32", "--gold-column", "label", "--gold-size", "30",
                          "--regress", "positive:log_words", "-o", str(tmp_path / "est"), "-q")
    assert code == 0, err
    assert "60 rows with LLM labels (labeled now with" in out and "gold sample 30 rows" in out
    estimates = read_jsonl(tmp_path / "est" / "estimates.jsonl")
    shares = [e for e in estimates if e["target"] == "share[positive]"]
    assert {e["method"] for e in shares} == {"naive", "classical", "ppi", "ppi++", "dsl"}
    assert all(e["lower"] <= e["estimate"] <= e["upper"] for e in shares)
    predictions = read_jsonl(tmp_path / "est" / "predictions.jsonl")
    assert len(predictions) == 60 and all(r["status"] == "ok" for r in predictions)

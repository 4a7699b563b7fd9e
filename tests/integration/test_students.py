"""Students on the real default model: LoRA touches only adapters, the cached path equals the full model, the saved
student reloads, and both training recipes run end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import REPO, read_jsonl, run_cli as _cli

pytestmark = pytest.mark.slow

TEXTS = ["a gorgeous, witty, seductive movie .", "the plot is nothing but boilerplate clichés .",
         "an utterly charming and hilarious film", "dull , lifeless and far too long .",
         "one of the best films of the year", "a mess from start to finish",
         "it 's a beautiful , moving story", "i hated every minute of it"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]




def test_lora_run_changes_adapters_and_leaves_base_weights_untouched(model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from llmlabel.training.student import Student, StudentClassifier, StudentConfig

    checkpoint = load_file(str(Path(model_dir) / "model.safetensors"))
    student = Student(["negative", "positive"], StudentConfig(method="lora", train_layers=2, batch_size=4, epochs=1,
                                                              lr=1e-2, save="both"))
    adapters = {n: p.detach().clone() for n, p in student.model.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n or "modules_to_save" in n for n in adapters)
    assert any(".28." in n for n in adapters) and not any(".27." in n for n in adapters)  # top 2 of 30 layers only
    student.fit(TEXTS, LABELS, progress=False)
    params = dict(student.model.named_parameters())
    for name, before in adapters.items():
        assert not torch.equal(before, params[name].detach()), f"{name} did not change"
    checked = 0
    for name, param in params.items():
        if name in adapters or ".score." in name:  # the head is new: not in the checkpoint
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(param.detach(), checkpoint[key].float()), f"base weight {key} changed"
        checked += 1
    assert checked == len(checkpoint)  # every checkpoint tensor was compared

    cached = student.predict_proba(TEXTS)
    folder = student.save(tmp_path / "student")
    assert (folder / "adapter" / "adapter_config.json").exists() and (folder / "config.json").exists()
    assert "LoRA (r=16, on q_proj, v_proj) on the top 2 of 30 layers" in (folder / "README.md").read_text()
    merged = StudentClassifier(folder, dtype="float32").predict_proba(TEXTS)
    # The cached path ran the top layers on bfloat16 states; the reloaded model runs everything in float32.
    assert abs(merged - cached).max() < 0.05 and (merged.argmax(1) == cached.argmax(1)).all()
    adapter_only = tmp_path / "adapter_only"
    shutil.copytree(folder, adapter_only, ignore=shutil.ignore_patterns("config.json", "model*.safetensors"))
    from_adapter = StudentClassifier(adapter_only, dtype="float32").predict_proba(TEXTS)
    assert abs(from_adapter - merged).max() < 1e-2
    results = StudentClassifier(folder).label_texts(["a fine film", ""])
    assert results[0].label in ("negative", "positive") and results[1].status == "skipped"


def test_cached_top_layers_equal_the_full_model():
    """Training the top layers on cached states is the same computation as the full model (float32 states)."""
    import torch

    from llmlabel.training.student import FeatureCache, Student, StudentConfig, encode, left_pad

    config = StudentConfig(method="full", train_layers=3, feature_dtype="float32")
    features = FeatureCache(config.model, config.max_length, dtype="float32")
    student = Student(["a", "b", "c"], config, features=features)
    cached = student.predict_proba(TEXTS)
    ids, mask, positions = left_pad(encode(student.tokenizer, TEXTS, config.max_length), student.tokenizer.pad_token_id)
    with torch.inference_mode():
        logits = student.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert torch.softmax(logits, -1).numpy() == pytest.approx(cached, abs=1e-4)


def test_distill_recipe_runs_end_to_end(capsys, tmp_path, shared_data):
    out = tmp_path / "distill"
    code, stdout, err = _cli(
        capsys, "run", str(REPO / "recipes" / "distill_student.yaml"), "-q",
        "--set", f"data.path={shared_data / 'sst2' / 'train.jsonl'}", "--set", "data.limit=32",
        "--set", f"eval_data.path={shared_data / 'sst2' / 'test.jsonl'}", "--set", "eval_data.limit=16",
        "--set", "student.epochs=1", "--set", "filter.folds=3", "--set", "filter.min_confidence=0.55",
        "--set", f"output.dir={out}")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    selection = report["selection"]
    assert selection["rows_labeled"] == 32 and selection["rows_kept"] < 32
    assert selection["rows_kept"] == 32 - selection["dropped_low_confidence"] - selection["dropped_label_issues"]
    assert 0 <= report["metrics"]["accuracy"] <= 1 and report["metrics"]["eval_rows"] == 16
    assert "eval accuracy: student" in stdout and f"student: {out / 'student'}" in stdout
    card = (out / "student" / "README.md").read_text()
    assert "| accuracy |" in card and "teacher_accuracy" in card
    rows = read_jsonl(out / "student_eval" / "predictions.jsonl")
    assert len(rows) == 16 and {"gold_label", "label", "label_probs", "confidence"} <= set(rows[0])


def test_weak_to_strong_recipe_runs_end_to_end(capsys, tmp_path, shared_data):
    out = tmp_path / "w2s"
    code, stdout, err = _cli(
        capsys, "run", str(REPO / "recipes" / "weak_to_strong.yaml"), "-q",
        "--set", f"data.path={shared_data / 'trec' / 'train.jsonl'}", "--set", "data.limit=200",
        "--set", f"eval_data.path={shared_data / 'trec' / 'test.jsonl'}", "--set", "eval_data.limit=40",
        "--set", "half_size=40", "--set", "seeds=[0, 1]", "--set", "bootstrap=[{method: head, epochs: 2}]",
        "--set", f"output.dir={out}")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert len(report["records"]) == 2 and report["labels"][0] == "abbreviation"
    record = report["records"][0]
    assert {"weak", "w2s_ce", "w2s_aux", "w2s_boot", "ceiling"} <= set(record)
    assert set(record["pgr"]) == {"w2s_ce", "w2s_aux", "w2s_boot"}
    assert "PGR" in stdout and "ceiling" in stdout and stdout.strip().endswith(f"report: {out / 'report.json'}")

"""Recipes, data IO and the CLI: every user mistake is a pinned one-line error with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, read_jsonl, run_cli as _cli, write_jsonl
from llmlabel.config import load_recipe
from llmlabel.data import Dataset
from llmlabel.io import write_rows
from llmlabel.errors import ConfigError, DataError


def _recipe(tmp_path: Path, data: Path, **extra) -> dict:
    recipe = {"name": "t", "model": {"backend": "fake"}, "data": {"path": str(data)},
              "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path / "out")}}
    recipe.update(extra)
    return recipe




# -- recipes ---------------------------------------------------------------------------------------------------------
def test_every_shipped_recipe_validates():
    files = sorted((REPO / "recipes").glob("*.yaml"))
    assert files, "no recipes shipped"
    for path in files:
        recipe = load_recipe(path)
        assert recipe.name == path.stem


def test_unknown_recipe_keys_suggest_the_closest(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_recipe(data={"data": {"path": "x.jsonl", "lable_field": "y"}, "labelling": {}}, source="r.yaml")
    assert str(err.value) == ("r.yaml: unknown key 'data.lable_field' (did you mean 'label_field'?); "
                              "unknown key 'labelling' (did you mean 'labeling'?)")


def test_bad_values_and_overrides():
    with pytest.raises(ConfigError, match=r"^recipe: 'labeling.mode': Input should be 'score' or 'generate' \(got 'guess'\)$"):
        load_recipe(data={"data": {"path": "x"}}, overrides=["labeling.mode=guess"])
    recipe = load_recipe(data={"data": {"path": "x"}}, overrides=["data.limit=7", "model.options.dtype=float32"])
    assert recipe.data.limit == 7 and recipe.model.options == {"dtype": "float32"}
    with pytest.raises(ConfigError, match="^--set expects key=value, got 'data.limit'$"):
        load_recipe(data={"data": {"path": "x"}}, overrides=["data.limit"])


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(evil)


# -- data ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_write_then_read_every_format(tmp_path, suffix):
    rows = [{"text": "héllo, \"world\"", "label": "positive"}, {"text": "line\nbreak", "label": "negative"}]
    path = write_rows(rows, tmp_path / f"data{suffix}")
    assert list(Dataset(path)) == rows
    assert not list(tmp_path.glob(".*.tmp")), "temp file left behind"


def test_folder_of_splits_and_limits(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": str(i)} for i in range(5)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "t"}])
    assert len(Dataset(tmp_path)) == 1  # test split by default
    assert len(Dataset(tmp_path, split="train", limit=3)) == 3
    with pytest.raises(DataError, match=r"^unknown split in .* 'tran' \(did you mean 'train'\?\); valid: test, train$"):
        Dataset(tmp_path, split="tran")


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    data = Dataset(path)
    rows = list(data)
    assert rows[1]["text"] == "caf\ufffd" and data.invalid_utf8_rows == 1


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(DataError, match="^data file not found: nope.jsonl$"):
        Dataset("nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2 is not valid JSON"):
        list(Dataset(bad))


# -- CLI -------------------------------------------------------------------------------------------------------------
def test_cli_label_then_eval(tmp_path, capsys, sentiment_rows):
    data = write_jsonl(tmp_path / "d.jsonl", sentiment_rows)
    code, out, err = _cli(capsys, "label", str(data), "--labels", "negative,positive", "--backend", "fake",
                          "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    assert "accuracy 1.0000" in out
    preds = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert [p["label"] for p in preds] == [p["gold_label"] for p in preds]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metrics"]["accuracy"] == 1.0 and report["stats"]["rows"] == 4
    code, out, _ = _cli(capsys, "eval", str(tmp_path / "out" / "predictions.jsonl"), "-o", str(tmp_path / "e.json"))
    assert code == 0 and "accuracy 1.0000" in out
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 4


@pytest.mark.parametrize("rows, recipe_extra, message", [
    ([], {}, "error: dataset {data} is empty"),
    ([{"txt": "a", "label": "positive"}], {},
     "error: unknown text column 'text' (did you mean 'txt'?); valid: label, txt"),
    ([{"text": "a", "label": "postive"}], {},
     "error: unknown gold label in column 'label' 'postive' (did you mean 'positive'?); valid: negative, positive"),
    ([{"text": "a"}], {"model": {"backend": "vlm"}},
     "error: unknown backend 'vlm' (did you mean 'vllm'?); valid: chat, decisions, fake, openai, systemone, transformers, vllm"),
    ([{"text": "a"}], {"model": {"backend": "fake", "options": {"dealy": 1}}},
     "error: unknown option for backend 'fake' 'dealy' (did you mean 'delay'?); valid: constrained_json, delay, max_context, responses, script"),
    ([{"text": "a"}], {"labeling": {"mdoe": "score"}},
     "error: {recipe}: unknown key 'labeling.mdoe' (did you mean 'mode'?)"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, rows, recipe_extra, message):
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(json.dumps(_recipe(tmp_path, data, **recipe_extra)))
    code, out, err = _cli(capsys, "run", str(recipe_path), "-q")
    assert code == 2
    assert err.strip() == message.format(data=data, recipe=recipe_path)


def test_cli_missing_recipe_and_recipes_commands(capsys):
    code, _, err = _cli(capsys, "run", "quickstrat")
    assert code == 2 and err.strip().startswith("error: recipe not found: quickstrat; unknown recipe 'quickstrat' "
                                                "(did you mean 'quickstart'?)")
    code, out, _ = _cli(capsys, "recipes", "list")
    assert code == 0 and "quickstart" in out
    code, out, _ = _cli(capsys, "recipes", "show", "quickstart")
    assert code == 0 and "name: quickstart" in out


def test_console_script_prints_no_traceback(tmp_path):
    """The installed `llmlabel` command: a bad recipe key gives one line on stderr and exit code 2."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {path: x.jsonl}\nmodle: {}\n")
    proc = subprocess.run([sys.executable, "-m", "llmlabel.cli", "run", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {recipe}: unknown key 'modle' (did you mean 'model'?)"
    assert "Traceback" not in proc.stderr


def test_import_is_light():
    code = "import sys, llmlabel; llmlabel.LabelTask; print(sorted(m for m in ('torch', 'vllm', 'transformers', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_recipe_kind_is_one_line_with_suggestion():
    with pytest.raises(ConfigError) as err:
        load_recipe(data={"kind": "lable", "data": {"path": "x"}}, source="r.yaml")
    assert str(err.value) == ("r.yaml: unknown recipe kind 'lable' (did you mean 'label'?); "
                              "valid: audit, distill_student, estimate, label, symbol_tuning, tnt_llm, weak_to_strong")

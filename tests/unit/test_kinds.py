"""The recipe-kind family: every kind is a `RecipeKind` run by the one loop, builds its Labeler through the one
mapping, and honours or refuses (one line, before a model loads) `labeling.*` and `executor`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from llmlabel.cli import main
from llmlabel.config import LabelingConfig
from llmlabel.errors import ConfigError
from llmlabel.kinds.base import RecipeKind
from llmlabel.kinds.loading import load_recipe
from llmlabel.registry import recipe_kinds

ROOT = Path(__file__).resolve().parents[2]
KINDS = ROOT / "llmlabel" / "kinds"
SHIPPED = {kind: ROOT / "recipes" / f"{name}.yaml" for kind, name in
           [("label", "quickstart"), ("tnt_llm", "tnt_llm"), ("distill_student", "distill_student"),
            ("weak_to_strong", "weak_to_strong"), ("symbol_tuning", "symbol_tuning"), ("audit", "audit"),
            ("estimate", "estimate")]}


def test_every_kind_is_one_class_of_the_family_with_the_one_run_loop():
    assert sorted(SHIPPED) == recipe_kinds.names()
    for name in recipe_kinds.names():
        cls = recipe_kinds.get(name)
        assert issubclass(cls, RecipeKind), name
        assert cls.run is RecipeKind.run, f"{name} copies the run loop"
        assert cls.execute is not RecipeKind.execute, f"{name} has no execute hook"
        assert (KINDS / f"{name}.py").exists()


def test_no_kind_writes_its_report_itself():
    """The report is written in one place (`RunContext.write_report`, called by the executor's run loop)."""
    for path in KINDS.glob("*.py"):
        if path.name == "base.py":
            continue
        names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, (ast.Name, ast.Attribute))}
        assert "write_json" not in names and "write_report" not in names, path.name


def test_the_labeling_mapping_covers_every_field():
    """A new `labeling:` field reaches the Labeler through `labeler_options` (or is built around it)."""
    from llmlabel.labeling.config import labeler_options

    options = labeler_options(LabelingConfig())
    assert set(LabelingConfig.model_fields) - {"selection", "method"} <= set(options)


@pytest.mark.parametrize("kind,overrides,message", [
    ("audit", ["executor=ray"], "kind audit runs on the local executor only (got executor 'ray')"),
    ("estimate", ["executor=ray"], "kind estimate runs on the local executor only (got executor 'ray')"),
    ("tnt_llm", ["executor=ray"], "kind tnt_llm runs on the local executor only (got executor 'ray')"),
    ("distill_student", ["executor=ray"], "kind distill_student runs on the local executor only"),
    ("weak_to_strong", ["executor=ray"], "kind weak_to_strong runs on the local executor only"),
    ("symbol_tuning", ["executor=ray"], "kind symbol_tuning runs on the local executor only"),
    ("label", ["executor=rayy"], "unknown executor 'rayy' (did you mean 'ray'?)"),
    ("tnt_llm", ["labeling.selection={pool: {path: p.jsonl}}"],
     "labeling.selection is not supported by kind tnt_llm; phase 2 labels with the taxonomy's descriptions"),
    ("tnt_llm", ["labeling.method={name: fusion, pool: {path: p.jsonl}}"],
     "labeling.method is not supported by kind tnt_llm"),
    ("tnt_llm", ["labeling.mode=generate"], "kind tnt_llm labels in score mode: labeling.mode must be 'score'"),
    ("tnt_llm", ["labeling.calibration=contextul"], "unknown calibration 'contextul' (did you mean 'contextual'?)"),
    ("symbol_tuning", ["labeling.calibration=none"],
     "labeling (calibration, selection, method) is not supported by kind symbol_tuning"),
    ("audit", ["labeling.method={name: fusion, pool: {path: p.jsonl}}"],
     "labeling.method is not supported by kind audit"),
    ("estimate", ["labeling.selection={pool: {path: p.jsonl}}"],
     "labeling.selection is not supported by kind estimate"),
])
def test_options_a_kind_cannot_honour_are_refused_in_one_line(kind, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(SHIPPED[kind], overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_refusal_exits_2_before_a_model_loads(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(SHIPPED["audit"]), "--executor", "ray"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "kind audit runs on the local executor only" in err and len(err.strip().splitlines()) == 1


def test_tnt_llm_honours_any_calibration_now(tmp_path):
    """tnt_llm takes the shared labeling section: `auto` and `batch` calibrations are accepted (they were refused)."""
    for calibration in ("auto", "batch", "none"):
        recipe = load_recipe(SHIPPED["tnt_llm"], overrides=[f"labeling.calibration={calibration}"])
        assert recipe.labeling.calibration == calibration
    # the phase-2 defaults stay what they were
    recipe = load_recipe(SHIPPED["tnt_llm"])
    assert (recipe.labeling.normalize, recipe.labeling.chunk_size) == ("mean", 64)


def test_every_kind_prints_its_summary_lines_the_same_way(tmp_path, capsys):
    """`llmlabel run` prints `summary_lines` for every kind (the label kind's included) and the report path."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": l}) + "\n"
                            for t, l in [("good film", "pos"), ("bad film", "neg")] * 6))
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"backend": "fake", "name": "fake"}, "data": {"path": str(data)},
                                  "task": {"labels": ["neg", "pos"]}, "output": {"dir": str(out)}}))
    main(["run", str(recipe), "--quiet"])
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "report.json").read_text())
    summary["report"] = str(out / "report.json")
    expected = load_recipe(recipe).summary_lines(summary)
    assert "\n".join(lines).startswith("\n".join(expected))
    assert lines[-1].startswith("html report:")

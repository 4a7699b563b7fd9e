"""A real Label Studio round trip: `label-studio` 1.23 in its own virtualenv, started on SQLite on a free port; a
project made from the exported labeling config; the exported tasks imported; one annotation per task submitted
through the API (a reviewer who answers with the gold label); Label Studio's JSON export read by `review import`.

The virtualenv is $LLMLABEL_LABEL_STUDIO_VENV when set (.ci/run installs it there in the background while the
project installs), else one in llmlabel's cache dir, created on first use (~3-4 min, ~1 GB).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from reviewhelpers import make_run, wait_for_ci_dependency
from helpers import read_jsonl, write_jsonl

from llmlabel.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, API token) of a Label Studio server on SQLite in a fresh data folder."""
    from llmlabel.testing.review import install_label_studio, label_studio_server

    wait_for_ci_dependency("label-studio")
    with label_studio_server(install_label_studio(), tmp_path_factory.mktemp("label-studio")) as server:
        yield server


def _round_trip(label_studio: tuple[str, str], run_dir: Path, budget: int, tmp_path: Path, capsys) -> dict:
    """Export from the run, label in Label Studio through its API as a reviewer who gives the gold label, export
    from Label Studio, import; returns the agreement report."""
    from llmlabel.testing.review import label_in_label_studio

    out = tmp_path / f"{run_dir.name}-export"
    main(["review", "export", str(run_dir), "--budget", str(budget), "--select", "mixed", "--format",
          "label_studio", "-o", str(out)])
    preds = read_jsonl(run_dir / "predictions.jsonl")
    exported = label_in_label_studio(*label_studio, out, lambda row: preds[row]["gold_label"],
                                     f"llmlabel {run_dir.name}")
    export_file = tmp_path / f"{run_dir.name}-label-studio-export.json"
    export_file.write_bytes(exported)
    tasks = json.loads(exported)
    assert len(tasks) == budget and all(len(t["annotations"]) == 1 and t["predictions"] for t in tasks)
    capsys.readouterr()
    main(["review", "import", str(export_file), "--run", str(run_dir)])
    assert f"imported {budget} answers" in capsys.readouterr().out
    records = read_jsonl(run_dir / "reviews.jsonl")
    assert len(records) == budget and {r["source"] for r in records} == {"label_studio"}
    assert all(r["label"] == preds[r["row"]]["gold_label"] for r in records)
    report = json.loads((run_dir / "review_agreement.json").read_text())
    audit = [r["row"] for r in records if r["selected_by"] == "random"]
    true_accuracy = sum(preds[i]["label"] == preds[i]["gold_label"] for i in audit) / len(audit)
    assert report["audit"]["n"] == len(audit) == round(budget * 0.25)
    assert report["audit"]["accuracy"] == pytest.approx(true_accuracy)
    return report


def test_label_studio_round_trip_sst2_default_model(label_studio, tmp_path, shared_data, capsys):
    """SST-2 rows labeled by the real default model."""
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    run_dir = tmp_path / "sst2"
    run_recipe(load_recipe(data={
        "name": "sst2", "model": {"backend": "transformers", "name": "smollm2", "options": {"dtype": "float32"}},
        "data": {"path": str(shared_data / "sst2" / "test.jsonl"), "limit": 60},
        "task": {"labels": ["negative", "positive"], "instruction": "Classify the sentiment of the movie review.",
                 "text_name": "Review"},
        "output": {"dir": str(run_dir)}}, source="test"), progress=False)
    _round_trip(label_studio, run_dir, 24, tmp_path, capsys)


def test_label_studio_round_trip_banking77_77_labels(label_studio, tmp_path, shared_data, capsys):
    """Banking77 rows (a 77-choice labeling config), labeled by the fake backend to keep CI short; the benchmark
    (benchmarks/review_roundtrip.py) runs the default model on it."""
    rows = read_jsonl(shared_data / "banking77" / "test.jsonl")
    random.Random(0).shuffle(rows)
    data = write_jsonl(tmp_path / "banking77.jsonl", rows[:80])
    labels = json.loads((shared_data / "banking77" / "labels.json").read_text())
    run_dir = make_run(tmp_path / "banking77", data, 80, labels)
    report = _round_trip(label_studio, run_dir, 20, tmp_path, capsys)
    assert report["rows"] == 80

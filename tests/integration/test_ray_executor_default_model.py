"""`llmlabel run recipes/quickstart.yaml --set executor=ray` labels like the local executor with the real default
model (float32, so batch composition cannot tip a label), on a local Ray cluster the executor starts itself."""

from __future__ import annotations

import json

import pytest

from helpers import REPO, read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_quickstart_on_ray_gives_the_local_labels(tmp_path, shared_data, capsys):
    pytest.importorskip("ray")
    from llmlabel.cli import main

    # contextual, not the recipe's auto (= batch): batch calibration divides by each actor's own running mean, the one
    # documented way ray labels differ from local ones.
    common = ["--set", "data.limit=40", "--set", "model.options.dtype=float32", "--set", "labeling.calibration=contextual",
              "--set", f"data.path={shared_data / 'sst2' / 'test.jsonl'}", "-q"]
    recipe = str(REPO / "recipes" / "quickstart.yaml")
    main(["run", recipe, *common, "--set", f"output.dir={tmp_path / 'local'}"])
    main(["run", recipe, *common, "--set", f"output.dir={tmp_path / 'ray'}", "--set", "executor=ray",
          "--set", "ray.num_workers=2", "--set", "ray.shard_size=10", "--set", "ray.object_store_mb=100"])
    assert "executor ray: 2 workers, 4 shards of 10 rows" in capsys.readouterr().out
    local = read_jsonl(tmp_path / "local" / "predictions.jsonl")
    ray_rows = read_jsonl(tmp_path / "ray" / "predictions.jsonl")
    assert [r["text"] for r in ray_rows] == [r["text"] for r in local]
    assert [r["label"] for r in ray_rows] == [r["label"] for r in local]  # every label, no margin allowance
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(local, ray_rows)) < 1e-4
    local_report = json.loads((tmp_path / "local" / "report.json").read_text())
    ray_report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert ray_report["metrics"]["accuracy"] == local_report["metrics"]["accuracy"]
    assert ray_report["executor"]["workers"] == 2 and len(ray_report["executor"]["per_worker"]) == 2
    import ray

    assert not ray.is_initialized(), "the executor left the cluster it started running"

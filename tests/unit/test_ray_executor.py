"""The ray executor on a local 2-CPU Ray cluster with the fake backend: same output as the local executor, finished
shards skipped on restart, and a worker killed mid-run costs nothing (no row lost or duplicated)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import read_jsonl, write_jsonl

from llmlabel.config import load_recipe
from llmlabel.errors import ConfigError, MissingDependencyError

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local cluster for the module (2 CPUs, 100 MB object store), shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _rows(n: int) -> list[dict]:
    return [{"id": i, "text": f"row {i} " + ("positive" if i % 3 else "negative") + " words" * (i % 5),
             "label": "positive" if i % 3 else "negative"} for i in range(n)]


def _recipe(tmp_path: Path, data: Path, out: str, **extra) -> dict:
    return {"name": "ray-test", "model": {"backend": "fake"}, "data": {"path": str(data)},
            "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path / out)}, **extra}


def test_ray_executor_writes_what_the_local_executor_writes(tmp_path, ray_cluster):
    # 'domain' calibration takes its prior from the first texts an engine labels: the actors are primed with the
    # data's first chunk, so they calibrate as the local run does and every byte of the output matches.
    data = write_jsonl(tmp_path / "d.jsonl", _rows(300))
    labeling = {"calibration": "domain", "chunk_size": 64}
    local = load_recipe(data=_recipe(tmp_path, data, "local", labeling=labeling)).run(progress=False)
    ray_run = load_recipe(data=_recipe(tmp_path, data, "ray", labeling=labeling, executor="ray",
                                       ray={"num_workers": 2, "shard_size": 40})).run(progress=False)
    assert (tmp_path / "ray" / "predictions.jsonl").read_bytes() == (tmp_path / "local" / "predictions.jsonl").read_bytes()
    assert ray_run["metrics"]["accuracy"] == local["metrics"]["accuracy"]
    assert ray_run["metrics"]["confusion"] == local["metrics"]["confusion"]
    assert ray_run["stats"]["rows"] == ray_run["stats"]["computed"] == 300
    assert ray_run["stats"]["statuses"] == local["stats"]["statuses"]
    assert ray_run["backend"] == "fake" and ray_run["model"] == local["model"]
    ex = ray_run["executor"]
    assert (ex["name"], ex["workers"], ex["shards"], ex["shards_reused"]) == ("ray", 2, 8, 0)
    assert sum(w["rows"] for w in ex["per_worker"].values()) == 300
    shards = sorted((tmp_path / "ray" / "shards").glob("shard-*.parquet"))
    assert [p.name for p in shards] == [f"shard-{i:06d}.parquet" for i in range(8)]
    assert len(read_jsonl(tmp_path / "ray" / "shards" / "done.jsonl")) == 8
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["executor"]["workers"] == 2


def test_restart_skips_finished_shards_via_cli_flag(tmp_path, ray_cluster, capsys):
    from llmlabel.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", _rows(60))
    recipe = tmp_path / "r.yaml"
    # calibration none: the default (batch) divides by each actor's running mean, so a relabeled shard's
    # probabilities could differ from the first run's; this test is about the restart, so bytes must match.
    recipe.write_text(json.dumps(_recipe(tmp_path, data, "out", ray={"num_workers": 2, "shard_size": 20},
                                         labeling={"calibration": "none"})))
    main(["run", str(recipe), "--executor", "ray", "-q"])
    out = tmp_path / "out"
    first = (out / "predictions.jsonl").read_bytes()
    assert "executor ray: 2 workers, 3 shards of 20 rows (0 reused from an earlier run)" in capsys.readouterr().out
    # A run killed after writing shards 0 and 2: the restart labels shard 1 only, and the output is whole.
    (out / "shards" / "shard-000001.parquet").unlink()
    (out / "predictions.jsonl").unlink()
    main(["run", str(recipe), "--executor", "ray", "-q"])
    assert "(2 reused from an earlier run)" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert (report["stats"]["computed"], report["stats"]["cached"]) == (20, 40)
    assert (out / "predictions.jsonl").read_bytes() == first
    # Everything done: nothing is labeled, no actor starts.
    main(["run", str(recipe), "--executor", "ray", "-q"])
    report = json.loads((out / "report.json").read_text())
    assert report["stats"]["computed"] == 0 and report["executor"]["workers"] == 0
    assert [r["id"] for r in read_jsonl(out / "predictions.jsonl")] == list(range(60))


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, ray_cluster):
    n = 300
    data = write_jsonl(tmp_path / "d.jsonl", _rows(n))
    out = tmp_path / "out"
    # 50 ms per row: ~15 s of engine time over 2 workers, so the kill lands mid-run.
    recipe = load_recipe(data=_recipe(tmp_path, data, "out", model={"backend": "fake", "options": {"delay": 0.05}},
                                      executor="ray", ray={"num_workers": 2, "shard_size": 20}))
    done_log = out / "shards" / "done.jsonl"
    killed: dict = {}

    def kill_a_worker() -> None:
        deadline = time.time() + 150
        while time.time() < deadline:
            lines = done_log.read_text().splitlines() if done_log.exists() else []
            if lines:
                worker = json.loads(lines[0])["workers"][0]
                pid = int(worker.rsplit(":", 1)[1])
                killed.update(pid=pid, shards_done=len(lines))
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    summary = recipe.run(progress=False)
    killer.join(timeout=5)
    assert killed, "no shard finished, so no worker was killed"
    assert killed["shards_done"] < n // 20, "the run had finished before the kill"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # the worker really died
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == list(range(n))  # each row exactly once, in input order
    assert all(p["status"] == "ok" for p in predictions)
    # Ray emits only completed attempts: the rows labeled add up to the rows, not more.
    assert summary["stats"]["computed"] == n
    assert sum(w["rows"] for w in summary["executor"]["per_worker"].values()) == n
    # The killed actor's unfinished shard was retried on its restarted self: a worker (pid) that did not exist
    # before the kill wrote a shard.
    assert killed["pid"] in summary["executor"]["per_worker"] or any(
        w.endswith(f":{killed['pid']}") for w in summary["executor"]["per_worker"])
    assert len(summary["executor"]["per_worker"]) >= 3, "no replacement actor labeled anything"
    shard_rows = [json.loads(line)["rows"] for line in done_log.read_text().splitlines()]
    assert sorted(json.loads(line)["shard"] for line in done_log.read_text().splitlines()) == list(range(n // 20))
    assert sum(shard_rows) == n


def test_changed_recipe_starts_over(tmp_path):
    pytest.importorskip("pyarrow")
    from llmlabel.executors.ray import _ShardStore

    folder = tmp_path / "shards"
    store = _ShardStore(folder, "fingerprint-a", 10, 25)
    (folder / "shard-000000.parquet").write_bytes(b"not parquet")
    assert store.bounds(2) == (20, 25) and store.count == 3
    assert not store.done(0) and not (folder / "shard-000000.parquet").exists()  # unreadable: redone
    (folder / "shard-000001.parquet").write_bytes(b"x")
    _ShardStore(folder, "fingerprint-a", 10, 25)
    assert (folder / "shard-000001.parquet").exists()  # same recipe: kept
    _ShardStore(folder, "fingerprint-b", 10, 25)
    assert not (folder / "shard-000001.parquet").exists()  # other recipe or data: cleared


def test_unknown_executor_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown executor 'rey' \(did you mean 'ray'\?\); valid: local, ray"):
        load_recipe(data=_recipe(tmp_path, tmp_path / "d.jsonl", "out", executor="rey"))
    with pytest.raises(ConfigError, match=r"unknown key 'ray.num_worker' \(did you mean 'num_workers'\?\)"):
        load_recipe(data=_recipe(tmp_path, tmp_path / "d.jsonl", "out", ray={"num_worker": 2}))


def test_bad_backend_option_fails_before_a_cluster_starts(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from llmlabel.executors.ray import RayExecutor

    data = write_jsonl(tmp_path / "d.jsonl", _rows(5))
    monkeypatch.setattr(RayExecutor, "_connect", lambda *a: pytest.fail("a cluster was joined or started"))
    recipe = load_recipe(data=_recipe(tmp_path, data, "out", model={"backend": "fake", "options": {"dealy": 1}},
                                      executor="ray"))
    with pytest.raises(ConfigError, match=r"unknown option for backend 'fake' 'dealy' \(did you mean 'delay'\?\)"):
        recipe.run(progress=False)


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "d.jsonl", _rows(5))
    monkeypatch.setitem(sys.modules, "ray", None)
    recipe = load_recipe(data=_recipe(tmp_path, data, "out", executor="ray"))
    with pytest.raises(MissingDependencyError, match=r"executor 'ray' needs the 'ray' package.*pip install 'llmlabel\[ray\]'"):
        recipe.run(progress=False)


def test_user_mistake_inside_an_actor_is_one_line(tmp_path, ray_cluster, capsys):
    # A missing model path is caught when the recipe is validated (issue 19: before any model or cluster starts);
    # the CLI prints one line either way.
    from llmlabel.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", _rows(6))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(_recipe(tmp_path, data, "out", model={"backend": "transformers",
                                                                       "name": str(tmp_path / "no-such-model")},
                                         executor="ray", ray={"num_workers": 1})))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(recipe), "-q"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {recipe}: 'model': model path not found: {tmp_path / 'no-such-model'}\n" in err
    assert "Traceback" not in err

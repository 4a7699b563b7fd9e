"""A labeling run killed with SIGKILL midway resumes: no row lost, none duplicated, none recomputed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from helpers import cached_rows as _stored, read_jsonl, write_jsonl


def test_killed_run_resumes_without_loss_or_recompute(tmp_path):
    rows = [{"id": i, "text": f"row {i} " + ("positive" if i % 2 else "negative"),
             "label": "positive" if i % 2 else "negative"} for i in range(60)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"

    def write_recipe(delay: float) -> None:
        recipe.write_text(json.dumps({
            "name": "resume", "model": {"backend": "fake", "options": {"delay": delay}},
            "data": {"path": str(data)}, "task": {"labels": ["negative", "positive"]},
            # calibration none: calibration probes are cache entries too, and this test counts row entries
            "labeling": {"chunk_size": 5, "calibration": "none"}, "output": {"dir": str(out)}}))

    write_recipe(0.05)  # ~3 s for 60 rows: slow enough to kill midway
    proc = subprocess.Popen([sys.executable, "-m", "llmlabel.cli", "run", str(recipe), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cache = out / "cache.sqlite"
    deadline = time.time() + 60
    while _stored(cache) < 15 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stored_at_kill = _stored(cache)
    assert 15 <= stored_at_kill < 60
    assert not (out / "predictions.jsonl").exists()

    write_recipe(0.0)  # the delay is not part of the cache key: same results, resumed
    done = subprocess.run([sys.executable, "-m", "llmlabel.cli", "run", str(recipe), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads((out / "report.json").read_text())["stats"]
    assert stats["cached"] == stored_at_kill, "rows stored before the kill were recomputed"
    assert stats["computed"] == 60 - stored_at_kill
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == list(range(60))  # nothing lost or duplicated, input order kept
    assert all(p["status"] == "ok" for p in predictions)
    assert not list(out.glob(".*.tmp")), "the killed run's partial output file was not cleaned up"
    assert _stored(cache) == 60

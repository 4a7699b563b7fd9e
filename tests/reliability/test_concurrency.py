"""Load: two processes labeling into one cache at once, and the openai backend at a concurrency of 64 for a bounded
soak (throughput stable, memory flat)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from helpers import cached_rows as _stored, read_jsonl, write_jsonl
from llmlabel.testing.soak import check_soak, soak
from relhelpers import assert_complete, sentiment_rows

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]


def _recipe(path, data, out, cache, delay=0.0, chunk=3):
    path.write_text(json.dumps({
        "name": "shared-cache", "model": {"backend": "fake", "options": {"delay": delay}},
        "data": {"path": str(data)}, "task": {"labels": ["negative", "positive"]},
        "labeling": {"chunk_size": chunk, "calibration": "none"}, "output": {"dir": str(out), "cache": str(cache)}}))
    return path


def test_two_processes_label_into_one_cache(tmp_path):
    """Overlapping row sets, tiny chunks (one transaction each): both finish, the cache holds every row once,
    passes SQLite's integrity check, and every prediction equals a single-process run's."""
    cache = tmp_path / "shared.sqlite"
    a = write_jsonl(tmp_path / "a.jsonl", sentiment_rows(400))  # ids 0..399
    b = write_jsonl(tmp_path / "b.jsonl", sentiment_rows(400, offset=200))  # ids 200..599: 200 shared
    recipes = [_recipe(tmp_path / f"{n}.json", d, tmp_path / n, cache, delay=0.005)
               for n, d in (("a", a), ("b", b))]
    cmd = [sys.executable, "-m", "llmlabel.cli", "run", "-q"]
    procs = [subprocess.Popen(cmd + [str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in recipes]
    # Make sure they really overlapped: rows went into the cache while both were running.
    both_alive = []
    deadline = time.monotonic() + 150
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if all(p.poll() is None for p in procs):
            both_alive.append(_stored(cache))
        time.sleep(0.05)
    outputs = [p.communicate(timeout=30) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert both_alive and both_alive[-1] - both_alive[0] >= 100, f"the runs hardly overlapped: {both_alive[::10]}"

    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [k for (k,) in db.execute("SELECT key FROM results")]
    assert len(keys) == len(set(keys)) == 600  # the union, each once

    reference = _recipe(tmp_path / "ref.json", write_jsonl(tmp_path / "all.jsonl", sentiment_rows(600)),
                        tmp_path / "ref", tmp_path / "ref.sqlite", chunk=64)
    done = subprocess.run(cmd + [str(reference)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    want = {p["id"]: (p["label"], p["label_probs"]) for p in read_jsonl(tmp_path / "ref" / "predictions.jsonl")}
    for name, ids in (("a", range(400)), ("b", range(200, 600))):
        predictions = read_jsonl(tmp_path / name / "predictions.jsonl")
        assert_complete(predictions, list(ids))
        assert all((p["label"], p["label_probs"]) == want[p["id"]] and p["status"] == "ok" for p in predictions)
        stats = json.loads((tmp_path / name / "report.json").read_text())["stats"]
        assert stats["cached"] + stats["computed"] == 400

    # A third run over everything is served from the shared cache alone.
    again = _recipe(tmp_path / "all.json", tmp_path / "all.jsonl", tmp_path / "all", cache, chunk=64)
    done = subprocess.run(cmd + [str(again)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "all" / "report.json").read_text())["stats"]
    assert stats["cached"] == 600 and stats["computed"] == 0


def test_soak_checker_catches_leaks_and_slowdowns():
    noise = [0.0, 0.3, -0.2, 0.4, 0.1, -0.3, 0.2, 0.0, 0.3]
    flat = [{"requests": 1000, "wall": 2.0, "cpu": 1.2, "rss": 530 + min(i, 3), "heap": 170 + noise[i],
             "blocks": 1_800_000 + int(100 * noise[i])} for i in range(9)]
    assert check_soak(flat) == []
    leak = [dict(w, heap=w["heap"] + 1000 * 1024 * i / 2**20) for i, w in enumerate(flat)]  # 1 KB per request
    assert [p for p in check_soak(leak) if "heap grows" in p]
    objects = [dict(w, blocks=w["blocks"] + 1000 * i) for i, w in enumerate(flat)]  # 1 object per request
    assert [p for p in check_soak(objects) if "live Python objects" in p]
    bloat = [dict(w, rss=w["rss"] + 2.0 * i) for i, w in enumerate(flat)]
    assert [p for p in check_soak(bloat) if "RSS grew" in p]
    slower = [dict(w, cpu=1.2 * (1 + 0.5 * i)) for i, w in enumerate(flat)]
    assert [p for p in check_soak(slower) if "CPU per request" in p]
    stall = [dict(w, wall=20.0 if i == 5 else 2.0) for i, w in enumerate(flat)]
    assert [p for p in check_soak(stall) if "stalled" in p]


@pytest.mark.timeout(120)
def test_openai_backend_soak_at_concurrency_64(tokenizer_dir):
    """~25 s (LLMLABEL_SOAK_SECONDS) at concurrency 64 against a server in another process, with 1.5% of requests
    failing (retried): no request lost, CPU per request steady, heap and RSS flat (see `check_soak`)."""
    from llmlabel.testing.fault_server import serve_faults

    seconds = float(os.environ.get("LLMLABEL_SOAK_SECONDS", "25"))
    with serve_faults({"rates": {"503": 0.01, "drop": 0.005}, "seed": 1}, process=True) as server:
        windows = soak(server.url, tokenizer_dir, seconds)
        stats = server.stats()
    requests = sum(w["requests"] for w in windows)
    assert len(windows) >= 4  # fewer windows fit when the machine is busy; 4 still show a trend
    assert stats["stats"]["ok"] == requests  # every request answered exactly once in the end
    assert sum(stats["faults"].values()) > 0
    assert 48 <= stats["stats"]["max_open_connections"] <= 72  # the client really kept ~64 requests in flight
    problems = check_soak(windows)
    assert not problems, f"{problems}; windows: {windows}"

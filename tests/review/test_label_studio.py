"""A real Label Studio round trip: `label-studio` 1.23 in its own virtualenv, started on SQLite on a free port; a
project made from the exported labeling config; the exported tasks imported; one annotation per task submitted
through the API (a reviewer who answers with the gold label); Label Studio's JSON export read by `review import`.

The virtualenv is $LLMLABEL_LABEL_STUDIO_VENV when set (.ci/run installs it there in the background while the
project installs), else one in llmlabel's cache dir, created on first use (~3-4 min, ~1 GB).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_run, wait_for_ci_dependency
from helpers import read_jsonl, write_jsonl

from llmlabel.cli import main

pytestmark = pytest.mark.slow
LABEL_STUDIO = "label-studio==1.23.2"


def _venv() -> Path:
    if os.environ.get("LLMLABEL_LABEL_STUDIO_VENV"):
        return Path(os.environ["LLMLABEL_LABEL_STUDIO_VENV"])
    from llmlabel.models import cache_dir

    return Path(cache_dir()) / "label-studio-1.23.2-venv"


@pytest.fixture(scope="module")
def label_studio_bin() -> Path:
    wait_for_ci_dependency("label-studio")
    venv = _venv()
    binary = venv / "bin" / "label-studio"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LABEL_STUDIO], check=True, timeout=1500)
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(label_studio_bin: Path, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, API token) of a Label Studio server on SQLite in a fresh data folder."""
    import httpx

    data = tmp_path_factory.mktemp("label-studio")
    port, token = _free_port(), secrets.token_hex(20)
    log = open(data / "server.log", "w")
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite",
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    # Legacy tokens are off by default in 1.23; --enable-legacy-api-token turns them on for this server's default
    # user, whose token we choose, so the test needs no browser login to mint a personal access token.
    process = subprocess.Popen(
        [str(label_studio_bin), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data), "--username", "reviewer@example.com", "--password", secrets.token_hex(8),
         "--user-token", token, "--enable-legacy-api-token"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            if process.poll() is not None:
                pytest.fail(f"label-studio exited with {process.returncode}: "
                            f"{(data / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio did not answer /health within 400 s: "
                            f"{(data / 'server.log').read_text()[-2000:]}")
            time.sleep(2)
        yield base, token
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _round_trip(label_studio: tuple[str, str], run_dir: Path, budget: int, tmp_path: Path, capsys) -> dict:
    """Export from the run, label in Label Studio through its API as a reviewer who gives the gold label, export
    from Label Studio, import; returns the agreement report."""
    import httpx

    base, token = label_studio
    out = tmp_path / f"{run_dir.name}-export"
    main(["review", "export", str(run_dir), "--budget", str(budget), "--select", "mixed", "--format",
          "label_studio", "-o", str(out)])
    client = httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=120)
    project = client.post("/api/projects", json={
        "title": f"llmlabel {run_dir.name}", "label_config": (out / "label_studio_config.xml").read_text()})
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    imported = client.post(f"/api/projects/{pid}/import", json=tasks)
    assert imported.status_code == 201, imported.text
    assert imported.json()["task_count"] == budget and imported.json()["prediction_count"] == budget
    stored = client.get("/api/tasks", params={"project": pid, "page_size": 1000}).json()["tasks"]
    gold = {i: r["gold_label"] for i, r in enumerate(read_jsonl(run_dir / "predictions.jsonl"))}
    for task in stored:
        answer = gold[task["data"]["llmlabel_row"]]
        posted = client.post(f"/api/tasks/{task['id']}/annotations", json={
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [answer]}}],
            "was_cancelled": False})
        assert posted.status_code == 201, posted.text
    exported = client.get(f"/api/projects/{pid}/export", params={"exportType": "JSON"})
    assert exported.status_code == 200, exported.text
    export_file = tmp_path / f"{run_dir.name}-label-studio-export.json"
    export_file.write_bytes(exported.content)
    assert len(exported.json()) == budget
    capsys.readouterr()
    main(["review", "import", str(export_file), "--run", str(run_dir)])
    printed = capsys.readouterr().out
    assert f"imported {budget} answers" in printed
    records = read_jsonl(run_dir / "reviews.jsonl")
    assert len(records) == budget and {r["source"] for r in records} == {"label_studio"}
    assert all(r["label"] == gold[r["row"]] for r in records)
    report = json.loads((run_dir / "review_agreement.json").read_text())
    audit = [r["row"] for r in records if r["selected_by"] == "random"]
    preds = read_jsonl(run_dir / "predictions.jsonl")
    true_accuracy = sum(preds[i]["label"] == preds[i]["gold_label"] for i in audit) / len(audit)
    assert report["audit"]["n"] == len(audit) == round(budget * 0.25)
    assert report["audit"]["accuracy"] == pytest.approx(true_accuracy)
    return report


def test_label_studio_round_trip_sst2_default_model(label_studio, tmp_path, shared_data, capsys):
    """SST-2 rows labeled by the real default model."""
    from llmlabel.config import load_recipe
    from llmlabel.pipeline import run_recipe

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

"""The three real backends label the same 100 SST-2 rows the same way (float32, quickstart recipe, via the CLI)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO, read_jsonl

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROWS = 100


def _label(tmp_path, shared_data, name: str, *overrides: str) -> list[dict]:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "llmlabel.cli", "run", str(REPO / "recipes" / "quickstart.yaml"), "-q",
           "--set", f"data.path={shared_data / 'sst2' / 'test.jsonl'}", "--set", f"data.limit={ROWS}",
           "--set", f"output.dir={out}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_jsonl(out / "predictions.jsonl")


def test_backends_agree_on_sst2(tmp_path, shared_data, vllm_server):
    runs = {
        "transformers": _label(tmp_path, shared_data, "transformers", "--set", "model.options.dtype=float32"),
        "vllm": _label(tmp_path, shared_data, "vllm", "--set", "model.backend=vllm",
                       "--set", "model.options.dtype=float32"),
        # The server was started in float32 (the vllm_server fixture).
        "openai": _label(tmp_path, shared_data, "openai", "--set", "model.backend=openai",
                         "--set", f"model.options.base_url={vllm_server}", "--set", "model.options.timeout=300"),
    }
    labels = {name: [r["label"] for r in rows] for name, rows in runs.items()}
    assert all(len(v) == ROWS for v in labels.values())
    # Calibrated labels split both ways, so agreement is not trivial.
    assert 0.2 < labels["transformers"].count("positive") / ROWS < 0.8
    for other in ("vllm", "openai"):
        agree = sum(a == b for a, b in zip(labels["transformers"], labels[other])) / ROWS
        assert agree >= 0.95, f"transformers vs {other}: {agree:.2f}"
        gap = max(abs(a["label_probs"]["positive"] - b["label_probs"]["positive"])
                  for a, b in zip(runs["transformers"], runs[other]))
        assert gap < 0.02, f"transformers vs {other}: probabilities differ by {gap:.4f}"

"""Helpers of the review tests (imported as `reviewhelpers`; the fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest


def make_run(folder: Path, data: Path, limit: int, labels: list[str] | None = None, model: str = "a",
             instruction: str = "Classify the sentiment.") -> Path:
    """Label `limit` rows of `data` with the fake backend through `run_recipe`; returns the run folder."""
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    recipe = {"name": folder.name, "model": {"backend": "fake", "name": model},
              "data": {"path": str(data), "limit": limit},
              "task": {"labels": labels, "instruction": instruction},
              "labeling": {"calibration": "none"},
              "output": {"dir": str(folder), "cache": None}}
    run_recipe(load_recipe(data=recipe, source="test"), progress=False)
    return folder


def answer_like_gold(rows: list[dict], run: Path, label_key: str = "label") -> list[dict]:
    """Fill each exported row's `label_key` with the run's gold label: a reviewer who is always right."""
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return [{**r, label_key: preds[r["row"]]["gold_label"], "reviewer": "sim"} for r in rows]


def wait_for_ci_dependency(name: str, timeout: float = 900) -> None:
    """.ci/run installs the review tests' system pieces in the background (Chromium, Label Studio) and touches
    `$LLMLABEL_REVIEW_DEPS/<name>.ready` (or `<name>.failed`) when each is done; wait for it. No-op elsewhere."""
    folder = os.environ.get("LLMLABEL_REVIEW_DEPS")
    if not folder:
        return
    deadline = time.monotonic() + timeout
    while not (Path(folder) / f"{name}.ready").exists():
        if (Path(folder) / f"{name}.failed").exists():
            pytest.fail(f"the background install of {name} failed: see {Path(folder) / 'log.txt'}")
        if time.monotonic() > deadline:
            pytest.fail(f"{name} was not installed within {timeout:.0f} s (see {Path(folder) / 'log.txt'})")
        time.sleep(2)

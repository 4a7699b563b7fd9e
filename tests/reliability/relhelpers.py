"""Helpers for the reliability tests: rows, recipes that point the openai backend at a fault server
(`llmlabel.testing.fault_server`) on 127.0.0.1, and the nothing-lost-nothing-duplicated check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import read_jsonl


def sentiment_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """`n` rows with ids `offset..offset+n-1`, varied texts and a gold label."""
    words = ["great", "awful", "fine", "dull", "moving", "clumsy", "sharp", "tired"]
    return [{"id": i, "text": f"review {i}: a {words[i % 8]} and {words[(i * 3) % 8]} film, take {i % 7}",
             "label": "positive" if i % 2 else "negative"} for i in range(offset, offset + n)]


def openai_recipe(out: Path, data: Path, url: str, tokenizer: str, labels: list[str] | None = None,
                  **options: Any) -> dict[str, Any]:
    """A label recipe (as a dict) that scores `data` with the openai backend against the server at `url`."""
    backend = {"base_url": url, "served_model": "fault-model", "tokenizer": tokenizer, "timeout": 1.0,
               "backoff": 0.01, "max_retries": 6, "concurrency": 8, **options}
    return {"name": "reliability", "model": {"backend": "openai", "options": backend},
            "data": {"path": str(data)}, "task": {"labels": labels or ["negative", "positive"]},
            "labeling": {"chunk_size": 16, "calibration": "none"}, "output": {"dir": str(out)}}  # requests counted: no probes


def run(recipe: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a recipe dict in-process; returns (summary, predictions)."""
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    summary = run_recipe(load_recipe(data=recipe), progress=False)
    return summary, read_jsonl(Path(summary["predictions"]))


def assert_complete(predictions: list[dict[str, Any]], ids: list[int]) -> None:
    """Every input row is in the output exactly once, in input order: nothing lost, nothing duplicated."""
    got = [p["id"] for p in predictions]
    assert len(got) == len(set(got)), "duplicated rows"
    assert got == ids, f"lost or reordered rows: {sorted(set(ids) - set(got))[:10]}"


"""Shared fixtures: the shared data folder, a fake backend, and an isolated model cache for the real model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LLMLABEL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, or skip when this checkout has no shared folder beside it."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL."""
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return Path(path)


@pytest.fixture
def sentiment_rows() -> list[dict]:
    """Rows whose text mentions their label, so the fake backend labels them right."""
    return [
        {"text": "a positive, positive experience", "label": "positive"},
        {"text": "utterly negative and negative", "label": "negative"},
        {"text": "positive vibes only", "label": "positive"},
        {"text": "so negative it hurts", "label": "negative"},
    ]

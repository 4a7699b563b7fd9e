"""Shared fixtures: the shared data folder and small labeled rows for the fake backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`; skipped when absent, unless LLMLABEL_REQUIRE_SHARED=1 (CI) makes that a failure."""
    if not SHARED_DATA.exists():
        if os.environ.get("LLMLABEL_REQUIRE_SHARED") == "1":
            pytest.fail(f"shared data not found at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def sentiment_rows() -> list[dict]:
    """Rows whose text mentions their label, so the fake backend labels them right."""
    return [
        {"text": "a positive, positive experience", "label": "positive"},
        {"text": "utterly negative and negative", "label": "negative"},
        {"text": "positive vibes only", "label": "positive"},
        {"text": "so negative it hurts", "label": "negative"},
    ]

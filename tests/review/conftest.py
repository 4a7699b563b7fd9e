"""Fixtures of the review tests: real runs (fake backend, real SST-2 rows) written by the real pipeline (helpers
live in `reviewhelpers.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reviewhelpers import make_run


@pytest.fixture
def sst2_run(tmp_path: Path, shared_data: Path) -> Path:
    """60 real SST-2 validation rows labeled by the fake backend (a run folder with gold labels)."""
    return make_run(tmp_path / "sst2", shared_data / "sst2" / "validation.jsonl", 60, ["negative", "positive"])

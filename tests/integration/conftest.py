"""Fixtures shared by integration tests: the converted default model and one float32 vLLM server per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The converted default model folder (converted on first use)."""
    from llmlabel.models import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def vllm_server(model_dir: str) -> Iterator[str]:
    """One float32 vLLM OpenAI-compatible server on 127.0.0.1 for the session; yields its base URL."""
    pytest.importorskip("vllm")
    from llmlabel.testing.vllm_server import start_vllm_server

    with start_vllm_server(model_dir, dtype="float32", timeout=300) as base_url:
        yield base_url

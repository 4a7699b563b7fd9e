"""Fixtures for the reliability tests (helpers live in `relhelpers.py`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer_dir() -> str:
    """The converted default model folder: its tokenizer is all the openai backend needs (no model runs)."""
    from llmlabel.models import resolve_model

    return resolve_model(None)


#: tokenizers loaded so far, by (model, tokenizer) argument
_TOKENIZERS: dict = {}


@pytest.fixture(autouse=True)
def _reuse_tokenizers(monkeypatch):
    """Load each tokenizer once per session: these tests build many openai backends against short-lived servers,
    and loading the tokenizer (~1 s) would dominate them. Only the loading is shared; nothing else is."""
    from llmlabel.backends import openai

    load = openai.load_tokenizer

    def cached(model, tokenizer):
        if (model, tokenizer) not in _TOKENIZERS:
            _TOKENIZERS[(model, tokenizer)] = load(model, tokenizer)
        return _TOKENIZERS[(model, tokenizer)]

    monkeypatch.setattr(openai, "load_tokenizer", cached)

"""A deterministic fake backend shipped in the library, for fast tests (no model, no torch).

Its scores are a simple, predictable function of the prompt: a candidate scores higher the more often it occurs in the
prompt, lower the more tokens it has, plus a small hash-based jitter. So a text that mentions a label "wins" that label,
and tests can reason about outcomes without a model.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from llmlabel.backends.base import Backend


def _jitter(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:4], "big") / 2**32 - 0.5) * 0.2


class FakeBackend(Backend):
    """Deterministic stand-in for a language model.

    Args:
        model: a free name, used only in the cache key.
        delay: seconds slept per scored prompt (to make interruption tests deterministic).
        responses: canned `generate` outputs, picked per prompt by hash (default: echo the prompt's last line).
        max_context: the context size it claims, in whitespace tokens.
    """

    name = "fake"
    supports_choices = True
    supports_json_schema = False

    def __init__(self, model: str | None = None, delay: float = 0.0, responses: list[str] | None = None,
                 max_context: int = 512):
        self.model_id = f"fake:{model or 'default'}"
        self.delay = delay
        self.responses = responses
        self._max_context = max_context
        self.calls = {"score": 0, "generate": 0, "prompts_scored": 0}

    @property
    def max_context(self) -> int:
        """Context size in whitespace tokens."""
        return self._max_context

    def count_tokens(self, text: str) -> int:
        """Whitespace tokens."""
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        """First `max_tokens` whitespace tokens."""
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """2 x occurrences of the candidate in the prompt - 0.5 x its token count + jitter."""
        self.calls["score"] += 1
        out = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            if self.delay:
                time.sleep(self.delay)
            self.calls["prompts_scored"] += 1
            low = prompt.lower()
            out.append([2.0 * low.count(c.lower()) - 0.5 * self.count_tokens(c) - 1.0 + _jitter(prompt, c)
                        for c in cands])
        return out

    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """Best choice when `choices` is given; else a canned response or the prompt's last non-empty line."""
        self.calls["generate"] += 1
        if json_schema is not None:
            raise NotImplementedError("the fake backend does not do JSON-schema generation")
        if choices:
            return [choices[max(range(len(choices)), key=s.__getitem__)]
                    for s in self.score(prompts, [list(choices)] * len(prompts))]
        out = []
        for prompt in prompts:
            if self.responses:
                idx = int(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest(), 16)
                out.append(self.responses[idx % len(self.responses)])
            else:
                lines = [ln for ln in prompt.splitlines() if ln.strip()]
                out.append(" ".join((lines[-1] if lines else "").split()[:max_tokens]))
        return out

    def next_token_logprobs(self, prompts: list[str]) -> Any:
        """A 64-way 'vocabulary' distribution from the words of each prompt's last three lines (deterministic)."""
        import numpy as np

        from llmlabel.embeddings import HashingEmbedder

        last = [" ".join([ln for ln in p.splitlines() if ln.strip()][-3:]) for p in prompts]
        logits = 5.0 * HashingEmbedder(64).encode(last)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def __repr__(self) -> str:
        return f"FakeBackend({json.dumps(self.model_id)})"

"""A deterministic fake backend shipped in the library, for fast tests (no model, no torch).

Its scores are a simple, predictable function of the prompt: a candidate scores higher the more often it occurs in the
prompt, lower the more tokens it has, plus a small hash-based jitter. So a text that mentions a label "wins" that label,
and tests can reason about outcomes without a model.
"""

from __future__ import annotations

import hashlib
import json
import re
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
        script: `generate` outputs returned in order, one per prompt across calls (the last one repeats); takes
            precedence over everything else, even a JSON schema, so tests can feed malformed or invalid JSON.
        constrained_json: whether it claims JSON-schema generation; it then answers a schema with a deterministic
            instance of it built from the prompt's words. False plays a server that cannot constrain.
    """

    name = "fake"
    supports_choices = True

    def __init__(self, model: str | None = None, delay: float = 0.0, responses: list[str] | None = None,
                 max_context: int = 512, script: list[str] | None = None, constrained_json: bool = True):
        self.model_id = f"fake:{model or 'default'}"
        self.delay = delay
        self.responses = responses
        self._max_context = max_context
        self.script = list(script) if script is not None else None
        self._script_pos = 0
        self.supports_json_schema = constrained_json
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

    def score(self, prompts: list[str], candidates: list[list[str]], first_token: bool = False) -> list[list[float]]:
        """2 x occurrences of the candidate in the prompt - 0.5 x its token count + jitter (with `first_token`, of
        its first whitespace token)."""
        self.calls["score"] += 1
        if first_token:
            candidates = [[c.split()[0] if c.split() else c for c in cands] for cands in candidates]
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
        """The next `script` entries if scripted; else the best choice when `choices` is given; a schema instance
        for `json_schema`; else a canned response or the prompt's last non-empty line."""
        self.calls["generate"] += 1
        if self.script is not None:
            out = []
            for _ in prompts:
                out.append(self.script[min(self._script_pos, len(self.script) - 1)])
                self._script_pos += 1
            return out
        if json_schema is not None:
            if not self.supports_json_schema:
                raise NotImplementedError("this fake backend plays a server without JSON-schema generation")
            return [json.dumps(_instance(json_schema, _words(p), p, "$")) for p in prompts]
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


def _words(prompt: str) -> list[str]:
    """Distinct alphabetic words of 4+ letters in the prompt, most frequent first (ties: first seen)."""
    found = re.findall(r"[A-Za-z]{4,}", prompt.lower())
    counts: dict[str, int] = {}
    for word in found:
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: -counts[w]) or ["word"]


def _instance(schema: dict[str, Any], words: list[str], prompt: str, path: str) -> Any:
    """A deterministic value the (simple) JSON schema accepts: objects with every property, arrays of
    min(maxItems, max(minItems, 3)) items, strings of prompt words (distinct per path), enums by hash."""
    if "enum" in schema:
        return schema["enum"][int(hashlib.sha256((prompt + path).encode()).hexdigest(), 16) % len(schema["enum"])]
    kind = schema.get("type", "object")
    if kind == "object":
        return {key: _instance(sub, words, prompt, f"{path}.{key}")
                for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = min(schema.get("maxItems", 3), max(schema.get("minItems", 0), 3))
        return [_instance(schema.get("items", {}), words, prompt, f"{path}[{i}]") for i in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    # Strings: a word chosen by the path, so list items differ; lengths kept within min/maxLength.
    base = re.sub(r"\[\d+\]", "[]", path)
    offset = sum(int(i) for i in re.findall(r"\[(\d+)\]", path))
    start = int(hashlib.sha256(base.encode()).hexdigest(), 16) % len(words) + offset
    text = " ".join(words[(start + i) % len(words)] for i in range(2 if path.endswith("description") else 1))
    text = text[: schema.get("maxLength", len(text))]
    return text.ljust(schema.get("minLength", 0), "x")

"""OpenAIBackend against a real vLLM server (float32) serving the default model, checked against transformers."""

from __future__ import annotations

import json
import pytest

pytest.importorskip("vllm")

from llmlabel.backends.openai import OpenAIBackend  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TEXTS = [
    "I absolutely loved this film, the acting was superb.",
    "Terrible service, cold food and a rude waiter.",
    "The package arrived on Tuesday.",
    "Best purchase I have made all year!",
]
# "very ..." share their first token, so scoring walks a branching candidate trie (root -> "very" -> ...).
CANDIDATES = ["positive", "negative", "very positive indeed", "very negative"]


def messages(text: str) -> list[dict[str, str]]:
    """A sentiment question about `text`, as chat messages."""
    return [{"role": "system", "content": "Answer with the sentiment of the review."},
            {"role": "user", "content": f"Review: {text}\nSentiment:"}]


@pytest.fixture(scope="module")
def backend(vllm_server: str) -> OpenAIBackend:
    """The backend under test, pointed at the session's server (served under the model folder's path)."""
    return OpenAIBackend(base_url=vllm_server, timeout=300)


@pytest.fixture(scope="module")
def prompts(backend: OpenAIBackend) -> list[str]:
    """Chat prompts rendered with the model's template."""
    return [backend.chat_prompt(messages(t)) for t in TEXTS]


def test_scores_match_transformers(backend: OpenAIBackend, prompts: list[str], model_dir: str):
    from llmlabel.backends.transformers import TransformersBackend

    reference = TransformersBackend(model_dir, dtype="float32")
    try:
        assert reference.chat_prompt(messages(TEXTS[0])) == prompts[0]
        expected = reference.score(prompts, [CANDIDATES] * len(prompts))
    finally:
        reference.close()
    got = backend.score(prompts, [CANDIDATES] * len(prompts))
    assert len(got) == len(prompts)
    for row_got, row_expected in zip(got, expected):
        assert row_got == pytest.approx(row_expected, abs=0.05)
    # The multi-token candidates really sum several tokens, and share a first token (a branching trie).
    assert len(backend.encode(CANDIDATES[2])) > 1
    assert backend.encode(CANDIDATES[2])[0] == backend.encode(CANDIDATES[3])[0]
    assert backend._token_id_scoring is True  # the server took logprob_token_ids (no fallback to echo)


def test_generate_with_choices(backend: OpenAIBackend, prompts: list[str]):
    out = backend.generate(prompts, max_tokens=8, choices=["positive", "negative", "neutral"])
    assert len(out) == len(prompts)
    assert all(o in ("positive", "negative", "neutral") for o in out)


def test_generate_with_json_schema(backend: OpenAIBackend, prompts: list[str]):
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
              "required": ["label"], "additionalProperties": False}
    out = backend.generate(prompts[:2], max_tokens=32, json_schema=schema)
    for text in out:
        parsed = json.loads(text)
        assert parsed["label"] in ("positive", "negative")


def test_concurrency_does_not_change_scores(vllm_server: str):
    sequential = OpenAIBackend(base_url=vllm_server, concurrency=1, timeout=300)
    parallel = OpenAIBackend(base_url=vllm_server, concurrency=8, timeout=300)
    prompts = [sequential.chat_prompt(messages(f"{TEXTS[i % len(TEXTS)]} (review {i})")) for i in range(40)]
    candidates = [CANDIDATES] * len(prompts)
    one = sequential.score(prompts, candidates)
    eight = parallel.score(prompts, candidates)
    for a, b in zip(one, eight):
        assert a == pytest.approx(b, abs=1e-3)


def test_generate_plain_and_max_context(backend: OpenAIBackend, prompts: list[str]):
    out = backend.generate(prompts[:1], max_tokens=5)
    assert isinstance(out[0], str) and out[0]
    assert backend.max_context == 2048

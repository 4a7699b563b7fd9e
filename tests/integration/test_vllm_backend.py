"""VLLMBackend against the transformers reference, on the real default model (float32 on both sides).

vLLM spawns worker processes, so the engine runs in a driver script (under `if __name__ == "__main__":`) started
once for the whole module; it writes every result to a JSON file that the tests below read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MESSAGES = [
    [{"role": "system", "content": "Classify the sentiment of the review."},
     {"role": "user", "content": "I loved this film, the acting was wonderful."}],
    [{"role": "user", "content": "Review: the battery died after two days. Sentiment?"}],
    [{"role": "user", "content": "Is this review positive or negative? 'It was fine, nothing special.'"}],
]
# "very ..." share their first token, so scoring walks a branching candidate trie (root -> "very" -> ...).
CANDIDATES = ["positive", "negative", "very positive indeed", "very negative"]
CHOICES = ["positive", "negative", "neutral"]
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": CHOICES}},
    "required": ["label"],
}

DRIVER = textwrap.dedent('''
    import json
    import sys
    import time

    from llmlabel.backends.vllm import VLLMBackend, _has_logprob_token_ids


    def main():
        spec = json.load(open(sys.argv[1]))
        start = time.time()
        backend = VLLMBackend(dtype="float32", max_model_len=1024, kv_cache_gb=1)
        loaded = time.time()
        try:
            prompts = [backend.chat_prompt(m) for m in spec["messages"]]
            result = {
                "model_id": backend.model_id,
                "max_context": backend.max_context,
                "prompts": prompts,
                "prompt_ids": [backend.encode(p) for p in prompts],
                "scores": backend.score(prompts, [spec["candidates"]] * len(prompts)),
                "token_id_scoring": _has_logprob_token_ids(),
                # the fallback path: one request per (prompt, candidate) pair, from prompt logprobs
                "pair_scores": backend._score_ids_pairs([backend.encode(p) for p in prompts],
                                                        backend.encode_candidates([spec["candidates"]] * len(prompts))),
                "choices": backend.generate(prompts, max_tokens=8, choices=spec["choices"]),
                "json": backend.generate(prompts, max_tokens=64, json_schema=spec["schema"]),
                "plain": backend.generate(prompts[:1], max_tokens=8),
            }
        finally:
            backend.close()
        backend.close()  # idempotent
        try:
            backend.score(["x"], [["y"]])
            result["closed_error"] = None
        except RuntimeError as exc:
            result["closed_error"] = str(exc)
        result["load_s"] = loaded - start
        result["run_s"] = time.time() - loaded
        json.dump(result, open(sys.argv[2], "w"))


    if __name__ == "__main__":
        main()
''')


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    """Start the vLLM engine once in a subprocess and return everything it computed."""
    folder = tmp_path_factory.mktemp("vllm")
    script, spec, out = folder / "driver.py", folder / "spec.json", folder / "out.json"
    script.write_text(DRIVER)
    spec.write_text(json.dumps({"messages": MESSAGES, "candidates": CANDIDATES, "choices": CHOICES,
                                "schema": SCHEMA}))
    env = dict(os.environ)  # passes LLMLABEL_CACHE_DIR (and any VLLM_* settings) through
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    started = time.time()
    proc = subprocess.run([sys.executable, str(script), str(spec), str(out)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"vLLM driver failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["wall_s"] = time.time() - started
    return result


@pytest.fixture(scope="module")
def reference():
    """The transformers backend in float32: the scores vLLM must reproduce."""
    from llmlabel.backends.transformers import TransformersBackend

    backend = TransformersBackend(dtype="float32", device="cpu")
    yield backend
    backend.close()


def test_same_prompts_and_tokens(vllm_run, reference):
    prompts = [reference.chat_prompt(m) for m in MESSAGES]
    assert vllm_run["prompts"] == prompts
    assert vllm_run["prompt_ids"] == [reference.encode(p) for p in prompts]
    assert vllm_run["model_id"].endswith("@float32")
    assert vllm_run["max_context"] == 1024


def test_scores_match_transformers(vllm_run, reference):
    assert any(len(reference.encode(c)) > 1 for c in CANDIDATES)  # multi-token candidates are exercised
    assert reference.encode(CANDIDATES[2])[0] == reference.encode(CANDIDATES[3])[0]  # ... sharing a first token
    prompts = [reference.chat_prompt(m) for m in MESSAGES]
    expected = reference.score(prompts, [CANDIDATES] * len(prompts))
    got = vllm_run["scores"]
    assert len(got) == len(expected)
    for row_got, row_exp in zip(got, expected):
        assert len(row_got) == len(CANDIDATES)
        for g, e in zip(row_got, row_exp):
            assert g < 0
            assert abs(g - e) < 0.05, (got, expected)


def test_trie_scoring_matches_pair_scoring(vllm_run):
    assert vllm_run["token_id_scoring"]  # this vLLM has SamplingParams.logprob_token_ids: the trie path ran
    for row_trie, row_pairs in zip(vllm_run["scores"], vllm_run["pair_scores"]):
        assert row_trie == pytest.approx(row_pairs, abs=1e-3)


def test_generate_with_choices(vllm_run):
    assert len(vllm_run["choices"]) == len(MESSAGES)
    for text in vllm_run["choices"]:
        assert text in CHOICES


def test_generate_with_json_schema(vllm_run):
    assert len(vllm_run["json"]) == len(MESSAGES)
    for text in vllm_run["json"]:
        data = json.loads(text)
        for key in SCHEMA["required"]:
            assert key in data
        assert data["label"] in CHOICES


def test_plain_generate(vllm_run):
    assert len(vllm_run["plain"]) == 1 and isinstance(vllm_run["plain"][0], str)


def test_close_is_idempotent_and_final(vllm_run):
    assert vllm_run["closed_error"] and "closed" in vllm_run["closed_error"]

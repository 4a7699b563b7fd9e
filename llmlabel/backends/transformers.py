"""Hugging Face `transformers` backend: the embedded default, CPU or GPU.

Scoring runs each prompt once and scores every candidate from the prompt's KV cache: the first candidate token comes
from the prompt's last logits for free, and only the remaining tokens of multi-token candidates need a second, short
forward pass over the cached prompt. Prompts are sorted by length and batched by a token budget to cut padding.
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from typing import Any

from llmlabel.backends.base import Backend, TokenizerMixin, resolve_adapter
from llmlabel.backends.trie import CandidateTrie, common_prefix_length, tries_for
from llmlabel.errors import ConfigError, MissingDependencyError
from llmlabel.models import resolve_model
from llmlabel.terminal import prompts_done


#: how to get constrained JSON generation on this backend (xgrammar is an extra: it pulls triton on Linux x86_64,
#: which has no CPU backend; xgrammar itself runs on the CPU without it)
XGRAMMAR_INSTALL = ("pip install 'llmlabel[json]' (on CPU, `pip install --no-deps xgrammar apache-tvm-ffi` skips the "
                    "~1 GB triton it pulls)")

#: id of the text whose activations set the int8 smoothing scales (`quantize="int8"`; the text is
#: `llmlabel/backends/int8_calibration.v1.txt`), part of the model id
INT8_CALIBRATION = "int8_calibration.v1"


def _int8_alpha() -> float:
    from llmlabel.backends.int8 import SMOOTHING_ALPHA

    return SMOOTHING_ALPHA


def _cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 faster than float32: true with AMX tiles (Sapphire Rapids and later).

    Without AMX, oneDNN runs bf16 matmuls through AVX-512 conversions at about half the float32 speed (measured on a
    2-core AVX-512 Xeon: 160 vs 320 GFLOP/s on the 135M model's shapes); with AMX, bf16 is ~3x faster than float32.
    Read from /proc/cpuinfo so the choice (and with it the cache key) is the same on every run of one machine.
    """
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` -> bfloat16 on GPUs and on CPUs with AMX, float32 on other CPUs; other values unchanged."""
    if dtype != "auto":
        return dtype
    if device != "cpu" or _cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def _torch_is_cpu_only() -> bool:
    """Whether the installed torch is a CPU-only build (no CUDA, no ROCm), read from torch/version.py without importing
    torch (an import costs seconds, which a fully cached run should not pay)."""
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        try:
            text = open(f"{location}/version.py", encoding="utf-8").read()
        except OSError:
            continue
        cuda = re.search(r"^cuda\b[^=]*=\s*(.+)$", text, re.M)
        hip = re.search(r"^hip\b[^=]*=\s*(.+)$", text, re.M)
        return bool(cuda and hip and cuda.group(1).strip() == "None" and hip.group(1).strip() == "None")
    return False


def resolve_device(requested: str | None) -> str:
    """`requested`, else "cuda" where torch has a GPU, else "cpu"."""
    if requested:
        return requested
    if _torch_is_cpu_only():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _merged_with_adapter(path: str, adapter: str, dtype: Any) -> Any:
    """The model at `path` with the LoRA adapter merged in: merged in float32, then cast to `dtype`, so a bf16
    backend rounds the merged weights once rather than adding a rounded low-rank update to rounded weights."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        from peft import PeftModel
    except ImportError:
        raise MissingDependencyError("peft", "LoRA adapters on the transformers backend") from None
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:  # shape or module mismatch: an adapter for another model
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"adapter '{adapter}' does not fit model '{path}': {first[:200]}") from None
    return merged.to(dtype)


class TransformersBackend(TokenizerMixin, Backend):
    """Causal LM from a Hugging Face folder, GGUF file or Hub id, run with `transformers`.

    Args:
        model: model name/path (None = embedded SmolLM2-135M-Instruct).
        dtype: "auto" (default: bfloat16 on GPUs and AMX CPUs, float32 on other CPUs, whichever multiplies faster),
            "bfloat16", "float16" or "float32" (exact comparisons).
        device: "cpu", "cuda", ... (default: cuda when available).
        batch_tokens: padded tokens per forward pass; batches are sized from this budget, not a fixed count.
            None (default): 2048 on the CPU, where a bigger batch's intermediates (tokens x 3072 floats in the MLP)
            outgrow the cache (77-label scoring ran ~20% faster in int8 and ~5% in float32 than at 4096; a profiling
            script, not a results file), and 4096 on GPUs.
        max_batch: upper bound on prompts per forward pass.
        repetition_penalty: `generate` divides the logits of tokens already in the sequence by this (1.0: off);
            ~1.15 stops very small models from repeating one JSON item until the token limit.
        prune_nodes: None (default): every candidate is scored exactly. A number: approximate scoring for many-label
            tasks whose candidate trie has more nodes than this: a first pass gives every candidate's first-token
            log-probability, and a second pass expands, per prompt, only the subtrees of its likeliest first tokens,
            at most `prune_nodes` nodes (the likeliest first token's subtree always) and no more than needed to hold
            `prune_coverage` of the first-token mass. An unexpanded candidate gets its first token's log-probability
            split evenly among the candidates that start with it, capped at the worst expanded candidate's score.
            Faster for 77+ labels, but approximate: the top label can differ from exact scoring when the right
            label's first token is unlikely, and calibration does not survive the estimates (`benchmarks/
            throughput.py` on Banking77: the top label matched exact scoring on 2% of rows under contextual calibration,
            42% under batch calibration). Use it for uncalibrated, speed-first runs only.
        prune_coverage: share of the first-token probability mass a pruned prompt stops at (see `prune_nodes`).
        adapter: a peft LoRA adapter folder (e.g. from a `symbol_tuning` recipe), merged into the weights at load
            time, so scoring keeps its fast path; the adapter's digest is part of `model_id` (and so of cache keys).
        quantize: None (default: the weights in `dtype`) or "int8" (CPU only): the decoder layers' linear maps run
            as int8 x int8 matmuls, weights per output channel and activations per token (`llmlabel.backends.int8`).
            Several times faster matmuls on x86 CPUs with VNNI, at a small accuracy cost measured in
            `benchmarks/throughput.py`; part of `model_id`, so int8 and float scores never share a cache.
    """

    name = "transformers"
    supports_choices = True

    def __init__(self, model: str | None = None, dtype: str = "auto", device: str | None = None,
                 batch_tokens: int | None = None, max_batch: int = 64, repetition_penalty: float = 1.0,
                 prune_nodes: int | None = None, prune_coverage: float = 0.999, adapter: str | None = None,
                 quantize: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = self.spec(model, dtype=dtype, device=device, batch_tokens=batch_tokens,
                         repetition_penalty=repetition_penalty, prune_nodes=prune_nodes,
                         prune_coverage=prune_coverage, adapter=adapter, quantize=quantize)
        self.device, self.path, self.adapter = spec["device"], spec["path"], spec["adapter"]
        self.model_id, self.dtype, self.quantize = spec["model_id"], spec["dtype"], quantize
        dtype = self.dtype
        self.batch_tokens = batch_tokens or (2048 if self.device == "cpu" else 4096)
        self.max_batch = max_batch
        self.repetition_penalty = float(repetition_penalty)
        self.prune_nodes = prune_nodes
        self.prune_coverage = float(prune_coverage)
        #: candidates scored from an estimate instead of exactly, since this backend was made (see prune_coverage)
        self.estimated_candidates = 0
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.adapter is None:
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, dtype))
        else:
            self.model = _merged_with_adapter(self.path, self.adapter.path, getattr(torch, dtype))
        self.model.to(self.device).eval()
        self._head_weight = None
        #: with quantize=int8, the LM head for the log-softmax normalizer (see `_target_log_probs`)
        self._int8_head: Any = None
        if quantize == "int8":
            from llmlabel.backends.int8 import calibration_text, int8_head, quantize_int8

            calibration = self.chat_prompt([{"role": "user", "content": calibration_text()}])
            calibration_ids = torch.tensor([self.encode(calibration)], device=self.device)
            self._int8_head = int8_head(self.model, calibration_ids)  # float-model statistics: before the layers
            quantize_int8(self.model, calibration_ids)
        #: KV caches of recent shared prompt prefixes (least recently used dropped first)
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        #: how many shared prefixes `_prefixes` keeps (each holds layers x 2 x prefix tokens x kv width values)
        self.prefix_cache_size = 8
        #: float32 values the batched LM head may hold at once (64 MiB): rows are grouped under this bound
        self.head_buffer_floats = 16 * 1024 * 1024
        self._grammar_compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0

    @staticmethod
    def spec(model: str | None = None, dtype: str = "auto", device: str | None = None,
             batch_tokens: int | None = None, repetition_penalty: float = 1.0, prune_nodes: int | None = None,
             prune_coverage: float = 0.999, adapter: str | None = None, quantize: str | None = None,
             **_: Any) -> dict[str, Any]:
        """Check the options and say which weights they select, without loading anything heavy: the device, the
        model folder, the adapter, the resolved dtype and `model_id` (what cache keys hold). The constructor and
        `describe` both use it, so a cached run finds its rows under the same keys before the model loads."""
        if dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"unknown dtype '{dtype}'; valid: auto, bfloat16, float16, float32")
        if quantize not in (None, "int8"):
            raise ConfigError(f"unknown quantize '{quantize}'; valid: int8 (or leave it unset)")
        if batch_tokens is not None and batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be a positive number of tokens, got {batch_tokens}")
        if repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be positive, got {repetition_penalty}")
        if prune_nodes is not None and prune_nodes < 1:
            raise ConfigError(f"prune_nodes must be a positive number of trie nodes or None, got {prune_nodes}")
        if not 0.0 < prune_coverage <= 1.0:
            raise ConfigError(f"prune_coverage must be in (0, 1], got {prune_coverage}")
        device = resolve_device(device)
        if quantize and device != "cpu":
            raise ConfigError(f"quantize={quantize} runs on the CPU only; on '{device}' use dtype bfloat16")
        path = resolve_model(model)
        resolved_adapter = resolve_adapter(adapter) if adapter else None
        dtype = resolve_dtype(dtype, device)
        lora = f"+lora:{resolved_adapter.digest}" if resolved_adapter else ""
        # The int8 weights depend on the calibration text and the smoothing strength: both are part of the id.
        model_id = f"{path}{lora}@{dtype}" + (f"+int8:{INT8_CALIBRATION}:alpha{_int8_alpha()}:head"
                                              if quantize else "")
        if prune_nodes is not None:  # approximate scores must not share cache entries with exact ones
            model_id += f"~prune{prune_nodes}@{prune_coverage}"
        return {"device": device, "path": path, "adapter": resolved_adapter, "dtype": dtype, "model_id": model_id}

    @classmethod
    def describe(cls, model: str | None = None, **options: Any) -> Any:
        """A `llmlabel.backends.lazy.TokenizerFront` for these options (tokenizer and model id, no weights), or None
        when the model folder lacks what the front needs; `LazyBackend` loads the weights only when a row needs
        computing."""
        from llmlabel.backends.lazy import TokenizerFront

        spec = cls.spec(model, **options)
        return TokenizerFront.from_folder(cls.name, spec["path"], spec["model_id"], supports_choices=True,
                                          supports_json_schema=importlib.util.find_spec("xgrammar") is not None)

    @property
    def max_context(self) -> int:
        """The model's maximum position embeddings."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    # -- batching -------------------------------------------------------------------------------------------------
    def _batches(self, lengths: list[int], extra: list[int] | None = None) -> list[list[int]]:
        """Indices grouped so each batch's padded size (longest x count) fits the token budget; longest first.

        A batch also closes when the next sequence is under 3/4 of the batch's longest, so padding stays below a
        quarter of the compute.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches, current, longest = [], [], 0
        for i in order:
            cost = lengths[i] + (extra[i] if extra else 0)
            new_longest = max(longest, cost)
            if current and (new_longest * (len(current) + 1) > self.batch_tokens or len(current) >= self.max_batch
                            or cost < 0.75 * longest):
                batches.append(current)
                current, new_longest = [], cost
            current.append(i)
            longest = new_longest
        if current:
            batches.append(current)
        return batches

    def _left_pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring ------------------------------------------------------------------------------------------------
    def _body(self, **inputs: Any) -> Any:
        """The transformer without its LM head (hidden states of every position)."""
        return getattr(self.model, self.model.base_model_prefix)(**inputs)

    def _float_head(self) -> tuple[Any, Any]:
        """The LM head's weight and bias (or None) in float32, made once."""
        if self._head_weight is None:
            head = self.model.get_output_embeddings()
            self._head_weight = head.weight.detach().float()
            self._head_bias = None if getattr(head, "bias", None) is None else head.bias.detach().float()
        return self._head_weight, self._head_bias

    def _capped(self, logits: Any) -> Any:
        import torch

        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def _log_probs(self, hidden: Any) -> Any:
        """Log-softmax over the vocabulary, with the LM head in float32.

        bf16 logits are rounded to steps of ~0.1 nats near typical magnitudes, enough to tie or flip close labels;
        the head is a small share of the compute, so it runs in float32 from bf16 hidden states.
        """
        import torch

        weight, bias = self._float_head()
        logits = hidden.float() @ weight.T
        if bias is not None:
            logits = logits + bias
        return torch.log_softmax(self._capped(logits), dim=-1)

    def _target_log_probs(self, states: Any, sources: Any, targets: Any) -> Any:
        """(rows, entries) log-probabilities of token `targets[e]` at position `sources[e]` of `states` (rows,
        positions, hidden).

        Under quantize=int8 the log-softmax's normalizer comes from the int8 head (every position needs logits over
        the whole vocabulary: the largest matmul of many-label scoring), while the target tokens' own logits are
        float32 dot products: an int8 head alone moved the "negative" vs "positive" margin by 0.59 nats on average
        over 64 SST-2 rows, 0.13 with the float head (each vocabulary row's rounding error meets similar hidden
        states every time; a profiling script), and a normalizer is shared
        by every candidate at its position, so its error cancels between single-token labels.
        """
        import torch

        if self._int8_head is None:
            logp = self._log_probs(states.reshape(-1, states.shape[-1])).view(states.shape[0], states.shape[1], -1)
            return logp[:, sources, targets]
        states = states.float()
        normalizer = torch.logsumexp(self._capped(self._int8_head.compute(states)[0]), dim=-1)
        weight, bias = self._float_head()
        picked = (states[:, sources] * weight[targets]).sum(-1)
        if bias is not None:
            picked = picked + bias[targets]
        return self._capped(picked) - normalizer[:, sources]

    def score_ids(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """`score` on token ids.

        Prompts with the same candidate set are scored together: their longest common token prefix (system prompt,
        instruction, label list, exemplars) runs once, and each batch runs only the prompts' own suffixes plus a
        trie of the candidates' tokens under tree attention, from that prefix's KV cache.
        """
        import torch

        results: list[list[float]] = [[0.0] * len(c) for c in cand_ids]
        tries = tries_for(cand_ids)
        groups: dict[int, list[int]] = {}  # id(trie) -> prompts sharing that candidate set
        for i, trie in tries.items():
            groups.setdefault(id(trie), []).append(i)
        with torch.inference_mode():
            for members in groups.values():
                trie = tries[members[0]]
                prefix_len = common_prefix_length([prompt_ids[i] for i in members])
                prefix = self._prefix_cache(prompt_ids[members[0]][:prefix_len])
                suffixes = [prompt_ids[i][prefix_len:] for i in members]
                pruned = self.prune_nodes is not None and len(trie) > self.prune_nodes
                nodes = self.prune_nodes if pruned else len(trie)  # expected nodes per row, for the batch budget
                score_batch = self._score_batch_pruned if pruned else self._score_batch
                for batch in self._batches([len(s) + nodes for s in suffixes]):
                    scores = score_batch(prefix, prefix_len, [suffixes[b] for b in batch], trie)
                    for b, row in zip(batch, scores):
                        results[members[b]] = row
                    prompts_done(len(batch))  # moves the labeling bar (llmlabel.terminal)
        return results

    def _prefix_cache(self, prefix: list[int]) -> list[tuple[Any, Any]]:
        """Per-layer (keys, values) of the shared prefix, computed once (batch of one) and kept for the next calls:
        a labeler sends its rows in chunks that share one instruction (+ exemplars) prefix."""
        import torch
        from transformers import DynamicCache

        if not prefix:
            return []
        key = tuple(prefix)
        if key in self._prefixes:
            self._prefixes.move_to_end(key)
            return self._prefixes[key]
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([prefix], device=self.device)
        self._body(input_ids=ids, past_key_values=cache, use_cache=True,
                   position_ids=torch.arange(len(prefix), device=self.device)[None])
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._prefixes[key] = kv
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return kv

    def _score_batch(self, prefix: list[tuple[Any, Any]], prefix_len: int, suffixes: list[list[int]],
                     trie: CandidateTrie) -> list[list[float]]:
        """One forward pass over [left-padded suffixes | trie nodes] on top of the shared prefix."""
        import torch

        hidden, width = self._forward_suffixes(prefix, prefix_len, suffixes, trie)
        dev = self.device
        sources = torch.tensor(trie.sources, device=dev)
        targets = torch.tensor(trie.targets, device=dev)
        owners = torch.tensor(trie.owners, device=dev)
        n_cands = int(owners.max()) + 1
        positions = hidden.shape[1] - (width - 1)  # the prompt's last position, then the trie nodes
        # Rows go through the LM head together (a one-row head matmul mostly reads the vocab x hidden weight), in
        # groups that bound the rows x positions x vocab float32 log-prob buffer.
        vocab = self.model.get_output_embeddings().weight.shape[0]
        per_group = max(1, self.head_buffer_floats // (positions * vocab))
        out = []
        for start in range(0, len(suffixes), per_group):
            states = hidden[start:start + per_group, width - 1:]
            picked = self._target_log_probs(states, sources, targets).double()  # (rows, table entries)
            scores = torch.zeros((states.shape[0], n_cands), dtype=torch.float64, device=dev)
            scores.index_add_(1, owners, picked)
            out.extend(scores.tolist())
        return out

    def _score_batch_pruned(self, prefix: list[tuple[Any, Any]], prefix_len: int, suffixes: list[list[int]],
                            trie: CandidateTrie) -> list[list[float]]:
        """Two passes: the suffixes (giving every candidate's first-token log-probability), then, per row, only the
        trie subtrees under that row's likeliest first tokens (see `prune_coverage`), from the first pass's KV cache.
        """
        import math

        import torch

        dev = self.device
        hidden, width, cache, valid = self._forward_suffixes(prefix, prefix_len, suffixes, keep_cache=True)
        roots_logp = self._log_probs(hidden[:, width - 1])  # (rows, vocab)
        rows = len(suffixes)
        depth0 = [j for j, parent in enumerate(trie.parents) if parent < 0]  # fed nodes at depth 0: shared first tokens
        depth0_tokens = torch.tensor([trie.tokens[j] for j in depth0], device=dev)
        node_roots = torch.tensor(trie.roots)
        subtree_sizes = torch.bincount(node_roots, minlength=len(trie))[torch.tensor(depth0)]
        selected: list[Any] = []
        for r in range(rows):
            probs = roots_logp[r, depth0_tokens].exp().cpu()
            order = torch.argsort(probs, descending=True)
            cumulative = torch.cumsum(probs[order], 0)
            covering = int((cumulative < self.prune_coverage * cumulative[-1]).sum()) + 1
            # ... and within the node budget (the likeliest first token's subtree always).
            within = int((torch.cumsum(subtree_sizes[order], 0) <= self.prune_nodes).sum())
            keep = max(1, min(covering, within))
            chosen = torch.zeros(len(trie), dtype=torch.bool)
            chosen[torch.tensor(depth0)[order[:keep]]] = True
            selected.append(torch.nonzero(chosen[node_roots]).flatten())  # whole subtrees; parents before children
        n = max(len(sel) for sel in selected)
        ids = torch.full((rows, n), self.pad_id, dtype=torch.long)
        positions = torch.zeros((rows, n), dtype=torch.long)
        mask = torch.zeros((rows, n, prefix_len + width + n), dtype=torch.bool)
        ancestors = torch.tensor(trie.ancestors())
        tokens, depths = torch.tensor(trie.tokens), torch.tensor(trie.depths)
        lengths = valid.sum(-1)
        for r, sel in enumerate(selected):
            k = len(sel)
            ids[r, :k] = tokens[sel]
            positions[r, :k] = prefix_len + lengths[r] + depths[sel]
            mask[r, :k, :prefix_len] = True
            mask[r, :k, prefix_len:prefix_len + width] = valid[r]
            mask[r, :k, prefix_len + width:prefix_len + width + k] = ancestors[sel][:, sel]
            mask[r, torch.arange(k, n), prefix_len + width + torch.arange(k, n)] = True  # padding nodes: themselves
        nodes_hidden = self._body(input_ids=ids.to(dev), attention_mask=mask[:, None].to(dev),
                                  position_ids=positions.to(dev), past_key_values=cache,
                                  use_cache=True).last_hidden_state
        sources = torch.tensor(trie.sources)
        targets = torch.tensor(trie.targets, device=dev)
        owners = torch.tensor(trie.owners)
        first_tokens = torch.tensor(trie.first_tokens, device=dev)
        # Candidates per first token, to split an unexpanded first token's mass evenly among them.
        counts: dict[int, int] = {}
        for t in trie.first_tokens:
            counts[t] = counts.get(t, 0) + 1
        log_shares = torch.tensor([-math.log(counts[t]) for t in trie.first_tokens], dtype=torch.float64, device=dev)
        out = []
        for r, sel in enumerate(selected):
            row_of_node = torch.full((1 + len(trie),), -1, dtype=torch.long)
            row_of_node[0] = 0
            row_of_node[1 + sel] = torch.arange(1, len(sel) + 1)
            table_rows = row_of_node[sources]
            exact = torch.ones(trie.num_candidates, dtype=torch.bool)
            exact[owners[table_rows < 0]] = False
            logp = torch.cat([roots_logp[r:r + 1], self._log_probs(nodes_hidden[r, :len(sel)])])
            take = table_rows >= 0
            scores = torch.zeros(trie.num_candidates, dtype=torch.float64, device=dev)
            scores.index_add_(0, owners[take].to(dev), logp[table_rows[take].to(dev), targets[take.to(dev)]].double())
            # An unexpanded candidate: its first token's mass split among the candidates sharing it, but never above
            # the worst expanded candidate (its first token was less likely than every expanded one's).
            estimate = roots_logp[r, first_tokens].double() + log_shares
            exact = exact.to(dev)
            if bool(exact.any()):
                estimate = estimate.clamp(max=float(scores[exact].min()))
            scores = torch.where(exact, scores, estimate)
            self.estimated_candidates += int((~exact).sum())
            out.append(scores.tolist())
        return out

    def _forward_suffixes(self, prefix: list[tuple[Any, Any]], prefix_len: int, suffixes: list[list[int]],
                          trie: CandidateTrie | None = None, keep_cache: bool = False) -> Any:
        """Hidden states of [left-padded suffixes | trie nodes] on top of the shared prefix, and the suffix width;
        with `keep_cache`, also the KV cache (prefix + this pass) and the (rows, width) mask of real suffix tokens."""
        import torch
        from transformers import DynamicCache

        rows, width, nodes = len(suffixes), max(len(s) for s in suffixes), len(trie) if trie is not None else 0
        span = width + nodes
        dev = self.device
        ids = torch.full((rows, span), self.pad_id, dtype=torch.long)
        valid = torch.zeros((rows, span), dtype=torch.bool)
        for r, suffix in enumerate(suffixes):
            ids[r, width - len(suffix):width] = torch.tensor(suffix, dtype=torch.long)
            valid[r, width - len(suffix):width] = True
        if trie is not None and nodes:
            ids[:, width:] = torch.tensor(trie.tokens, dtype=torch.long)
            valid[:, width:] = True
        # Positions: prefix, then each row's real suffix tokens, then trie nodes by depth after the suffix.
        lengths = valid[:, :width].sum(-1, keepdim=True)
        positions = torch.zeros((rows, span), dtype=torch.long)
        positions[:, :width] = prefix_len + (valid[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        if nodes:
            positions[:, width:] = prefix_len + lengths + torch.tensor(trie.depths)[None]
        # Attention (True = may attend): prefix for every real token; causal among real suffix tokens; trie nodes
        # see the whole suffix and their own ancestors. The diagonal keeps padding rows well defined.
        mask = torch.zeros((rows, span, prefix_len + span), dtype=torch.bool)
        mask[:, :, :prefix_len] = valid[:, :, None]
        causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
        mask[:, :width, prefix_len:prefix_len + width] = causal[None] & valid[:, None, :width] & valid[:, :width, None]
        if nodes:
            mask[:, width:, prefix_len:prefix_len + width] = valid[:, None, :width]
            mask[:, width:, prefix_len + width:] = torch.tensor(trie.ancestors())[None]
        diagonal = torch.arange(span)
        mask[:, diagonal, prefix_len + diagonal] = True
        cache = DynamicCache(config=self.model.config)
        for layer_idx, (keys, values) in enumerate(prefix):
            cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer_idx)
        hidden = self._body(input_ids=ids.to(dev), attention_mask=mask[:, None].to(dev), position_ids=positions.to(dev),
                            past_key_values=cache, use_cache=True).last_hidden_state
        if keep_cache:
            return hidden, width, cache, valid[:, :width]
        return hidden, width

    def next_token_logprobs(self, prompts: list[str]) -> Any:
        """(len(prompts), vocab) float32 numpy log-probabilities of the next token after each prompt; the prompts'
        common prefix runs once, batches are sized by the token budget."""
        import numpy as np
        import torch

        prompt_ids = self.encode_many(prompts)
        if not prompt_ids:
            return np.zeros((0, 0), dtype=np.float32)
        prefix_len = min(common_prefix_length(prompt_ids), min(len(p) for p in prompt_ids) - 1)
        out = [None] * len(prompts)
        with torch.inference_mode():
            prefix = self._prefix_cache(prompt_ids[0][:prefix_len])
            suffixes = [p[prefix_len:] for p in prompt_ids]
            for batch in self._batches([len(s) for s in suffixes]):
                hidden, width = self._forward_suffixes(prefix, prefix_len, [suffixes[b] for b in batch])
                logp = self._log_probs(hidden[:, width - 1])
                for b, row in zip(batch, logp.cpu().numpy()):
                    out[b] = row
        return np.stack(out).astype(np.float32)

    # -- generation -----------------------------------------------------------------------------------------------
    @property
    def supports_json_schema(self) -> bool:  # type: ignore[override]
        """JSON-schema generation needs `xgrammar` (the `json` extra; checked without importing it)."""
        return importlib.util.find_spec("xgrammar") is not None

    @property
    def unconstrained_reason(self) -> str | None:
        """Why JSON answers cannot be constrained here (None when they can): `llmlabel.structured` warns with it."""
        if self.supports_json_schema:
            return None
        return f"the transformers backend constrains JSON answers with xgrammar, which is not installed: " \
               f"{XGRAMMAR_INSTALL}; answers are generated freely and parsed/repaired"

    def _json_grammar(self, schema: dict[str, Any]) -> Any:
        """The schema compiled by xgrammar against this tokenizer (compiled once per distinct schema).

        Compiled without free whitespace (as the vLLM backend does), so a small model cannot spend its token budget
        on blank lines.
        """
        try:
            import xgrammar as xgr
        except ImportError:
            raise MissingDependencyError("xgrammar", "JSON-schema generation on the transformers backend",
                                         XGRAMMAR_INSTALL) from None
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if self._grammar_compiler is None:
                # The LM head may be wider than the tokenizer's vocabulary (padding rows): the bitmask must cover it.
                vocab = int(self.model.get_output_embeddings().weight.shape[0])
                stops = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else None
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab, stop_token_ids=stops)
                self._grammar_compiler = xgr.GrammarCompiler(info, max_threads=2)
            try:
                # Compiled in the schema's own property order: the model writes the properties in that order.
                self._grammars[key] = self._grammar_compiler.compile_json_schema(json.dumps(schema),
                                                                                 any_whitespace=False)
            except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError for bad schemas
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"invalid JSON schema for constrained generation: {first[:200]}") from None
        return self._grammars[key]

    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """Greedy decoding; with `choices`, the likeliest choice (exact constrained decoding over a closed set);
        with `json_schema`, JSON that the schema accepts (xgrammar's grammar-constrained logits processor masks every
        token the schema forbids). Constrained output can still be cut short by `max_tokens`."""
        import torch

        if choices and json_schema is not None:
            raise ConfigError("generate() takes choices or json_schema, not both")
        if choices:
            scores = self.score(prompts, [list(choices)] * len(prompts))
            return [choices[max(range(len(choices)), key=s.__getitem__)] for s in scores]
        grammar = self._json_grammar(json_schema) if json_schema is not None else None
        prompt_ids = self.encode_many(prompts)
        results = [""] * len(prompts)
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for batch in self._batches([len(p) for p in prompt_ids], [max_tokens] * len(prompts)):
                ids, mask = self._left_pad([prompt_ids[i] for i in batch])
                extra: dict[str, Any] = {}
                if self.repetition_penalty != 1.0:
                    extra["repetition_penalty"] = self.repetition_penalty
                if grammar is not None:
                    from xgrammar.contrib.hf import LogitsProcessor

                    # One processor per generate() call: it holds a grammar matcher per row.
                    extra["logits_processor"] = [LogitsProcessor(grammar)]
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                                          do_sample=False, pad_token_id=self.pad_id, eos_token_id=eos, **extra)
                for row, i in enumerate(batch):
                    results[i] = self.tokenizer.decode(out[row, ids.shape[1]:], skip_special_tokens=True).strip()
        return results

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None
        self._prefixes.clear()

"""Hugging Face `transformers` backend: the embedded default, CPU or GPU.

Scoring runs each prompt once and scores every candidate from the prompt's KV cache: the first candidate token comes
from the prompt's last logits for free, and only the remaining tokens of multi-token candidates need a second, short
forward pass over the cached prompt. Prompts are sorted by length and batched by a token budget to cut padding.
"""

from __future__ import annotations

from typing import Any

from llmlabel.backends.base import Backend, TokenizerMixin
from llmlabel.errors import ConfigError
from llmlabel.models import resolve_model


def _device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


class TransformersBackend(TokenizerMixin, Backend):
    """Causal LM from a Hugging Face folder, GGUF file or Hub id, run with `transformers`.

    Args:
        model: model name/path (None = embedded SmolLM2-135M-Instruct).
        dtype: "bfloat16" (default: the fast path on CPU and GPU) or "float32" (exact comparisons).
        device: "cpu", "cuda", ... (default: cuda when available).
        batch_tokens: padded tokens per forward pass; batches are sized from this budget, not a fixed count.
        max_batch: upper bound on prompts per forward pass.
    """

    name = "transformers"
    supports_choices = True

    def __init__(self, model: str | None = None, dtype: str = "bfloat16", device: str | None = None,
                 batch_tokens: int = 4096, max_batch: int = 64):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in ("bfloat16", "float16", "float32"):
            raise ConfigError(f"unknown dtype '{dtype}'; valid: bfloat16, float16, float32")
        self.path = resolve_model(model)
        self.model_id = f"{self.path}@{dtype}"
        self.device = _device(device)
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        self._head_weight = None
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0

    @property
    def max_context(self) -> int:
        """The model's maximum position embeddings."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    # -- batching -------------------------------------------------------------------------------------------------
    def _batches(self, lengths: list[int], extra: list[int] | None = None) -> list[list[int]]:
        """Indices grouped so each batch's padded size (longest x count) fits the token budget; longest first."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches, current, longest = [], [], 0
        for i in order:
            cost = lengths[i] + (extra[i] if extra else 0)
            new_longest = max(longest, cost)
            if current and (new_longest * (len(current) + 1) > self.batch_tokens or len(current) >= self.max_batch):
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

    def _log_probs(self, hidden: Any) -> Any:
        """Log-softmax over the vocabulary, with the LM head in float32.

        bf16 logits are rounded to steps of ~0.1 nats near typical magnitudes, enough to tie or flip close labels;
        the head is a small share of the compute, so it runs in float32 from bf16 hidden states.
        """
        import torch

        if self._head_weight is None:
            head = self.model.get_output_embeddings()
            self._head_weight = head.weight.detach().float()
            self._head_bias = None if getattr(head, "bias", None) is None else head.bias.detach().float()
        logits = hidden.float() @ self._head_weight.T
        if self._head_bias is not None:
            logits = logits + self._head_bias
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, dim=-1)

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """Sum of log-probabilities of each candidate's tokens after its prompt (see module docstring)."""
        if len(prompts) != len(candidates):
            raise ValueError("score() needs one candidate list per prompt")
        prompt_ids = self.encode_many(prompts)
        cand_ids = self.encode_candidates(candidates)
        return self.score_ids(prompt_ids, cand_ids)

    def score_ids(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """`score` on token ids."""
        import torch

        results: list[list[float]] = [[0.0] * len(c) for c in cand_ids]
        lengths = [len(p) for p in prompt_ids]
        longest_cand = [max((len(c) for c in cands), default=1) for cands in cand_ids]
        with torch.inference_mode():
            for batch in self._batches(lengths, longest_cand):
                self._score_batch([prompt_ids[i] for i in batch], [cand_ids[i] for i in batch],
                                  [results[i] for i in batch])
        return results

    def _score_batch(self, prompts: list[list[int]], cands: list[list[list[int]]], out: list[list[float]]) -> None:
        import torch
        from transformers import DynamicCache

        ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        hidden = self._body(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True).last_hidden_state
        first = self._log_probs(hidden[:, -1, :])
        # Rows for the second pass: (prompt row, candidate index) of every candidate longer than one token.
        rows = []
        for b, cand_list in enumerate(cands):
            for j, toks in enumerate(cand_list):
                out[b][j] = float(first[b, toks[0]])
                if len(toks) > 1:
                    rows.append((b, j))
        if not rows:
            return
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        width = ids.shape[1]
        prompt_len = mask.sum(-1)
        # Each expanded row holds a full copy of its prompt's cache: size chunks by the token budget.
        per_chunk = max(1, self.batch_tokens // max(width, 1))
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start:start + per_chunk]
            index = torch.tensor([b for b, _ in chunk], device=self.device)
            tails = [cands[b][j][:-1] for b, j in chunk]
            tail_width = max(len(t) for t in tails)
            tail_ids = torch.full((len(chunk), tail_width), self.pad_id, dtype=torch.long)
            tail_mask = torch.zeros((len(chunk), tail_width), dtype=torch.long)
            for r, t in enumerate(tails):
                tail_ids[r, :len(t)] = torch.tensor(t)
                tail_mask[r, :len(t)] = 1
            tail_ids, tail_mask = tail_ids.to(self.device), tail_mask.to(self.device)
            sub = DynamicCache(config=self.model.config)
            for layer_idx, (k, v) in enumerate(layers):
                sub.update(k.index_select(0, index), v.index_select(0, index), layer_idx)
            full_mask = torch.cat([mask.index_select(0, index), tail_mask], dim=1)
            tail_pos = prompt_len.index_select(0, index)[:, None] + torch.arange(tail_width, device=self.device)
            hidden = self._body(input_ids=tail_ids, attention_mask=full_mask, position_ids=tail_pos,
                                past_key_values=sub, use_cache=True).last_hidden_state
            logp = self._log_probs(hidden)
            for r, (b, j) in enumerate(chunk):
                toks = cands[b][j]
                targets = torch.tensor(toks[1:], device=self.device)
                out[b][j] += float(logp[r, torch.arange(len(toks) - 1, device=self.device), targets].sum())

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """Greedy decoding; with `choices`, the likeliest choice (exact constrained decoding over a closed set)."""
        import torch

        if json_schema is not None:
            raise NotImplementedError(
                "JSON-schema-constrained generation is not implemented for the transformers backend yet; "
                "use the vllm or openai backend, or generate without a schema and parse"
            )
        if choices:
            scores = self.score(prompts, [list(choices)] * len(prompts))
            return [choices[max(range(len(choices)), key=s.__getitem__)] for s in scores]
        prompt_ids = self.encode_many(prompts)
        results = [""] * len(prompts)
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for batch in self._batches([len(p) for p in prompt_ids], [max_tokens] * len(prompts)):
                ids, mask = self._left_pad([prompt_ids[i] for i in batch])
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                                          do_sample=False, pad_token_id=self.pad_id, eos_token_id=eos)
                for row, i in enumerate(batch):
                    results[i] = self.tokenizer.decode(out[row, ids.shape[1]:], skip_special_tokens=True).strip()
        return results

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None

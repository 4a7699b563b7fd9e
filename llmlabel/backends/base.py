"""The `Backend` interface every engine implements, and helpers shared by the tokenizer-based engines."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from llmlabel.errors import ConfigError


class Backend(ABC):
    """A language model that can score continuations and generate text.

    Callers hand whole lists to `score`/`generate`; backends batch internally.
    """

    #: registry name, e.g. "transformers"
    name: str = "base"
    #: identifies the weights (and precision where it changes scores); part of every cache key
    model_id: str = ""
    #: whether `generate(..., choices=...)` constrains decoding natively
    supports_choices: bool = False
    #: whether `generate(..., json_schema=...)` is supported
    supports_json_schema: bool = False
    #: whether the backend answers whole decision questions (`decide`, see llmlabel/backends/api.py) rather than
    #: token-level scores; a class attribute, so asking it never loads a lazy backend's model
    supports_decide: bool = False

    @abstractmethod
    def score(self, prompts: list[str], candidates: list[list[str]], first_token: bool = False) -> list[list[float]]:
        """Log-probability of each candidate continuation of each prompt.

        `candidates[i]` are the continuations of `prompts[i]`; returns one list of floats per prompt, in order.
        With `first_token`, only each candidate's first token is scored (candidates that share it tie).
        """

    @abstractmethod
    def generate(
        self,
        prompts: list[str],
        max_tokens: int = 64,
        choices: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> list[str]:
        """Greedy completion of each prompt; constrained to `choices` or `json_schema` where given."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` takes (without special tokens)."""

    @abstractmethod
    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to its first `max_tokens` tokens."""

    @property
    @abstractmethod
    def max_context(self) -> int:
        """Longest prompt + continuation the model accepts, in tokens."""

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Render chat `messages` into one prompt string ending where the assistant's answer starts."""
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join(lines) + "\nassistant:"

    def escape_text(self, text: str) -> str:
        """`text` made safe to put inside a prompt as data: strings the model reads as control tokens are broken
        up, so a row cannot end the user's turn or open an assistant's. Default: unchanged."""
        return text

    def next_token_logprobs(self, prompts: list[str]) -> Any:
        """(len(prompts), vocab) log-probabilities of the next token after each prompt (kNN prompting's anchors).
        Backends that cannot return a full next-token distribution raise NotImplementedError."""
        raise NotImplementedError(f"the '{self.name}' backend does not return full next-token distributions; "
                                  "use the transformers backend for kNN prompting with vocabulary features")

    def close(self) -> None:
        """Release engines, servers and memory held by the backend."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: lone UTF-16 surrogates: Hugging Face tokenizers reject strings holding them (a TypeError), so they become U+FFFD
_SURROGATES = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (anything else is kept as is)."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


class TokenizerMixin:
    """Tokenization shared by the Hugging Face-tokenizer engines, so every backend scores the same token ids.

    Prompts are encoded without added special tokens (the chat template already carries them); each candidate is
    encoded on its own and appended, so a label's tokens do not depend on the text before it.
    """

    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return self.tokenizer(encodable(text), add_special_tokens=False)["input_ids"]

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts at once (fast tokenizers batch this)."""
        if not texts:
            return []
        return self.tokenizer([encodable(t) for t in texts], add_special_tokens=False)["input_ids"]

    def encode_candidates(self, candidates: list[list[str]]) -> list[list[list[int]]]:
        """Token ids of every candidate; each distinct string is encoded once."""
        unique = sorted({c for cands in candidates for c in cands})
        ids = dict(zip(unique, self.encode_many(unique)))
        for cand, toks in ids.items():
            if not toks:
                raise ConfigError(f"candidate '{cand}' encodes to no tokens; labels must be non-empty text")
        return [[ids[c] for c in cands] for cands in candidates]

    def score(self, prompts: list[str], candidates: list[list[str]], first_token: bool = False) -> list[list[float]]:
        """Sum of log-probabilities of each candidate's tokens after its prompt (with `first_token`, of its first
        token only): encodes, then `score_ids`."""
        if len(prompts) != len(candidates):
            raise ValueError("score() needs one candidate list per prompt")
        cand_ids = self.encode_candidates(candidates)
        if first_token:
            cand_ids = [[ids[:1] for ids in cands] for cands in cand_ids]
        return self.score_ids(self.encode_many(prompts), cand_ids)

    def score_ids(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """`score` on token ids; each engine implements it."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` takes."""
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to its first `max_tokens` tokens."""
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[: max(max_tokens, 0)])

    def escape_text(self, text: str) -> str:
        """`text` with the tokenizer's special-token strings (e.g. "<|im_end|>") broken by a zero-width space after
        their first character: the tokenizer would otherwise turn them into real control tokens, and a row could
        end the user's turn and write the assistant's answer itself."""
        pattern = getattr(self, "_special_pattern", False)
        if pattern is False:
            decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
            specials = {tok.content for tok in decoder.values() if getattr(tok, "special", False)}
            specials |= set(getattr(self.tokenizer, "all_special_tokens", []) or [])
            specials = sorted((s for s in specials if len(s) > 1), key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(s) for s in specials)) if specials else None
            self._special_pattern = pattern
        if pattern is None or not pattern.search(text):
            return text
        return pattern.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Apply the model's chat template, ending at the start of the assistant's turn."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return Backend.chat_prompt(self, messages)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter folder saved by peft (`save_pretrained`): where it is, a digest of its weights, its rank.

    The digest goes into the backend's `model_id`, so results cached for the base model, or for another adapter (or
    an adapter re-trained into the same folder), never mix with this one's.
    """

    path: str
    digest: str
    rank: int
    base_model: str | None


def resolve_adapter(adapter: str) -> Adapter:
    """Check that `adapter` is a peft LoRA adapter folder; a missing or wrong one raises a one-line ConfigError."""
    import hashlib
    import json
    from pathlib import Path

    folder = Path(adapter).expanduser().resolve()
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"adapter '{adapter}' is not a LoRA adapter folder (no adapter_config.json); give the "
                          "folder a symbol_tuning run saved (e.g. runs/symbol_tuning/seed0/adapter)")
    names = ("adapter_model.safetensors", "adapter_model.bin")
    weights = [folder / name for name in names if (folder / name).is_file()]
    if not weights:
        raise ConfigError(f"adapter '{adapter}' has no adapter_model.safetensors")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ConfigError(f"adapter '{adapter}' is a {config.get('peft_type')} adapter; only LoRA adapters load")
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest()[:16]
    return Adapter(str(folder), digest, int(config.get("r", 8)), config.get("base_model_name_or_path"))


def load_backend(name: str = "transformers", model: str | None = None, **options: Any) -> Backend:
    """Build the backend registered as `name` for `model` (None = the embedded default model).

    `options` go to the backend's constructor (e.g. `dtype`, `batch_tokens`, `base_url`).
    """
    from llmlabel.registry import backends

    return backends.checked(name, options, fixed=("model",))(model=model, **options)

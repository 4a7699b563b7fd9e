"""Load a backend only when a row needs computing, so a fully cached run never loads the model.

A Labeler needs a few things from its backend before it asks for any score: the `model_id` (part of every cache key),
the chat template and the special tokens (to render and escape prompts), token counts (to fit prompts into the
context) and `max_context`. For Hugging Face tokenizer folders these come from `tokenizer.json` (the `tokenizers`
library), `tokenizer_config.json` and the chat template, rendered the way `transformers` renders it, in a fraction of
a second and without importing torch or transformers: that is the `TokenizerFront`. `LazyBackend` answers those
questions from the front and builds the real backend on the first call that needs the model (`score`, `generate`,
anything else), then passes every call through. `tests/backends/test_lazy.py` checks that the front and the loaded
backend render, escape, count and cut alike on the default model.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmlabel.backends.base import Backend, encodable

log = logging.getLogger("llmlabel")


@dataclass(eq=False, repr=False)
class TokenizerFront:
    """What a Labeler asks a tokenizer-based backend before it needs the model, read from the model folder alone.

    Build it with `from_folder`, which returns None when the folder lacks something the front needs (no fast
    tokenizer file, a chat template this renderer cannot compile): the caller then loads the backend itself.
    """

    name: str
    model_id: str
    folder: Path
    _tokenizer: Any
    _template: Any
    _special_tokens: dict[str, str]
    #: the special tokens' texts, longest first (escaped in prompts)
    specials: list[str]
    max_context: int
    supports_choices: bool
    supports_json_schema: bool

    def __post_init__(self) -> None:
        self._special_pattern = (re.compile("|".join(re.escape(s) for s in self.specials)) if self.specials
                                 else None)
        self._hf_tokenizer: Any = None

    @classmethod
    def from_folder(cls, name: str, path: str, model_id: str, supports_choices: bool = False,
                    supports_json_schema: bool = False, max_context: int | None = None) -> "TokenizerFront | None":
        """The front of the Hugging Face folder at `path`, or None (a Hub id, no tokenizer.json, an odd template)."""
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            return None
        try:
            import tokenizers

            config = _read_json(folder / "tokenizer_config.json")
            template_text = _chat_template(folder, config)
            template = _compile_template(template_text) if template_text else None
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
            if max_context is None:
                model_config = _read_json(folder / "config.json")
                # the loaded backend reads model.config.max_position_embeddings, defaulting to 2048 (same rule)
                if "max_position_embeddings" not in model_config and "text_config" in model_config:
                    return None
                max_context = int(model_config.get("max_position_embeddings", 2048))
        except Exception as exc:  # noqa: BLE001 - any problem here only means: load the backend the usual way
            log.debug("no tokenizer front for %s (%s): the backend loads first", path, exc)
            return None
        special_tokens = {key: _content(config[key]) for key in _SPECIAL_KEYS if config.get(key) is not None}
        # Same set as TokenizerMixin.escape_text: special added tokens plus the named special tokens (and extras).
        specials = {tok["content"] for tok in json.loads(tokenizer_file.read_text(encoding="utf-8")).get(
            "added_tokens", []) if tok.get("special")}
        specials |= set(special_tokens.values())
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = config.get(key) or []
            specials |= {_content(t) for t in (extra.values() if isinstance(extra, dict) else extra)}
        ordered = sorted((s for s in specials if len(s) > 1), key=len, reverse=True)
        return cls(name, model_id, folder, tokenizer, template, special_tokens, ordered, max_context,
                   supports_choices, supports_json_schema)

    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` takes, no special tokens added (as `TokenizerMixin.count_tokens`)."""
        return len(self._tokenizer.encode(encodable(text), add_special_tokens=False).ids)

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to its first `max_tokens` tokens; decoded by the folder's own `transformers` tokenizer (loaded
        on first use, without weights), so cuts are exactly the loaded backend's."""
        from llmlabel.backends.base import TokenizerMixin

        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        holder = TokenizerMixin()
        holder.tokenizer = self._hf_tokenizer
        return holder.truncate(text, max_tokens)

    def escape_text(self, text: str) -> str:
        """Special-token strings broken by a zero-width space (as `TokenizerMixin.escape_text`)."""
        if self._special_pattern is None or not self._special_pattern.search(text):
            return text
        return self._special_pattern.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat template applied as `transformers.apply_chat_template(..., add_generation_prompt=True)` does."""
        if self._template is None:
            return Backend.chat_prompt(self, messages)  # type: ignore[arg-type]
        return self._template.render(messages=messages, tools=None, documents=None, add_generation_prompt=True,
                                     **self._special_tokens)


#: tokenizer_config.json keys that `transformers` passes to chat templates (its special_tokens_map)
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _content(token: Any) -> str:
    return token.get("content", "") if isinstance(token, dict) else str(token)


def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    """The folder's default chat template: chat_template.jinja, else tokenizer_config.json's `chat_template`."""
    file = folder / "chat_template.jinja"
    if file.is_file():
        return file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: transformers uses 'default'
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
        if template is None:
            raise ValueError("no default chat template")
    return template


def _compile_template(source: str) -> Any:
    """Compile a chat template in the environment `transformers` uses (sandboxed, trim/lstrip blocks, loop
    controls, its `tojson`, `raise_exception` and `strftime_now`; `{% generation %}` blocks render their body)."""
    from datetime import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


class LazyBackend(Backend):
    """A backend that is built on the first call needing the model; cache-key questions come from a front.

    `load` builds the real backend (called at most once); `front` answers `model_id`, `max_context`, `chat_prompt`,
    `escape_text`, `count_tokens` and `truncate` meanwhile and afterwards, so every prompt of a run is rendered the
    same way. Any other attribute (`score`, `generate`, `next_token_logprobs`, `tokenizer`, ...) loads the backend and
    is read from it. `loaded` says whether the model was loaded (a fully cached run leaves it False).
    """

    def __init__(self, front: TokenizerFront, load: Callable[[], Backend]):
        self._front = front
        self._load = load
        self._backend: Backend | None = None
        #: seconds the real backend took to build (0 until it is built)
        self.load_seconds = 0.0
        self.name = front.name
        self.model_id = front.model_id
        self.supports_choices = front.supports_choices

    @property
    def loaded(self) -> bool:
        """Whether the real backend has been built."""
        return self._backend is not None

    @property
    def backend(self) -> Backend:
        """The real backend (built now if it was not yet)."""
        if self._backend is None:
            from llmlabel.terminal import note

            note(f"loading {Path(self.model_id).name} ({self.name}) ...", cli_only=True)
            start = time.perf_counter()
            self._backend = self._load()
            self.load_seconds = time.perf_counter() - start
            if self._backend.model_id != self.model_id:  # a front that names other weights than it loads: a bug
                log.warning("backend model id %s differs from its front's %s", self._backend.model_id, self.model_id)
        return self._backend

    @property
    def supports_json_schema(self) -> bool:  # type: ignore[override]
        """From the front: whether constrained JSON generation is available."""
        return self._front.supports_json_schema

    @property
    def max_context(self) -> int:
        """From the front (the model folder's config), without loading the model."""
        return self._front.max_context

    def score(self, prompts: list[str], candidates: list[list[str]], first_token: bool = False) -> list[list[float]]:
        """The real backend's `score` (loads it)."""
        return self.backend.score(prompts, candidates, first_token=first_token)

    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """The real backend's `generate` (loads it)."""
        return self.backend.generate(prompts, max_tokens=max_tokens, choices=choices, json_schema=json_schema)

    def count_tokens(self, text: str) -> int:
        """From the front."""
        return self._front.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        """From the front."""
        return self._front.truncate(text, max_tokens)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """From the front."""
        return self._front.chat_prompt(messages)

    def escape_text(self, text: str) -> str:
        """From the front."""
        return self._front.escape_text(text)

    def next_token_logprobs(self, prompts: list[str]) -> Any:
        """The real backend's (loads it)."""
        return self.backend.next_token_logprobs(prompts)

    def close(self) -> None:
        """Close the real backend if it was built."""
        if self._backend is not None:
            self._backend.close()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks: read them from the real backend (loading it).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.backend, name)


def lazy_backend(name: str = "transformers", model: str | None = None, **options: Any) -> Backend:
    """`load_backend(name, model, **options)`, deferred: a `LazyBackend` when the backend class can describe itself
    without loading (`describe`, e.g. transformers and vllm on a local model folder), else the backend, loaded now.

    Options are checked now either way (unknown names, bad values), so a mistake is reported before any row is read.
    """
    from llmlabel.backends.base import load_backend
    from llmlabel.registry import backends

    factory = backends.checked(name, options, fixed=("model",))
    describe = getattr(factory, "describe", None)
    front = describe(model, **options) if describe is not None else None
    if front is None:
        return load_backend(name, model=model, **options)
    return LazyBackend(front, lambda: load_backend(name, model=model, **options))

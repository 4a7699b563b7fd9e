"""Prompting: a row's text escaped for the backend, rendered with the task's template into a chat prompt that ends
in the answer prefix, and cut (longest field first) so prompt and answer fit the model's context."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from llmlabel.backends.base import Backend
from llmlabel.core.task import LabelTask
from llmlabel.errors import ConfigError

#: Code points that cannot be encoded (lone UTF-16 surrogates, e.g. from a JSON "\udc80" escape): no tokenizer
#: or UTF-8 file takes them, so the model is shown U+FFFD instead (the row is counted in `stats.invalid_text`).
SURROGATES = re.compile("[\ud800-\udfff]")

#: Texts longer than `max_context * MAX_CHARS_PER_TOKEN` characters are cut to that before tokenizing: they are
#: truncated anyway, and tokenizing a 1 MB text three times to find the cut took seconds per row. (A token covers
#: far fewer characters than this, so the cut prefix still fills the context.)
MAX_CHARS_PER_TOKEN = 32


class Prompting:
    """Renders and fits a task's prompts for a backend (given as a function: a Labeler loads it at first use).

    Args:
        backend: returns the backend.
        task: the `LabelTask`.
        template: the loaded prompt template.
        examples: fixed demonstrations (dicts with 'text', 'label', 'text_pair'), not yet escaped.
        answer_prefix: text that starts the model's answer after the prompt.
        answer_tokens: the answer's token budget when it is generated (score mode: the longest label's).
        generate: whether the answer is generated (else label continuations are scored).
    """

    def __init__(self, backend: Callable[[], Backend], task: LabelTask, template: Any,
                 examples: Sequence[dict[str, Any]], answer_prefix: str = "", answer_tokens: int = 16,
                 generate: bool = False):
        self._backend = backend
        self.task = task
        self.template = template
        self.answer_prefix = answer_prefix
        #: labels follow the answer prefix as words: a space between them unless the prefix ends in whitespace
        self.answer_join = " " if answer_prefix and not answer_prefix[-1].isspace() else ""
        self.shown = dict(zip(task.names, task.texts_shown))
        self._raw_examples = list(examples)
        self._examples: list[dict[str, Any]] | None = None
        self._generate, self._generated_tokens = generate, answer_tokens
        self._answer_tokens: int | None = None
        self._label_tokens: list[int] | None = None

    @property
    def backend(self) -> Backend:
        return self._backend()

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The fixed demonstrations, their texts escaped for the backend (so computed at first use)."""
        if self._examples is None:
            escape = self.backend.escape_text
            self._examples = [{"text": escape(str(ex["text"])),
                               "text_pair": None if ex.get("text_pair") is None else escape(str(ex["text_pair"])),
                               "label": ex["label"]} for ex in self._raw_examples]
        return self._examples

    def clean(self, text: str, pair: str | None) -> tuple[str, str | None, bool]:
        """A row's text(s) as the model is shown them: lone surrogates replaced (flagged), then escaped (a row's
        text is only ever text: "<|im_end|>" in it must not end the user's turn)."""
        invalid = bool(SURROGATES.search(text) or (pair is not None and SURROGATES.search(pair)))
        if invalid:
            text = SURROGATES.sub("\ufffd", text)
            pair = None if pair is None else SURROGATES.sub("\ufffd", pair)
        escape = self.backend.escape_text
        return escape(text), None if pair is None else escape(pair), invalid

    def render(self, text: str, text_pair: str | None, label: Any = None,
               examples: Sequence[dict[str, Any]] | None = None, cands: Sequence[int] | None = None) -> str:
        """The chat prompt for a row (`label`: the one a yes/no question asks about; `cands`: labels shown)."""
        task = self.task
        labels = task.labels if cands is None else [task.labels[i] for i in sorted(cands)]
        shown = [{"name": lab.text, "description": lab.description} for lab in labels]
        if label is not None:
            label = {"name": label.text, "description": label.description}
        examples = self.examples if examples is None else examples
        examples = [{**ex, "label": self.shown[ex["label"]]} for ex in examples]
        content = self.template.render(
            instruction=task.instruction, labels=shown, label=label, examples=examples, text_name=task.text_name,
            text_pair_name=task.text_pair_name, text=text, text_pair=text_pair)
        return self.backend.chat_prompt([{"role": "user", "content": content}]) + self.answer_prefix

    def continuations(self, cands: Sequence[int] | None) -> list[str]:
        """The continuations scored for a row's candidate labels (all labels when `cands` is None)."""
        shown = [self.answer_join + t for t in self.task.texts_shown]
        return shown if cands is None else [shown[i] for i in sorted(cands)]

    def yes_no(self) -> list[str]:
        """The continuations of a yes/no question."""
        return [self.answer_join + "yes", self.answer_join + "no"]

    def label_tokens(self) -> list[int]:
        """Tokens per shown label (at least 1)."""
        if self._label_tokens is None:
            self._label_tokens = [max(self.backend.count_tokens(t), 1) for t in self.task.texts_shown]
        return self._label_tokens

    def answer_tokens(self) -> int:
        """Tokens the answer may take: the longest label (or yes/no) when scored, the generation limit else."""
        if self._answer_tokens is None:
            cands = ["yes", "no"] if self.task.multi_label else self.task.texts_shown
            longest = max(self.backend.count_tokens(c) for c in cands)
            self._answer_tokens = self._generated_tokens if self._generate else longest
        return self._answer_tokens

    def fit(self, text: str, text_pair: str | None, examples: Sequence[dict[str, Any]] | None = None,
            cands: Sequence[int] | None = None) -> tuple[str, str | None, bool]:
        """Cut the text (longest field first) so prompt + answer fit the model's context; flag when cut."""
        backend = self.backend
        limit = backend.max_context - self.answer_tokens() - 1
        budget = backend.max_context * MAX_CHARS_PER_TOKEN
        precut = len(text) > budget or (text_pair is not None and len(text_pair) > budget)
        if precut:
            text = text[:budget]
            text_pair = None if text_pair is None else text_pair[:budget]

        def excess_of(t: str, p: str | None) -> int:
            return backend.count_tokens(self.render(t, p, self.task.labels[0], examples, cands)) - limit

        probe = self.render(text, text_pair, self.task.labels[0], examples, cands)
        # Each token is at least one UTF-8 byte, so short prompts cannot overflow: skip tokenizing them.
        if len(probe.encode("utf-8", "surrogatepass")) <= limit:
            return text, text_pair, precut
        excess = backend.count_tokens(probe) - limit
        if excess <= 0:
            return text, text_pair, precut
        for _ in range(3):  # token counts of parts do not add exactly; re-check after each cut
            if text_pair is not None and backend.count_tokens(text_pair) > backend.count_tokens(text):
                text_pair = backend.truncate(text_pair, max(backend.count_tokens(text_pair) - excess - 8, 0))
            else:
                text = backend.truncate(text, max(backend.count_tokens(text) - excess - 8, 0))
            excess = excess_of(text, text_pair)
            if excess <= 0:
                break
        if excess > 0:
            raise ConfigError(f"the prompt template alone is longer than the model's context "
                              f"({backend.max_context} tokens); shorten the instruction or examples")
        return text, text_pair, True

"""Typed raw results: what a backend answered for one row, before calibration, and the cache key it is stored under.

A row's raw result is one of `Scores` (a log-score per label; None where the label was not scored), `YesNo` (a
(yes, no) log-score pair per label: multi-label tasks), `Answer` (generated text, parsed into a label) or `Refused`
(a decision endpoint declined). The cache stores them as the dicts of `as_dict` (keyed "scores", "yes_no", "answer",
"refused", with extra entries such as a decision endpoint's usage and note); `from_cache` reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Union

from llmlabel.cache import cache_key
from llmlabel.core.parsing import parse_answer
from llmlabel.core.results import LabelResult


class Item(NamedTuple):
    """One row to label: its text(s), demonstrations, candidate label indices (None: all) and whether it was cut."""

    text: str
    text_pair: str | None
    examples: tuple[dict[str, Any], ...]
    cands: tuple[int, ...] | None
    truncated: bool


def softmax(scores: list[float]) -> list[float]:
    """The distribution of log-scores."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


@dataclass
class Reading:
    """What turning a raw result into a `LabelResult` needs: the task's labels and how scores are normalized."""

    names: list[str]
    texts_shown: list[str]
    threshold: float
    normalize: str
    #: tokens per label (for 'mean' normalization), computed at first use
    token_counts: Callable[[], list[int]]

    def distribution(self, scores: Sequence[float | None]) -> list[float]:
        """Label distribution from raw label scores; labels not scored (restricted away) get probability 0."""
        if self.normalize == "mean":
            scores = [None if s is None else s / n for s, n in zip(scores, self.token_counts())]
        present = [s for s in scores if s is not None]
        probs = iter(softmax(present))
        return [0.0 if s is None else next(probs) for s in scores]


@dataclass
class RawResult:
    """Base of the raw results; `info` holds what else the backend reported (stored with it, e.g. usage, a note)."""

    KEY: ClassVar[str] = ""
    info: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @property
    def value(self) -> Any:
        return getattr(self, self.KEY)

    @property
    def note(self) -> str | None:
        """A flag for the row's reason (e.g. a sampled distribution), or None."""
        return self.info.get("note")

    def as_dict(self) -> dict[str, Any]:
        """The cached form."""
        return {self.KEY: self.value, **self.info}

    def result(self, reading: Reading, truncated: bool, prior: list[float] | None = None) -> LabelResult:
        """The row's `LabelResult` (`prior`: a calibration prior to divide out of label scores)."""
        result = self._result(reading, truncated, prior)
        if self.note:
            result.reason = self.note
        return result

    def _result(self, reading: Reading, truncated: bool, prior: list[float] | None) -> LabelResult:
        raise NotImplementedError


@dataclass
class Scores(RawResult):
    """A log-score per label (None: not scored)."""

    KEY: ClassVar[str] = "scores"
    scores: list[float | None]

    def _result(self, reading: Reading, truncated: bool, prior: list[float] | None) -> LabelResult:
        probs = reading.distribution(self.scores)
        if prior is not None:
            import numpy as np

            from llmlabel.calibration.base import Calibrator

            probs = Calibrator.apply(np.asarray([probs]), np.asarray(prior))[0].tolist()
        names = reading.names
        best = max(range(len(names)), key=probs.__getitem__)
        return LabelResult(names[best], dict(zip(names, probs)), probs[best], truncated=truncated)


@dataclass
class YesNo(RawResult):
    """A (yes, no) log-score pair per label."""

    KEY: ClassVar[str] = "yes_no"
    yes_no: list[list[float]]

    def _result(self, reading: Reading, truncated: bool, prior: list[float] | None) -> LabelResult:
        p_yes = [softmax(pair)[0] for pair in self.yes_no]
        chosen = [n for n, p in zip(reading.names, p_yes) if p >= reading.threshold]
        confidence = sum(max(p, 1 - p) for p in p_yes) / len(p_yes)
        return LabelResult(chosen, dict(zip(reading.names, p_yes)), confidence, truncated=truncated)


@dataclass
class Answer(RawResult):
    """A generated answer."""

    KEY: ClassVar[str] = "answer"
    answer: str

    def _result(self, reading: Reading, truncated: bool, prior: list[float] | None) -> LabelResult:
        names = reading.names
        shown, reason = parse_answer(self.answer, reading.texts_shown)
        label = names[reading.texts_shown.index(shown)] if shown is not None else None
        probs = {n: float(n == label) for n in names}
        status = "ok" if label else "unparseable"
        return LabelResult(label, probs, 1.0 if label else 0.0, status, reason, self.answer, truncated)


@dataclass
class Refused(RawResult):
    """A decision endpoint declined the question: kept, counted, not a label."""

    KEY: ClassVar[str] = "refused"
    refused: str

    def result(self, reading: Reading, truncated: bool, prior: list[float] | None = None) -> LabelResult:
        return LabelResult.without_label(reading.names, "refused", self.refused, truncated)


Raw = Union[Scores, YesNo, Answer, Refused]


def from_cache(value: dict[str, Any]) -> Raw:
    """A raw result from its cached dict."""
    for kind in (Refused, Answer, YesNo, Scores):
        if kind.KEY in value:
            return kind(value[kind.KEY], info={k: v for k, v in value.items() if k != kind.KEY})
    raise ValueError(f"not a raw result: {sorted(value)}")


@dataclass
class KeyParts:
    """Everything but the row that shapes a raw result: the backend, prompt, task and mode."""

    backend: str
    model: str
    prompt: str
    prompt_digest: str
    mode: str
    task: Any
    max_answer_tokens: int
    answer_prefix: str = ""
    first_token: bool = False
    #: the decision endpoint's option plan (described), when rows go to `decide`
    decide: dict[str, Any] | None = None

    def key(self, item: Item) -> str:
        """The cache key of `item`'s raw result."""
        task = self.task
        return cache_key(backend=self.backend, model=self.model, prompt=self.prompt,
                         prompt_digest=self.prompt_digest, mode=self.mode, multi_label=task.multi_label,
                         labels=[lab.model_dump() for lab in task.labels], instruction=task.instruction,
                         names=[task.text_name, task.text_pair_name], examples=list(item.examples),
                         text=item.text, text_pair=item.text_pair,
                         candidates=None if item.cands is None else sorted(item.cands),
                         max_answer_tokens=self.max_answer_tokens if self.mode == "generate" else None,
                         # only when set, so entries made before these options existed stay valid
                         **({"answer_prefix": self.answer_prefix} if self.answer_prefix else {}),
                         **({"first_token": True} if self.first_token else {}),
                         **({"decide": self.decide} if self.decide is not None else {}))

"""The labeling engine: rows -> prompts -> backend scores or answers -> label, per-label probabilities, confidence.

Score mode asks the backend for the log-probability of every label name as the answer and turns them into a
distribution (optionally per-token normalized and contextually calibrated). Generate mode lets the model answer
(constrained to the label names where the backend can) and parses the answer; unparseable answers are recorded with
a reason. Raw results are cached per row, keyed by everything that shaped them, so a killed run resumes losslessly.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llmlabel.backends.base import Backend
from llmlabel.cache import ResultCache, cache_key
from llmlabel.errors import BackendError, ConfigError, PartialFailure
from llmlabel.parsing import parse_answer
from llmlabel.prompts import load_prompt
from llmlabel.task import LabelTask

log = logging.getLogger("llmlabel")

#: Content-free inputs for contextual calibration (Zhao et al. 2021).
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")


#: Code points that cannot be encoded (lone UTF-16 surrogates, e.g. from a JSON "\udc80" escape): no tokenizer
#: or UTF-8 file takes them, so the model is shown U+FFFD instead (the row is counted in `stats.invalid_text`).
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Texts longer than `max_context * MAX_CHARS_PER_TOKEN` characters are cut to that before tokenizing: they are
#: truncated anyway, and tokenizing a 1 MB text three times to find the cut took seconds per row. (A token covers
#: far fewer characters than this, so the cut prefix still fills the context.)
MAX_CHARS_PER_TOKEN = 32

#: Columns the labeler adds to each row.
OUTPUT_COLUMNS = ("label", "label_probs", "confidence", "status", "reason", "raw_answer", "truncated")


@dataclass
class LabelResult:
    """The outcome for one row. `status` is 'ok', 'unparseable', 'failed' or 'skipped'; `reason` says why not ok."""

    label: str | list[str] | None
    label_probs: dict[str, float]
    confidence: float
    status: str = "ok"
    reason: str | None = None
    raw_answer: str | None = None
    truncated: bool = False

    def as_columns(self, mode: str) -> dict[str, Any]:
        """Output columns for a row (generate mode adds `raw_answer`)."""
        cols = asdict(self)
        if mode != "generate":
            cols.pop("raw_answer")
        return cols


@dataclass
class LabelStats:
    """Counters for a run: rows, where results came from, and what went wrong."""

    rows: int = 0
    cached: int = 0
    computed: int = 0
    truncated: int = 0
    #: rows whose text held lone surrogates (invalid Unicode), shown to the model as U+FFFD
    invalid_text: int = 0
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        """Rows per second of wall time."""
        return self.rows / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return {"rows": self.rows, "cached": self.cached, "computed": self.computed, "truncated": self.truncated,
                "invalid_text": self.invalid_text, "statuses": dict(self.statuses), "seconds": round(self.seconds, 3),
                "items_per_second": round(self.items_per_second, 3)}


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


class Labeler:
    """Labels rows of a dataset with a backend.

    Args:
        backend: a `Backend` (see `llmlabel.load_backend`).
        task: the `LabelTask`.
        mode: 'score' (label log-likelihoods; always a valid label) or 'generate' (the model answers; parsed).
        normalize: score mode: 'sum' of label token log-probs, or 'mean' per token (favours no label by length).
        calibration: None or 'contextual' (divide by the label distribution of content-free inputs).
        examples: fixed few-shot demonstrations, dicts with 'text', 'label' (and 'text_pair').
        prompt: template id, e.g. 'label.v1'.
        cache: a `ResultCache` to store and reuse raw results.
        chunk_size: rows sent to the backend (and committed to the cache) at a time.
        max_answer_tokens: generate mode: answer length limit.
        progress: show a progress bar.
    """

    def __init__(self, backend: Backend, task: LabelTask, mode: Literal["score", "generate"] = "score",
                 normalize: Literal["sum", "mean"] = "sum", calibration: str | None = None,
                 examples: list[dict[str, Any]] | None = None, prompt: str | None = None,
                 cache: ResultCache | None = None, chunk_size: int = 256, max_answer_tokens: int = 16,
                 progress: bool = False):
        if mode not in ("score", "generate"):
            raise ConfigError(f"unknown mode '{mode}'; valid: generate, score")
        if normalize not in ("sum", "mean"):
            raise ConfigError(f"unknown normalize '{normalize}'; valid: mean, sum")
        if calibration not in (None, "none", "contextual"):
            raise ConfigError(f"unknown calibration '{calibration}'; valid: none, contextual")
        if calibration == "contextual" and mode != "score":
            raise ConfigError("calibration 'contextual' needs mode 'score'")
        self.backend = backend
        self.task = task
        self.mode = mode
        self.normalize = normalize
        self.calibration = None if calibration == "none" else calibration
        self.examples = [self._example(ex) for ex in (examples or [])]
        self._shown = dict(zip(task.names, task.texts_shown))
        default_prompt = "label_binary.v1" if task.multi_label else "label.v1"
        self.template = load_prompt(prompt or default_prompt)
        self.cache = cache
        self.chunk_size = chunk_size
        self.max_answer_tokens = max_answer_tokens
        self.progress = progress
        self.stats = LabelStats()
        self._cf_probs: list[float] | None = None
        self._truncation_warned = False

    def _example(self, ex: dict[str, Any]) -> dict[str, Any]:
        label = ex.get("label")
        if label not in self.task.names:
            raise ConfigError(f"few-shot example label '{label}' is not a task label; valid: "
                              + ", ".join(self.task.names))
        pair = ex.get("text_pair")
        return {"text": self.backend.escape_text(str(ex["text"])),
                "text_pair": None if pair is None else self.backend.escape_text(str(pair)), "label": label}

    # -- prompts --------------------------------------------------------------------------------------------------
    def _render(self, text: str, text_pair: str | None, label: Any = None) -> str:
        shown = [{"name": lab.text, "description": lab.description} for lab in self.task.labels]
        if label is not None:
            label = {"name": label.text, "description": label.description}
        examples = [{**ex, "label": self._shown[ex["label"]]} for ex in self.examples]
        content = self.template.render(
            instruction=self.task.instruction, labels=shown,
            label=label, examples=examples, text_name=self.task.text_name,
            text_pair_name=self.task.text_pair_name, text=text, text_pair=text_pair)
        return self.backend.chat_prompt([{"role": "user", "content": content}])

    def _longest_answer_tokens(self) -> int:
        if not hasattr(self, "_answer_tokens"):
            cands = ["yes", "no"] if self.task.multi_label else self.task.texts_shown
            longest = max(self.backend.count_tokens(c) for c in cands)
            self._answer_tokens = longest if self.mode == "score" else self.max_answer_tokens
        return self._answer_tokens

    def _fit(self, text: str, text_pair: str | None) -> tuple[str, str | None, bool]:
        """Cut the text (longest field first) so prompt + answer fit the model's context; flag when cut."""
        limit = self.backend.max_context - self._longest_answer_tokens() - 1
        budget = self.backend.max_context * MAX_CHARS_PER_TOKEN
        precut = len(text) > budget or (text_pair is not None and len(text_pair) > budget)
        if precut:
            text = text[:budget]
            text_pair = None if text_pair is None else text_pair[:budget]
        probe = self._render(text, text_pair, self.task.labels[0])
        # Each token is at least one UTF-8 byte, so short prompts cannot overflow: skip tokenizing them.
        if len(probe.encode("utf-8", "surrogatepass")) <= limit:
            return text, text_pair, precut
        excess = self.backend.count_tokens(probe) - limit
        if excess <= 0:
            return text, text_pair, precut
        for _ in range(3):  # token counts of parts do not add exactly; re-check after each cut
            if text_pair is not None and self.backend.count_tokens(text_pair) > self.backend.count_tokens(text):
                text_pair = self.backend.truncate(text_pair, max(self.backend.count_tokens(text_pair) - excess - 8, 0))
            else:
                text = self.backend.truncate(text, max(self.backend.count_tokens(text) - excess - 8, 0))
            excess = self.backend.count_tokens(self._render(text, text_pair, self.task.labels[0])) - limit
            if excess <= 0:
                break
        if excess > 0:
            raise ConfigError(f"the prompt template alone is longer than the model's context "
                              f"({self.backend.max_context} tokens); shorten the instruction or examples")
        return text, text_pair, True

    # -- cache keys -----------------------------------------------------------------------------------------------
    def _key(self, text: str, text_pair: str | None) -> str:
        return cache_key(backend=self.backend.name, model=self.backend.model_id, prompt=self.template.id,
                         prompt_digest=self.template.digest, mode=self.mode, multi_label=self.task.multi_label,
                         labels=[lab.model_dump() for lab in self.task.labels], instruction=self.task.instruction,
                         names=[self.task.text_name, self.task.text_pair_name], examples=self.examples,
                         text=text, text_pair=text_pair,
                         max_answer_tokens=self.max_answer_tokens if self.mode == "generate" else None)

    # -- raw results ----------------------------------------------------------------------------------------------
    @staticmethod
    def _call(n: int, method: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """`method(*args, **kwargs)`'s `n` per-prompt results; a prompt that failed for good has its BackendError
        in its place (all of them when the whole call failed)."""
        try:
            return list(method(*args, **kwargs))
        except PartialFailure as exc:
            return list(exc.results)
        except BackendError as exc:
            return [exc] * n

    def _compute(self, items: list[tuple[str, str | None]]) -> list[dict[str, Any] | BackendError]:
        """Raw results (label scores, or the answer) for (text, text_pair) items; an item whose backend call failed
        for good gets the `BackendError` instead."""
        if self.mode == "generate":
            prompts = [self._render(t, p) for t, p in items]
            choices = self.task.texts_shown if self.backend.supports_choices else None
            answers = self._call(len(prompts), self.backend.generate, prompts, max_tokens=self.max_answer_tokens,
                                 choices=choices)
            return [a if isinstance(a, BackendError) else {"answer": a} for a in answers]
        if self.task.multi_label:
            prompts = [self._render(t, p, lab) for t, p in items for lab in self.task.labels]
            flat = self._call(len(prompts), self.backend.score, prompts, [["yes", "no"]] * len(prompts))
            n = len(self.task.labels)
            out: list[dict[str, Any] | BackendError] = []
            for i in range(len(items)):
                part = flat[i * n:(i + 1) * n]
                error = next((r for r in part if isinstance(r, BackendError)), None)
                out.append(error if error is not None else {"yes_no": part})
            return out
        prompts = [self._render(t, p) for t, p in items]
        scores = self._call(len(prompts), self.backend.score, prompts, [self.task.texts_shown] * len(prompts))
        return [s if isinstance(s, BackendError) else {"scores": s} for s in scores]

    def _raw(self, items: list[tuple[str, str | None]]) -> list[dict[str, Any] | BackendError]:
        """Raw results from the cache where stored, else computed (and stored). Backend failures become values:
        rows that failed are not stored, so a re-run computes exactly those again."""
        keys = [self._key(t, p) for t, p in items]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.stats.cached += len(items) - len(todo)
        results: list[Any] = [found.get(k) for k in keys]
        if todo:
            computed = self._compute([items[i] for i in todo])
            done = {keys[i]: r for i, r in zip(todo, computed) if not isinstance(r, BackendError)}
            if self.cache is not None:
                self.cache.put_many(done)
            self.stats.computed += len(done)
            for i, r in zip(todo, computed):
                results[i] = r
        return results

    # -- raw -> label ---------------------------------------------------------------------------------------------
    def _token_counts(self) -> list[int]:
        if not hasattr(self, "_label_tokens"):
            self._label_tokens = [max(self.backend.count_tokens(t), 1) for t in self.task.texts_shown]
        return self._label_tokens

    def _probs(self, scores: list[float]) -> list[float]:
        if self.normalize == "mean":
            scores = [s / n for s, n in zip(scores, self._token_counts())]
        probs = _softmax(scores)
        if self.calibration == "contextual":
            cf = self._content_free_probs()
            probs = _softmax([math.log(max(p, 1e-300)) - math.log(max(c, 1e-300)) for p, c in zip(probs, cf)])
        return probs

    def _content_free_probs(self) -> list[float]:
        """Mean label distribution over content-free inputs (computed once, cached like any row)."""
        if self._cf_probs is None:
            pair = "N/A" if self.task.text_pair_field else None
            raws = self._raw([(t, pair) for t in CONTENT_FREE_INPUTS])
            if any(isinstance(r, BackendError) for r in raws):
                raise next(r for r in raws if isinstance(r, BackendError))
            saved, self.calibration = self.calibration, None
            try:
                dists = [self._probs(r["scores"]) for r in raws]
            finally:
                self.calibration = saved
            self._cf_probs = [sum(col) / len(dists) for col in zip(*dists)]
        return self._cf_probs

    def _result(self, raw: dict[str, Any] | BackendError, truncated: bool) -> LabelResult:
        names = self.task.names
        if isinstance(raw, BackendError):
            return LabelResult(None, {n: 0.0 for n in names}, 0.0, "failed", str(raw), truncated=truncated)
        if "scores" in raw and self.calibration == "contextual":
            try:
                self._content_free_probs()
            except BackendError as exc:  # computed again for the next chunk; this row is kept, as failed
                return LabelResult(None, {n: 0.0 for n in names}, 0.0, "failed", f"calibration: {exc}",
                                   truncated=truncated)
        if "answer" in raw:
            shown, reason = parse_answer(raw["answer"], self.task.texts_shown)
            label = names[self.task.texts_shown.index(shown)] if shown is not None else None
            probs = {n: float(n == label) for n in names}
            status = "ok" if label else "unparseable"
            return LabelResult(label, probs, 1.0 if label else 0.0, status, reason, raw["answer"], truncated)
        if "yes_no" in raw:
            p_yes = [_softmax(pair)[0] for pair in raw["yes_no"]]
            chosen = [n for n, p in zip(names, p_yes) if p >= self.task.threshold]
            confidence = sum(max(p, 1 - p) for p in p_yes) / len(p_yes)
            return LabelResult(chosen, dict(zip(names, p_yes)), confidence, truncated=truncated)
        probs = self._probs(raw["scores"])
        best = max(range(len(names)), key=probs.__getitem__)
        return LabelResult(names[best], dict(zip(names, probs)), probs[best], truncated=truncated)

    # -- public API -----------------------------------------------------------------------------------------------
    def label_texts(self, texts: list[str], text_pairs: list[str | None] | None = None) -> list[LabelResult]:
        """Label plain strings (and their pairs)."""
        pairs = text_pairs or [None] * len(texts)
        rows = [{self.task.text_field: t, **({self.task.text_pair_field: p} if self.task.text_pair_field else {})}
                for t, p in zip(texts, pairs)]
        return [r for _, r in self.iter_label(rows)]

    def iter_label(self, rows: Iterable[dict[str, Any]], total: int | None = None
                   ) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        """Yield (row, result) in input order, `chunk_size` rows at a time (streaming; resumable via the cache)."""
        from tqdm.auto import tqdm

        start = time.perf_counter()
        bar = tqdm(total=total, disable=not self.progress, unit="row", desc=f"labeling ({self.mode})")
        try:
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= self.chunk_size:
                    yield from self._label_chunk(chunk)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                yield from self._label_chunk(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
            self.stats.seconds += time.perf_counter() - start
            if self.stats.truncated and not self._truncation_warned:
                self._truncation_warned = True
                log.warning("%d text(s) were longer than the model's context and were truncated",
                            self.stats.truncated)

    def _label_chunk(self, chunk: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        prepared: list[tuple[str, str | None, bool] | LabelResult] = []
        for row in chunk:
            text, pair = self.task.texts(row)
            if text is None or not str(text).strip():
                prepared.append(LabelResult(None, {n: 0.0 for n in self.task.names}, 0.0, "skipped", "empty text"))
                continue
            text = str(text)
            pair = None if pair is None else str(pair)
            if _SURROGATES.search(text) or (pair is not None and _SURROGATES.search(pair)):
                self.stats.invalid_text += 1
                text = _SURROGATES.sub("\ufffd", text)
                pair = None if pair is None else _SURROGATES.sub("\ufffd", pair)
            # A row's text is only ever text: "<|im_end|>" in it must not end the user's turn.
            text = self.backend.escape_text(text)
            pair = None if pair is None else self.backend.escape_text(pair)
            prepared.append(self._fit(text, pair))
        todo = [p for p in prepared if not isinstance(p, LabelResult)]
        raws = iter(self._raw([(t, p) for t, p, _ in todo]))
        for row, item in zip(chunk, prepared):
            result = item if isinstance(item, LabelResult) else self._result(next(raws), item[2])
            self.stats.rows += 1
            self.stats.truncated += int(result.truncated)
            self.stats.statuses[result.status] += 1
            yield row, result

    def label(self, rows: Iterable[dict[str, Any]], total: int | None = None) -> list[dict[str, Any]]:
        """Label `rows` and return them with the columns label, label_probs, confidence, status, reason (+raw_answer
        in generate mode, truncated)."""
        if total is None and hasattr(rows, "__len__"):
            total = len(rows)  # type: ignore[arg-type]
        return [self.merge(row, res) for row, res in self.iter_label(rows, total)]

    @property
    def gold_column(self) -> str | None:
        """Name of the gold column in merged output rows (renamed when it collides with an output column)."""
        field = self.task.label_field
        if field and field in OUTPUT_COLUMNS:
            return f"gold_{field}"
        return field

    def merge(self, row: dict[str, Any], result: LabelResult) -> dict[str, Any]:
        """`row` plus the result's columns. An input column with an output column's name is kept, renamed:
        the gold column to 'gold_<name>' (so a gold 'label' becomes 'gold_label'), any other to 'input_<name>'."""
        columns = result.as_columns(self.mode)
        out = dict(row)
        for name in columns:
            if name in out:
                out[f"gold_{name}" if name == self.task.label_field else f"input_{name}"] = out.pop(name)
        out.update(columns)
        return out

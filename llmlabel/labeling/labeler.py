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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from llmlabel.backends.base import Backend
from llmlabel.cache import ResultCache, cache_key
from llmlabel.errors import ArgumentError, BackendError, ConfigError, PartialFailure, suggest, unknown
from llmlabel.inputs import (check_backend_and_task, checked_rows, describe_value, string_list, table_kind,
                             text_problem)
from llmlabel.core.parsing import parse_answer
from llmlabel.core.prompts import load_prompt
from llmlabel.core.results import OUTPUT_COLUMNS, LabelResult, LabelStats, gold_column, merge_columns
from llmlabel.core.task import LabelTask

log = logging.getLogger("llmlabel")


class _Item(NamedTuple):
    """One row to label: its text(s), demonstrations, candidate label indices (None: all) and whether it was cut."""

    text: str
    text_pair: str | None
    examples: tuple[dict[str, Any], ...]
    cands: tuple[int, ...] | None
    truncated: bool


#: Code points that cannot be encoded (lone UTF-16 surrogates, e.g. from a JSON "\udc80" escape): no tokenizer
#: or UTF-8 file takes them, so the model is shown U+FFFD instead (the row is counted in `stats.invalid_text`).
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Texts longer than `max_context * MAX_CHARS_PER_TOKEN` characters are cut to that before tokenizing: they are
#: truncated anyway, and tokenizing a 1 MB text three times to find the cut took seconds per row. (A token covers
#: far fewer characters than this, so the cut prefix still fills the context.)
MAX_CHARS_PER_TOKEN = 32

def _failed(names: list[str], reason: str, truncated: bool = False) -> LabelResult:
    """A row kept as failed: no label, zero probabilities, the reason."""
    return LabelResult(None, {n: 0.0 for n in names}, 0.0, "failed", reason, truncated=truncated)


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def resolve_calibration(calibration: str | None, mode: str, multi_label: bool = False) -> str | None:
    """The calibrator a Labeler uses: 'auto' (the default) is 'batch' for single-label score mode, else none.

    Why batch by default: uncalibrated zero-shot scores collapse onto the label whose first token is likeliest
    (benchmarks/results/retrieval.json: SST-2 macro-F1 35.5 = the majority class's, TREC 6.8); dividing out the
    mean distribution of the rows being labeled (Zhou et al. 2024) needs no labeled data and raised macro-F1 on every
    dataset measured there. Generated answers and independent yes/no decisions have no label distribution to divide.
    """
    if calibration == "auto":
        return "batch" if mode == "score" and not multi_label else None
    return None if calibration in (None, "none") else calibration


class Labeler:
    """Labels rows of a dataset with a backend.

    `Labeler(task)` labels with the embedded default model (loaded at first use, not at construction);
    `Labeler(backend, task)` with a `Backend` or a registered backend name (e.g. "fake", "transformers"). Arguments
    are checked here: a wrong type or an unknown name fails at once in one line, not at label time.

    Args:
        backend: a `Backend` (see `llmlabel.load_backend`), a backend name (loaded at first use with its default
            model), or None for the embedded default model. May be omitted: `Labeler(task)`.
        task: the `LabelTask`.
        mode: 'score' (label log-likelihoods; always a valid label) or 'generate' (the model answers; parsed).
        normalize: score mode: 'sum' of label token log-probs, 'mean' per token (favours no label by length), or
            'first': the first token's log-prob only (labels that start alike tie; cheapest for long labels).
        answer_prefix: text that starts the model's answer after the prompt (e.g. "Label:"), so a bare label is a
            likely continuation; labels are scored after it (with a space when it does not end in one).
        calibration: 'auto' (default: 'batch' in single-label score mode, else none), None/'none', or a calibrator
            name: 'contextual' (content-free inputs, Zhao et al. 2021),
            'domain' (random in-domain words, Fei et al. 2023), 'incontext' (the demonstrations' own inputs, Jang et
            al. 2024), 'batch' (the mean of the labeled chunk, Zhou et al. 2024). Score mode only.
        examples: fixed few-shot demonstrations, dicts with 'text', 'label' (and 'text_pair').
        selector: a fitted `llmlabel.selection.Selector` choosing `k` demonstrations per row (replaces `examples`).
        k: demonstrations per row when a selector is given.
        ordering: how selected demonstrations are arranged ('as_selected', 'similar_last', 'round_robin').
        restrict_labels: many-label tasks: show and score only this many candidate labels per row -- the labels of
            the row's demonstrations first, then the most frequent labels among its nearest pool neighbours (Milios
            et al. 2023); needs an embedding selector (knn, mmr, votek, epr). None scores every label.
        calibration_sets: with per-row demonstrations, the prior is estimated from the contexts of this many rows.
        domain_texts: in-domain texts for 'domain'/'incontext' calibration (default: the pool, else the data).
        prompt: template id, e.g. 'label.v1'.
        cache: a `ResultCache` to store and reuse raw results.
        chunk_size: rows sent to the backend (and committed to the cache) at a time.
        max_answer_tokens: generate mode: answer length limit.
        progress: show a progress bar.
        seed: seed for calibration probes.
    """

    def __init__(self, backend: Backend | str | LabelTask | None = None, task: LabelTask | None = None,
                 mode: Literal["score", "generate"] = "score",
                 normalize: Literal["sum", "mean", "first"] = "sum", calibration: str | None = "auto",
                 examples: list[dict[str, Any]] | None = None, prompt: str | None = None,
                 cache: ResultCache | None = None, chunk_size: int = 256, max_answer_tokens: int = 16,
                 progress: bool = False, selector: Any = None, k: int = 4, ordering: str = "as_selected",
                 restrict_labels: int | None = None, calibration_sets: int = 4,
                 domain_texts: list[str] | None = None, seed: int = 0, answer_prefix: str = ""):
        from llmlabel.registry import calibrators
        from llmlabel.selection.ordering import ORDERINGS

        backend, task = check_backend_and_task(backend, task)
        if mode not in ("score", "generate"):
            raise ConfigError(f"unknown mode '{mode}'; valid: generate, score")
        if normalize not in ("sum", "mean", "first"):
            raise ConfigError(unknown("normalize", normalize, ["first", "mean", "sum"]))
        calibration = resolve_calibration(calibration, mode, task.multi_label)
        if calibration is not None and calibration not in calibrators:
            raise ConfigError(unknown("calibration", calibration, ["auto", "none", *calibrators.names()]))
        if calibration is not None and mode != "score":
            raise ConfigError(f"calibration '{calibration}' needs mode 'score'")
        if ordering not in ORDERINGS:
            raise ConfigError(unknown("ordering", ordering, ORDERINGS))
        if restrict_labels is not None and not hasattr(selector, "similarities"):
            raise ConfigError("restrict_labels needs an embedding selector (knn, mmr, votek or epr)")
        #: a Backend, or the (name, model) to load at first use; loaded ones are closed by `close()`
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._backend_spec: str | None = None if isinstance(backend, Backend) else (backend or "transformers")
        self.task = task
        self.mode = mode
        self.normalize = normalize
        self.answer_prefix = answer_prefix
        #: labels follow the answer prefix as words: a space between them unless the prefix ends in whitespace
        self._answer_join = " " if answer_prefix and not answer_prefix[-1].isspace() else ""
        self.calibration = calibration
        self.calibrator = calibrators.get(calibration)() if calibration else None
        self._raw_examples = [self._check_example(ex) for ex in (examples or [])]
        self.selector = selector
        self.k = k
        self.ordering = ordering
        self.restrict_labels = restrict_labels
        self.calibration_sets = calibration_sets
        self.domain_texts = domain_texts
        self.seed = seed
        if selector is not None:
            bad = sorted({ex.label for ex in selector.pool} - set(task.names))
            if bad:
                raise ConfigError(f"exemplar pool label '{bad[0]}' is not a task label" + suggest(bad[0], task.names))
        self._shown = dict(zip(task.names, task.texts_shown))
        self._index = {name: i for i, name in enumerate(task.names)}
        default_prompt = "label_binary.v1" if task.multi_label else "label.v1"
        self.template = load_prompt(prompt or default_prompt)
        self.cache = cache
        self.chunk_size = chunk_size
        self.max_answer_tokens = max_answer_tokens
        self.progress = progress
        self.stats = LabelStats()
        self._priors: dict[str, list[float]] = {}
        self._shared_prior: list[float] | None = None
        self._truncation_warned = False
        if len(task.labels) == 1 and not task.multi_label:
            log.warning("the task has one label ('%s'): every labeled row gets it with confidence 1.0; add the "
                        "alternative (e.g. 'other') or set multi_label for a yes/no decision", task.names[0])

    # -- the backend, loaded at first use when it was not given -------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend; a named or default one is loaded here, the first time it is needed."""
        if self._backend is None:
            from llmlabel.backends.base import load_backend

            self._backend = load_backend(self._backend_spec or "transformers")
            self._owns_backend = True
        return self._backend

    @backend.setter
    def backend(self, value: Backend) -> None:
        self._backend = value

    def close(self) -> None:
        """Close the backend if this Labeler loaded it (a backend passed in belongs to the caller)."""
        if getattr(self, "_owns_backend", False) and self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> "Labeler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_example(self, ex: Any) -> dict[str, Any]:
        if not isinstance(ex, Mapping) or "text" not in ex:
            raise ConfigError("a few-shot example must be a dict with 'text' and 'label', got "
                              + describe_value(ex))
        label = ex.get("label")
        if label not in self.task.names:
            raise ConfigError(f"few-shot example label '{label}' is not a task label; valid: "
                              + ", ".join(self.task.names))
        return dict(ex)

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The fixed demonstrations, their texts escaped for the backend (so computed at first use)."""
        if not hasattr(self, "_examples"):
            self._examples = [self._example(ex) for ex in self._raw_examples]
        return self._examples

    def _example(self, ex: dict[str, Any]) -> dict[str, Any]:
        pair = ex.get("text_pair")
        return {"text": self.backend.escape_text(str(ex["text"])),
                "text_pair": None if pair is None else self.backend.escape_text(str(pair)), "label": ex["label"]}

    # -- prompts --------------------------------------------------------------------------------------------------
    def _render(self, text: str, text_pair: str | None, label: Any = None,
                examples: Sequence[dict[str, Any]] | None = None, cands: Sequence[int] | None = None) -> str:
        labels = self.task.labels if cands is None else [self.task.labels[i] for i in sorted(cands)]
        shown = [{"name": lab.text, "description": lab.description} for lab in labels]
        if label is not None:
            label = {"name": label.text, "description": label.description}
        examples = self.examples if examples is None else examples
        examples = [{**ex, "label": self._shown[ex["label"]]} for ex in examples]
        content = self.template.render(
            instruction=self.task.instruction, labels=shown,
            label=label, examples=examples, text_name=self.task.text_name,
            text_pair_name=self.task.text_pair_name, text=text, text_pair=text_pair)
        return self.backend.chat_prompt([{"role": "user", "content": content}]) + self.answer_prefix

    def _longest_answer_tokens(self) -> int:
        if not hasattr(self, "_answer_tokens"):
            cands = ["yes", "no"] if self.task.multi_label else self.task.texts_shown
            longest = max(self.backend.count_tokens(c) for c in cands)
            self._answer_tokens = longest if self.mode == "score" else self.max_answer_tokens
        return self._answer_tokens

    def _fit(self, text: str, text_pair: str | None, examples: Sequence[dict[str, Any]] | None = None,
             cands: Sequence[int] | None = None) -> tuple[str, str | None, bool]:
        """Cut the text (longest field first) so prompt + answer fit the model's context; flag when cut."""
        limit = self.backend.max_context - self._longest_answer_tokens() - 1
        budget = self.backend.max_context * MAX_CHARS_PER_TOKEN
        precut = len(text) > budget or (text_pair is not None and len(text_pair) > budget)
        if precut:
            text = text[:budget]
            text_pair = None if text_pair is None else text_pair[:budget]

        def render(t: str, p: str | None) -> str:
            return self._render(t, p, self.task.labels[0], examples, cands)

        probe = render(text, text_pair)
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
            excess = self.backend.count_tokens(render(text, text_pair)) - limit
            if excess <= 0:
                break
        if excess > 0:
            raise ConfigError(f"the prompt template alone is longer than the model's context "
                              f"({self.backend.max_context} tokens); shorten the instruction or examples")
        return text, text_pair, True

    # -- cache keys -----------------------------------------------------------------------------------------------
    def _key(self, item: _Item) -> str:
        return cache_key(backend=self.backend.name, model=self.backend.model_id, prompt=self.template.id,
                         prompt_digest=self.template.digest, mode=self.mode, multi_label=self.task.multi_label,
                         labels=[lab.model_dump() for lab in self.task.labels], instruction=self.task.instruction,
                         names=[self.task.text_name, self.task.text_pair_name], examples=list(item.examples),
                         text=item.text, text_pair=item.text_pair,
                         candidates=None if item.cands is None else sorted(item.cands),
                         max_answer_tokens=self.max_answer_tokens if self.mode == "generate" else None,
                         # only when set, so entries made before these options existed stay valid
                         **({"answer_prefix": self.answer_prefix} if self.answer_prefix else {}),
                         **({"first_token": True} if self.normalize == "first" and self.mode == "score" else {}),
                         **({"decide": self._option_plan_key()} if self._decides else {}))

    @property
    def _decides(self) -> bool:
        """Whether rows go to the backend's `decide` (decision and chat endpoints in score mode)."""
        return self.mode == "score" and getattr(self.backend, "supports_decide", False)

    def _option_plan_key(self) -> dict[str, Any]:
        from llmlabel.decide import option_plan

        return option_plan(self).describe()

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

    def _compute(self, items: list[_Item]) -> list[dict[str, Any] | BackendError]:
        """Raw results (label scores, or the answer) for items; an item whose backend call failed for good gets
        the `BackendError` instead."""
        if self._decides:
            from llmlabel.decide import decide_raw

            return decide_raw(self, items)
        if self.mode == "generate":
            prompts = [self._render(it.text, it.text_pair, examples=it.examples, cands=it.cands) for it in items]
            # Choices differ per row only when labels are restricted.
            choices_per = [self._texts(it.cands) if self.backend.supports_choices else None for it in items]
            if all(c == choices_per[0] for c in choices_per):
                answers = self._call(len(prompts), self.backend.generate, prompts,
                                     max_tokens=self.max_answer_tokens, choices=choices_per[0])
            else:
                answers = [self._call(1, self.backend.generate, [p], max_tokens=self.max_answer_tokens,
                                      choices=c)[0] for p, c in zip(prompts, choices_per)]
            return [a if isinstance(a, BackendError) else {"answer": a} for a in answers]
        if self.task.multi_label:
            prompts = [self._render(it.text, it.text_pair, lab, it.examples) for it in items
                       for lab in self.task.labels]
            yes_no = [self._answer_join + "yes", self._answer_join + "no"]
            flat = self._call(len(prompts), self.backend.score, prompts, [yes_no] * len(prompts))
            n = len(self.task.labels)
            out: list[dict[str, Any] | BackendError] = []
            for i in range(len(items)):
                part = flat[i * n:(i + 1) * n]
                error = next((r for r in part if isinstance(r, BackendError)), None)
                out.append(error if error is not None else {"yes_no": part})
            return out
        prompts = [self._render(it.text, it.text_pair, examples=it.examples, cands=it.cands) for it in items]
        first = {"first_token": True} if self.normalize == "first" else {}
        scored = self._call(len(prompts), self.backend.score, prompts, [self._texts(it.cands) for it in items],
                            **first)
        out = []
        for it, scores in zip(items, scored):
            if isinstance(scores, BackendError) or it.cands is None:
                out.append(scores if isinstance(scores, BackendError) else {"scores": scores})
            else:
                full: list[float | None] = [None] * len(self.task.labels)
                for i, s in zip(sorted(it.cands), scores):
                    full[i] = s
                out.append({"scores": full})
        return out

    def _compute_with_progress(self, items: list[_Item], rows: bool) -> list[dict[str, Any] | BackendError]:
        """`_compute`, moving the labeling bar as the backend reports finished prompts (rows only, not probes)."""
        bar = getattr(self, "_bar", None)
        if not rows or bar is None or bar.disable:
            return self._compute(items)
        from llmlabel.terminal import prompt_progress

        per_row = len(self.task.labels) if self.task.multi_label and self.mode == "score" else 1
        start, done = bar.n, [0]

        def advance(prompts: int) -> None:
            done[0] += prompts
            target = start + min(done[0] // per_row, len(items))  # never past this call's rows
            if target > bar.n:
                bar.update(target - bar.n)

        with prompt_progress(advance):
            return self._compute(items)

    def _texts(self, cands: Sequence[int] | None) -> list[str]:
        """The continuations scored for a row's candidate labels (all labels when `cands` is None)."""
        shown = [self._answer_join + t for t in self.task.texts_shown]
        return shown if cands is None else [shown[i] for i in sorted(cands)]

    def _raw(self, items: list[_Item], rows: bool = True) -> list[dict[str, Any] | BackendError]:
        """Raw results from the cache where stored, else computed (and stored). Backend failures become values:
        rows that failed are not stored, so a re-run computes exactly those again. `rows=False` (calibration
        probes): cached and computed the same way, but not counted in the row statistics."""
        keys = [self._key(it) for it in items]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        if rows:
            self.stats.cached += len(items) - len(todo)
        results: list[Any] = [found.get(k) for k in keys]
        if todo:
            computed = self._compute_with_progress([items[i] for i in todo], rows)
            done = {keys[i]: r for i, r in zip(todo, computed) if not isinstance(r, BackendError)}
            if self.cache is not None:
                self.cache.put_many(done)
            if rows:
                self.stats.computed += len(done)
            for i, r in zip(todo, computed):
                results[i] = r
        return results

    # -- raw -> label ---------------------------------------------------------------------------------------------
    def _token_counts(self) -> list[int]:
        if not hasattr(self, "_label_tokens"):
            self._label_tokens = [max(self.backend.count_tokens(t), 1) for t in self.task.texts_shown]
        return self._label_tokens

    def _uncalibrated(self, scores: list[float | None]) -> list[float]:
        """Label distribution from raw label scores; labels not scored (restricted away) get probability 0."""
        if self.normalize == "mean":
            scores = [None if s is None else s / n for s, n in zip(scores, self._token_counts())]
        present = [s for s in scores if s is not None]
        probs = iter(_softmax(present))
        return [0.0 if s is None else next(probs) for s in scores]

    def _calibrated(self, probs: list[float], prior: list[float] | None) -> list[float]:
        if prior is None:
            return probs
        from llmlabel.calibration.base import Calibrator

        return Calibrator.apply(np.asarray([probs]), np.asarray(prior))[0].tolist()

    def _prior(self, contexts: list[tuple[dict[str, Any], ...]]) -> list[float]:
        """Mean label distribution of the calibrator's probes, each scored in each of `contexts` (demonstrations)."""
        from llmlabel.calibration.base import CalibrationContext

        has_pair = self.task.text_pair_field is not None
        items = []
        for examples in contexts:
            context = CalibrationContext(examples=examples, domain_texts=self._domain_texts(), has_pair=has_pair,
                                         seed=self.seed, contexts=len(contexts))
            items += [_Item(t, p, examples, None, False) for t, p in self.calibrator.probes(context)]
        raws = self._raw(items, rows=False)
        if any(isinstance(r, BackendError) for r in raws):
            raise next(r for r in raws if isinstance(r, BackendError))
        dists = [self._uncalibrated(r["scores"]) for r in raws if "scores" in r]
        if not dists:
            raise BackendError("every calibration probe was refused by the endpoint")
        return [sum(col) / len(dists) for col in zip(*dists)]

    def _domain_texts(self) -> list[str]:
        if self.domain_texts is None:
            if self.selector is not None:
                self.domain_texts = [ex.text for ex in self.selector.pool[:2000]]
            else:
                self.domain_texts = list(getattr(self, "_seen_texts", []))
        return self.domain_texts

    def _prior_for(self, item: _Item, chunk_items: list[_Item]) -> list[float] | None:
        """The probe-based prior for a row's context (exact for shared demonstrations, sampled for per-row ones)."""
        if self.calibrator is None or self.calibrator.from_batch:
            return None
        if self.selector is not None and getattr(self.selector, "per_query", True):
            if self._shared_prior is None:
                distinct = {repr(it.examples): it.examples for it in chunk_items}
                contexts = list(distinct.values())[: self.calibration_sets]
                self._shared_prior = self._prior(contexts)
            return self._shared_prior
        key = repr(item.examples)
        if key not in self._priors:
            self._priors[key] = self._prior([item.examples])
        return self._priors[key]

    def _result(self, raw: dict[str, Any] | BackendError, truncated: bool,
                prior: list[float] | None = None) -> LabelResult:
        names = self.task.names
        if isinstance(raw, BackendError):
            return _failed(names, str(raw), truncated)
        if "refused" in raw:  # a decision endpoint declined the question: kept, counted, not a label
            return LabelResult(None, {n: 0.0 for n in names}, 0.0, "refused", raw["refused"], truncated=truncated)
        if raw.get("note"):  # e.g. a sampled distribution: flagged on the row
            result = self._result({k: v for k, v in raw.items() if k != "note"}, truncated, prior)
            result.reason = raw["note"]
            return result
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
        probs = self._calibrated(self._uncalibrated(raw["scores"]), prior)
        best = max(range(len(names)), key=probs.__getitem__)
        return LabelResult(names[best], dict(zip(names, probs)), probs[best], truncated=truncated)

    def demo_scores(self, pairs: list[tuple[Any, list[Any]]]) -> list[float]:
        """How much demonstrations help: for each (query, demonstrations) pair of `llmlabel.selection.Example`s,
        log P(query's gold label | demonstrations, query), normalized over the labels (up to 10 labels) or the raw
        label log-likelihood (more labels, to keep it cheap). Used to train learned retrievers (EPR)."""
        items, golds = [], []
        for query, demos in pairs:
            gold = self._index[query.label]
            cands = None if len(self.task.labels) <= 10 else (gold,)
            examples = tuple(ex.as_dict() for ex in demos)
            text, pair, cut = self._fit(query.text, query.text_pair, examples, cands)
            items.append(_Item(text, pair, examples, cands, cut))
            golds.append(gold)
        out = []
        for raw, gold, item in zip(self._raw(items), golds, items):
            if isinstance(raw, BackendError):
                out.append(float("-inf"))
            elif item.cands is None:
                out.append(math.log(max(self._uncalibrated(raw["scores"])[gold], 1e-300)))
            else:
                out.append(float(raw["scores"][gold]))
        return out

    # -- demonstrations -------------------------------------------------------------------------------------------
    def _contexts(self, texts: list[str], pairs: list[str | None]) -> list[tuple[tuple[dict[str, Any], ...],
                                                                               tuple[int, ...] | None]]:
        """Per row: its demonstrations and (when restricting labels) its candidate label indices."""
        fixed = tuple(self.examples)
        if self.selector is None or not texts:
            return [(fixed, None)] * len(texts)
        from llmlabel.selection.ordering import order_examples

        selections = self.selector.select_many(texts, self.k, pairs)
        demos = [tuple(ex.as_dict() for ex in order_examples(sel.examples, self.ordering)) for sel in selections]
        if self.restrict_labels is None:
            return [(d, None) for d in demos]
        sims = self.selector.similarities(texts, pairs)
        pool_labels = [self._index[ex.label] for ex in self.selector.pool]
        out = []
        for row_demos, row in zip(demos, sims):
            cands = list(dict.fromkeys(self._index[d["label"]] for d in row_demos))
            votes: Counter = Counter()
            top = np.argpartition(-row, min(len(row), 8 * self.restrict_labels) - 1)[: 8 * self.restrict_labels]
            for j in top:
                votes[pool_labels[j]] += float(row[j])
            for lab, _ in votes.most_common():
                if len(cands) >= max(self.restrict_labels, 1):
                    break
                if lab not in cands:
                    cands.append(lab)
            out.append((row_demos, tuple(sorted(cands))))
        return out

    # -- public API -----------------------------------------------------------------------------------------------
    def label_texts(self, texts: Iterable[str], text_pairs: Iterable[str | None] | None = None) -> list[LabelResult]:
        """Label plain strings (and their pairs): a list (or any iterable) of strings, one result per string.

        One string is an error ("pass a list"), not its characters labeled one by one."""
        texts = string_list(texts, "texts", "label_texts")
        pairs = [None] * len(texts) if text_pairs is None else string_list(text_pairs, "text_pairs", "label_texts")
        if len(pairs) != len(texts):
            raise ArgumentError(f"label_texts: {len(texts)} texts but {len(pairs)} text_pairs; give one pair per text")
        if pairs and any(p is not None for p in pairs) and not self.task.text_pair_field:
            raise ArgumentError("label_texts: text_pairs given, but the task has no text_pair_field; set "
                                "LabelTask(text_pair_field=...) for pair tasks")
        rows = [{self.task.text_field: t, **({self.task.text_pair_field: p} if self.task.text_pair_field else {})}
                for t, p in zip(texts, pairs)]
        return [r for _, r in self.iter_label(rows)]

    def iter_label(self, rows: Iterable[dict[str, Any]], total: int | None = None
                   ) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        """Yield (row, result) in input order, `chunk_size` rows at a time (streaming; resumable via the cache)."""
        from llmlabel.terminal import progress_bar

        rows = checked_rows(rows, "iter_label")
        start = time.perf_counter()
        bar = progress_bar(total=total, disable=not self.progress, unit="row", desc=f"labeling ({self.mode})")
        self._bar = bar
        try:
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= self.chunk_size:
                    yield from self._bar_chunk(bar, chunk)
                    chunk = []
            if chunk:
                yield from self._bar_chunk(bar, chunk)
        finally:
            self._bar = None
            bar.close()
            self.stats.seconds += time.perf_counter() - start
            if self.stats.truncated and not self._truncation_warned:
                self._truncation_warned = True
                log.warning("%d text(s) were longer than the model's context and were truncated",
                            self.stats.truncated)

    def _bar_chunk(self, bar: Any, chunk: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        """`_label_chunk`, then the bar at the chunk's end (it moved within the chunk as the backend scored)."""
        start = bar.n
        results = list(self._label_chunk(chunk))
        bar.update(start + len(chunk) - bar.n)
        yield from results

    def _label_chunk(self, chunk: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        prepared: list[_Item | LabelResult] = []
        texts: list[tuple[str, str | None]] = []
        for row in chunk:
            text, pair = self.task.texts(row)
            problem = text_problem(text) or (text_problem(pair) if pair is not None else None)
            if problem:
                prepared.append(LabelResult(None, {n: 0.0 for n in self.task.names}, 0.0, "skipped", problem))
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
            texts.append((text, pair))
            prepared.append(_Item(text, pair, (), None, False))
        if not hasattr(self, "_seen_texts"):
            self._seen_texts = [t for t, _ in texts[:200]]
        contexts = iter(self._contexts([t for t, _ in texts], [p for _, p in texts]))
        for i, item in enumerate(prepared):
            if isinstance(item, _Item):
                examples, cands = next(contexts)
                text, pair, cut = self._fit(item.text, item.text_pair, examples, cands)
                prepared[i] = _Item(text, pair, examples, cands, cut)
        todo = [p for p in prepared if isinstance(p, _Item)]
        raws = iter(self._raw(todo))
        results = []
        prior_error: BackendError | None = None
        for item in prepared:
            if isinstance(item, LabelResult):
                results.append(item)
                continue
            raw = next(raws)
            prior = None
            if isinstance(raw, dict) and "scores" in raw:
                try:
                    if prior_error is not None:
                        raise prior_error
                    prior = self._prior_for(item, todo)
                except BackendError as exc:
                    # The calibration probes failed for good: the row is kept, as failed (its raw scores are cached,
                    # so a re-run only retries the probes); the rest of this chunk is not retried again.
                    prior_error = exc
                    results.append(_failed(self.task.names, f"calibration: {exc}", item.truncated))
                    continue
            results.append(self._result(raw, item.truncated, prior))
        if self.calibrator is not None and self.calibrator.from_batch:
            results = self._batch_calibrate(results, todo)
        for row, result in zip(chunk, results):
            self.stats.rows += 1
            self.stats.truncated += int(result.truncated)
            self.stats.statuses[result.status] += 1
            yield row, result

    #: Batch calibration needs this many scored rows before a batch mean is a usable prior.
    MIN_BATCH = 16

    def _batch_calibrate(self, results: list[LabelResult], items: list[_Item]) -> list[LabelResult]:
        """Batch calibration: divide out the mean distribution of every row scored so far (this chunk included).
        Until `MIN_BATCH` rows have been seen (e.g. labeling a handful of texts), the content-free prior of
        contextual calibration stands in, so a single row is not calibrated against itself."""
        from llmlabel.calibration.base import Calibrator
        from llmlabel.calibration.contextual import ContextualCalibrator

        names = self.task.names
        scored = [r for r in results if r.status == "ok"]
        if not scored:
            return results
        probs = np.asarray([[r.label_probs[n] for n in names] for r in scored])
        self._batch_sum = getattr(self, "_batch_sum", 0.0) + probs.sum(axis=0)
        self._batch_count = getattr(self, "_batch_count", 0) + len(probs)
        if self._batch_count >= self.MIN_BATCH:
            prior = self._batch_sum / self._batch_count
        else:
            saved, self.calibrator = self.calibrator, ContextualCalibrator()
            context = items[0].examples if items else tuple(self.examples)
            try:
                key = "batch-fallback:" + repr(context)
                if key not in self._priors:  # once per context, not once per chunk
                    self._priors[key] = self._prior([context])
                prior = np.asarray(self._priors[key])
            except BackendError as exc:  # no prior: the rows are kept, as failed; a re-run retries the probes
                return [_failed(names, f"calibration: {exc}", r.truncated) if r.status == "ok" else r
                        for r in results]
            finally:
                self.calibrator = saved
        calibrated = Calibrator.apply(probs, prior)
        for r, row in zip(scored, calibrated):
            best = int(np.argmax(row))
            r.label, r.confidence = names[best], float(row[best])
            r.label_probs = dict(zip(names, row.tolist()))
        return results

    def label(self, rows: Any, total: int | None = None) -> Any:
        """Label `rows` and return them with the columns label, label_probs, confidence, status, reason (+raw_answer
        in generate mode, truncated) added.

        `rows` may be a pandas DataFrame (returns a new DataFrame), a `datasets.Dataset` (returns a new Dataset) or
        any iterable of dicts (returns a list of dicts). An input column with an output column's name is kept,
        renamed (see `merge`). A string, one dict, or a `DatasetDict` is a one-line error saying what to pass.
        """
        kind = table_kind(rows)
        if kind == "pandas":
            records = rows.to_dict("records")
            results = [res for _, res in self.iter_label(records, len(records))]
            return self._with_columns_pandas(rows, results)
        if kind == "datasets":
            results = [res for _, res in self.iter_label(rows, len(rows))]
            return self._with_columns_datasets(rows, results)
        if total is None and hasattr(rows, "__len__"):
            total = len(rows)
        return [self.merge(row, res) for row, res in self.iter_label(checked_rows(rows, "label"), total)]

    def _renames(self, columns: Iterable[str]) -> dict[str, str]:
        """Input columns that an output column would overwrite -> their new names (the rule of `merge`)."""
        outputs = OUTPUT_COLUMNS if self.mode == "generate" else tuple(c for c in OUTPUT_COLUMNS if c != "raw_answer")
        return {c: (f"gold_{c}" if c == self.task.label_field else f"input_{c}") for c in columns if c in outputs}

    def _result_columns(self, results: list[LabelResult]) -> dict[str, list[Any]]:
        columns = [r.as_columns(self.mode) for r in results]
        names = columns[0].keys() if columns else LabelResult(None, {}, 0.0).as_columns(self.mode).keys()
        return {name: [c[name] for c in columns] for name in names}

    def _with_columns_pandas(self, frame: Any, results: list[LabelResult]) -> Any:
        out = frame.rename(columns=self._renames(frame.columns))
        for name, values in self._result_columns(results).items():
            out[name] = values
        return out

    def _with_columns_datasets(self, dataset: Any, results: list[LabelResult]) -> Any:
        out = dataset.rename_columns(self._renames(dataset.column_names))
        for name, values in self._result_columns(results).items():
            out = out.add_column(name, values)
        return out

    @property
    def gold_column(self) -> str | None:
        """Name of the gold column in merged output rows (renamed when it collides with an output column)."""
        return gold_column(self.task.label_field)

    def merge(self, row: dict[str, Any], result: LabelResult) -> dict[str, Any]:
        """`row` plus the result's columns. An input column with an output column's name is kept, renamed:
        the gold column to 'gold_<name>' (so a gold 'label' becomes 'gold_label'), any other to 'input_<name>'."""
        return merge_columns(row, result.as_columns(self.mode), self.task.label_field)

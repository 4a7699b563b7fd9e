"""The Labeler: rows -> prompts -> backend scores or answers -> label, per-label probabilities, confidence.

Score mode asks the backend for the log-probability of every label name as the answer and turns them into a
distribution (optionally per-token normalized and calibrated). Generate mode lets the model answer (constrained to
the label names where the backend can) and parses the answer; unparseable answers are recorded with a reason. Raw
results are cached per row, keyed by everything that shaped them, so a killed run resumes losslessly.

This module orchestrates; the pieces live beside it: `engine` (the Engine protocol and the one chunk loop),
`prompting` (render, escape, fit to context), `compute` (asking the backend by mode), `raw` (typed raw results and
their cache keys), `llmlabel.selection.candidates` (per-row demonstrations and label shortlists) and
`llmlabel.calibration` (calibrators, which own their priors).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

from llmlabel.backends.base import Backend
from llmlabel.cache import ResultCache
from llmlabel.calibration.base import ProbeScorer, resolve_calibration
from llmlabel.core.prompts import load_prompt
from llmlabel.core.results import LabelResult, LabelStats, gold_column, merge_columns, with_result_columns
from llmlabel.core.task import LabelTask
from llmlabel.errors import BackendError
from llmlabel.inputs import (check_backend_and_task, check_labeler_options, check_pool_labels, checked_examples,
                             checked_rows, table_kind, text_problem, text_rows)
from llmlabel.labeling.engine import ChunkedEngine
from llmlabel.labeling.prompting import Prompting
from llmlabel.labeling.raw import Item, Raw, Reading
from llmlabel.selection.candidates import row_contexts

log = logging.getLogger("llmlabel")

__all__ = ["Labeler", "resolve_calibration"]


class Labeler(ChunkedEngine):
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
        backend, task = check_backend_and_task(backend, task)
        #: the calibrator (owns its priors), and its name ('auto' resolved; None: no calibration)
        self.calibrator = check_labeler_options(task, mode, normalize, calibration, ordering, restrict_labels, selector)
        self.calibration = resolve_calibration(calibration, mode, task.multi_label)
        #: a Backend, or the (name, model) to load at first use; loaded ones are closed by `close()`
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._backend_spec: str | None = None if isinstance(backend, Backend) else (backend or "transformers")
        self._owns_backend = False
        self.task, self.mode, self.normalize = task, mode, normalize
        fixed = checked_examples(examples, task)
        self.selector, self.k, self.ordering, self.restrict_labels = selector, k, ordering, restrict_labels
        self.calibration_sets, self.domain_texts, self.seed = calibration_sets, domain_texts, seed
        check_pool_labels(selector, task)
        self._index = {name: i for i, name in enumerate(task.names)}
        template = load_prompt(prompt or ("label_binary.v1" if task.multi_label else "label.v1"))
        #: rendering, escaping and fitting prompts to the context
        self.prompting = Prompting(lambda: self.backend, task, template, fixed, answer_prefix, max_answer_tokens,
                                   generate=mode == "generate")
        self.reading = Reading(task.names, task.texts_shown, task.threshold, normalize, self.prompting.label_tokens)
        self.cache, self.chunk_size, self.progress = cache, chunk_size, progress
        self.max_answer_tokens = max_answer_tokens
        self.stats = LabelStats()
        self._option_plan: Any = None
        self._truncation_warned = False
        if self.calibrator is not None:
            self.calibrator.bind(ProbeScorer(
                self._probe_distributions, self._given_domain_texts, has_pair=task.text_pair_field is not None,
                seed=seed, per_row_demonstrations=selector is not None and getattr(selector, "per_query", True),
                calibration_sets=calibration_sets))
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
        if self._owns_backend and self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> "Labeler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the pieces expose ------------------------------------------------------------------------------------
    @property
    def template(self) -> Any:
        """The prompt template."""
        return self.prompting.template

    @property
    def answer_prefix(self) -> str:
        """Text that starts the model's answer after the prompt."""
        return self.prompting.answer_prefix

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The fixed demonstrations, their texts escaped for the backend (so computed at first use)."""
        return self.prompting.examples

    @property
    def report(self) -> dict[str, Any]:
        """What the Labeler chose on evidence: nothing (methods around it report their choices)."""
        return {}

    @property
    def option_plan(self) -> Any:
        """How a decision endpoint is asked (direct, shortlist or two-level; made once), or None when rows do not
        go to a backend's `decide`."""
        if self._option_plan is None and self.decides:
            from llmlabel.decide import plan_for

            self._option_plan = plan_for(self)
        return self._option_plan

    @property
    def decides(self) -> bool:
        """Whether rows go to the backend's `decide` (decision and chat endpoints in score mode)."""
        return self.mode == "score" and getattr(self.backend, "supports_decide", False)

    # -- raw results ----------------------------------------------------------------------------------------------
    def _raw(self, items: list[Item], rows: bool = True) -> list[Raw | BackendError]:
        """Raw results from the cache where stored, else computed and stored (see `compute.raw_results`)."""
        from llmlabel.labeling.compute import raw_results

        return raw_results(self, items, rows)

    # -- calibration probes, scored for the calibrator -------------------------------------------------------------
    def _probe_distributions(self, probes: list[Any]) -> list[list[float]]:
        from llmlabel.labeling.compute import probe_distributions

        return probe_distributions(self, probes)

    def _given_domain_texts(self) -> list[str] | None:
        if self.domain_texts is not None:
            return self.domain_texts
        return None if self.selector is None else [ex.text for ex in self.selector.pool[:2000]]

    # -- one chunk --------------------------------------------------------------------------------------------------
    def progress_label(self) -> str:
        return f"labeling ({self.mode})"

    def _prepare(self, row: dict[str, Any]) -> Item | LabelResult:
        """A row as an `Item` to label (its text cleaned and escaped), or its 'skipped' result."""
        text, pair = self.task.texts(row)
        problem = text_problem(text) or (text_problem(pair) if pair is not None else None)
        if problem:
            return LabelResult.without_label(self.task.names, "skipped", problem)
        text, pair, invalid = self.prompting.clean(str(text), None if pair is None else str(pair))
        self.stats.invalid_text += int(invalid)
        return Item(text, pair, (), None, False)

    def label_chunk(self, chunk: list[dict[str, Any]]) -> list[LabelResult]:
        prepared = [self._prepare(row) for row in chunk]
        todo_at = [i for i, p in enumerate(prepared) if isinstance(p, Item)]
        texts = [prepared[i].text for i in todo_at]  # type: ignore[union-attr]
        if self.calibrator is not None:
            self.calibrator.observe_texts(texts)
        contexts = row_contexts(texts, [prepared[i].text_pair for i in todo_at],  # type: ignore[union-attr]
                                tuple(self.examples), self.selector, self.k, self.ordering, self.restrict_labels,
                                self._index)
        for i, (examples, cands) in zip(todo_at, contexts):
            item: Any = prepared[i]
            text, pair, cut = self.prompting.fit(item.text, item.text_pair, examples, cands)
            prepared[i] = Item(text, pair, examples, cands, cut)
        todo: list[Item] = [prepared[i] for i in todo_at]  # type: ignore[misc]
        from llmlabel.labeling.compute import chunk_results

        results = chunk_results(self, prepared, todo)
        if self.calibrator is not None:
            context = todo[0].examples if todo else tuple(self.examples)
            results = self.calibrator.observe(results, self.task.names, context)
        return results

    def finish(self) -> None:
        if self.stats.truncated and not self._truncation_warned:
            self._truncation_warned = True
            log.warning("%d text(s) were longer than the model's context and were truncated", self.stats.truncated)

    # -- public API -----------------------------------------------------------------------------------------------
    def demo_scores(self, pairs: list[tuple[Any, list[Any]]]) -> list[float]:
        """How much demonstrations help: for each (query, demonstrations) pair of `llmlabel.selection.Example`s,
        log P(query's gold label | demonstrations, query), normalized over the labels (up to 10 labels) or the raw
        label log-likelihood (more labels, to keep it cheap). Used to train learned retrievers (EPR)."""
        from llmlabel.labeling.compute import demo_scores

        return demo_scores(self, pairs)

    def label_texts(self, texts: Iterable[str], text_pairs: Iterable[str | None] | None = None) -> list[LabelResult]:
        """Label plain strings (and their pairs): a list (or any iterable) of strings, one result per string.

        One string is an error ("pass a list"), not its characters labeled one by one."""
        rows = text_rows(self.task, texts, text_pairs)
        return [r for _, r in self.iter_label(rows)]

    def label(self, rows: Any, total: int | None = None) -> Any:
        """Label `rows` and return them with the columns label, label_probs, confidence, status, reason (+raw_answer
        in generate mode, truncated) added.

        `rows` may be a pandas DataFrame (returns a new DataFrame), a `datasets.Dataset` (returns a new Dataset) or
        any iterable of dicts (returns a list of dicts). An input column with an output column's name is kept,
        renamed (see `merge`). A string, one dict, or a `DatasetDict` is a one-line error saying what to pass.
        """
        kind = table_kind(rows)
        if kind in ("pandas", "datasets"):
            records = rows.to_dict("records") if kind == "pandas" else rows
            results = [res for _, res in self.iter_label(records, len(records))]
            return with_result_columns(rows, kind, results, self.mode, self.task.label_field)
        if total is None and hasattr(rows, "__len__"):
            total = len(rows)
        return [self.merge(row, res) for row, res in self.iter_label(checked_rows(rows, "label"), total)]

    @property
    def gold_column(self) -> str | None:
        """Name of the gold column in merged output rows (renamed when it collides with an output column)."""
        return gold_column(self.task.label_field)

    def merge(self, row: dict[str, Any], result: LabelResult) -> dict[str, Any]:
        """`row` plus the result's columns. An input column with an output column's name is kept, renamed:
        the gold column to 'gold_<name>' (so a gold 'label' becomes 'gold_label'), any other to 'input_<name>'."""
        return merge_columns(row, result.as_columns(self.mode), self.task.label_field)

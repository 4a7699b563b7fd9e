"""Raw results for a Labeler's rows: asked of the backend by mode (label scores, yes/no scores per label, or a
generated answer; decision endpoints through `llmlabel.decide`), read from and stored in the cache, and turned into
each row's `LabelResult` with its calibration prior divided out. A row whose backend call failed for good gets its
`BackendError` in its place, as a value (a 'failed' row, never a crash)."""

from __future__ import annotations

from typing import Any

from llmlabel.errors import BackendError, call_each
from llmlabel.labeling.prompting import Prompting
from llmlabel.core.results import LabelResult
from llmlabel.labeling.raw import Answer, Item, KeyParts, Raw, Scores, YesNo, from_cache


def generated(prompting: Prompting, items: list[Item], max_tokens: int) -> list[Raw | BackendError]:
    """Generate mode: the model's answers (constrained to the label names where the backend can)."""
    backend = prompting.backend
    prompts = [prompting.render(it.text, it.text_pair, examples=it.examples, cands=it.cands) for it in items]
    # Choices differ per row only when labels are restricted.
    choices_per = [prompting.continuations(it.cands) if backend.supports_choices else None for it in items]
    if all(c == choices_per[0] for c in choices_per):
        answers = call_each(len(prompts), backend.generate, prompts, max_tokens=max_tokens, choices=choices_per[0])
    else:
        answers = [call_each(1, backend.generate, [p], max_tokens=max_tokens, choices=c)[0]
                   for p, c in zip(prompts, choices_per)]
    return [a if isinstance(a, BackendError) else Answer(a) for a in answers]


def yes_no_scored(prompting: Prompting, items: list[Item]) -> list[Raw | BackendError]:
    """Multi-label score mode: one yes/no question per (row, label)."""
    labels = prompting.task.labels
    prompts = [prompting.render(it.text, it.text_pair, lab, it.examples) for it in items for lab in labels]
    flat = call_each(len(prompts), prompting.backend.score, prompts, [prompting.yes_no()] * len(prompts))
    out: list[Raw | BackendError] = []
    for i in range(len(items)):
        part = flat[i * len(labels):(i + 1) * len(labels)]
        error = next((r for r in part if isinstance(r, BackendError)), None)
        out.append(error if error is not None else YesNo(part))
    return out


def label_scored(prompting: Prompting, items: list[Item], first_token: bool) -> list[Raw | BackendError]:
    """Single-label score mode: every candidate label's log-score as the answer (None for labels not scored)."""
    prompts = [prompting.render(it.text, it.text_pair, examples=it.examples, cands=it.cands) for it in items]
    first = {"first_token": True} if first_token else {}
    scored = call_each(len(prompts), prompting.backend.score, prompts,
                       [prompting.continuations(it.cands) for it in items], **first)
    out: list[Raw | BackendError] = []
    for it, scores in zip(items, scored):
        if isinstance(scores, BackendError):
            out.append(scores)
        elif it.cands is None:
            out.append(Scores(scores))
        else:
            full: list[float | None] = [None] * len(prompting.task.labels)
            for i, s in zip(sorted(it.cands), scores):
                full[i] = s
            out.append(Scores(full))
    return out


def key_parts(labeler: Any) -> KeyParts:
    """What shapes every raw result of `labeler` but the row."""
    backend, template = labeler.backend, labeler.template
    decides = labeler.decides
    return KeyParts(backend.name, backend.model_id, template.id, template.digest, labeler.mode, labeler.task,
                    labeler.max_answer_tokens, labeler.answer_prefix,
                    labeler.normalize == "first" and labeler.mode == "score",
                    labeler.option_plan.describe() if decides else None)


def computed(labeler: Any, items: list[Item]) -> list[Raw | BackendError]:
    """Raw results for items, asked by mode; an item whose backend call failed for good gets its `BackendError`."""
    if labeler.decides:
        from llmlabel.decide import decide_raw

        return decide_raw(labeler, items)
    if labeler.mode == "generate":
        return generated(labeler.prompting, items, labeler.max_answer_tokens)
    if labeler.task.multi_label:
        return yes_no_scored(labeler.prompting, items)
    return label_scored(labeler.prompting, items, labeler.normalize == "first")


def computed_with_progress(labeler: Any, items: list[Item], rows: bool) -> list[Raw | BackendError]:
    """`computed`, moving the labeling bar as the backend reports finished prompts (rows only, not probes)."""
    bar = labeler.bar
    if not rows or bar is None or bar.disable:
        return computed(labeler, items)
    from llmlabel.terminal import prompt_progress

    per_row = len(labeler.task.labels) if labeler.task.multi_label and labeler.mode == "score" else 1
    start, done = bar.n, [0]

    def advance(prompts: int) -> None:
        done[0] += prompts
        target = start + min(done[0] // per_row, len(items))  # never past this call's rows
        if target > bar.n:
            bar.update(target - bar.n)

    with prompt_progress(advance):
        return computed(labeler, items)


def raw_results(labeler: Any, items: list[Item], rows: bool = True) -> list[Raw | BackendError]:
    """Raw results from the labeler's cache where stored, else computed (and stored). Backend failures become
    values: rows that failed are not stored, so a re-run computes exactly those again. `rows=False` (calibration
    probes): cached and computed the same way, but not counted in the row statistics."""
    parts = key_parts(labeler)
    keys = [parts.key(it) for it in items]
    cache, stats = labeler.cache, labeler.stats
    found = cache.get_many(keys) if cache is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    if rows:
        stats.cached += len(items) - len(todo)
    results: list[Any] = [from_cache(found[k]) if k in found else None for k in keys]
    if todo:
        fresh = computed_with_progress(labeler, [items[i] for i in todo], rows)
        done = {keys[i]: r.as_dict() for i, r in zip(todo, fresh) if not isinstance(r, BackendError)}
        if cache is not None:
            cache.put_many(done)
        if rows:
            stats.computed += len(done)
        for i, r in zip(todo, fresh):
            results[i] = r
    return results


def probe_distributions(labeler: Any, probes: list[tuple[str, str | None, tuple[dict[str, Any], ...]]]
                        ) -> list[list[float]]:
    """Calibration probes scored in their contexts (cached like rows, not counted as rows) -> the label
    distribution of each one the endpoint answered; a probe that failed for good raises its `BackendError`."""
    raws = raw_results(labeler, [Item(t, p, examples, None, False) for t, p, examples in probes], rows=False)
    error = next((r for r in raws if isinstance(r, BackendError)), None)
    if error is not None:
        raise error
    dists = [labeler.reading.distribution(r.scores) for r in raws if isinstance(r, Scores)]
    if not dists:
        raise BackendError("every calibration probe was refused by the endpoint")
    return dists


def demo_scores(labeler: Any, pairs: list[tuple[Any, list[Any]]]) -> list[float]:
    """See `Labeler.demo_scores`."""
    import math

    items, golds = [], []
    for query, demos in pairs:
        gold = labeler.task.names.index(query.label)
        cands = None if len(labeler.task.labels) <= 10 else (gold,)
        examples = tuple(ex.as_dict() for ex in demos)
        text, pair, cut = labeler.prompting.fit(query.text, query.text_pair, examples, cands)
        items.append(Item(text, pair, examples, cands, cut))
        golds.append(gold)
    out = []
    for raw, gold, item in zip(raw_results(labeler, items), golds, items):
        if not isinstance(raw, Scores):
            out.append(float("-inf"))
        elif item.cands is None:
            out.append(math.log(max(labeler.reading.distribution(raw.scores)[gold], 1e-300)))
        else:
            out.append(float(raw.scores[gold]))
    return out


def chunk_results(labeler: Any, prepared: list[Item | LabelResult], todo: list[Item]) -> list[LabelResult]:
    """Each row's result (`prepared`: a row's 'skipped' result or its `Item`; `todo`: the items): raw results
    read, with each scored row's calibration prior divided out."""
    names, raws, chunk = labeler.task.names, iter(raw_results(labeler, todo)), [it.examples for it in todo]
    results: list[LabelResult] = []
    prior_error: BackendError | None = None
    for item in prepared:
        if isinstance(item, LabelResult):
            results.append(item)
            continue
        raw = next(raws)
        if isinstance(raw, BackendError):
            results.append(LabelResult.without_label(names, "failed", str(raw), item.truncated))
            continue
        prior = None
        if isinstance(raw, Scores) and labeler.calibrator is not None:
            try:
                if prior_error is not None:
                    raise prior_error
                prior = labeler.calibrator.prior(item.examples, chunk)
            except BackendError as exc:
                # The calibration probes failed for good: the row is kept, as failed (its raw scores are cached,
                # so a re-run only retries the probes); the rest of this chunk is not retried again.
                prior_error = exc
                results.append(LabelResult.without_label(names, "failed", f"calibration: {exc}", item.truncated))
                continue
        results.append(raw.result(labeler.reading, item.truncated, prior))
    return results

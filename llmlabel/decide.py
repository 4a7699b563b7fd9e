"""The Labeler's side of the decision backends (`chat`, `decisions`, `systemone`): rows become `DecisionRow`s, answers
become the Labeler's raw results (label log-probabilities, or yes/no pairs), so calibration, the cache and
evaluation treat them like token scores.

Label sets larger than the endpoint's option limit follow the `OptionPlan` (`llmlabel.backends.api.plan_options`):
a per-row shortlist (the `restrict_labels` candidates), or a two-level question: first the group (the label trie's
first level, packed to fit the limit), then the label within the chosen group; a label's log-probability is then
log P(group) + log P(label | group), and labels outside the chosen group are not scored (probability 0).
"""

from __future__ import annotations

from typing import Any

from llmlabel.backends.api import DecisionAnswer, DecisionRow, OptionPlan, Question, plan_options
from llmlabel.errors import BackendError, call_each
from llmlabel.labeling.raw import Raw, Refused, Scores, YesNo

#: what a question asks, by kind
CHOICE_INSTRUCTIONS = "Which label fits the text?"


def plan_for(labeler: Any) -> OptionPlan:
    """The labeler's plan: direct, shortlist or two-level, by the backend's option limit (`Labeler.option_plan`
    makes it once)."""
    names = labeler.task.texts_shown
    limit = int(labeler.backend.max_options)
    if labeler.task.multi_label:
        return OptionPlan("predicates", limit, len(names))
    return plan_options(names, limit, labeler.restrict_labels)


def _state(labeler: Any, text: str, pair: str | None) -> str:
    task = labeler.task
    state = f"{task.text_name}: {text}"
    return state if pair is None else f"{state}\n{task.text_pair_name}: {pair}"


def _row(labeler: Any, item: Any, options: list[tuple[str, str | None]], answer_of: dict[str, str]) -> DecisionRow:
    """One choice question over `options` for `item`; demonstrations' labels shown as `answer_of[label name]`."""
    task = labeler.task
    shown = labeler.prompting.shown
    examples = [{**ex, "label": answer_of.get(ex["label"], shown[ex["label"]])} for ex in item.examples]
    prompt = labeler.template.render(
        instruction=task.instruction, labels=[{"name": n, "description": d} for n, d in options], label=None,
        examples=examples, text_name=task.text_name, text_pair_name=task.text_pair_name, text=item.text,
        text_pair=item.text_pair)
    question = Question("choice", "label", task.instruction or CHOICE_INSTRUCTIONS, tuple(options), prompt)
    demos = tuple((_state(labeler, ex["text"], ex.get("text_pair")), ex["label"]) for ex in examples)
    return DecisionRow(task.instruction, _state(labeler, item.text, item.text_pair), demos, (question,))


def _predicates(labeler: Any, item: Any) -> DecisionRow:
    """One yes/no question per label (multi-label tasks)."""
    task = labeler.task
    questions = []
    for label in task.labels:
        prompt = labeler.template.render(
            instruction=task.instruction, labels=[], label={"name": label.text, "description": label.description},
            examples=[], text_name=task.text_name, text_pair_name=task.text_pair_name, text=item.text,
            text_pair=item.text_pair)
        statement = f"The label '{label.text}' applies to the text."
        if label.description:
            statement += f" ({label.description})"
        questions.append(Question("predicate", label.name, statement, (), prompt))
    return DecisionRow(task.instruction, _state(labeler, item.text, item.text_pair), (), tuple(questions))


def _options(labeler: Any, indices: list[int]) -> list[tuple[str, str | None]]:
    return [(labeler.task.texts_shown[i], labeler.task.labels[i].description) for i in indices]


def _merge_usage(*answers: DecisionAnswer) -> dict[str, int]:
    out: dict[str, int] = {}
    for answer in answers:
        for key, value in answer.usage.items():
            out[key] = out.get(key, 0) + value
    return out


def _note(answer: DecisionAnswer, backend: Any) -> str | None:
    if answer.method == "samples":
        return (f"sampled: empirical distribution of {getattr(backend, 'samples', '?')} answers "
                "(the server gave no logprobs)")
    return None


def _refused(answer: DecisionAnswer) -> Refused:
    reason = "; ".join(answer.refusals) or "the endpoint refused to answer"
    return Refused(reason, info={"usage": answer.usage})


def decide_raw(labeler: Any, items: list[Any]) -> list[Raw | BackendError]:
    """Raw results for `items` (`llmlabel.labeling.raw.Item`s) through the backend's `decide`."""
    backend, task = labeler.backend, labeler.task
    plan = labeler.option_plan
    if task.multi_label:
        answers = call_each(len(items), backend.decide, [_predicates(labeler, it) for it in items])
        out: list[Raw | BackendError] = []
        for answer in answers:
            if isinstance(answer, BackendError):
                out.append(answer)
            elif any(a is None for a in answer.answers):
                out.append(_refused(answer))
            else:
                out.append(YesNo([list(a) for a in answer.answers], info={
                    "usage": answer.usage, "method": answer.method, "note": _note(answer, backend)}))
        return out
    if plan.strategy == "shortlist" and any(it.cands is None for it in items):
        # Rows without a shortlist (calibration probes: they have no neighbours) are asked in two levels.
        from llmlabel.backends.api import label_groups

        two = OptionPlan("two_level", plan.limit, plan.labels, label_groups(task.texts_shown, plan.limit))
        short = [i for i, it in enumerate(items) if it.cands is not None]
        rest = [i for i, it in enumerate(items) if it.cands is None]
        merged: list[Any] = [None] * len(items)
        for i, r in zip(short, _decide_with(labeler, [items[i] for i in short], plan) if short else []):
            merged[i] = r
        for i, r in zip(rest, _decide_with(labeler, [items[i] for i in rest], two)):
            merged[i] = r
        return merged
    return _decide_with(labeler, items, plan)


def _decide_with(labeler: Any, items: list[Any], plan: OptionPlan) -> list[Raw | BackendError]:
    """Single-label raw results for `items` under `plan`."""
    backend, task = labeler.backend, labeler.task
    n = len(task.labels)
    if plan.strategy != "two_level":
        rows, cands = [], []
        for it in items:
            indices = list(range(n)) if it.cands is None else sorted(it.cands)
            cands.append(indices)
            rows.append(_row(labeler, it, _options(labeler, indices), {}))
        answers = call_each(len(rows), backend.decide, rows)
        out = []
        for answer, indices in zip(answers, cands):
            if isinstance(answer, BackendError):
                out.append(answer)
            elif answer.answers[0] is None:
                out.append(_refused(answer))
            else:
                full: list[float | None] = [None] * n
                for i, s in zip(indices, answer.answers[0]):
                    full[i] = s
                out.append(Scores(full, info={"usage": answer.usage, "method": answer.method,
                                              "plan": plan.strategy, "note": _note(answer, backend)}))
        return out
    # Two levels: the group first, then the label within the chosen group.
    groups = plan.groups
    group_names = [", ".join(task.texts_shown[i] for i in g) for g in groups]
    group_of = {task.names[i]: group_names[k] for k, g in enumerate(groups) for i in g}
    group_options = [(name, None) for name in group_names]
    first = call_each(len(items), backend.decide, [_row(labeler, it, group_options, group_of) for it in items])
    chosen: list[int | None] = []
    for answer in first:
        if isinstance(answer, BackendError) or answer.answers[0] is None:
            chosen.append(None)
        else:
            scores = answer.answers[0]
            chosen.append(max(range(len(scores)), key=scores.__getitem__))
    todo = [i for i, c in enumerate(chosen) if c is not None]
    second_rows = [_row(labeler, items[i], _options(labeler, groups[chosen[i]]), {}) for i in todo]  # type: ignore
    second = dict(zip(todo, call_each(len(second_rows), backend.decide, second_rows))) if todo else {}
    out = []
    for i, answer in enumerate(first):
        if isinstance(answer, BackendError):
            out.append(answer)
            continue
        if chosen[i] is None:
            out.append(_refused(answer))
            continue
        inner = second[i]
        if isinstance(inner, BackendError):
            out.append(inner)
            continue
        if inner.answers[0] is None:
            out.append(_refused(inner))
            continue
        group = groups[chosen[i]]  # type: ignore[index]
        group_score = answer.answers[0][chosen[i]]  # type: ignore[index]
        full = [None] * n
        for label, s in zip(group, inner.answers[0]):
            full[label] = group_score + s
        out.append(Scores(full, info={"usage": _merge_usage(answer, inner), "method": inner.method,
                                      "plan": plan.strategy, "note": _note(inner, backend)}))
    return out

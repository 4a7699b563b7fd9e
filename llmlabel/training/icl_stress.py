"""The in-context learning stress suite: does a model learn the input -> label mapping from its exemplars?

Four settings on held-out labeled tasks, all in the instruction-free `symbol_icl.v1` format and scored over the
label candidates with `backend.score` (no free generation):

- `regular`: exemplars carry the true label names; candidates are the names.
- `sul`: semantically-unrelated labels (SUL-ICL, Wei et al. 2023): each label is replaced by an unrelated word (drawn
  from `EVAL_WORDS`, disjoint from the words symbol tuning uses), consistently in the exemplars and candidates; only
  the exemplars tell which word means what.
- `flipped`: flipped-label ICL (Wei et al. 2023, "Larger language models do in-context learning differently"):
  on binary tasks the exemplars' labels are swapped, and accuracy is measured against the swapped labels, i.e. how
  often the model follows the exemplars over its prior. Tasks with more than two labels record null.
- `zero_shot`: no exemplars and no instruction; candidates are the true names (the label names are all it has).

Per seed, each task's evaluation rows (the same rows for every seed) are split into `groups`, and each group gets
its own exemplars from the selector (seeded by the seed and the group), so the seed spread covers exemplar choice.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmlabel.config import DataConfig
from llmlabel.errors import ConfigError, DataError
from llmlabel.training.symbol_tuning import EVAL_WORDS, answer_text, clip_words, draw_symbols, render_icl

SETTINGS = ("regular", "sul", "flipped", "zero_shot")
#: the evaluation rows of a task are sampled once with this seed, so every seed and model sees the same rows
ROWS_SEED = 1234


class StressTask(BaseModel):
    """One held-out task: rows to evaluate (`data`) and the labeled pool exemplars come from (`pool`)."""

    model_config = ConfigDict(extra="forbid")
    data: DataConfig
    pool: DataConfig
    #: short name in reports (default: the dataset's folder name)
    name: str | None = None


class StressConfig(BaseModel):
    """Which held-out tasks, settings and exemplars the stress suite uses."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[StressTask] = Field(min_length=1)
    settings: list[Literal["regular", "sul", "flipped", "zero_shot"]] = Field(
        default_factory=lambda: list(SETTINGS), min_length=1)
    #: evaluation rows per task (a fixed random sample of the task's data)
    rows: int = Field(100, ge=1)
    #: exemplars per label in each prompt (k = k_per_label x number of labels)
    k_per_label: int = Field(2, ge=1)
    #: exemplar sets per seed (the rows are split among them)
    groups: int = Field(4, ge=1)
    selector: str = "balanced"
    selector_options: dict[str, Any] = Field(default_factory=dict)
    #: pool rows kept per label (bounds selector fitting)
    pool_per_label: int = Field(50, ge=1)
    max_text_words: int = Field(20, ge=1)


def task_name(task: StressTask) -> str:
    """The task's report name: `name`, else the data's folder name."""
    from llmlabel.training.symbol_tuning import source_name

    return task.name or source_name(task.data.path)


def _rows(data: DataConfig, rows: int) -> tuple[list[str], list[str]]:
    from llmlabel.data import Dataset

    if not data.label_field:
        raise ConfigError(f"the stress suite needs gold labels: set label_field for {data.path}")
    texts, labels = [], []
    for row in Dataset(data.path, split=data.split, limit=data.limit):
        text, label = row.get(data.text_field), row.get(data.label_field)
        if text is not None and label is not None and str(text).strip():
            texts.append(str(text))
            labels.append(str(label))
    if not texts:
        raise DataError(f"{data.path}: no labeled rows to evaluate")
    order = np.random.default_rng(ROWS_SEED).permutation(len(texts))[:rows]
    return [texts[int(i)] for i in order], [labels[int(i)] for i in order]


def _accuracy(backend: Any, prompts: list[str], candidates: list[str], targets: list[int]) -> list[bool]:
    scores = backend.score(prompts, [[answer_text(c) for c in candidates]] * len(prompts))
    return [int(np.argmax(s)) == t for s, t in zip(scores, targets)]


def evaluate_task(backend: Any, task: StressTask, config: StressConfig, seed: int,
                  progress: bool = False) -> dict[str, Any]:
    """Accuracy of `backend` in every setting on one task, for one seed; returns {setting: accuracy or None}."""
    from llmlabel.selection.base import Example, make_selector
    from llmlabel.training.symbol_tuning import load_source

    source = load_source(task.pool, config.pool_per_label, seed=0)
    texts, gold = _rows(task.data, config.rows)
    names = source.names
    unknown_gold = sorted(set(gold) - set(names))
    if unknown_gold:
        from llmlabel.errors import unknown

        raise DataError(f"{task.data.path}: " + unknown("label", unknown_gold[0], names))
    texts = [clip_words(t, config.max_text_words) for t in texts]
    shown = {n: n.replace("_", " ") for n in names}
    k = config.k_per_label * len(names)
    selector = make_selector(config.selector, seed=seed, **config.selector_options)
    selector.fit([Example(clip_words(t, config.max_text_words), lab, index=i)
                  for i, (t, lab) in enumerate(zip(source.texts, source.labels))])
    rng = np.random.default_rng([seed, 7])
    hits: dict[str, list[bool]] = {s: [] for s in config.settings}
    for group in np.array_split(np.arange(len(texts)), min(config.groups, len(texts))):
        queries = [texts[int(i)] for i in group]
        targets = [names.index(gold[int(i)]) for i in group]
        selector.seed = int(rng.integers(2**31))
        selections = selector.select_many(queries, k)
        order = rng.permutation(k)  # one exemplar order per group (selectors may group exemplars by label)
        demos = [[sel.examples[int(j)] for j in order if j < len(sel.examples)] for sel in selections]
        words = draw_symbols("words", len(names), rng, EVAL_WORDS)
        for setting in config.settings:
            if setting == "zero_shot":
                prompts = [render_icl([], q) for q in queries]
                hits[setting] += _accuracy(backend, prompts, [shown[n] for n in names], targets)
            elif setting == "regular":
                prompts = [render_icl([(ex.text, shown[ex.label]) for ex in d], q) for d, q in zip(demos, queries)]
                hits[setting] += _accuracy(backend, prompts, [shown[n] for n in names], targets)
            elif setting == "sul":
                mapping = dict(zip(names, words))
                prompts = [render_icl([(ex.text, mapping[ex.label]) for ex in d], q) for d, q in zip(demos, queries)]
                hits[setting] += _accuracy(backend, prompts, words, targets)
            elif setting == "flipped" and len(names) == 2:
                flip = {names[0]: shown[names[1]], names[1]: shown[names[0]]}
                prompts = [render_icl([(ex.text, flip[ex.label]) for ex in d], q) for d, q in zip(demos, queries)]
                hits[setting] += _accuracy(backend, prompts, [shown[n] for n in names], [1 - t for t in targets])
    return {s: (float(np.mean(h)) if h else None) for s, h in hits.items()}


def evaluate_stress(backend: Any, config: StressConfig, seed: int, progress: bool = True) -> dict[str, dict]:
    """The stress suite on every task for one seed: {task name: {setting: accuracy or None}}."""
    from llmlabel.terminal import progress_bar

    out = {}
    for task in progress_bar(iterable=config.tasks, desc=f"icl stress (seed {seed})", disable=not progress):
        out[task_name(task)] = evaluate_task(backend, task, config, seed)
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of base and tuned accuracy per task and setting, the tuned - base difference, and
    whether the difference is beyond the seed spread (mean gain > std of base + std of tuned; None for one seed)."""
    out: dict[str, Any] = {}
    first = records[0]
    for task, settings in first["base"].items():
        out[task] = {}
        for setting in settings:
            row: dict[str, Any] = {}
            for model in ("base", "tuned"):
                values = [r[model][task][setting] for r in records if r.get(model)]
                values = [v for v in values if v is not None]
                row[model] = ({"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
                              if values else None)
            if row.get("base") and row.get("tuned"):
                gain = row["tuned"]["mean"] - row["base"]["mean"]
                row["gain"] = gain
                # one seed has no spread: None rather than a claim
                seeds = min(len(row["base"]["values"]), len(row["tuned"]["values"]))
                row["beyond_spread"] = bool(gain > row["base"]["std"] + row["tuned"]["std"]) if seeds > 1 else None
            out[task][setting] = row
    return out

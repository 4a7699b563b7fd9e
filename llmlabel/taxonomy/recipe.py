"""The `tnt_llm` recipe kind: from an unlabeled corpus to a label taxonomy (phase 1) and a cheap classifier that applies
it at scale (phase 2), with metrics. Gold labels, when the data has them, are read only for the final evaluation.

Outputs in `output.dir`: taxonomy.yaml (editable, with its history), taxonomy_log.jsonl (every LLM request of phase 1
with each attempt), llm_labels.jsonl (the LLM-labeled sample), labeled.jsonl (the whole corpus labeled by the
classifier), classifier.joblib, metrics.json, and the labeling cache.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmlabel.config import DataConfig, ModelConfig, RecipeBase, _Strict
from llmlabel.errors import DataError, unknown

log = logging.getLogger("llmlabel")

#: Phase-1 sample size per method when `taxonomy.sample` is not set (the LLM method reads every text; clustering
#: only embeds them, and the LLM reads a few central members per cluster).
DEFAULT_SAMPLE = {"llm": 60, "cluster": 400, "given": 0}


class TaxonomyConfig(_Strict):
    """Phase 1: how the taxonomy is induced."""

    #: llm (summarize / generate / update / review), cluster (embed + k-means + LLM-named clusters), given
    method: str = "llm"
    #: what the taxonomy is for; starts every prompt (the paper's use-case instruction)
    use_case: str = "Categorize the texts by what they are about."
    text_name: str = "Text"
    #: texts phase 1 reads, drawn at random (seeded) from the corpus (default: 60 for llm, 400 for cluster)
    sample: int | None = Field(None, gt=0)
    min_labels: int = Field(3, ge=2)
    max_labels: int = Field(8, ge=2, le=50)
    name_max_chars: int = Field(32, ge=4, le=80)
    description_max_chars: int = Field(80, ge=16, le=400)
    rationale_max_chars: int = Field(60, ge=8, le=300)
    #: a text longer than this is cut before it goes into a prompt
    item_max_chars: int = Field(200, ge=20)
    #: re-asks after an answer that does not parse or validate
    retries: int = Field(2, ge=0, le=5)
    #: prompt template per step (summarize, generate, update, review, name_cluster), e.g. {generate: tnt_generate.v1}
    prompts: dict[str, str] = Field(default_factory=dict)
    # -- llm method
    minibatch_size: int = Field(20, gt=0)
    minibatches: int = Field(3, gt=0)
    review: bool = True
    #: token budget of one generate / update / review answer
    max_tokens: int = Field(360, gt=16)
    #: texts with more words than this are summarized first (null: never summarize)
    summarize_min_words: int | None = Field(40, ge=0)
    summary_max_tokens: int = Field(40, gt=0)
    # -- cluster method
    embedder: str = "minilm"
    #: number of clusters (null: the best silhouette between min_labels and max_labels)
    k: int | None = Field(None, ge=2)
    central_members: int = Field(8, gt=0)
    #: merge clusters whose names' embeddings are at least this similar (or whose names are the same words)
    merge_threshold: float = Field(0.9, gt=0, le=1)
    name_max_tokens: int = Field(80, gt=8)
    # -- given method
    labels: list[Any] | dict[str, Any] | None = None
    path: str | None = None
    # -- hierarchy
    #: 2 adds a second level under each label, induced by the same method from the texts under it
    levels: Literal[1, 2] = 1
    max_children: int = Field(5, ge=2)
    #: a label needs this many phase-1 texts under it to get children
    min_children_texts: int = Field(8, ge=2)

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        from llmlabel.taxonomy import methods

        if value not in methods:
            raise ValueError(unknown("taxonomy method", value, methods.names()))
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "TaxonomyConfig":
        if self.min_labels > self.max_labels:
            raise ValueError(f"min_labels ({self.min_labels}) is above max_labels ({self.max_labels})")
        return self


class TntLabelingConfig(_Strict):
    """Phase 2: the LLM labels a sample with the taxonomy (core Labeler, score mode, descriptions in the prompt)."""

    sample: int = Field(200, gt=0)
    #: default: the use case, then "Pick the label that fits the <text> best."
    instruction: str | None = None
    normalize: Literal["sum", "mean"] = "mean"
    calibration: Literal["none", "contextual"] = "contextual"
    #: a catch-all label added to the taxonomy for phase 2 (null: none); coverage counts the rows not given it
    other_label: str | None = "other"
    prompt: str | None = None
    chunk_size: int = Field(64, gt=0)


class DistillConfig(_Strict):
    """Phase 2: students trained on the LLM labels and applied to the whole corpus."""

    classifiers: list[str] = Field(default_factory=lambda: ["embedding_lr", "tfidf_lr"], min_length=1)
    #: share of the LLM-labeled sample held out to measure agreement with the LLM
    holdout: float = Field(0.25, ge=0, lt=1)
    #: label the whole corpus with the best student
    apply: bool = True
    #: rows timed (features from scratch) for the students' items/s
    timing_rows: int = Field(500, gt=0)

    @field_validator("classifiers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from llmlabel.taxonomy import classifiers

        for name in value:
            if name not in classifiers:
                raise ValueError(unknown("classifier", name, classifiers.names()))
        return value


class TntOutputConfig(_Strict):
    """Output files, inside `dir`."""

    dir: str = "runs/tnt_llm"
    taxonomy: str = "taxonomy.yaml"
    log: str = "taxonomy_log.jsonl"
    llm_labels: str = "llm_labels.jsonl"
    labeled: str = "labeled.jsonl"
    classifier: str = "classifier.joblib"
    metrics: str = "metrics.json"
    cache: str | None = "cache.sqlite"

    def path(self, name: str) -> Path:
        """`name` resolved inside `dir`."""
        return Path(self.dir).expanduser() / name


class TntRecipe(RecipeBase):
    """TnT-LLM: taxonomy induction (phase 1) and LLM-augmented label distillation (phase 2)."""

    kind: Literal["tnt_llm"] = "tnt_llm"
    model: ModelConfig = Field(default_factory=ModelConfig)
    #: the corpus; `label_field` (gold) is read only for evaluation (set null when there is none)
    data: DataConfig
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig)
    labeling: TntLabelingConfig = Field(default_factory=TntLabelingConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    output: TntOutputConfig = Field(default_factory=TntOutputConfig)
    seed: int = 0
    evaluate: bool = True
    #: second-level gold column for a two-level taxonomy (e.g. clinc150 `label` under `domain`)
    gold_child_field: str | None = None

    def run(self, progress: bool = True, backend: Any = None) -> dict[str, Any]:
        """Run both phases; returns the metrics (also written to metrics.json) plus output paths."""
        return run_tnt(self, progress=progress, backend=backend)

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Taxonomy, coverage, agreement, gold scores and output paths."""
        tax = summary["taxonomy"]
        lines = [f"taxonomy ({tax['method']}, {len(tax['names'])} labels, steps {tax['steps']}): "
                 + ", ".join(tax["names"])]
        llm = summary["llm_labeling"]
        lines.append(f"LLM labeled {llm['rows']} rows at {llm['items_per_second']:.1f} items/s; "
                     f"coverage {llm['coverage']:.2f}")
        for name, s in summary["classifiers"].items():
            lines.append(f"{name}: kappa vs LLM {s['holdout_kappa']:.3f} on {s['holdout_rows']} held-out rows, "
                         f"{s['items_per_second']:.0f} items/s ({s['speedup_vs_llm']:.0f}x the LLM)")
        for where, scores in summary.get("gold", {}).items():
            if isinstance(scores, dict) and "ari" in scores:
                acc = f", accuracy {scores['accuracy']:.3f}" if "accuracy" in scores else ""
                lines.append(f"vs gold ({where}): ARI {scores['ari']:.3f}, NMI {scores['nmi']:.3f}{acc}")
        lines += [f"{key}: {value}" for key, value in summary["outputs"].items()]
        return lines


# -- the run ------------------------------------------------------------------------------------------------------
class _LazyBackend:
    """Loads the recipe's backend on first use, so a `given` taxonomy with nothing to label loads no model early."""

    def __init__(self, recipe: TntRecipe, backend: Any):
        self.recipe, self.backend, self.owned = recipe, backend, False

    def __call__(self) -> Any:
        if self.backend is None:
            from llmlabel.backends.base import load_backend

            model = self.recipe.model
            self.backend = load_backend(model.backend, model=model.name, **model.options)
            self.owned = True
        return self.backend

    def close(self) -> None:
        if self.owned and self.backend is not None:
            self.backend.close()


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    from llmlabel.io import write_rows

    return write_rows(rows, path)


def _out_row(row: dict[str, Any], recipe: TntRecipe, extra: dict[str, Any]) -> dict[str, Any]:
    """An input row plus output columns; an input column with an output column's name is kept as gold_/input_."""
    from llmlabel.core.results import merge_columns

    return merge_columns(row, extra, recipe.data.label_field)


def _label_llm(backend: Any, labels: dict[str, str], texts: list[str], recipe: TntRecipe, cache: Any,
               progress: bool) -> tuple[list[Any], list[float], Any]:
    """The core Labeler over `texts` with `labels` (name -> description); returns labels, confidences, stats."""
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    lab = recipe.labeling
    tax = recipe.taxonomy
    instruction = lab.instruction or f"{tax.use_case} Pick the label that fits the {tax.text_name.lower()} best."
    task = LabelTask(labels=labels, instruction=instruction, text_name=tax.text_name, label_field=None)
    labeler = Labeler(backend, task, mode="score", normalize=lab.normalize, calibration=lab.calibration,
                      prompt=lab.prompt, cache=cache, chunk_size=lab.chunk_size, progress=progress)
    results = labeler.label_texts(texts)
    return [r.label for r in results], [r.confidence for r in results], labeler.stats


def _add_children(induced: Any, method: Any, texts: list[str], ctx: Any, recipe: TntRecipe, backend: Any,
                  cache: Any, progress: bool) -> Any:
    """A second level: each label's phase-1 texts (its cluster, or what the LLM labels it) get their own taxonomy."""
    from llmlabel.taxonomy.base import TaxonomyError
    from llmlabel.taxonomy.model import Step

    taxonomy = induced.taxonomy
    tax = recipe.taxonomy
    if induced.assignments is not None:
        parents = [taxonomy.names[a] if a >= 0 else None for a in induced.assignments]
    else:
        parents, _, _ = _label_llm(backend(), taxonomy.task_labels(), texts, recipe, cache, progress)
    labels = []
    for lab in taxonomy.labels:
        mine = [t for t, p in zip(texts, parents) if p == lab.name]
        if len(mine) < tax.min_children_texts:
            taxonomy.history.append(Step(step=f"{lab.name}: children", status="ok", labels=[],
                                         reason=f"{len(mine)} texts (< {tax.min_children_texts}): no second level"))
            labels.append(lab)
            continue
        try:
            sub = method.induce(mine, ctx, tax.max_children, step_prefix=f"{lab.name}: ")
        except TaxonomyError as exc:
            taxonomy.history.append(Step(step=f"{lab.name}: children", status="failed", reason=str(exc)))
            labels.append(lab)
            continue
        taxonomy.history.extend(sub.taxonomy.history)
        children = [c.model_copy(update={"children": []}) for c in sub.taxonomy.labels]
        labels.append(lab.model_copy(update={"children": children}))
    taxonomy.labels = labels
    return taxonomy


def run_tnt(recipe: TntRecipe, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run a tnt_llm recipe end to end (see the module docstring); `backend` may be an already loaded backend."""
    from llmlabel.cache import ResultCache
    from llmlabel.data import Dataset
    from llmlabel.io import write_json
    from llmlabel.taxonomy import classifiers, methods
    from llmlabel.taxonomy.base import InductionContext, check_taxonomy
    from llmlabel.taxonomy.distill import (
        LEVEL_SEP,
        agreement,
        coverage,
        gold_report,
        label_counts,
        split_holdout,
        time_student,
    )

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    tax, lab, dist, out = recipe.taxonomy, recipe.labeling, recipe.distill, recipe.output
    data = recipe.data
    rows = list(Dataset(data.path, split=data.split, limit=data.limit))
    if not rows:
        raise DataError(f"dataset {data.path} is empty")
    if data.text_field not in rows[0]:
        raise DataError(unknown("text column", data.text_field, rows[0].keys()))
    texts = [" ".join(str(r.get(data.text_field) or "").split()) for r in rows]
    usable = [i for i, t in enumerate(texts) if t]
    if not usable:
        raise DataError(f"dataset {data.path} has no non-empty '{data.text_field}' texts")
    # Gold is set aside now and read only by the evaluation at the end.
    gold = gold_child = None
    if recipe.evaluate and data.label_field and data.label_field in rows[0]:
        gold = [r.get(data.label_field) for r in rows]
    if recipe.evaluate and recipe.gold_child_field and recipe.gold_child_field in rows[0]:
        gold_child = [r.get(recipe.gold_child_field) for r in rows]

    lazy = _LazyBackend(recipe, backend)
    cache = ResultCache(out.path(out.cache)) if out.cache else None
    embedder_holder: dict[str, Any] = {}

    def get_embedder() -> Any:
        if "e" not in embedder_holder:
            from llmlabel.embeddings import Embedder

            embedder_holder["e"] = Embedder(tax.embedder)
        return embedder_holder["e"]

    ctx = InductionContext(config=tax, seed=recipe.seed, progress=progress, get_backend=lazy,
                           get_embedder=get_embedder)
    out.path(".").mkdir(parents=True, exist_ok=True)
    try:
        # -- phase 1: the taxonomy ------------------------------------------------------------------------------
        method = methods.get(tax.method)()
        size = tax.sample or DEFAULT_SAMPLE.get(tax.method, 100)
        phase1 = random.Random(recipe.seed).sample(usable, min(size, len(usable))) if method.needs_llm else []
        phase1_texts = [texts[i] for i in phase1]
        t0 = time.perf_counter()
        try:
            induced = method.induce(phase1_texts, ctx, tax.max_labels)
            taxonomy = induced.taxonomy
            if tax.levels == 2 and taxonomy.depth == 1 and tax.method != "given":
                taxonomy = _add_children(induced, method, phase1_texts, ctx, recipe, lazy, cache, progress)
        finally:
            _write_jsonl(ctx.log, out.path(out.log)) if ctx.log else None
        if lazy.backend is not None:
            taxonomy.model = lazy.backend.model_id
        seconds["taxonomy"] = time.perf_counter() - t0
        problems = check_taxonomy(taxonomy, tax)
        taxonomy_path = taxonomy.save(out.path(out.taxonomy))

        # -- phase 2: LLM labels on a sample ---------------------------------------------------------------------
        t0 = time.perf_counter()
        sample = random.Random(recipe.seed + 1).sample(usable, min(lab.sample, len(usable)))
        sample_texts = [texts[i] for i in sample]
        top, conf, stats = _label_llm(lazy(), taxonomy.task_labels(lab.other_label), sample_texts, recipe, cache,
                                      progress)
        llm_stats = stats.as_dict()
        llm_seconds = stats.seconds
        leaf = list(top)
        if taxonomy.depth == 2:
            for parent in taxonomy.labels:
                idx = [j for j, t in enumerate(top) if t == parent.name]
                if not parent.children or not idx:
                    continue
                child_labels = {c.name: c.description for c in parent.children}
                kids, _, child_stats = _label_llm(lazy(), child_labels, [sample_texts[j] for j in idx], recipe,
                                                  cache, progress)
                llm_seconds += child_stats.seconds
                for j, kid in zip(idx, kids):
                    leaf[j] = f"{parent.name}{LEVEL_SEP}{kid}"
        seconds["llm_labeling"] = time.perf_counter() - t0
        _write_jsonl([_out_row(rows[i], recipe, {"label": leaf[j], "top_label": top[j], "confidence": conf[j]})
                      for j, i in enumerate(sample)], out.path(out.llm_labels))
        llm_rate = len(sample) / llm_seconds if llm_seconds > 0 else 0.0

        # -- phase 2: students ----------------------------------------------------------------------------------
        t0 = time.perf_counter()
        train, held = split_holdout(len(sample), dist.holdout, recipe.seed)
        student_report: dict[str, Any] = {}
        timing = [texts[i] for i in usable[: dist.timing_rows]]
        needs_embedder = any(name == "embedding_lr" for name in dist.classifiers)
        embedder = get_embedder() if needs_embedder else None
        best: tuple[float, str] | None = None
        for name in dist.classifiers:
            student = classifiers.get(name)(seed=recipe.seed, embedder=embedder)
            student.fit([sample_texts[j] for j in train], [leaf[j] for j in train])
            held_pred = student.predict([sample_texts[j] for j in held])[0] if held else []
            agree = agreement([leaf[j] for j in held], held_pred)
            rate = time_student(student, timing)
            student_report[name] = {"holdout_kappa": agree["kappa"], "holdout_agreement": agree["agreement"],
                                    "holdout_rows": agree["rows"], "train_rows": len(train),
                                    "items_per_second": round(rate, 1),
                                    "speedup_vs_llm": round(rate / llm_rate, 1) if llm_rate else None}
            if best is None or agree["kappa"] > best[0]:
                best = (agree["kappa"], name)
        chosen = best[1] if best else dist.classifiers[0]
        student = classifiers.get(chosen)(seed=recipe.seed, embedder=embedder).fit(sample_texts, leaf)
        import joblib

        joblib.dump({**student.state(), "labels": sorted({str(x) for x in leaf}), "taxonomy": str(taxonomy_path)},
                    out.path(out.classifier))
        corpus_pred: list[Any] = [None] * len(rows)
        corpus_conf: list[float] = [0.0] * len(rows)
        if dist.apply:
            preds, confs = student.predict([texts[i] for i in usable])
            for i, p, c in zip(usable, preds, confs):
                corpus_pred[i], corpus_conf[i] = p, c
            llm_of = {i: leaf[j] for j, i in enumerate(sample)}
            _write_jsonl([_out_row(r, recipe, {"label": corpus_pred[i], "confidence": round(corpus_conf[i], 4),
                                               "llm_label": llm_of.get(i), "classifier": chosen})
                          for i, r in enumerate(rows)], out.path(out.labeled))
        seconds["distill"] = time.perf_counter() - t0
    finally:
        if cache is not None:
            cache.close()
        lazy.close()

    def top_of(labels: list[Any]) -> list[Any]:
        return [None if x is None else str(x).split(LEVEL_SEP)[0] for x in labels]

    steps: dict[str, int] = {}
    for step in taxonomy.history:
        steps[step.status] = steps.get(step.status, 0) + 1
    summary: dict[str, Any] = {
        "recipe": recipe.name, "method": tax.method, "model": taxonomy.model, "seed": recipe.seed, "rows": len(rows),
        "taxonomy": {"method": tax.method, "names": taxonomy.names, "labels": len(taxonomy.labels),
                     "children": sum(len(x.children) for x in taxonomy.labels), "steps": steps,
                     "schema_valid": not problems, "problems": problems, "phase1_texts": len(phase1),
                     "llm_requests": len([r for r in ctx.log if r.get("step") != "summarize"])},
        "llm_labeling": {"rows": len(sample), "seconds": round(llm_seconds, 2), "items_per_second": round(llm_rate, 2),
                         "cached": llm_stats["cached"], "coverage": coverage(top, lab.other_label),
                         "label_counts": label_counts(top)},
        "classifiers": student_report, "chosen_classifier": chosen,
    }
    if dist.apply:
        applied = [corpus_pred[i] for i in usable]
        summary["corpus"] = {"rows": len(usable), "coverage": coverage(top_of(applied), lab.other_label),
                             "label_counts": label_counts(top_of(applied))}
    if gold is not None:
        names, gold_names = taxonomy.names, {str(g) for g in gold}
        labels_file = Dataset(data.path, split=data.split).labels_file if data.label_field == "label" else None
        if labels_file is not None:  # gold names absent from a small corpus still count as gold names
            from llmlabel.data import load_labels_file

            gold_names |= set(load_labels_file(labels_file))
        summary["gold"] = {"field": data.label_field,
                           "llm_sample": gold_report([gold[i] for i in sample], top, names, gold_names)}
        if dist.apply:
            summary["gold"]["classifier_corpus"] = gold_report([gold[i] for i in usable], top_of(applied), names,
                                                               gold_names)
        if induced.assignments is not None and phase1:
            summary["gold"]["clusters"] = gold_report([gold[i] for i in phase1], induced.assignments, [])
    if gold_child is not None and taxonomy.depth == 2:
        summary.setdefault("gold", {})["leaf_llm_sample"] = gold_report([gold_child[i] for i in sample], leaf, [])
        if dist.apply:
            summary["gold"]["leaf_classifier_corpus"] = gold_report([gold_child[i] for i in usable], applied, [])
    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    summary["outputs"] = {"taxonomy": str(taxonomy_path), "metrics": str(out.path(out.metrics)),
                          "llm_labels": str(out.path(out.llm_labels)), "classifier": str(out.path(out.classifier))}
    if dist.apply:
        summary["outputs"]["labeled"] = str(out.path(out.labeled))
    if ctx.log:
        summary["outputs"]["log"] = str(out.path(out.log))
    write_json(summary, out.path(out.metrics))
    summary["report"] = str(out.path(out.metrics))
    if problems:
        log.warning("the taxonomy has problems: %s", "; ".join(problems))
    return summary

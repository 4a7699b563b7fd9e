"""The `tnt_llm` kind: from an unlabeled corpus to a label taxonomy (phase 1) and a cheap classifier that applies it
at scale (phase 2), with metrics (sections in `llmlabel.taxonomy.recipe`). Gold labels, when the data has them, are
read only for the final evaluation. Its report is metrics.json (`output.metrics`)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmlabel.config import DataConfig, ModelConfig
from llmlabel.errors import DataError, unknown
from llmlabel.kinds.base import RecipeKind, RunContext, unsupported
from llmlabel.taxonomy.recipe import (DEFAULT_SAMPLE, DistillConfig, TaxonomyConfig, TntLabelingConfig,
                                      TntOutputConfig)

log = logging.getLogger("llmlabel")


@dataclass
class Corpus:
    """The corpus rows, their cleaned texts, the usable (non-empty) ones, and the gold set aside for evaluation."""

    started: float
    rows: list[dict[str, Any]]
    texts: list[str]
    usable: list[int]
    gold: list[Any] | None = None
    gold_child: list[Any] | None = None


@dataclass
class TntRun:
    """What the two phases produced, for the report."""

    seconds: dict[str, float] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    phase1: list[int] = field(default_factory=list)
    induced: Any = None
    taxonomy: Any = None
    problems: list[str] = field(default_factory=list)
    taxonomy_path: Any = None
    sample: list[int] = field(default_factory=list)
    top: list[Any] = field(default_factory=list)
    leaf: list[Any] = field(default_factory=list)
    llm_stats: dict[str, Any] = field(default_factory=dict)
    llm_seconds: float = 0.0
    students: dict[str, Any] = field(default_factory=dict)
    chosen: str = ""
    corpus_pred: list[Any] = field(default_factory=list)


class TntRecipe(RecipeKind):
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

    @model_validator(mode="after")
    def _supported(self) -> "TntRecipe":
        if self.labeling.mode != "score":
            raise ValueError(f"kind tnt_llm labels in score mode: labeling.mode must be 'score' (got "
                             f"'{self.labeling.mode}')")
        for option in ("selection", "method"):
            if getattr(self.labeling, option) is not None:
                raise ValueError(unsupported("tnt_llm", f"labeling.{option}",
                                             "phase 2 labels with the taxonomy's descriptions"))
        return self

    def report_path(self) -> Path:
        """metrics.json (`output.metrics`): the report's name for this kind since its first release."""
        return self.output.path(self.output.metrics)

    # -- prepare ----------------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext) -> Corpus:
        """Read the corpus; set its gold aside (read only by the evaluation at the end)."""
        from llmlabel.data import Dataset

        started = time.perf_counter()
        data = self.data
        rows = list(Dataset(data.path, split=data.split, limit=data.limit))
        if not rows:
            raise DataError(f"dataset {data.path} is empty")
        if data.text_field not in rows[0]:
            raise DataError(unknown("text column", data.text_field, rows[0].keys()))
        texts = [" ".join(str(r.get(data.text_field) or "").split()) for r in rows]
        usable = [i for i, t in enumerate(texts) if t]
        if not usable:
            raise DataError(f"dataset {data.path} has no non-empty '{data.text_field}' texts")
        corpus = Corpus(started, rows, texts, usable)
        if self.evaluate and data.label_field and data.label_field in rows[0]:
            corpus.gold = [r.get(data.label_field) for r in rows]
        if self.evaluate and self.gold_child_field and self.gold_child_field in rows[0]:
            corpus.gold_child = [r.get(self.gold_child_field) for r in rows]
        return corpus

    # -- execute ----------------------------------------------------------------------------------------------------
    def execute(self, ctx: RunContext, corpus: Corpus) -> TntRun:
        """Phase 1 (the taxonomy), then phase 2 (LLM labels on a sample, students on them)."""
        from llmlabel.taxonomy.base import InductionContext

        run = TntRun()
        embedder: dict[str, Any] = {}

        def get_embedder() -> Any:
            if "e" not in embedder:
                from llmlabel.embeddings import Embedder

                embedder["e"] = Embedder(self.taxonomy.embedder)
            return embedder["e"]

        # the backend loads on first use, so a `given` taxonomy with nothing to label loads no model early
        induction = InductionContext(config=self.taxonomy, seed=self.seed, progress=ctx.progress,
                                     get_backend=ctx.backend, get_embedder=get_embedder)
        try:
            self._phase1(ctx, corpus, induction, run)
        finally:
            run.log = induction.log
        self._llm_labels(ctx, corpus, run)
        self._students(corpus, run, get_embedder)
        return run

    def _phase1(self, ctx: RunContext, corpus: Corpus, induction: Any, run: TntRun) -> None:
        from llmlabel.io import write_rows
        from llmlabel.taxonomy import induction_methods
        from llmlabel.taxonomy.base import check_taxonomy

        tax, out = self.taxonomy, self.output
        method = induction_methods.get(tax.method)()
        size = tax.sample or DEFAULT_SAMPLE.get(tax.method, 100)
        usable = corpus.usable
        run.phase1 = random.Random(self.seed).sample(usable, min(size, len(usable))) if method.needs_llm else []
        phase1_texts = [corpus.texts[i] for i in run.phase1]
        t0 = time.perf_counter()
        try:
            run.induced = method.induce(phase1_texts, induction, tax.max_labels)
            run.taxonomy = run.induced.taxonomy
            if tax.levels == 2 and run.taxonomy.depth == 1 and tax.method != "given":
                run.taxonomy = self._add_children(ctx, run.induced, method, phase1_texts, induction)
        finally:
            write_rows(induction.log, out.path(out.log)) if induction.log else None
        if ctx.loaded_backend is not None:
            run.taxonomy.model = ctx.loaded_backend.model_id
        run.seconds["taxonomy"] = time.perf_counter() - t0
        run.problems = check_taxonomy(run.taxonomy, tax)
        run.taxonomy_path = run.taxonomy.save(out.path(out.taxonomy))

    def _label_llm(self, ctx: RunContext, labels: dict[str, str], texts: list[str]) -> tuple[list[Any], list[float],
                                                                                                  Any]:
        """The core Labeler over `texts` with `labels` (name -> description); returns labels, confidences, stats."""
        from llmlabel.core.task import LabelTask
        from llmlabel.labeling.config import build_labeling

        tax = self.taxonomy
        instruction = (self.labeling.instruction
                       or f"{tax.use_case} Pick the label that fits the {tax.text_name.lower()} best.")
        task = LabelTask(labels=labels, instruction=instruction, text_name=tax.text_name, label_field=None)
        labeler = build_labeling(self.labeling, self.data, task, ctx.backend(), ctx.cache(), ctx.progress).labeler
        results = labeler.label_texts(texts)
        return [r.label for r in results], [r.confidence for r in results], labeler.stats

    def _add_children(self, ctx: RunContext, induced: Any, method: Any, texts: list[str], induction: Any) -> Any:
        """A second level: each label's phase-1 texts (its cluster, or what the LLM labels it) get their own
        taxonomy."""
        from llmlabel.taxonomy.base import TaxonomyError
        from llmlabel.taxonomy.model import Step

        taxonomy, tax = induced.taxonomy, self.taxonomy
        if induced.assignments is not None:
            parents = [taxonomy.names[a] if a >= 0 else None for a in induced.assignments]
        else:
            parents, _, _ = self._label_llm(ctx, taxonomy.task_labels(), texts)
        labels = []
        for lab in taxonomy.labels:
            mine = [t for t, p in zip(texts, parents) if p == lab.name]
            if len(mine) < tax.min_children_texts:
                taxonomy.history.append(Step(step=f"{lab.name}: children", status="ok", labels=[],
                                             reason=f"{len(mine)} texts (< {tax.min_children_texts}): no second level"))
                labels.append(lab)
                continue
            try:
                sub = method.induce(mine, induction, tax.max_children, step_prefix=f"{lab.name}: ")
            except TaxonomyError as exc:
                taxonomy.history.append(Step(step=f"{lab.name}: children", status="failed", reason=str(exc)))
                labels.append(lab)
                continue
            taxonomy.history.extend(sub.taxonomy.history)
            children = [c.model_copy(update={"children": []}) for c in sub.taxonomy.labels]
            labels.append(lab.model_copy(update={"children": children}))
        taxonomy.labels = labels
        return taxonomy

    def _llm_labels(self, ctx: RunContext, corpus: Corpus, run: TntRun) -> None:
        """Phase 2: the LLM labels a sample with the taxonomy (and each parent's children for a second level)."""
        from llmlabel.core.results import merge_columns
        from llmlabel.io import write_rows
        from llmlabel.taxonomy.distill import LEVEL_SEP

        t0, taxonomy, lab = time.perf_counter(), run.taxonomy, self.labeling
        run.sample = random.Random(self.seed + 1).sample(corpus.usable, min(lab.sample, len(corpus.usable)))
        sample_texts = [corpus.texts[i] for i in run.sample]
        run.top, conf, stats = self._label_llm(ctx, taxonomy.task_labels(lab.other_label), sample_texts)
        run.llm_stats, run.llm_seconds = stats.as_dict(), stats.seconds
        run.leaf = list(run.top)
        if taxonomy.depth == 2:
            for parent in taxonomy.labels:
                idx = [j for j, t in enumerate(run.top) if t == parent.name]
                if not parent.children or not idx:
                    continue
                kids, _, child_stats = self._label_llm(ctx, {c.name: c.description for c in parent.children},
                                                       [sample_texts[j] for j in idx])
                run.llm_seconds += child_stats.seconds
                for j, kid in zip(idx, kids):
                    run.leaf[j] = f"{parent.name}{LEVEL_SEP}{kid}"
        run.seconds["llm_labeling"] = time.perf_counter() - t0
        write_rows([merge_columns(corpus.rows[i], {"label": run.leaf[j], "top_label": run.top[j],
                                                   "confidence": conf[j]}, self.data.label_field)
                    for j, i in enumerate(run.sample)], self.output.path(self.output.llm_labels))

    def _students(self, corpus: Corpus, run: TntRun, get_embedder: Any) -> None:
        """Phase 2: students trained on the LLM labels, compared on a held-out share, the best applied to all."""
        from llmlabel.taxonomy import students
        from llmlabel.taxonomy.distill import agreement, split_holdout, time_student

        t0, dist = time.perf_counter(), self.distill
        llm_rate = len(run.sample) / run.llm_seconds if run.llm_seconds > 0 else 0.0
        sample_texts = [corpus.texts[i] for i in run.sample]
        train, held = split_holdout(len(run.sample), dist.holdout, self.seed)
        timing = [corpus.texts[i] for i in corpus.usable[: dist.timing_rows]]
        embedder = get_embedder() if any(name == "embedding_lr" for name in dist.classifiers) else None
        best: tuple[float, str] | None = None
        for name in dist.classifiers:
            student = students.get(name)(seed=self.seed, embedder=embedder)
            student.fit([sample_texts[j] for j in train], [run.leaf[j] for j in train])
            held_pred = student.predict([sample_texts[j] for j in held])[0] if held else []
            agree = agreement([run.leaf[j] for j in held], held_pred)
            rate = time_student(student, timing)
            run.students[name] = {"holdout_kappa": agree["kappa"], "holdout_agreement": agree["agreement"],
                                  "holdout_rows": agree["rows"], "train_rows": len(train),
                                  "items_per_second": round(rate, 1),
                                  "speedup_vs_llm": round(rate / llm_rate, 1) if llm_rate else None}
            if best is None or agree["kappa"] > best[0]:
                best = (agree["kappa"], name)
        run.chosen = best[1] if best else dist.classifiers[0]
        student = students.get(run.chosen)(seed=self.seed, embedder=embedder).fit(sample_texts, run.leaf)
        import joblib

        joblib.dump({**student.state(), "labels": sorted({str(x) for x in run.leaf}),
                     "taxonomy": str(run.taxonomy_path)}, self.output.path(self.output.classifier))
        if dist.apply:
            self._apply(corpus, run, student)
        run.seconds["distill"] = time.perf_counter() - t0

    def _apply(self, corpus: Corpus, run: TntRun, student: Any) -> None:
        from llmlabel.core.results import merge_columns
        from llmlabel.io import write_rows

        corpus_pred: list[Any] = [None] * len(corpus.rows)
        corpus_conf: list[float] = [0.0] * len(corpus.rows)
        preds, confs = student.predict([corpus.texts[i] for i in corpus.usable])
        for i, p, c in zip(corpus.usable, preds, confs):
            corpus_pred[i], corpus_conf[i] = p, c
        llm_of = {i: run.leaf[j] for j, i in enumerate(run.sample)}
        write_rows([merge_columns(r, {"label": corpus_pred[i], "confidence": round(corpus_conf[i], 4),
                                      "llm_label": llm_of.get(i), "classifier": run.chosen}, self.data.label_field)
                    for i, r in enumerate(corpus.rows)], self.output.path(self.output.labeled))
        run.corpus_pred = corpus_pred

    # -- report -----------------------------------------------------------------------------------------------------
    def report(self, ctx: RunContext, corpus: Corpus, run: TntRun) -> dict[str, Any]:
        """The taxonomy, phase 2's coverage and agreement, the students, gold scores, timings and outputs."""
        from llmlabel.taxonomy.distill import coverage, label_counts

        tax, lab, out, taxonomy = self.taxonomy, self.labeling, self.output, run.taxonomy
        steps: dict[str, int] = {}
        for step in taxonomy.history:
            steps[step.status] = steps.get(step.status, 0) + 1
        llm_rate = len(run.sample) / run.llm_seconds if run.llm_seconds > 0 else 0.0
        summary: dict[str, Any] = {
            "recipe": self.name, "method": tax.method, "model": taxonomy.model, "seed": self.seed,
            "rows": len(corpus.rows),
            "taxonomy": {"method": tax.method, "names": taxonomy.names, "labels": len(taxonomy.labels),
                         "children": sum(len(x.children) for x in taxonomy.labels), "steps": steps,
                         "schema_valid": not run.problems, "problems": run.problems, "phase1_texts": len(run.phase1),
                         "llm_requests": len([r for r in run.log if r.get("step") != "summarize"])},
            "llm_labeling": {"rows": len(run.sample), "seconds": round(run.llm_seconds, 2),
                             "items_per_second": round(llm_rate, 2), "cached": run.llm_stats["cached"],
                             "coverage": coverage(run.top, lab.other_label), "label_counts": label_counts(run.top)},
            "classifiers": run.students, "chosen_classifier": run.chosen,
        }
        applied = [run.corpus_pred[i] for i in corpus.usable] if self.distill.apply else []
        if self.distill.apply:
            summary["corpus"] = {"rows": len(corpus.usable), "coverage": coverage(_top_of(applied), lab.other_label),
                                 "label_counts": label_counts(_top_of(applied))}
        self._gold(summary, corpus, run, applied)
        run.seconds["total"] = time.perf_counter() - corpus.started
        summary["seconds"] = {k: round(v, 2) for k, v in run.seconds.items()}
        summary["outputs"] = {"taxonomy": str(run.taxonomy_path), "metrics": str(out.path(out.metrics)),
                              "llm_labels": str(out.path(out.llm_labels)),
                              "classifier": str(out.path(out.classifier))}
        if self.distill.apply:
            summary["outputs"]["labeled"] = str(out.path(out.labeled))
        if run.log:
            summary["outputs"]["log"] = str(out.path(out.log))
        if run.problems:
            log.warning("the taxonomy has problems: %s", "; ".join(run.problems))
        return summary

    def _gold(self, summary: dict[str, Any], corpus: Corpus, run: TntRun, applied: list[Any]) -> None:
        """Scores against the gold set aside at the start (top level, clusters, second level)."""
        from llmlabel.data import Dataset
        from llmlabel.taxonomy.distill import gold_report

        data, gold, apply = self.data, corpus.gold, self.distill.apply
        if gold is not None:
            names, gold_names = run.taxonomy.names, {str(g) for g in gold}
            labels_file = Dataset(data.path, split=data.split).labels_file if data.label_field == "label" else None
            if labels_file is not None:  # gold names absent from a small corpus still count as gold names
                from llmlabel.data import load_labels_file

                gold_names |= set(load_labels_file(labels_file))
            summary["gold"] = {"field": data.label_field,
                               "llm_sample": gold_report([gold[i] for i in run.sample], run.top, names, gold_names)}
            if apply:
                summary["gold"]["classifier_corpus"] = gold_report([gold[i] for i in corpus.usable], _top_of(applied),
                                                                   names, gold_names)
            if run.induced.assignments is not None and run.phase1:
                summary["gold"]["clusters"] = gold_report([gold[i] for i in run.phase1], run.induced.assignments, [])
        if corpus.gold_child is not None and run.taxonomy.depth == 2:
            child = corpus.gold_child
            summary.setdefault("gold", {})["leaf_llm_sample"] = gold_report([child[i] for i in run.sample], run.leaf,
                                                                            [])
            if apply:
                summary["gold"]["leaf_classifier_corpus"] = gold_report([child[i] for i in corpus.usable], applied, [])

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


def _top_of(labels: list[Any]) -> list[Any]:
    """The top-level label of each (second-level labels are 'parent<LEVEL_SEP>child')."""
    from llmlabel.taxonomy.distill import LEVEL_SEP

    return [None if x is None else str(x).split(LEVEL_SEP)[0] for x in labels]

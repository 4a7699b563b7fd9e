"""Recipe kinds for training: `distill_student` (train a student on an LLM's labels), `weak_to_strong`, and
`symbol_tuning` (LoRA symbol tuning + the ICL stress suite).

All are `llmlabel.config.RecipeBase` subclasses registered in `llmlabel.registry.recipe_kinds`; `llmlabel run` picks
them by the recipe's `kind`. This module imports only pydantic and numpy at load time (torch loads when a recipe runs).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmlabel.config import (DataConfig, LabelingConfig, ModelConfig, OutputConfig, Recipe, RecipeBase,
                             TaskConfig)
from llmlabel.errors import ConfigError, DataError
from llmlabel.training.icl_stress import StressConfig
from llmlabel.training.student import StudentConfig
from llmlabel.training.symbol_tuning import SymbolTuningConfig
from llmlabel.training.weak_to_strong import WeakConfig

log = logging.getLogger("llmlabel")


class FilterConfig(BaseModel):
    """Which teacher labels the student trains on, and with what weight."""

    model_config = ConfigDict(extra="forbid")
    #: drop rows whose teacher confidence is below this
    min_confidence: float | None = Field(None, ge=0, le=1)
    #: weight each row's loss by the teacher's confidence
    weight_by_confidence: bool = False
    #: drop rows that confident learning flags as likely label errors (Northcutt et al. 2021)
    drop_label_issues: bool = False
    issue_method: Literal["prune_by_noise_rate", "confident_learning"] = "prune_by_noise_rate"
    #: features of the cross-fitted model whose out-of-sample probabilities confident learning reads
    issue_features: Literal["tfidf", "minilm"] = "tfidf"
    folds: int = Field(5, ge=2)


def _label_recipe(base: RecipeBase, name: str, model: ModelConfig, data: DataConfig, task: TaskConfig,
                  labeling: LabelingConfig, out_dir: Path, cache: str | None) -> Recipe:
    """A `label` recipe that labels `data` with the teacher into `out_dir` (cache shared across calls)."""
    return Recipe(name=f"{base.name}-{name}", model=model, data=data, task=task, labeling=labeling,
                  output=OutputConfig(dir=str(out_dir), cache=cache), evaluate=True)


def _text_column(task: TaskConfig, data: DataConfig) -> str:
    if data.text_pair_field:
        raise ConfigError("students classify single texts; data.text_pair_field (pair tasks) is not supported")
    if task.multi_label:
        raise ConfigError("students are single-label classifiers; task.multi_label is not supported")
    return data.text_field


def _gold_column(label_field: str | None) -> str | None:
    from llmlabel.core.results import OUTPUT_COLUMNS

    if not label_field:
        return None
    return f"gold_{label_field}" if label_field in OUTPUT_COLUMNS else label_field


def _write_json(data: Any, path: Path) -> None:
    from llmlabel.io import write_json

    write_json(data, path)


class DistillStudentRecipe(RecipeBase):
    """Label rows with an LLM (the teacher), select and weight its labels, train a student on them, evaluate both.

    Writes under `output.dir`: teacher/ (predictions + report of the labeled rows), student/ (the saved student with
    student.json and a model card), student_eval/ and teacher_eval/ (predictions on `eval_data`), report.json.
    """

    kind: Literal["distill_student"] = "distill_student"
    #: the teacher
    model: ModelConfig = Field(default_factory=ModelConfig)
    #: rows the teacher labels for training (gold labels there, if any, only measure the teacher's label accuracy)
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    #: train on the teacher's label distribution ('soft') or its label ('hard')
    targets: Literal["soft", "hard"] = "soft"
    filter: FilterConfig = Field(default_factory=FilterConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    #: gold-labeled rows to score the student (and the teacher) on
    eval_data: DataConfig | None = None
    evaluate_teacher: bool = True
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/distill"))

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Label, select, train, save, evaluate; returns the summary written to report.json."""
        import numpy as np

        from llmlabel.backends.base import load_backend
        from llmlabel.data import Dataset
        from llmlabel.io import write_rows
        from llmlabel.metrics import evaluate
        from llmlabel.training.filters import confidence_weights, find_label_issues
        from llmlabel.training.student import Student, StudentClassifier, merge_result, update_student_record
        from llmlabel.training.weak import out_of_fold_probs

        text_column = _text_column(self.task, self.data)
        out_dir = Path(self.output.dir).expanduser()
        # Absolute, so the teacher's label recipes (whose output dirs are subfolders) all share this one cache.
        cache = str(self.output.path(self.output.cache).resolve()) if self.output.cache else None
        timings: dict[str, float] = {}
        start = time.perf_counter()
        backend = load_backend(self.model.backend, model=self.model.name, **self.model.options)
        try:
            teacher = _label_recipe(self, "teacher", self.model, self.data, self.task, self.labeling,
                                    out_dir / "teacher", cache)
            from llmlabel.pipeline import run_recipe

            teacher_summary = run_recipe(teacher, progress=progress, backend=backend)
            timings["teacher_labeling"] = time.perf_counter() - start
            teacher_eval = None
            if self.eval_data is not None and self.evaluate_teacher:
                begin = time.perf_counter()
                teacher_eval = run_recipe(_label_recipe(self, "teacher-eval", self.model, self.eval_data, self.task,
                                                        self.labeling, out_dir / "teacher_eval", cache),
                                          progress=progress, backend=backend)
                timings["teacher_eval"] = time.perf_counter() - begin
        finally:
            backend.close()

        rows = [r for r in Dataset(teacher_summary["predictions"]) if r.get("status") == "ok"]
        if not rows:
            raise DataError(f"the teacher produced no usable labels in {teacher_summary['predictions']}")
        from llmlabel.pipeline import build_task

        names = build_task(teacher, Dataset(self.data.path, split=self.data.split, limit=self.data.limit)).names
        texts = [str(r[text_column]) for r in rows]
        probs = np.array([[float(r["label_probs"].get(n, 0.0)) for n in names] for r in rows])
        hard = probs.argmax(axis=1)
        confidence = np.array([float(r["confidence"]) for r in rows])
        weights = confidence_weights(confidence, self.filter.min_confidence, self.filter.weight_by_confidence)
        selection: dict[str, Any] = {"rows_labeled": teacher_summary["rows"], "rows_ok": len(rows),
                                     "dropped_low_confidence": int((weights == 0).sum())}
        if self.filter.drop_label_issues:
            begin = time.perf_counter()
            oof = out_of_fold_probs(texts, hard, len(names), self.filter.issue_features, folds=self.filter.folds)
            issues = find_label_issues(hard, oof, self.filter.issue_method)
            selection["dropped_label_issues"] = int((issues & (weights > 0)).sum())
            weights[issues] = 0.0
            timings["label_issues"] = time.perf_counter() - begin
        selection["rows_kept"] = int((weights > 0).sum())
        gold_column = _gold_column(self.data.label_field)
        if gold_column and all(gold_column in r for r in rows):
            # With gold on the training rows, show whether selection kept the right labels.
            correct = np.array([names[h] == str(r[gold_column]) for h, r in zip(hard, rows)])
            kept = weights > 0
            selection["teacher_label_accuracy_all"] = float(correct.mean())
            selection["teacher_label_accuracy_kept"] = float(correct[kept].mean()) if kept.any() else None

        begin = time.perf_counter()
        student = Student(names, self.student)
        targets = probs if self.targets == "soft" else hard
        student.fit(texts, targets, weights=weights, progress=progress)
        timings["student_training"] = time.perf_counter() - begin
        label_source = (f"{self.targets} labels from {backend.model_id} ({self.labeling.mode} mode) on "
                        f"{selection['rows_kept']} of {selection['rows_labeled']} rows of {self.data.path}")
        student_dir = student.save(out_dir / "student", info={"name": self.name, "label_source": label_source,
                                                              "selection": selection})
        del student
        summary: dict[str, Any] = {"recipe": self.name, "teacher": backend.model_id, "student": str(student_dir),
                                   "selection": selection, "teacher_train_metrics": teacher_summary.get("metrics")}
        metrics: dict[str, Any] = {}
        if self.eval_data is not None:
            begin = time.perf_counter()
            eval_rows = list(Dataset(self.eval_data.path, split=self.eval_data.split, limit=self.eval_data.limit))
            eval_column = _text_column(self.task, self.eval_data)
            classifier = StudentClassifier(student_dir, dtype=self.student.save_dtype, device=self.student.device)
            results = classifier.label_texts([r.get(eval_column) for r in eval_rows])
            timings["student_eval"] = time.perf_counter() - begin
            label_field = self.eval_data.label_field
            write_rows((merge_result(r, res, label_field) for r, res in zip(eval_rows, results)),
                       out_dir / "student_eval" / "predictions.jsonl")
            if label_field and all(label_field in r for r in eval_rows):
                gold = [str(r[label_field]) for r in eval_rows]
                report = evaluate(gold, [r.label for r in results], names, [r.confidence for r in results])
                report["items_per_second"] = len(eval_rows) / max(timings["student_eval"], 1e-9)
                summary["student_metrics"] = report
                metrics = {"eval_data": self.eval_data.path, "eval_rows": len(eval_rows),
                           "accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "ece": report["ece"]}
            if teacher_eval is not None and "metrics" in teacher_eval:
                summary["teacher_metrics"] = teacher_eval["metrics"]
                metrics["teacher_accuracy"] = teacher_eval["metrics"]["accuracy"]
            update_student_record(student_dir, metrics)
        summary["metrics"] = metrics
        summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
        report_path = self.output.path(self.output.report)
        _write_json(summary, report_path)
        summary["report"] = str(report_path)
        return summary

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Rows kept, teacher vs student accuracy, where the student and report are."""
        sel = summary["selection"]
        lines = [f"teacher labels: {sel['rows_ok']} ok of {sel['rows_labeled']}, kept {sel['rows_kept']} "
                 f"(low confidence {sel['dropped_low_confidence']}, label issues "
                 f"{sel.get('dropped_label_issues', '-')})"]
        metrics = summary.get("metrics") or {}
        if "accuracy" in metrics:
            teacher = metrics.get("teacher_accuracy")
            lines.append(f"eval accuracy: student {metrics['accuracy']:.4f}"
                         + (f", teacher {teacher:.4f}" if teacher is not None else "")
                         + f" ({metrics['eval_rows']} rows)")
        lines += [f"student: {summary['student']}", f"report: {summary['report']}"]
        return lines


class WeakToStrongRecipe(RecipeBase):
    """Burns et al.'s weak-to-strong experiment on a labeled pool: weak, w2s (CE / aux / bootstrap), ceiling, PGR."""

    kind: Literal["weak_to_strong"] = "weak_to_strong"
    #: the labeled pool split into halves A and B (needs gold labels)
    data: DataConfig
    #: held-out gold rows every model is scored on
    eval_data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    half_size: int = Field(500, gt=1)
    weak: WeakConfig = Field(default_factory=WeakConfig)
    #: the LLM used when weak.kind is 'labeler' (zero-shot weak supervisor)
    model: ModelConfig = Field(default_factory=ModelConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    losses: list[Literal["ce", "aux"]] = Field(default_factory=lambda: ["ce", "aux"], min_length=1)
    #: intermediate students for bootstrapping, as student overrides (e.g. [{method: head}]); [] = no bootstrapping
    bootstrap: list[dict[str, Any]] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/weak_to_strong"))

    def _load(self, data: DataConfig, names: list[str]) -> tuple[list[str], list[int]]:
        from llmlabel.data import Dataset

        column = _text_column(self.task, data)
        if not data.label_field:
            raise ConfigError("weak_to_strong needs gold labels: set data.label_field and eval_data.label_field")
        texts, gold = [], []
        for number, row in enumerate(Dataset(data.path, split=data.split, limit=data.limit), 1):
            if column not in row or data.label_field not in row:
                from llmlabel.errors import unknown

                missing = column if column not in row else data.label_field
                raise DataError(f"{data.path} row {number}: " + unknown("column", missing, row.keys()))
            label = str(row[data.label_field])
            if label not in names:
                from llmlabel.errors import unknown

                raise DataError(f"{data.path} row {number}: " + unknown("label", label, names))
            texts.append(str(row[column]))
            gold.append(names.index(label))
        if not texts:
            raise DataError(f"dataset {data.path} is empty")
        return texts, gold

    def _labeler_probs(self, pool: list[str], test: list[str], needed: list[int], names: list[str],
                       progress: bool) -> tuple[Any, Any]:
        """Zero-shot LLM probabilities for the needed pool rows and every test row (cached in output.dir)."""
        import numpy as np

        from llmlabel.backends.base import load_backend
        from llmlabel.cache import ResultCache
        from llmlabel.labeling.labeler import Labeler
        from llmlabel.core.task import LabelTask

        fields = self.task.model_dump(exclude={"labels"})
        task = LabelTask(labels=self.task.labels or names, **fields)
        backend = load_backend(self.model.backend, model=self.model.name, **self.model.options)
        cache = ResultCache(self.output.path(self.output.cache)) if self.output.cache else None
        try:
            labeler = Labeler(backend, task, mode=self.labeling.mode, normalize=self.labeling.normalize,
                              calibration=self.labeling.calibration, examples=self.labeling.examples,
                              prompt=self.labeling.prompt, cache=cache, chunk_size=self.labeling.chunk_size,
                              max_answer_tokens=self.labeling.max_answer_tokens, progress=progress,
                              answer_prefix=self.labeling.answer_prefix)

            def probs(texts: list[str]) -> Any:
                results = labeler.label_texts(texts)
                return np.array([[r.label_probs.get(n, 0.0) for n in names] for r in results])

            pool_probs = np.full((len(pool), len(names)), 1.0 / len(names))
            pool_probs[needed] = probs([pool[i] for i in needed])
            return pool_probs, probs(test)
        finally:
            if cache is not None:
                cache.close()
            backend.close()

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Every seed of the experiment; returns the summary written to report.json."""
        from llmlabel.data import Dataset, load_labels_file
        from llmlabel.training.student import FeatureCache
        from llmlabel.training.weak_to_strong import run_seed, split_halves, summarize

        if self.task.labels is not None:
            names = list(self.task.labels)
        else:
            labels_file = Dataset(self.data.path, split=self.data.split).labels_file
            if labels_file is None:
                raise ConfigError("no labels given: set task.labels, or put a labels.json beside the data")
            names = load_labels_file(labels_file)
        pool_texts, pool_gold = self._load(self.data, names)
        test_texts, test_gold = self._load(self.eval_data, names)
        for seed in self.seeds:
            split_halves(len(pool_texts), self.half_size, seed)  # fail on a too-small pool before any model loads
        weak_probs = None
        if self.weak.kind == "labeler":
            needed = sorted({int(i) for seed in self.seeds
                             for i in split_halves(len(pool_texts), self.half_size, seed)[1]})
            weak_probs = self._labeler_probs(pool_texts, test_texts, needed, names, progress)
        features = FeatureCache(self.student.model, self.student.max_length, self.student.feature_dtype,
                                self.student.device)
        records = []
        start = time.perf_counter()
        for seed in self.seeds:
            record = run_seed(pool_texts, pool_gold, test_texts, test_gold, names, self.half_size, seed,
                              weak=self.weak, student=self.student, losses=self.losses, bootstrap=self.bootstrap,
                              features=features, weak_probs=weak_probs, progress=progress)
            records.append(record)
            log.info("weak-to-strong seed %d: %s", seed, json.dumps({k: record[k] for k in record
                                                                       if k in ("weak", "ceiling", "pgr")}))
        summary = {"recipe": self.name, "labels": names, "pool_rows": len(pool_texts), "eval_rows": len(test_texts),
                   "half_size": self.half_size, "weak": self.weak.model_dump(),
                   "student": self.student.model_dump(), "records": records, "summary": summarize(records),
                   "seconds": round(time.perf_counter() - start, 1)}
        report_path = self.output.path(self.output.report)
        _write_json(summary, report_path)
        summary["report"] = str(report_path)
        return summary

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Accuracy (mean ± std over seeds) of weak, each w2s variant and the ceiling, with PGR."""
        stats = summary["summary"]
        seeds = len(summary["records"])

        def fmt(s: dict[str, float]) -> str:
            return f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if seeds > 1 else "")

        lines = [f"{summary['half_size']} rows per half, {seeds} seed(s), {summary['eval_rows']} eval rows",
                 f"weak     {fmt(stats['weak'])}"]
        for name, pgr in stats["pgr"].items():
            lines.append(f"{name.replace('w2s_', 'w2s-'):<8} {fmt(stats[name])}   PGR {fmt(pgr)}")
        lines.append(f"ceiling  {fmt(stats['ceiling'])}")
        if "aux_minus_ce" in stats:
            diff = stats["aux_minus_ce"]
            lines.append(f"aux - ce {diff['mean']:+.4f}" + (f" ± {diff['std']:.4f}" if seeds > 1 else "")
                         + (" (beyond the seed spread)" if diff["aux_beats_ce_beyond_spread"] else ""))
        lines.append(f"report: {summary['report']}")
        return lines


class SymbolTuningRecipe(RecipeBase):
    """Symbol tuning (Wei et al. 2023), then the ICL stress suite on held-out tasks, base vs tuned, per seed.

    Per seed: build symbol-remapped prompts from `tuning.datasets` (seeded), LoRA-tune `model.name` on them, save the
    adapter under output.dir/seed<N>/adapter, and run the stress suite (`eval`) with the base model and with the
    adapter (`model.backend` with its `adapter` option), the same exemplars for both. Writes report.json with every
    seed's accuracies and the mean ± std summary.
    """

    kind: Literal["symbol_tuning"] = "symbol_tuning"
    #: the model tuned and evaluated (backend and options are used for the evaluation)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tuning: SymbolTuningConfig
    eval: StressConfig
    #: each seed tunes its own adapter (prompt sampling, LoRA init, batch order) and draws its own eval exemplars
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    #: evaluate the base model too (off: only the tuned adapters are scored)
    evaluate_base: bool = True
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/symbol_tuning", cache=None))

    @model_validator(mode="after")
    def _held_out(self) -> "SymbolTuningRecipe":
        from llmlabel.training.icl_stress import task_name
        from llmlabel.training.symbol_tuning import source_name

        tuned = {source_name(d.path) for d in self.tuning.datasets}
        for task in self.eval.tasks:
            if source_name(task.data.path) in tuned:
                raise ValueError(f"eval task '{task_name(task)}' is also a tuning dataset; the stress suite measures "
                                 f"tasks not used in tuning (tuning: {', '.join(sorted(tuned))})")
        if "adapter" in self.model.options:
            raise ValueError("model.options.adapter is set by the recipe itself (each seed's tuned adapter); "
                             "remove it")
        return self

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Tune and evaluate every seed; returns the summary written to report.json."""
        from llmlabel.backends.base import load_backend
        from llmlabel.training.icl_stress import evaluate_stress, summarize
        from llmlabel.training.symbol_tuning import build_symbol_prompts, load_source, train_symbol_lora

        out_dir = Path(self.output.dir).expanduser()
        records = []
        start = time.perf_counter()
        base = None
        try:
            for seed in self.seeds:
                record: dict[str, Any] = {"seed": seed}
                begin = time.perf_counter()
                sources = [load_source(d, self.tuning.rows_per_label, seed=seed) for d in self.tuning.datasets]
                prompts = build_symbol_prompts(sources, self.tuning, self.tuning.prompts, seed=seed)
                adapter = out_dir / f"seed{seed}" / "adapter"
                info = train_symbol_lora(self.model.name, self.tuning, prompts, adapter, seed=seed,
                                         progress=progress)
                record["tuning"] = {k: info[k] for k in ("seconds", "prompts", "prompts_dropped_too_long",
                                                         "loss_first10", "loss_last10", "sources")}
                record["adapter"] = str(adapter)
                if self.evaluate_base:
                    if base is None:
                        base = load_backend(self.model.backend, model=self.model.name, **self.model.options)
                    record["base"] = evaluate_stress(base, self.eval, seed, progress=progress)
                tuned = load_backend(self.model.backend, model=self.model.name, adapter=str(adapter),
                                     **self.model.options)
                try:
                    record["tuned"] = evaluate_stress(tuned, self.eval, seed, progress=progress)
                finally:
                    tuned.close()
                record["seconds"] = round(time.perf_counter() - begin, 1)
                records.append(record)
                log.info("symbol tuning seed %d: %s", seed, json.dumps({k: record.get(k) for k in ("base", "tuned")}))
        finally:
            if base is not None:
                base.close()
        summary = {"recipe": self.name, "model": self.model.model_dump(), "seeds": self.seeds,
                   "tuning": self.tuning.model_dump(), "eval": self.eval.model_dump(), "records": records,
                   "summary": summarize(records) if self.evaluate_base else None,
                   "seconds": round(time.perf_counter() - start, 1)}
        report_path = self.output.path(self.output.report)
        _write_json(summary, report_path)
        summary["report"] = str(report_path)
        return summary

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Per task and setting: base and tuned accuracy (mean ± std over seeds) and the gain."""
        lines = [f"{len(summary['records'])} seed(s); tuning {summary['records'][0]['tuning']['seconds']}s per seed"]
        for task, settings in (summary.get("summary") or {}).items():
            for setting, row in settings.items():
                if not row.get("base"):
                    continue
                lines.append(f"{task:<10} {setting:<9} base {row['base']['mean']:.3f} ± {row['base']['std']:.3f}  "
                             f"tuned {row['tuned']['mean']:.3f} ± {row['tuned']['std']:.3f}  "
                             f"gain {row['gain']:+.3f}" + (" (beyond the seed spread)" if row["beyond_spread"] else ""))
        lines.append(f"report: {summary['report']}")
        return lines


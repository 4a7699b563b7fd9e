"""The `distill_student` kind: label rows with an LLM (the teacher, through the label kind, so every `labeling:`
option is honoured), select and weight its labels, train a student on them, evaluate both."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmlabel.config import DataConfig, OutputConfig
from llmlabel.errors import DataError
from llmlabel.kinds.base import LabelingKind, RunContext
from llmlabel.training.recipes import FilterConfig, text_column
from llmlabel.training.student import StudentConfig


@dataclass
class Distilled:
    """What the run produced, for the report."""

    timings: dict[str, float] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    teacher_eval: dict[str, Any] | None = None
    teacher_model: str = ""
    selection: dict[str, Any] = field(default_factory=dict)
    student_dir: Any = None
    student_metrics: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class DistillStudentRecipe(LabelingKind):
    """Label rows with an LLM (the teacher), select and weight its labels, train a student on them, evaluate both.

    Writes under `output.dir`: teacher/ (predictions + report of the labeled rows), student/ (the saved student with
    student.json and a model card), student_eval/ and teacher_eval/ (predictions on `eval_data`), report.json.
    """

    kind: Literal["distill_student"] = "distill_student"
    # model: the teacher; data: rows the teacher labels for training (gold labels there, if any, only measure the
    # teacher's label accuracy)
    #: train on the teacher's label distribution ('soft') or its label ('hard')
    targets: Literal["soft", "hard"] = "soft"
    filter: FilterConfig = Field(default_factory=FilterConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    #: gold-labeled rows to score the student (and the teacher) on
    eval_data: DataConfig | None = None
    evaluate_teacher: bool = True
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/distill"))

    def _teacher_recipe(self, name: str, data: DataConfig, folder: str) -> Any:
        """A `label` recipe that labels `data` with the teacher into `folder` (the cache shared across calls)."""
        from llmlabel.kinds.label import Recipe

        # Absolute, so the teacher's label recipes (whose output dirs are subfolders) all share this one cache.
        cache = str(self.output.path(self.output.cache).resolve()) if self.output.cache else None
        return Recipe(name=f"{self.name}-{name}", model=self.model, data=data, task=self.task, labeling=self.labeling,
                      output=OutputConfig(dir=str(Path(self.output.dir).expanduser() / folder), cache=cache),
                      evaluate=True)

    def prepare(self, ctx: RunContext) -> list[str]:
        """Refuse pair and multi-label tasks; the label names (before any model loads)."""
        from llmlabel.kinds.label import read_task

        text_column(self.task, self.data)
        return read_task(self._teacher_recipe("teacher", self.data, "teacher"))[1].names

    def execute(self, ctx: RunContext, names: list[str]) -> Distilled:
        """Label with the teacher, select its labels, train and save the student, evaluate."""
        import numpy as np

        from llmlabel.data import Dataset

        run = Distilled()
        self._teach(ctx, run)
        rows = [r for r in Dataset(run.teacher["predictions"]) if r.get("status") == "ok"]
        if not rows:
            raise DataError(f"the teacher produced no usable labels in {run.teacher['predictions']}")
        texts = [str(r[text_column(self.task, self.data)]) for r in rows]
        probs = np.array([[float(r["label_probs"].get(n, 0.0)) for n in names] for r in rows])
        weights = self._select(run, rows, texts, probs, names)
        self._train(ctx, run, texts, probs, weights, names)
        if self.eval_data is not None:
            self._evaluate(run, names)
        return run

    def _teach(self, ctx: RunContext, run: Distilled) -> None:
        start = time.perf_counter()
        run.teacher = ctx.label(self._teacher_recipe("teacher", self.data, "teacher"), share_backend=True)
        run.timings["teacher_labeling"] = time.perf_counter() - start
        if self.eval_data is not None and self.evaluate_teacher:
            begin = time.perf_counter()
            run.teacher_eval = ctx.label(self._teacher_recipe("teacher-eval", self.eval_data, "teacher_eval"),
                                         share_backend=True)
            run.timings["teacher_eval"] = time.perf_counter() - begin
        run.teacher_model = ctx.backend().model_id
        ctx.close()  # the LLM is done: free it before the student trains

    def _select(self, run: Distilled, rows: list[dict[str, Any]], texts: list[str], probs: Any,
                names: list[str]) -> Any:
        """The weight of each teacher label (0: dropped for low confidence or as a likely label issue)."""
        import numpy as np

        from llmlabel.core.results import gold_column
        from llmlabel.training.filters import confidence_weights, find_label_issues
        from llmlabel.training.weak import out_of_fold_probs

        flt, hard = self.filter, probs.argmax(axis=1)
        confidence = np.array([float(r["confidence"]) for r in rows])
        weights = confidence_weights(confidence, flt.min_confidence, flt.weight_by_confidence)
        selection: dict[str, Any] = {"rows_labeled": run.teacher["rows"], "rows_ok": len(rows),
                                     "dropped_low_confidence": int((weights == 0).sum())}
        if flt.drop_label_issues:
            begin = time.perf_counter()
            oof = out_of_fold_probs(texts, hard, len(names), flt.issue_features, folds=flt.folds)
            issues = find_label_issues(hard, oof, flt.issue_method)
            selection["dropped_label_issues"] = int((issues & (weights > 0)).sum())
            weights[issues] = 0.0
            run.timings["label_issues"] = time.perf_counter() - begin
        selection["rows_kept"] = int((weights > 0).sum())
        gold = gold_column(self.data.label_field)
        if gold and all(gold in r for r in rows):
            # With gold on the training rows, show whether selection kept the right labels.
            correct = np.array([names[h] == str(r[gold]) for h, r in zip(hard, rows)])
            kept = weights > 0
            selection["teacher_label_accuracy_all"] = float(correct.mean())
            selection["teacher_label_accuracy_kept"] = float(correct[kept].mean()) if kept.any() else None
        run.selection = selection
        return weights

    def _train(self, ctx: RunContext, run: Distilled, texts: list[str], probs: Any, weights: Any,
               names: list[str]) -> None:
        from llmlabel.training.student import Student

        begin = time.perf_counter()
        student = Student(names, self.student)
        student.fit(texts, probs if self.targets == "soft" else probs.argmax(axis=1), weights=weights,
                    progress=ctx.progress)
        run.timings["student_training"] = time.perf_counter() - begin
        sel = run.selection
        label_source = (f"{self.targets} labels from {run.teacher_model} ({self.labeling.mode} mode) on "
                        f"{sel['rows_kept']} of {sel['rows_labeled']} rows of {self.data.path}")
        run.student_dir = student.save(Path(self.output.dir).expanduser() / "student",
                                       info={"name": self.name, "label_source": label_source, "selection": sel})

    def _evaluate(self, run: Distilled, names: list[str]) -> None:
        """Score the saved student (and the teacher) on `eval_data`; record it in the student's card."""
        from llmlabel.data import Dataset
        from llmlabel.io import write_rows
        from llmlabel.metrics import evaluate
        from llmlabel.training.student import StudentClassifier, merge_result, update_student_record

        data, begin = self.eval_data, time.perf_counter()
        eval_rows = list(Dataset(data.path, split=data.split, limit=data.limit))
        classifier = StudentClassifier(run.student_dir, dtype=self.student.save_dtype, device=self.student.device)
        results = classifier.label_texts([r.get(text_column(self.task, data)) for r in eval_rows])
        run.timings["student_eval"] = time.perf_counter() - begin
        write_rows((merge_result(r, res, data.label_field) for r, res in zip(eval_rows, results)),
                   Path(self.output.dir).expanduser() / "student_eval" / "predictions.jsonl")
        metrics: dict[str, Any] = {}
        if data.label_field and all(data.label_field in r for r in eval_rows):
            gold = [str(r[data.label_field]) for r in eval_rows]
            report = evaluate(gold, [r.label for r in results], names, [r.confidence for r in results])
            report["items_per_second"] = len(eval_rows) / max(run.timings["student_eval"], 1e-9)
            run.student_metrics = report
            metrics = {"eval_data": data.path, "eval_rows": len(eval_rows), "accuracy": report["accuracy"],
                       "macro_f1": report["macro_f1"], "ece": report["ece"]}
        if run.teacher_eval is not None and "metrics" in run.teacher_eval:
            metrics["teacher_accuracy"] = run.teacher_eval["metrics"]["accuracy"]
        update_student_record(run.student_dir, metrics)
        run.metrics = metrics

    def report(self, ctx: RunContext, names: list[str], run: Distilled) -> dict[str, Any]:
        """Teacher, student, selection, metrics and timings."""
        summary: dict[str, Any] = {"recipe": self.name, "teacher": run.teacher_model, "student": str(run.student_dir),
                                   "selection": run.selection, "teacher_train_metrics": run.teacher.get("metrics")}
        if run.student_metrics is not None:
            summary["student_metrics"] = run.student_metrics
        if run.teacher_eval is not None and "metrics" in run.teacher_eval:
            summary["teacher_metrics"] = run.teacher_eval["metrics"]
        summary["metrics"] = run.metrics
        summary["seconds"] = {k: round(v, 1) for k, v in run.timings.items()}
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

"""The `label` kind: read data, build the task and backend, label with caching, write predictions, evaluate, report.

It runs on the local executor (its own `execute`) or the ray one (`llmlabel.executors.ray`, which returns a
`Labeled` of the same shape); `report` is the one finish of both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from llmlabel.config import OutputConfig, RayConfig
from llmlabel.data import Dataset, load_labels_file
from llmlabel.errors import ConfigError, DataError, Interrupted
from llmlabel.kinds.base import LabelingKind, RunContext

log = logging.getLogger("llmlabel")


def build_task(recipe: Any, dataset: Dataset) -> Any:
    """The LabelTask of a recipe (its `task` and `data` sections); labels default to the dataset's labels.json."""
    from pydantic import ValidationError

    from llmlabel.core.task import LabelTask

    labels: Any = recipe.task.labels
    where = "task"
    if labels is None:
        if dataset.labels_file is None:
            raise ConfigError("no labels given: set task.labels in the recipe (or --labels), or put a labels.json "
                              "beside the data")
        labels = load_labels_file(dataset.labels_file)
        where = str(dataset.labels_file)
    fields = recipe.task.model_dump(exclude={"labels"})
    try:
        return LabelTask(labels=labels, text_field=recipe.data.text_field,
                         text_pair_field=recipe.data.text_pair_field, label_field=recipe.data.label_field, **fields)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {validation_reason(exc)}") from None


def validation_reason(exc: Any) -> str:
    """The reasons of a pydantic ValidationError in one line (its text ends in a documentation URL, not a reason)."""
    reasons = []
    for err in exc.errors():
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()))
        if err.get("type") == "too_short" and loc == "labels":
            msg = "no labels given (the list is empty)"
        reasons.append(msg if not loc or err.get("type") == "value_error" or loc == "labels" else f"{loc}: {msg}")
    return "; ".join(reasons) or str(exc).splitlines()[0]


def check_data(task: Any, dataset: Dataset) -> bool:
    """Fail fast, before any model loads: empty data, missing columns, gold labels outside the label space.

    Returns whether the rows carry gold labels.
    """
    first = next(iter(dataset), None)
    if first is None:
        raise DataError(f"dataset {dataset.source} is empty")
    task.texts(first)
    if not task.label_field:
        return False
    has_gold = False
    for row in dataset:  # every gold value is checked; rows without one are labeled, not evaluated
        has_gold = task.gold(row) is not None or has_gold
    return has_gold


def read_task(recipe: Any) -> tuple[Dataset, Any]:
    """The recipe's dataset and task (`data` and `task` sections)."""
    dataset = Dataset(recipe.data.path, split=recipe.data.split, limit=recipe.data.limit)
    return dataset, build_task(recipe, dataset)


@dataclass
class Prepared:
    """What `prepare` found: the rows, the task, and whether the rows are evaluated against gold."""

    dataset: Dataset
    task: Any
    evaluating: bool


@dataclass
class GoldTally:
    """Gold, predictions and confidences of the evaluated rows, gathered while the rows stream past."""

    gold: list[Any] = field(default_factory=list)
    pred: list[Any] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    without_gold: int = 0

    def add(self, row_gold: Any, label: Any, confidence: float) -> None:
        """Count one row (a row without gold is labeled, counted, not evaluated)."""
        if row_gold is None:
            self.without_gold += 1
        else:
            self.gold.append(row_gold)
            self.pred.append(label)
            self.confidences.append(confidence)

    def evaluation(self, names: list[str], cost: dict[str, Any]) -> dict[str, Any]:
        """The metrics report of the counted rows."""
        from llmlabel.metrics import evaluate

        report = evaluate(self.gold, self.pred, names, self.confidences)
        report["rows_without_gold"] = self.without_gold
        report["cost"] = cost
        return report


@dataclass
class Labeled:
    """What an executor's labeling produced, for `Recipe.report`: the same from the local and the ray executor."""

    predictions: Any
    rows: int
    stats: dict[str, Any]
    backend: str
    model: str
    tally: GoldTally
    #: keys only this executor reports (local: model loading, task, prompt; ray: the executor's own account)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the chosen settings of a labeling method and their cross-fitted evidence (None: no method)
    method_report: dict[str, Any] | None = None
    #: local runs: the Labeler, its stats and the backend (for the API ledger and the HF dataset)
    labeler: Any = None
    backend_object: Any = None


class Recipe(LabelingKind):
    """A labeling recipe: model + data + task + labeling + output, and whether to evaluate against gold."""

    kind: Literal["label"] = "label"
    output: OutputConfig = Field(default_factory=OutputConfig)
    evaluate: bool = True
    ray: RayConfig = Field(default_factory=RayConfig)

    executors_supported: ClassVar[tuple[str, ...]] = ("local", "ray")
    defer_model_load: ClassVar[bool] = True
    html_report: ClassVar[bool] = True

    def prepare(self, ctx: RunContext) -> Prepared:
        """Read the data and build the task; fail on empty data, missing columns or bad gold before a model loads."""
        dataset, task = read_task(self)
        has_gold = check_data(task, dataset)
        return Prepared(dataset, task, self.evaluate and has_gold and not task.multi_label)

    def execute(self, ctx: RunContext, state: Prepared) -> Labeled:
        """Label the rows in this process, streaming each to the predictions file as it is labeled."""
        from llmlabel.io import write_rows
        from llmlabel.labeling.config import build_engine

        tally, task, setup = GoldTally(), state.task, None
        backend = ctx.backend()  # loaded only when a row needs computing: a fully cached re-run never loads it

        def labeled_rows() -> Any:
            for row, result in setup.engine.iter_label(state.dataset, total=len(state.dataset)):
                if state.evaluating:
                    tally.add(task.gold(row), result.label, result.confidence)
                yield setup.engine.merge(row, result)

        try:
            setup = build_engine(self, task, backend, ctx.cache(), ctx.progress)
            loaded_before_labeling = float(getattr(backend, "load_seconds", 0.0))  # a method's fit may load it
            predictions = write_rows(labeled_rows(), self.output.path(self.output.predictions))
        except KeyboardInterrupt:
            raise self._interrupted(setup.engine if setup else None, ctx.cache()) from None
        return self._labeled(setup, backend, predictions, tally, task, loaded_before_labeling)

    def _labeled(self, setup: Any, backend: Any, predictions: Any, tally: GoldTally, task: Any,
                 loaded_before_labeling: float) -> Labeled:
        # The model loads inside the first chunk that needs it; its load time is reported apart from labeling time.
        engine, labeler = setup.engine, setup.labeler
        load_seconds = float(getattr(backend, "load_seconds", 0.0))
        engine.stats.seconds = max(engine.stats.seconds - (load_seconds - loaded_before_labeling), 0.0)
        extra = {
            # False when every row (and calibration probe) came from the cache and the model was never loaded
            "model_loaded": bool(getattr(backend, "loaded", True)), "model_load_seconds": round(load_seconds, 3),
            # what the review loop and the HTML report need to read the run back: the label set, columns, prompt
            "task": {"labels": task.names, "text_field": task.text_field, "text_pair_field": task.text_pair_field,
                     "label_field": task.label_field, "multi_label": task.multi_label},
            "prompt": labeler.template.id,
        }
        return Labeled(predictions, engine.stats.rows, engine.stats.as_dict(), backend.name, backend.model_id, tally,
                       extra, dict(engine.report) if setup.has_method else None, labeler, backend)

    def _interrupted(self, engine: Any, cache: Any) -> Interrupted:
        """The interrupt of a run, saying what was kept: rows labeled so far are in the cache, outputs untouched."""
        done = engine.stats.rows if engine is not None else 0
        predictions = self.output.path(self.output.predictions)
        kept = f"the previous {predictions.name} is kept" if predictions.exists() else f"no {predictions.name} written"
        if cache is None:
            return Interrupted(f"interrupted after {done} rows; output.cache is off, so nothing was kept ({kept})")
        return Interrupted(f"interrupted after {done} rows; finished rows are cached in {cache.path}: run the same "
                           f"command again to resume ({kept})")

    def report(self, ctx: RunContext, state: Prepared, result: Labeled) -> dict[str, Any]:
        """The summary of either executor: counts, stats, method evidence, API ledger, metrics, HF dataset."""
        summary: dict[str, Any] = {
            "recipe": self.name, "backend": result.backend, "model": result.model, "mode": self.labeling.mode,
            "rows": result.rows, "predictions": str(result.predictions), "stats": result.stats,
            "invalid_utf8_rows": state.dataset.invalid_utf8_rows, **result.extra}
        if self.labeling.method is not None:
            summary["mode"] = f"{self.labeling.method.name} over {self.labeling.mode}"
            summary["method"] = dict(result.method_report or {})
            if result.labeler is not None:
                summary["llm_stats"] = result.labeler.stats.as_dict()
        if result.labeler is not None:
            self._api_ledger(summary, result)
        if state.evaluating:
            summary["metrics"] = result.tally.evaluation(state.task.names, result.stats)
        if self.output.hf_dataset and result.labeler is not None:
            from llmlabel.hub import write_hf_dataset

            summary["hf_dataset"] = str(write_hf_dataset(result.predictions, self.output.path(self.output.hf_dataset),
                                                         self, result.labeler, summary))
        return summary

    @staticmethod
    def _api_ledger(summary: dict[str, Any], result: Labeled) -> None:
        # API endpoints: how labels were asked, and the token and cost ledger. Asked through the class-level
        # capability first: any other attribute of a lazy backend would load the model a fully cached run never needed.
        backend = result.backend_object
        if getattr(backend, "supports_decide", False) and hasattr(backend, "api_report"):
            summary["api"] = backend.api_report(result.stats["computed"])
            plan = result.labeler.option_plan  # how the decision endpoint was asked (direct, shortlist, two-level)
            if plan is not None:
                summary["api"]["options"] = plan.describe()

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """What was labeled, how fast, what went wrong, the metrics, and where the outputs are."""
        stats = summary["stats"]
        lines = [f"labeled {summary['rows']} rows with {summary['backend']} ({summary['mode']} mode) in "
                 f"{stats['seconds']:.1f} s ({stats['items_per_second']:.1f} items/s; {stats['cached']} from cache)"]
        problems = {k: v for k, v in stats["statuses"].items() if k != "ok"}
        invalid = stats.get("invalid_text", 0) + summary.get("invalid_utf8_rows", 0)
        notes = [f"{k} {v}" for k, v in problems.items()]
        notes += [f"truncated {stats['truncated']}"] if stats["truncated"] else []
        notes += [f"invalid text (shown as U+FFFD) {invalid}"] if invalid else []
        lines += ["rows not ok: " + ", ".join(notes)] if notes else []
        if problems.get("failed"):
            lines.append("failed rows are not cached: run the same command again to retry only them")
        if "executor" in summary:
            ex = summary["executor"]
            lines.append(f"executor {ex['name']}: {ex['workers']} workers, {ex['shards']} shards of "
                         f"{ex['shard_size']} rows ({ex['shards_reused']} reused from an earlier run)")
        if "api" in summary:
            from llmlabel.backends.api import summary_line

            lines.append(summary_line(summary["api"]))
        if "metrics" in summary:
            from llmlabel.metrics import format_report

            lines.append(format_report(summary["metrics"]))
            if summary["metrics"].get("rows_without_gold"):
                lines.append(f"{summary['metrics']['rows_without_gold']} rows have no gold label: labeled, not "
                             "evaluated")
        lines.append(f"predictions: {summary['predictions']}\nreport: {summary['report']}")
        if summary.get("hf_dataset"):
            lines.append(f"dataset (datasets.load_from_disk, push_to_hub): {summary['hf_dataset']}")
        return lines

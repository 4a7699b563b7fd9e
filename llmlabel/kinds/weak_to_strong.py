"""The `weak_to_strong` kind: Burns et al.'s weak-to-strong experiment on a labeled pool (weak, w2s with CE / aux /
bootstrap, ceiling, PGR). With `weak.kind: labeler` the weak supervisor is the LLM, labeling through the shared
`labeling:` mapping (`llmlabel.labeling.config`), so calibration, selection and method are honoured."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from pydantic import Field

from llmlabel.config import DataConfig, LabelingConfig, ModelConfig, OutputConfig, TaskConfig
from llmlabel.errors import ConfigError, DataError, unknown
from llmlabel.kinds.base import RecipeKind, RunContext
from llmlabel.training.recipes import text_column
from llmlabel.training.student import StudentConfig
from llmlabel.training.weak_to_strong import WeakConfig

log = logging.getLogger("llmlabel")


class WeakToStrongRecipe(RecipeKind):
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

        column = text_column(self.task, data)
        if not data.label_field:
            raise ConfigError("weak_to_strong needs gold labels: set data.label_field and eval_data.label_field")
        texts, gold = [], []
        for number, row in enumerate(Dataset(data.path, split=data.split, limit=data.limit), 1):
            if column not in row or data.label_field not in row:
                missing = column if column not in row else data.label_field
                raise DataError(f"{data.path} row {number}: " + unknown("column", missing, row.keys()))
            label = str(row[data.label_field])
            if label not in names:
                raise DataError(f"{data.path} row {number}: " + unknown("label", label, names))
            texts.append(str(row[column]))
            gold.append(names.index(label))
        if not texts:
            raise DataError(f"dataset {data.path} is empty")
        return texts, gold

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        """The label names, the pool and the eval rows; a too-small pool fails here, before any model loads."""
        from llmlabel.data import Dataset, load_labels_file
        from llmlabel.training.weak_to_strong import split_halves

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
            split_halves(len(pool_texts), self.half_size, seed)
        return {"names": names, "pool": (pool_texts, pool_gold), "test": (test_texts, test_gold)}

    def _labeler_probs(self, ctx: RunContext, pool: list[str], test: list[str], needed: list[int],
                       names: list[str]) -> tuple[Any, Any]:
        """Zero-shot LLM probabilities for the needed pool rows and every test row (cached in output.dir)."""
        import numpy as np

        from llmlabel.core.task import LabelTask
        from llmlabel.labeling.config import build_labeling

        fields = self.task.model_dump(exclude={"labels"})
        task = LabelTask(labels=self.task.labels or names, **fields)
        engine = build_labeling(self.labeling, self.data, task, ctx.backend(), ctx.cache(), ctx.progress).engine

        def probs(texts: list[str]) -> Any:
            results = engine.label_texts(texts)
            return np.array([[r.label_probs.get(n, 0.0) for n in names] for r in results])

        pool_probs = np.full((len(pool), len(names)), 1.0 / len(names))
        pool_probs[needed] = probs([pool[i] for i in needed])
        return pool_probs, probs(test)

    def execute(self, ctx: RunContext, state: dict[str, Any]) -> dict[str, Any]:
        """Every seed of the experiment (the LLM labels first, once, when it is the weak supervisor)."""
        from llmlabel.training.student import FeatureCache
        from llmlabel.training.weak_to_strong import run_seed, split_halves

        names, (pool_texts, pool_gold), (test_texts, test_gold) = state["names"], state["pool"], state["test"]
        weak_probs = None
        if self.weak.kind == "labeler":
            needed = sorted({int(i) for seed in self.seeds
                             for i in split_halves(len(pool_texts), self.half_size, seed)[1]})
            weak_probs = self._labeler_probs(ctx, pool_texts, test_texts, needed, names)
            ctx.close()  # the LLM is done: free it before the students train
        features = FeatureCache(self.student.model, self.student.max_length, self.student.feature_dtype,
                                self.student.device)
        records = []
        start = time.perf_counter()
        for seed in self.seeds:
            record = run_seed(pool_texts, pool_gold, test_texts, test_gold, names, self.half_size, seed,
                              weak=self.weak, student=self.student, losses=self.losses, bootstrap=self.bootstrap,
                              features=features, weak_probs=weak_probs, progress=ctx.progress)
            records.append(record)
            log.info("weak-to-strong seed %d: %s", seed, json.dumps({k: record[k] for k in record
                                                                       if k in ("weak", "ceiling", "pgr")}))
        return {"records": records, "seconds": round(time.perf_counter() - start, 1)}

    def report(self, ctx: RunContext, state: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Every seed's record and the mean ± std summary."""
        from llmlabel.training.weak_to_strong import summarize

        return {"recipe": self.name, "labels": state["names"], "pool_rows": len(state["pool"][0]),
                "eval_rows": len(state["test"][0]), "half_size": self.half_size, "weak": self.weak.model_dump(),
                "student": self.student.model_dump(), "records": result["records"],
                "summary": summarize(result["records"]), "seconds": result["seconds"]}

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

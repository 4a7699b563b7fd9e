"""The `symbol_tuning` kind: symbol tuning (Wei et al. 2023), then the ICL stress suite on held-out tasks, base vs
tuned, per seed. The stress suite prompts the models itself (its `eval:` section), so a `labeling:` section is
refused in one line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmlabel.config import LabelingConfig, ModelConfig, OutputConfig
from llmlabel.kinds.base import RecipeKind, RunContext, unsupported
from llmlabel.training.icl_stress import StressConfig
from llmlabel.training.symbol_tuning import SymbolTuningConfig

log = logging.getLogger("llmlabel")


class SymbolTuningRecipe(RecipeKind):
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
    #: refused when set: the stress suite (`eval`) renders its own prompts and reads the models' scores itself
    labeling: LabelingConfig | None = None
    #: each seed tunes its own adapter (prompt sampling, LoRA init, batch order) and draws its own eval exemplars
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    #: evaluate the base model too (off: only the tuned adapters are scored)
    evaluate_base: bool = True
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/symbol_tuning", cache=None))

    @model_validator(mode="after")
    def _held_out(self) -> "SymbolTuningRecipe":
        from llmlabel.training.icl_stress import task_name
        from llmlabel.training.symbol_tuning import source_name

        if self.labeling is not None:
            raise ValueError(unsupported("symbol_tuning", "labeling (calibration, selection, method)",
                                         "the stress suite (eval:) prompts the base and tuned models itself"))
        tuned = {source_name(d.path) for d in self.tuning.datasets}
        for task in self.eval.tasks:
            if source_name(task.data.path) in tuned:
                raise ValueError(f"eval task '{task_name(task)}' is also a tuning dataset; the stress suite measures "
                                 f"tasks not used in tuning (tuning: {', '.join(sorted(tuned))})")
        if "adapter" in self.model.options:
            raise ValueError("model.options.adapter is set by the recipe itself (each seed's tuned adapter); "
                             "remove it")
        return self

    def execute(self, ctx: RunContext, state: Any) -> dict[str, Any]:
        """Tune and evaluate every seed (the base model, built once, is the run context's backend)."""
        records = []
        start = time.perf_counter()
        for seed in self.seeds:
            records.append(self._seed(ctx, seed))
            log.info("symbol tuning seed %d: %s", seed, json.dumps({k: records[-1].get(k) for k in ("base", "tuned")}))
        return {"records": records, "seconds": round(time.perf_counter() - start, 1)}

    def _seed(self, ctx: RunContext, seed: int) -> dict[str, Any]:
        from llmlabel.backends.base import load_backend
        from llmlabel.training.icl_stress import evaluate_stress
        from llmlabel.training.symbol_tuning import build_symbol_prompts, load_source, train_symbol_lora

        record: dict[str, Any] = {"seed": seed}
        begin = time.perf_counter()
        sources = [load_source(d, self.tuning.rows_per_label, seed=seed) for d in self.tuning.datasets]
        prompts = build_symbol_prompts(sources, self.tuning, self.tuning.prompts, seed=seed)
        adapter = Path(self.output.dir).expanduser() / f"seed{seed}" / "adapter"
        info = train_symbol_lora(self.model.name, self.tuning, prompts, adapter, seed=seed, progress=ctx.progress)
        record["tuning"] = {k: info[k] for k in ("seconds", "prompts", "prompts_dropped_too_long", "loss_first10",
                                                 "loss_last10", "sources")}
        record["adapter"] = str(adapter)
        if self.evaluate_base:
            record["base"] = evaluate_stress(ctx.backend(), self.eval, seed, progress=ctx.progress)
        tuned = load_backend(self.model.backend, model=self.model.name, adapter=str(adapter), **self.model.options)
        try:
            record["tuned"] = evaluate_stress(tuned, self.eval, seed, progress=ctx.progress)
        finally:
            tuned.close()
        record["seconds"] = round(time.perf_counter() - begin, 1)
        return record

    def report(self, ctx: RunContext, state: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Every seed's record and, with the base scored, the mean ± std summary."""
        from llmlabel.training.icl_stress import summarize

        records = result["records"]
        return {"recipe": self.name, "model": self.model.model_dump(), "seeds": self.seeds,
                "tuning": self.tuning.model_dump(), "eval": self.eval.model_dump(), "records": records,
                "summary": summarize(records) if self.evaluate_base else None, "seconds": result["seconds"]}

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

"""The `audit` kind: rank a labeled dataset's rows by how likely their given label is wrong (see
`llmlabel.stats.recipes` for its sections and `llmlabel.stats.audit` for the signals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from llmlabel.errors import DataError, unknown
from llmlabel.kinds.base import RunContext
from llmlabel.stats.recipes import AuditConfig, AuditOutput, StatsKind


@dataclass
class AuditInputs:
    """The rows to audit, their given labels (noise planted if asked), and the demonstration pool."""

    started: float
    task: Any
    rows: list[dict[str, Any]]
    texts: list[str]
    given: Any
    truth: Any = None
    flipped: Any = None
    pool: list[dict[str, Any]] | None = None


@dataclass
class AuditSignals:
    """Every signal's out-of-sample probabilities, grouped, with their timings and the LLM's failed rows."""

    signals: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=lambda: {"classifiers": [], "llm": []})
    seconds: dict[str, float] = field(default_factory=dict)
    llm_failed: int = 0


class AuditRecipe(StatsKind):
    """Rank a labeled dataset's rows by how likely their given label (`data.label_field`) is wrong."""

    kind: Literal["audit"] = "audit"
    audit: AuditConfig = Field(default_factory=AuditConfig)
    output: AuditOutput = Field(default_factory=AuditOutput)

    examples_ok: ClassVar[bool] = False  # a fixed demonstration may be a row being audited

    @model_validator(mode="after")
    def _supported(self) -> "AuditRecipe":
        if not self.data.label_field:
            raise ValueError("an audit needs the labels to check: set data.label_field")
        if not self.audit.classifiers and not self.audit.llm:
            raise ValueError("the audit has no signal: list audit.classifiers or set audit.llm: true")
        return self

    def prepare(self, ctx: RunContext) -> AuditInputs:
        """Read the rows and their labels (planting noise if asked) and the demonstration pool."""
        from llmlabel.data import Dataset
        from llmlabel.kinds.label import build_task, check_data
        from llmlabel.stats import audit as au

        started = time.perf_counter()
        cfg, data = self.audit, self.data
        dataset = Dataset(data.path, split=data.split, limit=data.limit)
        task = build_task(self, dataset)
        rows = list(dataset)
        if not rows:
            raise DataError(f"dataset {data.path} is empty")
        if not check_data(task, dataset):
            raise DataError(unknown(f"label column in {data.path}", str(data.label_field), rows[0].keys()))
        if len(rows) < 2 * cfg.folds:
            raise DataError(f"an audit with {cfg.folds} folds needs at least {2 * cfg.folds} rows, got {len(rows)}")
        import numpy as np

        state = AuditInputs(started, task, rows, [task.texts(r)[0] for r in rows],
                            np.array([task.names.index(task.gold(r)) for r in rows]))
        if cfg.plant is not None:
            state.truth = state.given.copy()
            state.given, state.flipped = au.plant_noise(state.given, len(task.names), cfg.plant.rate, cfg.plant.kind,
                                                        cfg.plant.seed)
        if cfg.pool is not None:
            pool_task = task.model_copy(update={"label_field": data.label_field})
            state.pool = [{"text": pool_task.texts(r)[0], "label": pool_task.gold(r)} for r in Dataset(cfg.pool)]
            if not state.pool:
                raise DataError(f"audit.pool {cfg.pool} is empty")
        return state

    def execute(self, ctx: RunContext, state: AuditInputs) -> AuditSignals:
        """Score the cross-fitted classifiers, then every LLM prompt variant x shot count."""
        from llmlabel.stats import audit as au

        cfg, names, out = self.audit, state.task.names, AuditSignals()
        for name in cfg.classifiers:
            t0 = time.perf_counter()
            out.signals[name] = au.classifier_signal(state.texts, state.given, names, name, cfg.folds, cfg.seed,
                                                     cfg.classifier_options.get(name))
            out.groups["classifiers"].append(name)
            out.seconds[name] = round(time.perf_counter() - t0, 2)
        if cfg.llm:
            self._llm_signals(ctx, state, out)
        return out

    def _llm_signals(self, ctx: RunContext, state: AuditInputs, out: AuditSignals) -> None:
        from llmlabel.stats import audit as au

        cfg, names = self.audit, state.task.names
        backend, cache = ctx.backend(), ctx.cache()
        for v, instruction in enumerate(cfg.instructions):
            label_rows = self._label_rows(ctx, backend, state, instruction, cache)
            for shots in cfg.shots:
                name = f"llm{f':p{v}' if len(cfg.instructions) > 1 else ''}:{shots}shot"
                t0 = time.perf_counter()
                probs = au.llm_signal(label_rows, state.given, names, state.texts, shots=shots, seed=cfg.seed + v,
                                      pool=state.pool)
                if cfg.temperature:
                    probs = au.temperature_calibrate(probs, state.given, seed=cfg.seed)
                out.signals[name] = probs
                out.groups["llm"].append(name)
                out.seconds[name] = round(time.perf_counter() - t0, 2)
            out.llm_failed += label_rows.failed

    def _label_rows(self, ctx: RunContext, backend: Any, state: AuditInputs, instruction: str | None,
                    cache: Any) -> Any:
        """The `label_rows(indices, examples)` callback of `llm_signal`, over the core Labeler."""
        import numpy as np

        from llmlabel.labeling.config import build_labeling

        task = state.task
        vtask = task.model_copy(update={"instruction": instruction}) if instruction else task

        def label_rows(indices: list[int], examples: list[dict[str, Any]] | None) -> np.ndarray:
            labeler = build_labeling(self.labeling, self.data, vtask, backend, cache, ctx.progress,
                                     examples=examples).labeler
            results = labeler.label_texts([state.texts[i] for i in indices])
            probs = np.array([[r.label_probs.get(n, 0.0) for n in task.names] for r in results], dtype=np.float64)
            failed = probs.sum(1) <= 0
            probs[failed] = 1.0 / len(task.names)  # a failed row: no evidence either way
            label_rows.failed += int(failed.sum())
            return probs

        label_rows.failed = 0  # type: ignore[attr-defined]
        return label_rows

    def report(self, ctx: RunContext, state: AuditInputs, result: AuditSignals) -> dict[str, Any]:
        """Rank the rows, write suspects.jsonl and signals.npz, and measure the audit on planted noise."""
        import numpy as np

        from llmlabel.io import write_rows
        from llmlabel.stats import audit as au

        cfg, out, names, given = self.audit, self.output, state.task.names, state.given
        signals, groups = result.signals, {k: v for k, v in result.groups.items() if v}
        ids = [r.get("id", i) for i, r in enumerate(state.rows)]
        suspects, ranked = au.rank_suspects(given, names, signals, groups, cfg.quality, cfg.filter_by, ids=ids,
                                            top=cfg.top)
        for s in suspects:
            s["text"] = state.texts[s["row"]]
            if state.truth is not None:
                s["planted_error"] = bool(state.flipped[s["row"]])
        suspects_path = write_rows(suspects, out.path(out.suspects))
        np.savez_compressed(out.path(out.signals), given=given, labels=np.array(names),
                            **{k.replace(":", "_"): v for k, v in signals.items()})
        summary: dict[str, Any] = {
            "recipe": self.name, "kind": "audit", "rows": len(state.rows), "labels": len(names),
            "signals": list(signals), "groups": ranked["groups"], "flagged": ranked["flagged"],
            "agreement": {k: round(float(np.mean(v.argmax(1) == given)), 4) for k, v in signals.items()},
            "llm_failed_rows": result.llm_failed,
            "seconds": {**result.seconds, "total": round(time.perf_counter() - state.started, 2)},
            "model": None if not cfg.llm else self.model.name, "top": suspects[:20],
            "outputs": {"suspects": str(suspects_path), "signals": str(out.path(out.signals))}}
        if state.truth is not None:
            summary["planted"] = self._planted(state, signals, groups)
        return summary

    def _planted(self, state: AuditInputs, signals: dict[str, Any], groups: dict[str, list[str]]) -> dict[str, Any]:
        from llmlabel.stats import audit as au

        cfg = self.audit
        metrics = {}
        for name, probs in {**signals, **au.combine(signals, groups)}.items():
            score = au.suspicion(state.given, probs, cfg.quality)
            metrics[name] = {k: (round(float(v), 4) if isinstance(v, float) else v)
                             for k, v in au.audit_metrics(score, au.flag_issues(state.given, probs, cfg.filter_by),
                                                          state.flipped).items()}
        return {"rate": cfg.plant.rate, "kind": cfg.plant.kind, "seed": cfg.plant.seed,
                "flipped": int(state.flipped.sum()), "metrics": metrics}

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Rows, signals, flagged counts, the top suspects, and where the outputs are."""
        lines = [f"audited {summary['rows']} rows ({summary['labels']} labels) with "
                 f"{len(summary['signals'])} signals: {', '.join(summary['signals'])}"]
        flagged = summary["flagged"]
        lines.append("flagged by cleanlab: " + ", ".join(f"{k} {v}" for k, v in flagged.items()))
        for name, agree in summary.get("agreement", {}).items():
            lines.append(f"  {name}: top label = given label on {agree:.1%} of rows")
        if "planted" in summary:
            p = summary["planted"]
            lines.append(f"planted {p['flipped']} {p['kind']} flips ({p['rate']:.0%}):")
            for name, m in p["metrics"].items():
                lines.append(f"  {name}: AUROC {m['auroc']:.3f}, precision@{m['k']} {m['precision_at_k']:.3f}, "
                             f"flagged precision {m['flagged_precision']:.3f} recall {m['flagged_recall']:.3f}")
        for s in summary.get("top", [])[:5]:
            lines.append(f"  row {s['row']}: given '{s['given_label']}' -> '{s['suggested_label']}' "
                         f"(score {s['score']:.3f}; {', '.join(s['agree']) or 'no signal agrees'})")
        lines += [f"suspects: {summary['outputs']['suspects']}", f"report: {summary['report']}"]
        return lines

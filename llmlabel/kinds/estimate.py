"""The `estimate` kind: label shares (and a regression coefficient) from LLM labels on every row plus a gold sample,
with valid intervals (see `llmlabel.stats.recipes` for its sections and `llmlabel.stats.estimate` for the methods)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmlabel.config import OutputConfig
from llmlabel.errors import ConfigError, DataError, suggest, unknown
from llmlabel.kinds.base import RunContext
from llmlabel.stats.recipes import EstimateConfig, EstimateOutput, StatsKind, covariate, read_reviews


@dataclass
class EstimateInputs:
    """The data, its label names, and the label recipe that labels it when it is not a predictions file yet."""

    started: float
    source: Any
    names: list[str]
    labeled: bool
    label_recipe: Any


@dataclass
class GoldSample:
    """Which rows have gold labels, the labels, how they were drawn, and (column source) every row's truth."""

    rows: Any
    labels: Any
    sampling: Any
    design: str
    source: str
    truth: Any = None


class EstimateRecipe(StatsKind):
    """Estimates with valid intervals from LLM labels (`data`, labeled first unless it already is a predictions file
    with label_probs) plus a gold sample."""

    kind: Literal["estimate"] = "estimate"
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    output: EstimateOutput = Field(default_factory=EstimateOutput)

    @model_validator(mode="after")
    def _supported(self) -> "EstimateRecipe":
        est = self.estimate
        if not est.shares and est.regression is None:
            raise ValueError("nothing to estimate: set estimate.shares: true or estimate.regression")
        if est.gold.source == "column" and not self.data.label_field:
            raise ValueError("estimate.gold.source 'column' needs data.label_field (the gold column)")
        if est.gold.source == "reviews" and est.gold.design == "active":
            raise ValueError("estimate.gold.design applies to source 'column'; for reviews set estimate.gold.use: "
                             "weighted")
        return self

    def _label_recipe(self) -> Any:
        from llmlabel.kinds.label import Recipe

        out = self.output
        return Recipe(name=f"{self.name}-labels", model=self.model, data=self.data, task=self.task,
                      labeling=self.labeling, evaluate=False,
                      output=OutputConfig(dir=out.dir, predictions=out.predictions, report="labeling_report.json",
                                          cache=out.cache))

    def prepare(self, ctx: RunContext) -> EstimateInputs:
        """Read the data's first row and the label names (a predictions file's probability columns name them)."""
        from llmlabel.data import Dataset
        from llmlabel.kinds.label import read_task

        started = time.perf_counter()
        data = self.data
        source = Dataset(data.path, split=data.split, limit=data.limit)
        first = next(iter(source), None)
        if first is None:
            raise DataError(f"dataset {data.path} is empty")
        labeled = "label_probs" in first
        label_recipe = self._label_recipe()
        try:
            names = read_task(label_recipe)[1].names
        except ConfigError:
            if not labeled or not isinstance(first["label_probs"], dict):
                raise
            names = list(first["label_probs"])  # a predictions file: its probability columns are the labels
        return EstimateInputs(started, source, names, labeled, label_recipe)

    def execute(self, ctx: RunContext, state: EstimateInputs) -> dict[str, Any]:
        """Label the data (unless it is labeled), draw or read the gold sample, estimate, write estimates.jsonl."""
        import numpy as np

        from llmlabel.data import Dataset
        from llmlabel.io import write_rows

        if state.labeled:
            predictions_path = Path(state.source.path)  # the file (a folder resolves to its split file)
            llm_source = f"read from {predictions_path}"
            rows = list(Dataset(predictions_path, limit=self.data.limit))
        else:
            labeling = ctx.label(state.label_recipe)
            predictions_path = Path(labeling["predictions"])
            llm_source = f"labeled now with {labeling['model']}"
            rows = list(Dataset(predictions_path))
        names = state.names
        probs = np.zeros((len(rows), len(names)))
        for i, r in enumerate(rows):
            lp = r.get("label_probs") or {}
            if r.get("status", "ok") == "ok" and lp:
                probs[i] = [float(lp.get(n, 0.0)) for n in names]
        failed = probs.sum(1) <= 0
        probs[failed] = 1.0 / len(names)
        gold = self._gold_sample(rows, probs, names, predictions_path)
        texts = [str(r.get(self.data.text_field) or "") for r in rows]
        results = self._estimates(rows, texts, probs, names, gold)
        return {"rows": len(rows), "llm_source": llm_source, "failed": int(failed.sum()),
                "predictions": predictions_path, "gold": gold, "estimates": results,
                "estimates_path": write_rows(results, self.output.path(self.output.estimates))}

    def _gold_sample(self, rows: list[dict[str, Any]], probs: Any, names: list[str], predictions: Path) -> GoldSample:
        if self.estimate.gold.source == "reviews":
            return self._reviewed_gold(len(rows), names, predictions)
        return self._column_gold(rows, probs, names, predictions)

    def _reviewed_gold(self, n_rows: int, names: list[str], predictions: Path) -> GoldSample:
        import numpy as np

        gold_cfg, index = self.estimate.gold, {n: i for i, n in enumerate(names)}
        reviews = Path(gold_cfg.reviews) if gold_cfg.reviews else predictions.with_name("reviews.jsonl")
        if not reviews.exists():
            raise DataError(f"no reviews file {reviews}: review rows first (llmlabel review), give "
                            "estimate.gold.reviews, or use estimate.gold.source: column")
        latest = read_reviews(reviews, n_rows)
        if gold_cfg.use == "random":
            latest = {k: v for k, v in latest.items() if v.get("selected_by") == "random"}
        gold_rows = np.array(sorted(latest), dtype=np.int64)
        gold_labels = []
        for row in gold_rows:
            label = str(latest[int(row)]["label"])
            if label not in index:
                raise DataError(f"{reviews}: review label '{label}' of row {row} is not a task label"
                                + suggest(label, names))
            gold_labels.append(index[label])
        sampling = None
        if gold_cfg.use == "weighted":
            try:
                sampling = np.array([float(latest[int(r)]["sampling_prob"]) for r in gold_rows])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{reviews}: estimate.gold.use weighted needs a sampling_prob on every reviewed "
                                "row") from None
        if len(gold_rows) < 2:
            raise DataError(f"{reviews} holds {len(gold_rows)} usable reviewed rows "
                            f"({'selected at random' if gold_cfg.use == 'random' else 'with labels'}); "
                            "an estimate needs at least 2")
        return GoldSample(gold_rows, np.array(gold_labels, dtype=np.int64), sampling,
                          "poisson" if gold_cfg.use == "weighted" else "srs",
                          f"reviews {reviews}" + (" (random rows)" if gold_cfg.use == "random" else " (weighted)"))

    def _column_gold(self, rows: list[dict[str, Any]], probs: Any, names: list[str], predictions: Path) -> GoldSample:
        import numpy as np

        from llmlabel.core.results import gold_column
        from llmlabel.stats import estimate as es

        gold_cfg, index, n_rows = self.estimate.gold, {n: i for i, n in enumerate(names)}, len(rows)
        # The labeler keeps an input column named like an output column (a gold 'label') as gold_<name>.
        gold_col = gold_column(self.data.label_field)
        if gold_col not in rows[0]:
            raise DataError(unknown(f"gold column in {predictions}", gold_col, rows[0].keys()))
        truth = []
        for i, r in enumerate(rows):
            value = str(r.get(gold_col))
            if value not in index:
                raise DataError(f"gold label '{value}' on row {i} is not a task label" + suggest(value, names))
            truth.append(index[value])
        truth_labels = np.array(truth)
        rng = np.random.default_rng(gold_cfg.seed)
        if gold_cfg.size > n_rows:
            raise ConfigError(f"estimate.gold.size {gold_cfg.size} is above the {n_rows} rows")
        sampling = None
        if gold_cfg.design == "random":
            gold_rows, design = np.sort(rng.choice(n_rows, gold_cfg.size, replace=False)), "srs"
        else:
            pi = es.sampling_probabilities(es.uncertainty(probs), gold_cfg.size, gold_cfg.mix)
            gold_rows, design = np.flatnonzero(rng.random(n_rows) < pi), "poisson"
            sampling = pi[gold_rows]
        return GoldSample(gold_rows, np.array(list(truth_labels[gold_rows]), dtype=np.int64), sampling, design,
                          f"column '{gold_col}' ({gold_cfg.design} sample of {gold_cfg.size})", truth_labels)

    def _estimates(self, rows: list[dict[str, Any]], texts: list[str], probs: Any, names: list[str],
                   gold: GoldSample) -> list[dict[str, Any]]:
        from llmlabel.stats import estimate as es

        cfg = self.estimate
        results: list[dict[str, Any]] = []
        if cfg.shares:
            for item in es.estimate_shares(probs, gold.rows, gold.labels, names, cfg.methods, gold.sampling,
                                           gold.design, cfg.population, cfg.confidence):
                results.append(item.as_dict())
            if gold.truth is not None:
                shares = es.true_shares(gold.truth, len(names))
                for e in results:
                    e["truth"] = round(float(shares[names.index(e["target"][6:-1])]), 6)
        if cfg.regression is not None:
            results += self._regression(rows, texts, probs, names, gold)
        return results

    def _regression(self, rows: list[dict[str, Any]], texts: list[str], probs: Any, names: list[str],
                    gold: GoldSample) -> list[dict[str, Any]]:
        import numpy as np

        from llmlabel.stats import estimate as es

        cfg, reg = self.estimate, self.estimate.regression
        if reg.outcome_label not in names:
            raise ConfigError(unknown("estimate.regression.outcome_label", reg.outcome_label, names))
        k = names.index(reg.outcome_label)
        X = np.column_stack([covariate(c, rows, texts) for c in reg.covariates])
        if reg.standardize:
            X = np.column_stack([es.standardize(X[:, j])[0] for j in range(X.shape[1])])
        regression = [e.as_dict() for e in es.estimate_regression(
            X, reg.covariates, probs[:, k], gold.rows, (gold.labels == k).astype(float), reg.kind, cfg.methods,
            gold.sampling, gold.design, cfg.population, cfg.confidence,
            llm_outcome=(probs.argmax(1) == k).astype(float))]
        if gold.truth is not None:
            coefs = es.true_coefficients(X, (gold.truth == k).astype(float), reg.kind)
            for e in regression:
                e["truth"] = round(float(coefs[reg.covariates.index(e["target"][5:-1])]), 6)
        return regression

    def report(self, ctx: RunContext, state: EstimateInputs, result: dict[str, Any]) -> dict[str, Any]:
        """The estimates with where the LLM labels and the gold sample came from."""
        import numpy as np

        cfg, gold, names = self.estimate, result["gold"], state.names
        counts = np.bincount(gold.labels, minlength=len(names))
        return {
            "recipe": self.name, "kind": "estimate", "rows": result["rows"], "labels": names,
            "llm_source": result["llm_source"], "llm_failed_rows": result["failed"],
            "predictions": str(result["predictions"]),
            "gold": {"source": gold.source, "rows": int(len(gold.rows)), "design": gold.design,
                     "label_counts": {names[i]: int(c) for i, c in enumerate(counts) if c}},
            "population": cfg.population, "confidence": cfg.confidence,
            "regression": None if cfg.regression is None else cfg.regression.model_dump(),
            "estimates": result["estimates"], "seconds": round(time.perf_counter() - state.started, 2),
            "outputs": {"estimates": str(result["estimates_path"]), "predictions": str(result["predictions"])}}

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """One line per target and method: estimate [lower, upper]."""
        g = summary["gold"]
        lines = [f"{summary['rows']} rows with LLM labels ({summary['llm_source']}); gold sample {g['rows']} rows "
                 f"({g['source']}, design {g['design']})"]
        by_target: dict[str, list[dict[str, Any]]] = {}
        for e in summary["estimates"]:
            by_target.setdefault(e["target"], []).append(e)
        for target, items in by_target.items():
            lines.append(f"{target}:" + ("" if "truth" not in items[0] else f"  (truth {items[0]['truth']:.4f})"))
            for e in items:
                lam = f"  lambda {e['lam']:.2f}" if e.get("lam") is not None else ""
                lines.append(f"  {e['method']:<10} {e['estimate']:8.4f}  [{e['lower']:.4f}, {e['upper']:.4f}]{lam}")
        lines += [f"estimates: {summary['outputs']['estimates']}", f"report: {summary['report']}"]
        return lines

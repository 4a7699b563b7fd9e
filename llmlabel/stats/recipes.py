"""The `audit` and `estimate` recipe kinds (`llmlabel run`, `llmlabel audit`, `llmlabel estimate`).

`audit`: rank the rows of a labeled dataset by how likely their label is wrong (`llmlabel.stats.audit`); writes
suspects.jsonl (ranked, with the evidence), signals.npz (every signal's probabilities) and report.json.

`estimate`: label shares (and optionally a regression coefficient) from LLM labels on every row plus a gold sample,
with 95% intervals by naive counting, classical, PPI, PPI++ and DSL (`llmlabel.stats.estimate`); writes
predictions.jsonl (unless the data already is one), estimates.jsonl and report.json.

Both follow the label recipe's sections (model, data, task, labeling, output) and refuse, in one line, the options
they cannot honour (generate mode: no probabilities; selection / method / examples: the audit picks its own
demonstrations; pair and multi-label tasks).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmlabel.config import (DataConfig, LabelingConfig, ModelConfig, OutputConfig, Recipe, RecipeBase, TaskConfig,
                             _Strict)
from llmlabel.errors import ConfigError, DataError, suggest, unknown

log = logging.getLogger("llmlabel")


def _check_labeling(labeling: LabelingConfig, task: TaskConfig, data: DataConfig, kind: str,
                    examples_ok: bool) -> None:
    """Refuse, in one line, labeling options the stats kinds cannot honour."""
    if labeling.mode != "score":
        raise ValueError(f"{kind} needs label probabilities: labeling.mode must be 'score' (got "
                         f"'{labeling.mode}')")
    if labeling.selection is not None or labeling.method is not None:
        which = "selection" if labeling.selection is not None else "method"
        raise ValueError(f"labeling.{which} is not supported by kind {kind}"
                         + ("; set audit.shots for demonstrations drawn without the row" if kind == "audit" else ""))
    if labeling.examples and not examples_ok:
        raise ValueError("labeling.examples is not supported by kind audit (a fixed demonstration may be a row "
                         "being audited); set audit.shots, or audit.pool for a separate labeled pool")
    if task.multi_label:
        raise ValueError(f"kind {kind} supports single-label tasks only (task.multi_label is true)")
    if data.text_pair_field and kind == "audit":
        raise ValueError("kind audit classifies single texts; data.text_pair_field is not supported")


def _label_recipe(base: RecipeBase, model: ModelConfig, data: DataConfig, task: TaskConfig,
                  labeling: LabelingConfig, output: OutputConfig, predictions: str = "predictions.jsonl",
                  report: str = "labeling_report.json") -> Recipe:
    return Recipe(name=f"{base.name}-labels", model=model, data=data, task=task, labeling=labeling,
                  output=OutputConfig(dir=output.dir, predictions=predictions, report=report, cache=output.cache),
                  evaluate=False)


def _write_json(data: Any, path: Path) -> None:
    from llmlabel.io import write_json

    write_json(data, path)


def _labels_of(recipe: Recipe) -> list[str]:
    from llmlabel.data import Dataset
    from llmlabel.pipeline import build_task

    return build_task(recipe, Dataset(recipe.data.path, split=recipe.data.split, limit=recipe.data.limit)).names


# == audit =========================================================================================================
class PlantConfig(_Strict):
    """Plant label noise before auditing, to measure the audit where the truth is known."""

    rate: float = Field(0.1, gt=0, lt=1)
    kind: Literal["uniform", "class_conditional"] = "uniform"
    seed: int = 0


class AuditConfig(_Strict):
    """Which signals the audit combines and how cleanlab reads them."""

    #: cheap classifiers from llmlabel.classifiers, cross-fitted on the given labels ([] for none)
    classifiers: list[str] = Field(default_factory=lambda: ["logreg_tfidf", "logreg_embeddings"])
    #: classifier options per name, e.g. {logreg_embeddings: {embedder: hashing}}
    classifier_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    folds: int = Field(5, ge=2, le=20)
    #: use the LLM (false: classifiers only, what cleanlab users do today)
    llm: bool = True
    #: LLM prompt variants: instructions (null: the task's own); every variant x every entry of `shots` is a signal
    instructions: list[str | None] = Field(default_factory=lambda: [None])
    #: demonstrations per LLM prompt: 0 zero-shot; k > 0: k drawn from the given labels of the other fold (never
    #: the row itself), or from `pool`
    shots: list[int] = Field(default_factory=lambda: [0])
    #: a separate labeled pool for the demonstrations (same text / label columns as the data)
    pool: str | None = None
    #: refit a temperature per LLM signal on the given labels (cross-fitted)
    temperature: bool = True
    quality: Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"] = "self_confidence"
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = "prune_by_noise_rate"
    #: rows written to suspects.jsonl (null: every row, most suspicious first)
    top: int | None = Field(None, gt=0)
    plant: PlantConfig | None = None
    seed: int = 0

    @field_validator("classifiers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from llmlabel.registry import classifiers

        for name in value:
            if name not in classifiers:
                raise ValueError(unknown("classifier", name, classifiers.names()))
        return value

    @field_validator("shots")
    @classmethod
    def _shots(cls, value: list[int]) -> list[int]:
        if not value or any(k < 0 for k in value):
            raise ValueError("shots must list demonstration counts >= 0, e.g. [0, 4]")
        return value


class AuditOutput(OutputConfig):
    """Outputs of an audit (in `dir`)."""

    dir: str = "runs/audit"
    suspects: str = "suspects.jsonl"
    signals: str = "signals.npz"


class AuditRecipe(RecipeBase):
    """Rank a labeled dataset's rows by how likely their given label (`data.label_field`) is wrong."""

    kind: Literal["audit"] = "audit"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    output: AuditOutput = Field(default_factory=AuditOutput)

    @model_validator(mode="after")
    def _supported(self) -> "AuditRecipe":
        _check_labeling(self.labeling, self.task, self.data, "audit", examples_ok=False)
        if not self.data.label_field:
            raise ValueError("an audit needs the labels to check: set data.label_field")
        if not self.audit.classifiers and not self.audit.llm:
            raise ValueError("the audit has no signal: list audit.classifiers or set audit.llm: true")
        return self

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Score every signal, rank the rows, write suspects.jsonl, signals.npz and report.json."""
        return run_audit(self, progress=progress)

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


def _llm_label_rows(recipe: AuditRecipe, backend: Any, task: Any, texts: list[str], instruction: str | None,
                    cache: Any, progress: bool) -> Any:
    """The `label_rows(indices, examples)` callback of `llm_signal`, over the core Labeler."""
    import numpy as np

    from llmlabel.labeling.labeler import Labeler

    lab = recipe.labeling
    vtask = task.model_copy(update={"instruction": instruction}) if instruction else task

    def label_rows(indices: list[int], examples: list[dict[str, Any]] | None) -> np.ndarray:
        labeler = Labeler(backend, vtask, mode="score", normalize=lab.normalize, calibration=lab.calibration,
                          examples=examples, prompt=lab.prompt, cache=cache, chunk_size=lab.chunk_size,
                          progress=progress, answer_prefix=lab.answer_prefix)
        results = labeler.label_texts([texts[i] for i in indices])
        probs = np.array([[r.label_probs.get(n, 0.0) for n in task.names] for r in results], dtype=np.float64)
        failed = probs.sum(1) <= 0
        probs[failed] = 1.0 / len(task.names)  # a failed row: no evidence either way
        label_rows.failed += int(failed.sum())
        return probs

    label_rows.failed = 0  # type: ignore[attr-defined]
    return label_rows


def run_audit(recipe: AuditRecipe, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run an audit recipe end to end (see `AuditRecipe`); `backend` may be an already loaded backend."""
    import numpy as np

    from llmlabel.cache import ResultCache
    from llmlabel.data import Dataset
    from llmlabel.io import write_rows
    from llmlabel.pipeline import build_task, check_data
    from llmlabel.stats import audit as au

    started = time.perf_counter()
    cfg, data, out = recipe.audit, recipe.data, recipe.output
    label_recipe = _label_recipe(recipe, recipe.model, data, recipe.task, recipe.labeling, out)
    dataset = Dataset(data.path, split=data.split, limit=data.limit)
    task = build_task(label_recipe, dataset)
    rows = list(dataset)
    if not rows:
        raise DataError(f"dataset {data.path} is empty")
    if not check_data(task, dataset):
        raise DataError(unknown(f"label column in {data.path}", str(data.label_field), rows[0].keys()))
    names = task.names
    if len(rows) < 2 * cfg.folds:
        raise DataError(f"an audit with {cfg.folds} folds needs at least {2 * cfg.folds} rows, got {len(rows)}")
    texts = [task.texts(r)[0] for r in rows]
    given = np.array([names.index(task.gold(r)) for r in rows])
    truth = None
    if cfg.plant is not None:
        truth = given.copy()
        given, flipped = au.plant_noise(given, len(names), cfg.plant.rate, cfg.plant.kind, cfg.plant.seed)
    pool = None
    if cfg.pool is not None:
        pool_rows = list(Dataset(cfg.pool))
        pool_task = task.model_copy(update={"label_field": data.label_field})
        pool = [{"text": pool_task.texts(r)[0], "label": pool_task.gold(r)} for r in pool_rows]
        if not pool:
            raise DataError(f"audit.pool {cfg.pool} is empty")

    signals: dict[str, np.ndarray] = {}
    groups: dict[str, list[str]] = {"classifiers": [], "llm": []}
    seconds: dict[str, float] = {}
    for name in cfg.classifiers:
        t0 = time.perf_counter()
        signals[name] = au.classifier_signal(texts, given, names, name, cfg.folds, cfg.seed,
                                             cfg.classifier_options.get(name))
        groups["classifiers"].append(name)
        seconds[name] = round(time.perf_counter() - t0, 2)
    llm_failed = 0
    if cfg.llm:
        owns = backend is None
        if backend is None:
            from llmlabel.backends.base import load_backend

            backend = load_backend(recipe.model.backend, model=recipe.model.name, **recipe.model.options)
        out.path(".").mkdir(parents=True, exist_ok=True)
        cache = ResultCache(out.path(out.cache)) if out.cache else None
        try:
            for v, instruction in enumerate(cfg.instructions):
                label_rows = _llm_label_rows(recipe, backend, task, texts, instruction, cache, progress)
                for shots in cfg.shots:
                    name = f"llm{f':p{v}' if len(cfg.instructions) > 1 else ''}:{shots}shot"
                    t0 = time.perf_counter()
                    probs = au.llm_signal(label_rows, given, names, texts, shots=shots, seed=cfg.seed + v, pool=pool)
                    if cfg.temperature:
                        probs = au.temperature_calibrate(probs, given, seed=cfg.seed)
                    signals[name] = probs
                    groups["llm"].append(name)
                    seconds[name] = round(time.perf_counter() - t0, 2)
                llm_failed += label_rows.failed
        finally:
            if cache is not None:
                cache.close()
            if owns:
                backend.close()
    ids = [r.get("id", i) for i, r in enumerate(rows)]
    suspects, ranked = au.rank_suspects(given, names, signals, {k: v for k, v in groups.items() if v},
                                        cfg.quality, cfg.filter_by, ids=ids, top=cfg.top)
    for s in suspects:
        s["text"] = texts[s["row"]]
        if truth is not None:
            s["planted_error"] = bool(flipped[s["row"]])
    suspects_path = write_rows(suspects, out.path(out.suspects))
    np.savez_compressed(out.path(out.signals), given=given, labels=np.array(names),
                        **{k.replace(":", "_"): v for k, v in signals.items()})
    summary: dict[str, Any] = {
        "recipe": recipe.name, "kind": "audit", "rows": len(rows), "labels": len(names), "signals": list(signals),
        "groups": ranked["groups"], "flagged": ranked["flagged"],
        "agreement": {k: round(float(np.mean(v.argmax(1) == given)), 4) for k, v in signals.items()},
        "llm_failed_rows": llm_failed, "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
        "model": None if not cfg.llm else recipe.model.name, "top": suspects[:20],
        "outputs": {"suspects": str(suspects_path), "signals": str(out.path(out.signals))}}
    if truth is not None:
        merged = au.combine(signals, {k: v for k, v in groups.items() if v})
        metrics = {}
        for name, probs in {**signals, **merged}.items():
            score = au.suspicion(given, probs, cfg.quality)
            metrics[name] = {k: (round(float(v), 4) if isinstance(v, float) else v)
                             for k, v in au.audit_metrics(score, au.flag_issues(given, probs, cfg.filter_by),
                                                          flipped).items()}
        summary["planted"] = {"rate": cfg.plant.rate, "kind": cfg.plant.kind, "seed": cfg.plant.seed,
                              "flipped": int(flipped.sum()), "metrics": metrics}
    report = out.path(out.report)
    _write_json(summary, report)
    summary["report"] = str(report)
    return summary


# == estimate ======================================================================================================
class GoldConfig(_Strict):
    """Where the gold sample comes from."""

    #: reviews: a review loop's reviews.jsonl; column: the data's own gold column (`data.label_field`), of which a
    #: sample of `size` rows is used (a simulation of a review budget)
    source: Literal["reviews", "column"] = "reviews"
    #: reviews.jsonl (default: reviews.jsonl beside the predictions)
    reviews: str | None = None
    #: reviews: 'random' uses only rows the review loop drew at random (simple random sample); 'weighted' uses every
    #: reviewed row with its sampling_prob (independent draws, weighted by 1 / sampling_prob)
    use: Literal["random", "weighted"] = "random"
    #: column: gold rows drawn (expected count for design active)
    size: int = Field(200, gt=1)
    #: column: 'random' (a simple random sample) or 'active' (probabilities tilted toward uncertain rows)
    design: Literal["random", "active"] = "random"
    #: active design: share of the budget spread uniformly (bounds the weights)
    mix: float = Field(0.2, ge=0, le=1)
    seed: int = 0


class RegressionConfig(_Strict):
    """A regression of "the label is `outcome_label`" (0/1) on covariates."""

    outcome_label: str
    #: numeric data columns, or 'log_words' / 'chars' computed from the text
    covariates: list[str] = Field(min_length=1)
    kind: Literal["logistic", "linear"] = "logistic"
    #: coefficients per standard deviation of each covariate
    standardize: bool = True


class EstimateConfig(_Strict):
    """What is estimated and how."""

    methods: list[str] = Field(default_factory=lambda: ["naive", "classical", "ppi", "ppi++", "dsl"])
    #: label shares (true) and/or a regression (set `regression`)
    shares: bool = True
    regression: RegressionConfig | None = None
    gold: GoldConfig = Field(default_factory=GoldConfig)
    #: finite: the corpus's own value; superpopulation: a larger population the corpus was drawn from
    population: Literal["finite", "superpopulation"] = "finite"
    confidence: float = Field(0.95, gt=0, lt=1)

    @field_validator("methods")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from llmlabel.stats.estimate import METHODS

        for name in value:
            if name not in METHODS:
                raise ValueError(unknown("estimate method", name, METHODS))
        if not value:
            raise ValueError("list at least one estimate method")
        return value


class EstimateOutput(OutputConfig):
    """Outputs of an estimate (in `dir`)."""

    dir: str = "runs/estimate"
    estimates: str = "estimates.jsonl"


class EstimateRecipe(RecipeBase):
    """Estimates with valid intervals from LLM labels (`data`, labeled first unless it already is a predictions file
    with label_probs) plus a gold sample."""

    kind: Literal["estimate"] = "estimate"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    output: EstimateOutput = Field(default_factory=EstimateOutput)

    @model_validator(mode="after")
    def _supported(self) -> "EstimateRecipe":
        _check_labeling(self.labeling, self.task, self.data, "estimate", examples_ok=True)
        est = self.estimate
        if not est.shares and est.regression is None:
            raise ValueError("nothing to estimate: set estimate.shares: true or estimate.regression")
        if est.gold.source == "column" and not self.data.label_field:
            raise ValueError("estimate.gold.source 'column' needs data.label_field (the gold column)")
        if est.gold.source == "reviews" and est.gold.design == "active":
            raise ValueError("estimate.gold.design applies to source 'column'; for reviews set estimate.gold.use: "
                             "weighted")
        return self

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Label (if needed), read the gold sample, estimate; writes estimates.jsonl and report.json."""
        return run_estimate(self, progress=progress)

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


def read_reviews(path: Path, n_rows: int) -> dict[int, dict[str, Any]]:
    """The latest review of each row (later records supersede earlier ones; a null label undoes the row's review).
    Bad lines and rows outside the predictions are skipped with a warning (counted)."""
    latest: dict[int, dict[str, Any]] = {}
    bad = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                row = int(record["row"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if not 0 <= row < n_rows:
                bad += 1
                continue
            if record.get("label") is None:
                latest.pop(row, None)
            else:
                latest[row] = record
    if bad:
        log.warning("%s: skipped %d unreadable review record(s)", path, bad)
    return latest


def _covariate(name: str, rows: list[dict[str, Any]], texts: list[str]) -> list[float]:
    if name == "log_words":
        return [math.log(1 + len(t.split())) for t in texts]
    if name == "chars":
        return [float(len(t)) for t in texts]
    if name not in rows[0]:
        raise DataError(unknown("covariate column", name, ["log_words", "chars", *rows[0].keys()]))
    values = []
    for i, r in enumerate(rows):
        try:
            values.append(float(r.get(name)))
        except (TypeError, ValueError):
            raise DataError(f"covariate '{name}' is not a number on row {i}: {r.get(name)!r}") from None
    return values


def run_estimate(recipe: EstimateRecipe, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run an estimate recipe end to end (see `EstimateRecipe`)."""
    import numpy as np

    from llmlabel.data import Dataset
    from llmlabel.io import write_rows
    from llmlabel.stats import estimate as es

    started = time.perf_counter()
    cfg, data, out = recipe.estimate, recipe.data, recipe.output
    label_recipe = _label_recipe(recipe, recipe.model, data, recipe.task, recipe.labeling, out, out.predictions)
    source = Dataset(data.path, split=data.split, limit=data.limit)
    first = next(iter(source), None)
    if first is None:
        raise DataError(f"dataset {data.path} is empty")
    labeled = "label_probs" in first
    try:
        names = _labels_of(label_recipe)
    except ConfigError:
        if not labeled or not isinstance(first["label_probs"], dict):
            raise
        names = list(first["label_probs"])  # a predictions file: its probability columns are the labels
    if labeled:
        predictions_path = Path(source.path)  # the file (a folder resolves to its split file)
        llm_source = f"read from {predictions_path}"
    else:
        from llmlabel.pipeline import run_recipe

        labeling = run_recipe(label_recipe, progress=progress, backend=backend)
        predictions_path = Path(labeling["predictions"])
        llm_source = f"labeled now with {labeling['model']}"
    rows = list(Dataset(predictions_path, limit=data.limit) if labeled else Dataset(predictions_path))
    n_rows = len(rows)
    probs = np.zeros((n_rows, len(names)))
    for i, r in enumerate(rows):
        lp = r.get("label_probs") or {}
        if r.get("status", "ok") == "ok" and lp:
            probs[i] = [float(lp.get(n, 0.0)) for n in names]
    failed = probs.sum(1) <= 0
    probs[failed] = 1.0 / len(names)
    text_field = data.text_field
    texts = [str(r.get(text_field) or "") for r in rows]

    # -- the gold sample ---------------------------------------------------------------------------------------
    gold_cfg = cfg.gold
    index = {n: i for i, n in enumerate(names)}
    from llmlabel.core.results import OUTPUT_COLUMNS

    # The labeler keeps an input column named like an output column (a gold 'label') as gold_<name>.
    gold_col = data.label_field
    if gold_col in OUTPUT_COLUMNS:
        gold_col = f"gold_{gold_col}"
    sampling: np.ndarray | None = None
    truth_labels = None
    if gold_cfg.source == "reviews":
        reviews = Path(gold_cfg.reviews) if gold_cfg.reviews else predictions_path.with_name("reviews.jsonl")
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
        if gold_cfg.use == "weighted":
            try:
                sampling = np.array([float(latest[int(r)]["sampling_prob"]) for r in gold_rows])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{reviews}: estimate.gold.use weighted needs a sampling_prob on every reviewed "
                                "row") from None
        design = "poisson" if gold_cfg.use == "weighted" else "srs"
        if len(gold_rows) < 2:
            raise DataError(f"{reviews} holds {len(gold_rows)} usable reviewed rows "
                            f"({'selected at random' if gold_cfg.use == 'random' else 'with labels'}); "
                            "an estimate needs at least 2")
        gold_source = f"reviews {reviews}" + (" (random rows)" if gold_cfg.use == "random" else " (weighted)")
    else:
        if gold_col not in rows[0]:
            raise DataError(unknown(f"gold column in {predictions_path}", gold_col, rows[0].keys()))
        truth_labels = []
        for i, r in enumerate(rows):
            value = str(r.get(gold_col))
            if value not in index:
                raise DataError(f"gold label '{value}' on row {i} is not a task label" + suggest(value, names))
            truth_labels.append(index[value])
        truth_labels = np.array(truth_labels)
        rng = np.random.default_rng(gold_cfg.seed)
        if gold_cfg.size > n_rows:
            raise ConfigError(f"estimate.gold.size {gold_cfg.size} is above the {n_rows} rows")
        if gold_cfg.design == "random":
            gold_rows = np.sort(rng.choice(n_rows, gold_cfg.size, replace=False))
            design = "srs"
        else:
            pi = es.sampling_probabilities(es.uncertainty(probs), gold_cfg.size, gold_cfg.mix)
            gold_rows = np.flatnonzero(rng.random(n_rows) < pi)
            sampling = pi[gold_rows]
            design = "poisson"
        gold_labels = list(truth_labels[gold_rows])
        gold_source = f"column '{gold_col}' ({gold_cfg.design} sample of {gold_cfg.size})"
    gold_labels_arr = np.array(gold_labels, dtype=np.int64)

    # -- the estimates ------------------------------------------------------------------------------------------
    results: list[dict[str, Any]] = []
    if cfg.shares:
        for item in es.estimate_shares(probs, gold_rows, gold_labels_arr, names, cfg.methods, sampling, design,
                                       cfg.population, cfg.confidence):
            results.append(item.as_dict())
        if truth_labels is not None:
            shares = es.true_shares(truth_labels, len(names))
            for e in results:
                e["truth"] = round(float(shares[names.index(e["target"][6:-1])]), 6)
    if cfg.regression is not None:
        reg = cfg.regression
        if reg.outcome_label not in index:
            raise ConfigError(unknown("estimate.regression.outcome_label", reg.outcome_label, names))
        k = index[reg.outcome_label]
        X = np.column_stack([_covariate(c, rows, texts) for c in reg.covariates])
        if reg.standardize:
            X = np.column_stack([es.standardize(X[:, j])[0] for j in range(X.shape[1])])
        regression = [e.as_dict() for e in es.estimate_regression(
            X, reg.covariates, probs[:, k], gold_rows, (gold_labels_arr == k).astype(float), reg.kind, cfg.methods,
            sampling, design, cfg.population, cfg.confidence, llm_outcome=(probs.argmax(1) == k).astype(float))]
        if truth_labels is not None:
            coefs = es.true_coefficients(X, (truth_labels == k).astype(float), reg.kind)
            for e in regression:
                e["truth"] = round(float(coefs[reg.covariates.index(e["target"][5:-1])]), 6)
        results += regression
    estimates_path = write_rows(results, out.path(out.estimates))
    summary: dict[str, Any] = {
        "recipe": recipe.name, "kind": "estimate", "rows": n_rows, "labels": names, "llm_source": llm_source,
        "llm_failed_rows": int(failed.sum()), "predictions": str(predictions_path),
        "gold": {"source": gold_source, "rows": int(len(gold_rows)), "design": design,
                 "label_counts": {names[i]: int(c) for i, c in enumerate(np.bincount(gold_labels_arr,
                                                                                      minlength=len(names))) if c}},
        "population": cfg.population, "confidence": cfg.confidence,
        "regression": None if cfg.regression is None else cfg.regression.model_dump(),
        "estimates": results, "seconds": round(time.perf_counter() - started, 2),
        "outputs": {"estimates": str(estimates_path), "predictions": str(predictions_path)}}
    report = out.path(out.report)
    _write_json(summary, report)
    summary["report"] = str(report)
    return summary

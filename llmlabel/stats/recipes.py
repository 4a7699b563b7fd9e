"""The sections and helpers of the `audit` and `estimate` recipe kinds (the kinds are `llmlabel.kinds.audit` and
`llmlabel.kinds.estimate`; `llmlabel run`, `llmlabel audit`, `llmlabel estimate` run them).

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
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from llmlabel.config import all_registered, DataConfig, LabelingConfig, OutputConfig, Strict, TaskConfig
from llmlabel.errors import DataError, unknown
from llmlabel.kinds.base import LabelingKind, unsupported

log = logging.getLogger("llmlabel")


def check_labeling(labeling: LabelingConfig, task: TaskConfig, data: DataConfig, kind: str,
                    examples_ok: bool) -> None:
    """Refuse, in one line, labeling options the stats kinds cannot honour."""
    if labeling.mode != "score":
        raise ValueError(f"{kind} needs label probabilities: labeling.mode must be 'score' (got "
                         f"'{labeling.mode}')")
    if labeling.selection is not None or labeling.method is not None:
        which = "selection" if labeling.selection is not None else "method"
        raise ValueError(unsupported(kind, f"labeling.{which}",
                                     "set audit.shots for demonstrations drawn without the row" if kind == "audit"
                                     else ""))
    if labeling.examples and not examples_ok:
        raise ValueError("labeling.examples is not supported by kind audit (a fixed demonstration may be a row "
                         "being audited); set audit.shots, or audit.pool for a separate labeled pool")
    if task.multi_label:
        raise ValueError(f"kind {kind} supports single-label tasks only (task.multi_label is true)")
    if data.text_pair_field and kind == "audit":
        raise ValueError("kind audit classifies single texts; data.text_pair_field is not supported")


class StatsKind(LabelingKind):
    """The base of the audit and estimate kinds: the label recipe's sections, with the options they cannot honour
    refused in one line (`check_labeling`)."""

    #: whether fixed demonstrations (`labeling.examples`) are allowed
    examples_ok: ClassVar[bool] = True

    @model_validator(mode="after")
    def _labeling_supported(self) -> "StatsKind":
        check_labeling(self.labeling, self.task, self.data, self.kind, examples_ok=self.examples_ok)
        return self


# == audit =========================================================================================================
class PlantConfig(Strict):
    """Plant label noise before auditing, to measure the audit where the truth is known."""

    rate: float = Field(0.1, gt=0, lt=1)
    kind: Literal["uniform", "class_conditional"] = "uniform"
    seed: int = 0


class AuditConfig(Strict):
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
        return all_registered("classifiers", value)

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


# == estimate ======================================================================================================
class GoldConfig(Strict):
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


class RegressionConfig(Strict):
    """A regression of "the label is `outcome_label`" (0/1) on covariates."""

    outcome_label: str
    #: numeric data columns, or 'log_words' / 'chars' computed from the text
    covariates: list[str] = Field(min_length=1)
    kind: Literal["logistic", "linear"] = "logistic"
    #: coefficients per standard deviation of each covariate
    standardize: bool = True


class EstimateConfig(Strict):
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


def covariate(name: str, rows: list[dict[str, Any]], texts: list[str]) -> list[float]:
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



"""The recipe schema: the pydantic sections every recipe kind is built from (model, data, task, labeling, output,
ray). Schema only: it imports no runtime (backends, executors, kinds). Reading YAML into a recipe is
`llmlabel.kinds.loading`; the kinds themselves are `llmlabel.kinds`.

Recipes may not carry API keys (`model.options.api_key` is refused: keys come from the environment or a key file, see
the openai backend).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from llmlabel.errors import suggest, unknown

#: names that moved out of this module, still importable from it (loaded on first use: the schema imports no runtime)
_MOVED = {"load_recipe": "llmlabel.kinds.loading", "parse_overrides": "llmlabel.kinds.loading",
          "read_recipe_text": "llmlabel.kinds.loading", "format_validation_error": "llmlabel.kinds.loading",
          "MAX_RECIPE_VALUES": "llmlabel.kinds.loading", "Recipe": "llmlabel.kinds.label",
          "RecipeBase": "llmlabel.kinds.base", "RecipeKind": "llmlabel.kinds.base"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'llmlabel.config' has no attribute '{name}'")


def registered(family: str, value: str, module: str = "llmlabel.registry") -> str:
    """`value` if it names an entry of the registry `family` of `module` (e.g. 'selectors'), else the one-line
    did-you-mean (as a ValueError, which the recipe loader shows with the key's place)."""
    registry = getattr(importlib.import_module(module), family)
    if value not in registry:
        raise ValueError(unknown(registry.kind, value, registry.names()))
    return value


def all_registered(family: str, values: list[str], module: str = "llmlabel.registry") -> list[str]:
    """`values` if each names an entry of the registry `family` (see `registered`)."""
    for value in values:
        registered(family, value, module)
    return values

#: backend options that would put a secret into a recipe file, a `--set`/`--option` flag or shell history
SECRET_OPTIONS = ("api_key",)


class Strict(BaseModel):
    """The base of every recipe section: unknown keys are errors (with a did-you-mean, see `llmlabel.kinds.loading`)."""

    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    """Which backend runs which model."""

    backend: str = "transformers"
    #: 'smollm2' (the embedded default), a local HF folder, a .gguf file, or a Hub id
    name: str = "smollm2"
    #: backend constructor options, e.g. {dtype: float32} or {base_url: http://127.0.0.1:8000/v1}
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _loadable_model(self) -> "ModelConfig":
        # Backends that load `name` as weights: a name that cannot load fails here, before torch is imported
        # (the openai backend's name is the served model's, and the fake backend's is free).
        if self.backend in ("transformers", "vllm"):
            from llmlabel.errors import ModelError
            from llmlabel.models import check_model

            try:
                check_model(self.name)
            except ModelError as exc:
                raise ValueError(str(exc)) from None
        return self

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The value is never echoed: pydantic shows no input for a mapping, and this message names only the key.
        for key in SECRET_OPTIONS:
            if key in value:
                raise ValueError(f"'{key}' is not accepted in recipes or flags (it would end up in files and shell "
                                 "history); set the OPENAI_API_KEY environment variable (or the one named by "
                                 "api_key_env) or give api_key_file: /path/to/key")
        return value


class DataConfig(Strict):
    """Where the rows come from and which columns hold what."""

    path: str
    split: str | None = None
    limit: int | None = Field(None, gt=0)
    text_field: str = "text"
    text_pair_field: str | None = None
    #: gold label column (used for evaluation when present; set null if there is none)
    label_field: str | None = "label"


class TaskConfig(Strict):
    """The label space and instruction. `labels` defaults to the dataset's labels.json."""

    labels: list[str] | dict[str, str | None] | None = None
    instruction: str = "Classify the text into one of the labels."
    text_name: str = "Text"
    text_pair_name: str = "Text 2"
    multi_label: bool = False
    threshold: float = Field(0.5, gt=0, lt=1)
    #: show and score labels as words ("card_arrival" -> "card arrival"); outputs keep the names
    humanize_labels: bool = False


class PoolConfig(Strict):
    """The labeled exemplar pool selectors draw demonstrations from (fields default to the data's)."""

    path: str
    split: str | None = None
    limit: int | None = Field(None, gt=0)
    #: a random subsample of this many pool rows (seeded by `selection.seed`), after `limit`
    sample: int | None = Field(None, gt=0)
    text_field: str | None = None
    text_pair_field: str | None = None
    label_field: str = "label"
    #: self-generated ICL: a pool labeled by the LLM itself (a predictions file of an earlier run, label_field
    #: 'label') keeps only rows whose `confidence` column is at least this
    min_confidence: float | None = Field(None, ge=0, le=1)


class SelectionConfig(Strict):
    """In-context demonstrations chosen per row by a selector (random, balanced, knn, bm25, mmr, votek, epr)."""

    method: Annotated[str, AfterValidator(lambda v: registered("selectors", v))] = "knn"
    k: int = Field(4, ge=0)
    pool: PoolConfig
    ordering: Literal["as_selected", "similar_last", "round_robin"] = "as_selected"
    #: many-label tasks: score only this many candidate labels per row (demonstrations' labels + neighbours')
    restrict_labels: int | None = Field(None, gt=0)
    seed: int = 0
    #: selector constructor options, e.g. {budget: 100} for votek, {diversity_weight: 0.3} for mmr
    options: dict[str, Any] = Field(default_factory=dict)


class MethodConfig(Strict):
    """A labeling method that uses a labeled pool beyond the prompt: knn_prompting, fusion or stacking (see
    llmlabel/methods)."""

    name: Annotated[str, AfterValidator(lambda v: registered("methods", v))]
    pool: PoolConfig
    #: cross-fitting folds over the whole pool that choose the method's settings (fusion weight, kNN k, stacking)
    folds: int = Field(5, ge=2)
    seed: int = 0
    #: method options, e.g. {classifier: logreg_embeddings} for fusion, {k: 9} for knn_prompting
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_dev_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dev_size" in data:
            raise ValueError("dev_size is gone: settings are cross-fitted over the whole pool (set folds, default 5)")
        return data


class LabelingConfig(Strict):
    """How labels are produced."""

    mode: Literal["score", "generate"] = "score"
    #: score mode: sum of label token log-probs, mean per token, or the first token's only
    normalize: Literal["sum", "mean", "first"] = "sum"
    #: text that starts the model's answer (e.g. "Label:"); labels are scored after it
    answer_prefix: str = ""
    #: auto (batch in single-label score mode, else none), none, contextual, domain, incontext or batch
    #: (see llmlabel/calibration/)
    calibration: str = "auto"
    #: demonstrations chosen per row from a labeled pool (instead of fixed `examples`)
    selection: SelectionConfig | None = None
    #: combine the LLM with a labeled pool beyond the prompt (kNN prompting, fusion, stacking)
    method: MethodConfig | None = None
    prompt: str | None = None
    #: fixed few-shot demonstrations: [{text: ..., label: ...}, ...]
    examples: list[dict[str, Any]] = Field(default_factory=list)
    chunk_size: int = Field(256, gt=0)
    max_answer_tokens: int = Field(16, gt=0)

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        from llmlabel.registry import calibrators

        if value not in ("auto", "none") and value not in calibrators:
            raise ValueError(unknown("calibration", value, ["auto", "none", *calibrators.names()]))
        return value


class OutputConfig(Strict):
    """Where results go. `cache` defaults to cache.sqlite beside the predictions."""

    dir: str = "runs/default"
    predictions: str = "predictions.jsonl"
    report: str = "report.json"
    cache: str | None = "cache.sqlite"
    #: also save the labeled rows as a `datasets.DatasetDict` with a dataset card in this folder (e.g. hf_dataset),
    #: ready for `push_to_hub` (see llmlabel/hub.py); None: not written
    hf_dataset: str | None = None

    @field_validator("predictions")
    @classmethod
    def _known_format(cls, value: str) -> str:
        # Checked here, not after labeling: an unwritable name found at the end would waste the whole run.
        from llmlabel.data import FORMATS

        suffix = Path(value).suffix.lower()
        if suffix not in FORMATS:
            raise ValueError(f"'{value}' must end in one of: {', '.join(FORMATS)}"
                             + suggest(suffix, FORMATS))
        return value

    def path(self, name: str) -> Path:
        """`name` resolved inside `dir` (absolute names are kept)."""
        return Path(os.path.expanduser(self.dir)) / name


class RayConfig(Strict):
    """Options of the Ray executor (`executor: ray`): which cluster, how many engines, what each one reserves."""

    #: cluster to join: 'auto', 'ray://host:10001' or host:port; None uses RAY_ADDRESS, else starts a local cluster
    address: str | None = None
    #: labeling actors (one engine each); None fills the cluster (GPUs / num_gpus, else CPUs / num_cpus)
    num_workers: int | None = Field(None, gt=0)
    #: rows per result shard: the unit of scheduling, retry and restart (finished shards are skipped on re-runs)
    shard_size: int = Field(1000, gt=0)
    #: rows per actor call; None hands each actor one whole shard at a time
    batch_size: int | None = Field(None, gt=0)
    #: CPUs each actor reserves
    num_cpus: float = Field(1.0, ge=0)
    #: GPUs each actor reserves; None: 1 when the cluster has GPUs, else 0
    num_gpus: float | None = Field(None, ge=0)
    #: custom Ray resources each actor reserves, e.g. {accelerator_type:A100: 0.01}
    resources: dict[str, float] = Field(default_factory=dict)
    #: times Ray restarts a dead actor (its in-flight shard is retried); -1 without limit
    max_restarts: int = Field(-1, ge=-1)
    #: object store size (MB) of a local cluster started by llmlabel; None lets Ray choose
    object_store_mb: int | None = Field(None, gt=0)



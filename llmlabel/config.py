"""Recipes: YAML files validated by pydantic. Unknown keys are errors with a did-you-mean; no code runs on load.

Recipes are read with `yaml.safe_load` (no Python tags, so no code can run), may not expand past
`MAX_RECIPE_VALUES` values (YAML aliases can blow a tiny file up exponentially), and may not carry API keys
(`model.options.api_key` is refused: keys come from the environment or a key file, see the openai backend).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmlabel.errors import ConfigError, suggest, unknown

#: most values (mapping keys, values and list items) a recipe may hold once its YAML aliases are expanded
MAX_RECIPE_VALUES = 100_000
#: backend options that would put a secret into a recipe file, a `--set`/`--option` flag or shell history
SECRET_OPTIONS = ("api_key",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
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


class DataConfig(_Strict):
    """Where the rows come from and which columns hold what."""

    path: str
    split: str | None = None
    limit: int | None = Field(None, gt=0)
    text_field: str = "text"
    text_pair_field: str | None = None
    #: gold label column (used for evaluation when present; set null if there is none)
    label_field: str | None = "label"


class TaskConfig(_Strict):
    """The label space and instruction. `labels` defaults to the dataset's labels.json."""

    labels: list[str] | dict[str, str | None] | None = None
    instruction: str = "Classify the text into one of the labels."
    text_name: str = "Text"
    text_pair_name: str = "Text 2"
    multi_label: bool = False
    threshold: float = Field(0.5, gt=0, lt=1)
    #: show and score labels as words ("card_arrival" -> "card arrival"); outputs keep the names
    humanize_labels: bool = False


class PoolConfig(_Strict):
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


class SelectionConfig(_Strict):
    """In-context demonstrations chosen per row by a selector (random, balanced, knn, bm25, mmr, votek, epr)."""

    method: str = "knn"
    k: int = Field(4, ge=0)
    pool: PoolConfig
    ordering: Literal["as_selected", "similar_last", "round_robin"] = "as_selected"
    #: many-label tasks: score only this many candidate labels per row (demonstrations' labels + neighbours')
    restrict_labels: int | None = Field(None, gt=0)
    seed: int = 0
    #: selector constructor options, e.g. {budget: 100} for votek, {diversity_weight: 0.3} for mmr
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from llmlabel.registry import selectors

        if value not in selectors:
            raise ValueError(unknown("selector", value, selectors.names()))
        return value


class MethodConfig(_Strict):
    """A labeling method that uses a labeled pool beyond the prompt: knn_prompting, fusion or stacking (see
    llmlabel/methods)."""

    name: str
    pool: PoolConfig
    #: cross-fitting folds over the whole pool that choose the method's settings (fusion weight, kNN k, stacking)
    folds: int = Field(5, ge=2)
    seed: int = 0
    #: method options, e.g. {classifier: logreg_embeddings} for fusion, {k: 9} for knn_prompting
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from llmlabel.registry import methods

        if value not in methods:
            raise ValueError(unknown("method", value, methods.names()))
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_dev_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dev_size" in data:
            raise ValueError("dev_size is gone: settings are cross-fitted over the whole pool (set folds, default 5)")
        return data


class LabelingConfig(_Strict):
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


class OutputConfig(_Strict):
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


class RayConfig(_Strict):
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


class RecipeBase(_Strict):
    """What every recipe kind shares. A new kind subclasses this, implements `run`, and adds one line to
    `llmlabel.registry.recipe_kinds`; `load_recipe` picks the class from the recipe's `kind`."""

    name: str = "recipe"
    description: str = ""
    kind: str

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Run the recipe and return a JSON-able summary; a `report` key, if present, names the report file."""
        raise NotImplementedError(f"recipe kind '{self.kind}' does not implement run()")

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Lines the CLI prints after a run (default: the report path)."""
        return [f"report: {summary['report']}"] if "report" in summary else []


class Recipe(RecipeBase):
    """A labeling recipe: model + data + task + labeling + output, and whether to evaluate against gold."""

    kind: Literal["label"] = "label"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    evaluate: bool = True
    #: where labeling runs: 'local' (this process) or 'ray' (actor pools on a Ray cluster; see `ray`)
    executor: str = "local"
    ray: RayConfig = Field(default_factory=RayConfig)

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """The report path, and for a labeling method what the cross-fitting chose and whether the LLM earned it."""
        from llmlabel.tuning import describe

        selection = (summary.get("method") or {}).get("selection")
        return ([f"{summary['mode']}: {describe(selection)}"] if selection else []) + super().summary_lines(summary)

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        from llmlabel.registry import executors

        if value not in executors:
            raise ValueError(unknown("executor", value, executors.names()))
        return value

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Label the data with the recipe's executor (local: `llmlabel.pipeline.run_recipe`)."""
        from llmlabel.executors.base import make_executor
        from llmlabel.outputs import hold_output_folder

        with hold_output_folder(self.output.dir):  # one run per output folder, whichever executor
            return make_executor(self.executor).run(self, progress=progress)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at `loc` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        candidates = [annotation] + list(get_args(annotation))
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None and get_origin(annotation) is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem: where, what, and the closest valid key for unknown keys."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            fields = list(parent.model_fields) if parent else []
            problems.append(f"unknown key '{where}'{suggest(str(loc[-1]), fields)}")
        elif err["type"] == "missing":
            problems.append(f"missing key '{where}'")
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if value is not None and not isinstance(value, (dict, list)) else ""
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error":
                shown = ""  # our validators name the bad value themselves
            problems.append(f"'{where}': {msg}{shown}")
    return f"{source}: " + "; ".join(problems)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def read_recipe_text(file: Path) -> str:
    """A recipe file's text; a folder, an unreadable file or one that is not UTF-8 is a one-line ConfigError."""
    if file.is_dir():
        raise ConfigError(f"recipe {file} is a folder, not a YAML file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {file}: {exc.strerror or exc}") from None


def parse_overrides(pairs: list[str], flag: str = "--set") -> list[tuple[str, Any]]:
    """Parse `key.path=value` strings; values are read as YAML scalars/lists (safely)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects key=value, got '{pair}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def _check_size(data: Any, source: str) -> None:
    """Refuse a recipe that expands to more than `MAX_RECIPE_VALUES` values (a YAML alias bomb), before anything
    walks it as a tree (a shared node is counted every time it is referenced, which is what such a walk costs)."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_RECIPE_VALUES:
            raise ConfigError(f"{source}: the recipe expands to more than {MAX_RECIPE_VALUES:,} values (deeply nested "
                              "YAML aliases?); write it out without them")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None, source: str | None = None) -> RecipeBase:
    """Load and validate a recipe from a YAML file (or a dict), applying `--set` style overrides.

    The recipe's `kind` (default 'label') picks its pydantic class from `llmlabel.registry.recipe_kinds`.
    """
    source = source or (str(path) if path is not None else "recipe")
    if data is None:
        file = Path(path) if path is not None else None
        if file is None or not file.exists():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            data = yaml.safe_load(read_recipe_text(file)) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping")
    _check_size(data, source)
    data = dict(data)
    for key, value in parse_overrides(overrides or []):
        _check_size(value, f"--set {key}")  # an alias bomb can come in through a flag too
        _set_path(data, key, value)
    if overrides:
        _check_size(data, source)  # several flags, each under the limit, may add up past it
    from llmlabel.registry import recipe_kinds

    kind = data.get("kind", "label")
    if str(kind) not in recipe_kinds:
        from llmlabel.errors import unknown

        raise ConfigError(f"{source}: " + unknown("recipe kind", str(kind), recipe_kinds.names()))
    recipe_class = recipe_kinds.get(str(kind))
    try:
        return recipe_class.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, recipe_class, source)) from None

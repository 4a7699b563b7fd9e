"""The recipe-kind family: one pydantic base with hooks, one run context, run by an executor.

A kind is a `RecipeKind` subclass (its sections are its pydantic fields) plus one line in
`llmlabel.registry.recipe_kinds`. It overrides hooks; it never copies the run loop, which lives in
`llmlabel.executors.base.Executor.run`:

    state = kind.prepare(ctx)              # read and check everything a model does not need (user mistakes: exit 2)
    result = executor.execute(kind, ...)   # the work: local runs kind.execute(ctx, state); ray schedules shards
    summary = kind.report(ctx, state, result)
    ctx.write_report(summary, kind.report_path())   # report.json (tnt_llm: metrics.json), then its path is added

and the CLI prints `kind.summary_lines(summary)` for every kind alike. `RunContext` owns what a run shares: the
backend (built on first use, closed if it built it), the result cache, the held output folder, report writing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from llmlabel.config import DataConfig, LabelingConfig, ModelConfig, Strict, TaskConfig, registered


def unsupported(kind: str, option: str, hint: str = "") -> str:
    """The one-line refusal of a recipe option a kind cannot honour (raised as a ValueError by its validator)."""
    return f"{option} is not supported by kind {kind}" + (f"; {hint}" if hint else "")


class RecipeKind(Strict):
    """What every recipe kind shares: a name, a kind, an executor, and the hooks the executor runs."""

    name: str = "recipe"
    description: str = ""
    kind: str
    #: where the kind runs: 'local' (this process) or 'ray' (kinds that list it in `executors_supported`)
    executor: str = "local"

    #: executors this kind can run on; any other is refused in one line when the recipe loads
    executors_supported: ClassVar[tuple[str, ...]] = ("local",)
    #: build the backend as a `LazyBackend` (the model loads only when a row needs computing)
    defer_model_load: ClassVar[bool] = False
    #: the CLI writes report.html beside the report after a run (label kinds)
    html_report: ClassVar[bool] = False

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        return registered("executors", value)

    @model_validator(mode="after")
    def _supported_executor(self) -> "RecipeKind":
        if self.executor not in self.executors_supported:
            raise ValueError(f"kind {self.kind} runs on the {' or '.join(self.executors_supported)} executor only "
                             f"(got executor '{self.executor}')")
        return self

    # -- hooks ------------------------------------------------------------------------------------------------------
    def prepare(self, ctx: "RunContext") -> Any:
        """Read and check the inputs before any model loads; returns the state `execute` and `report` get."""
        return None

    def execute(self, ctx: "RunContext", state: Any) -> Any:
        """Do the work in this process; returns what `report` summarizes."""
        raise NotImplementedError(f"recipe kind '{self.kind}' does not implement execute()")

    def report(self, ctx: "RunContext", state: Any, result: Any) -> dict[str, Any]:
        """The JSON-able summary written as the report (default: `result` itself)."""
        return dict(result)

    def report_path(self) -> Path:
        """Where the report is written."""
        output = getattr(self, "output")
        return output.path(output.report)

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Lines the CLI prints after a run (default: the report path)."""
        return [f"report: {summary['report']}"] if "report" in summary else []

    def run(self, progress: bool = True, backend: Any = None) -> dict[str, Any]:
        """Run the recipe end to end and return its summary: the same as `llmlabel.run_recipe(self)`."""
        import llmlabel

        return llmlabel.run_recipe(self, progress=progress, backend=backend)


#: the name of the base before the family had hooks (subclass `RecipeKind`)
RecipeBase = RecipeKind


class LabelingKind(RecipeKind):
    """A kind that labels rows with an LLM: the label recipe's model, data, task and labeling sections."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)


class RunContext:
    """What one run of a kind shares: its backend (built on first use), its result cache, its output folder, and
    the report. Closing it closes the cache and the backend it built (a backend passed in stays open)."""

    def __init__(self, kind: Any, progress: bool = True, backend: Any = None):
        self.kind = kind
        self.progress = progress
        self._backend = backend
        self._owns_backend = backend is None
        self._cache: Any = None

    @property
    def loaded_backend(self) -> Any:
        """The backend if one is at hand (given or built), else None; never builds one."""
        return self._backend

    def backend(self, **options: Any) -> Any:
        """The kind's backend (`model:` section), built on the first call; `options` add to `model.options`."""
        if self._backend is None:
            model = self.kind.model
            if self.kind.defer_model_load:
                from llmlabel.backends.lazy import lazy_backend as build
            else:
                from llmlabel.backends.base import load_backend as build
            self._backend = build(model.backend, model=model.name, **model.options, **options)
        return self._backend

    def cache(self) -> Any:
        """The result cache (`output.cache`, inside the output folder), opened on the first call; None when off."""
        output = self.kind.output
        if self._cache is None and output.cache:
            from llmlabel.cache import ResultCache

            self._cache = ResultCache(output.path(output.cache))
        return self._cache

    def output_path(self, name: str) -> Path:
        """`name` inside the kind's output folder."""
        return self.kind.output.path(name)

    @contextmanager
    def held(self) -> Iterator[Path]:
        """Hold the kind's output folder for the run (see `llmlabel.outputs`): a second run into it fails at once."""
        from llmlabel.outputs import hold_output_folder

        with hold_output_folder(self.kind.output.dir) as path:
            yield path

    def close(self) -> None:
        """Close the cache and the backend this context built."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._owns_backend and self._backend is not None:
            self._backend.close()
            self._owns_backend = False  # closed once; its attributes (name, model_id) stay readable

    def write_report(self, summary: dict[str, Any], path: Path) -> dict[str, Any]:
        """Write `summary` as the report at `path`, then add its path to the summary (the one place this is done)."""
        from llmlabel.io import write_json

        write_json(summary, path)
        summary["report"] = str(path)
        return summary

    def label(self, recipe: Any, share_backend: bool = False) -> dict[str, Any]:
        """Run a label recipe inside this run (a teacher's labels, an estimate's LLM labels) with its executor and its
        own context; `share_backend` lends it this run's backend (built now if needed)."""
        from llmlabel.executors.base import make_executor

        child = RunContext(recipe, self.progress, self.backend() if share_backend else self._backend)
        with child.held():
            return make_executor(recipe.executor).run(recipe, child)

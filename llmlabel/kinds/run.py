"""The orchestrator: run any recipe kind end to end. Only the CLI and `llmlabel.run_recipe` come here; kinds that
label a sub-recipe (a teacher, an estimate's LLM labels) use `RunContext.label`, never this module."""

from __future__ import annotations

from typing import Any


def run_recipe(recipe: Any, progress: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run a validated recipe (any kind) and return its summary (stats, metrics, output paths; `report` names the
    report file).

    `backend` may be given to reuse an already loaded backend. The output folder is held for the run (see
    `llmlabel.outputs`): a second run into it fails at once, naming this one.
    """
    from llmlabel.executors.base import make_executor
    from llmlabel.kinds.base import RunContext

    ctx = RunContext(recipe, progress=progress, backend=backend)
    with ctx.held():
        return make_executor(recipe.executor).run(recipe, ctx)

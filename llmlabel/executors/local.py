"""The local executor: label in this process (the default)."""

from __future__ import annotations

from typing import Any

from llmlabel.executors.base import Executor


class LocalExecutor(Executor):
    """Labels in the calling process with one backend: `llmlabel.pipeline.run_recipe`."""

    name = "local"

    def run(self, recipe: Any, progress: bool = True) -> dict[str, Any]:
        """Run the recipe here."""
        from llmlabel.pipeline import run_recipe

        return run_recipe(recipe, progress=progress)

"""The executor interface: run a validated label recipe, write its predictions and report, return the summary."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Executor(ABC):
    """Runs a `llmlabel.config.Recipe` end to end.

    Every executor writes the same outputs (the predictions file in input order and the report) and returns the same
    summary keys as the local one (`llmlabel.pipeline.run_recipe`), so switching executors changes where the work
    runs, not what comes out.
    """

    #: registry name, e.g. "ray"
    name: str = "base"

    @abstractmethod
    def run(self, recipe: Any, progress: bool = True) -> dict[str, Any]:
        """Label the recipe's data; return the summary (stats, metrics, output paths)."""


def make_executor(name: str) -> Executor:
    """The executor registered as `name` (unknown names raise a one-line ConfigError with a did-you-mean)."""
    from llmlabel.registry import executors

    return executors.get(name)()

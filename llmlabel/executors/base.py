"""The executor interface and the one run loop of every recipe kind.

`Executor.run` is the loop (prepare, execute, report, write the report); an executor only decides where `execute`
happens: `local` calls the kind's own `execute` in this process, `ray` schedules a label kind's rows on a cluster. The
finish (the summary, the evaluation, the report) is the kind's `report` hook, the same whichever executor ran it.
"""

from __future__ import annotations

from typing import Any


class Executor:
    """Runs a recipe kind (`llmlabel.kinds.base.RecipeKind`) with its `RunContext`.

    Every executor writes the same outputs and returns the same summary keys for a kind, so switching executors
    changes where the work runs, not what comes out.
    """

    #: registry name, e.g. "ray"
    name: str = "base"

    def run(self, kind: Any, ctx: Any) -> dict[str, Any]:
        """The run loop: prepare, execute here or elsewhere, close what the run opened, report, write the report."""
        state = kind.prepare(ctx)
        try:
            result = self.execute(kind, ctx, state)
        finally:
            ctx.close()
        summary = kind.report(ctx, state, result)
        return ctx.write_report(summary, kind.report_path())

    def execute(self, kind: Any, ctx: Any, state: Any) -> Any:
        """Do the kind's work (default: in this process, the kind's own `execute`)."""
        return kind.execute(ctx, state)


def make_executor(name: str) -> Executor:
    """The executor registered as `name` (unknown names raise a one-line ConfigError with a did-you-mean)."""
    from llmlabel.registry import executors

    return executors.get(name)()

"""The local executor: run the kind in this process (the default)."""

from __future__ import annotations

from llmlabel.executors.base import Executor


class LocalExecutor(Executor):
    """Runs the kind's `execute` in the calling process, with the run context's one backend."""

    name = "local"

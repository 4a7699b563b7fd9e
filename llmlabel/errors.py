"""Errors raised for user mistakes: one line each, printed by the CLI without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any


class LLMLabelError(Exception):
    """Base class of every error llmlabel raises for a problem the user can fix."""


class ConfigError(LLMLabelError):
    """A recipe, CLI flag or option has a bad key or value."""


class DataError(LLMLabelError):
    """A dataset is missing, empty, unreadable, or lacks a column or label."""


class ModelError(LLMLabelError):
    """A model cannot be found, fetched or loaded."""


class MissingDependencyError(LLMLabelError):
    """An optional dependency is needed for the requested feature."""

    def __init__(self, package: str, feature: str, install: str | None = None):
        hint = install or f"pip install {package}"
        super().__init__(f"{feature} needs the '{package}' package, which is not installed: {hint}")
        self.package = package


class CacheError(LLMLabelError):
    """The result cache is unreadable or corrupted."""


class OutputError(LLMLabelError):
    """An output folder or file cannot be created or written (permissions, a full disk, a path that is a file or a
    device), or another run holds the output folder. Earlier outputs are never damaged by the failed write."""


class ArgumentError(LLMLabelError, TypeError):
    """A Python API argument has the wrong type or shape (e.g. one string where a list of strings is expected).

    Also a `TypeError`, so callers that catch the built-in keep working."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept (the CLI prints it and exits 130).

    A `KeyboardInterrupt`, so Python callers see the interrupt they expect."""


def suggest(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice to `value`, or '' when none is close."""
    matches = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def unknown(kind: str, value: str, choices: Iterable[str]) -> str:
    """One-line message for an unknown name: names the value, suggests the closest, lists the valid ones."""
    choices = sorted({str(c) for c in choices})
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"unknown {kind} '{value}'{suggest(value, choices)}; valid: {shown}"


class BackendError(LLMLabelError):
    """A model server or engine failed for some rows after retries; those rows are recorded as failed, not raised."""


class PartialFailure(BackendError):
    """Some prompts of one backend call failed for good while the others succeeded.

    `results[i]` is prompt `i`'s result, or the `BackendError` that failed it, so the labeler keeps (and caches)
    every row that succeeded and records only the others as failed; a re-run then retries just those.
    """

    def __init__(self, results: list[object]):
        failed = [r for r in results if isinstance(r, BackendError)]
        first = failed[0] if failed else "none"
        super().__init__(f"{len(failed)} of {len(results)} prompts failed; first: {first}")
        self.results = results


def call_each(n: int, method: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
    """`method(*args, **kwargs)`'s `n` per-prompt results; a prompt that failed for good has its BackendError
    in its place (all of them when the whole call failed)."""
    try:
        return list(method(*args, **kwargs))
    except PartialFailure as exc:
        return list(exc.results)
    except BackendError as exc:
        return [exc] * n

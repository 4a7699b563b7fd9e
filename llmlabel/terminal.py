"""The command line owns its terminal: llmlabel's own progress and messages go to the terminal, everything the
libraries print (transformers' weight-loading bars, GGUF conversion bars, vLLM's and Ray's log lines, Python warnings,
output of engine subprocesses) goes to a log file.

`owned(log_path, quiet, verbose)` is entered by the CLI around a run: file descriptors 1 and 2 (what C code and child
processes write to) and `sys.stdout` / `sys.stderr` (what Python libraries write to) point at the log file, while
`console()` (llmlabel's progress bars) and the `llmlabel` logger's terminal handler write to the terminal. `quiet`
drops llmlabel's own bars and notes too, so only the result lines (printed after the run) and errors remain;
`verbose` redirects nothing and shows llmlabel's info messages. Outside `owned` (the Python API) nothing is
redirected and `console()` is `sys.stderr`.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("llmlabel")

#: the stream llmlabel's own progress goes to while the CLI owns the terminal (None: sys.stderr)
_console: TextIO | None = None
#: whether llmlabel's own progress bars and notes are off (the CLI's -q)
_quiet = False
#: whether the CLI shows everything (--verbose): notes come through the logger then
_verbose = False


def console() -> TextIO:
    """Where llmlabel's progress bars and notes go: the terminal, also while library output goes to the log."""
    return _console if _console is not None else sys.stderr


def quiet() -> bool:
    """Whether the CLI asked for quiet output (-q): no progress bars, no notes."""
    return _quiet


def note(message: str, cli_only: bool = False) -> None:
    """A one-line status message for a long step (fetching or converting a model, loading it): on the console
    unless quiet (or verbose, where the `llmlabel` logger shows it already), and in the log. `cli_only`: not on
    stderr when the CLI does not own the terminal (the Python API)."""
    log.info(message)
    if cli_only and _console is None:
        return
    if not _quiet and not _verbose:
        from tqdm import tqdm

        tqdm.write(f"llmlabel: {message}", file=console())  # clears and redraws a bar that is on screen


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def _verbose_terminal() -> Iterator[None]:
    """`owned(verbose=True)`: nothing redirected; the `llmlabel` logger's info messages go to stderr."""
    global _verbose
    llm_logger = logging.getLogger("llmlabel")
    saved_level, saved_propagate = llm_logger.level, llm_logger.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmlabel: %(message)s"))
    llm_logger.addHandler(handler)
    llm_logger.setLevel(logging.INFO)
    llm_logger.propagate = False
    _verbose = True
    try:
        yield
    finally:
        _verbose = False
        llm_logger.removeHandler(handler)
        llm_logger.setLevel(saved_level)
        llm_logger.propagate = saved_propagate


def _open_log(log_path: str | Path) -> tuple[Path, TextIO]:
    """The log's path and the log file, opened for appending (line-buffered); a one-line OutputError if not."""
    from llmlabel.errors import OutputError
    from llmlabel.io import make_folder

    path = Path(log_path).expanduser()
    make_folder(path.parent)  # a folder that cannot be made is the output folder's one-line error
    try:
        logfile = open(path, "a", encoding="utf-8", errors="replace", buffering=1)
    except OSError as exc:
        raise OutputError(f"cannot write the log {str(path)[:200]}: {exc.strerror or exc}") from None
    return path, logfile


def _terminal_stream() -> tuple[TextIO, TextIO | None]:
    """A stream to the terminal that survives fd 2 being redirected: a duplicate of stderr's descriptor (also
    returned second, to be closed), or `sys.stderr` itself when it has no descriptor (a captured stream: tests)."""
    try:
        terminal_fd = sys.stderr.fileno()
        own_console = os.fdopen(os.dup(terminal_fd), "w", encoding="utf-8", errors="replace", buffering=1)
        return own_console, own_console
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return sys.stderr, None


@contextlib.contextmanager
def owned(log_path: str | Path, quiet: bool = False, verbose: bool = False) -> Iterator[Path | None]:
    """Route library output to `log_path` (appended) for the duration; yields the log's path (None when verbose).

    Errors raised inside propagate after the terminal is restored, so the CLI prints them to the terminal.
    """
    global _console, _quiet
    if verbose:
        with _verbose_terminal():
            yield None
        return
    llm_logger = logging.getLogger("llmlabel")
    saved_level, saved_propagate = llm_logger.level, llm_logger.propagate
    path, logfile = _open_log(log_path)
    _flush()
    saved_streams = (sys.stdout, sys.stderr)
    term, own_console = _terminal_stream()
    saved_fds = []
    for fd in (1, 2):
        try:
            saved_fds.append((fd, os.dup(fd)))
            os.dup2(logfile.fileno(), fd)
        except OSError:
            pass
    sys.stdout = sys.stderr = logfile
    to_terminal = logging.StreamHandler(term)
    to_terminal.setFormatter(logging.Formatter("llmlabel: %(message)s"))
    to_terminal.setLevel(logging.ERROR if quiet else logging.WARNING)
    to_log = logging.StreamHandler(logfile)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    llm_logger.addHandler(to_terminal)
    llm_logger.addHandler(to_log)
    llm_logger.setLevel(logging.INFO)
    llm_logger.propagate = False
    captured_warnings = logging.getLogger("py.warnings")
    logging.captureWarnings(True)
    captured_warnings.addHandler(to_log)
    captured_warnings.propagate = False
    _console, _quiet = term, quiet
    logfile.write(f"--- llmlabel {' '.join(sys.argv[1:])}\n")
    try:
        yield path
    finally:
        _flush()
        _console, _quiet = None, False
        logging.captureWarnings(False)
        captured_warnings.removeHandler(to_log)
        captured_warnings.propagate = True
        llm_logger.removeHandler(to_terminal)
        llm_logger.removeHandler(to_log)
        llm_logger.setLevel(saved_level)
        llm_logger.propagate = saved_propagate
        sys.stdout, sys.stderr = saved_streams
        for fd, saved in saved_fds:
            os.dup2(saved, fd)
            os.close(saved)
        if own_console is not None:
            own_console.close()
        logfile.close()


def progress_bar(**options: Any) -> Any:
    """A tqdm bar on the console (off when quiet or `disable=True`)."""
    from tqdm.auto import tqdm

    disable = options.pop("disable", False) or _quiet
    return tqdm(file=console(), disable=disable, **options)


#: set by the Labeler around a backend call that computes rows: called with the number of prompts just finished
_prompt_progress: contextvars.ContextVar[Any] = contextvars.ContextVar("llmlabel_prompt_progress", default=None)


def prompts_done(count: int) -> None:
    """Backends call this after each batch of `count` prompts, so the labeling bar moves within a long call."""
    callback = _prompt_progress.get()
    if callback is not None:
        callback(count)


@contextlib.contextmanager
def prompt_progress(callback: Any) -> Iterator[None]:
    """Route `prompts_done` calls made inside to `callback` (None: nowhere)."""
    token = _prompt_progress.set(callback)
    try:
        yield
    finally:
        _prompt_progress.reset(token)

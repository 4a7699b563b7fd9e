"""Writing files safely: atomic writes (temp file, fsync, rename), rows as JSONL/JSON/CSV/Parquet, JSON reports.

The one place llmlabel writes files: an interrupted or failing write leaves the previous file whole.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmlabel.errors import DataError, OutputError

#: the file types llmlabel reads and writes rows as
FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


#: lone UTF-16 surrogates (e.g. read from a JSON "\udc80" escape): valid in a Python str, not in a UTF-8 file
_SURROGATES = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    """`value` with lone surrogates in its strings replaced by U+FFFD (for CSV and Parquet, which cannot escape)."""
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def json_text(value: Any, **options: Any) -> str:
    """JSON text of `value`; non-ASCII is written as is, except that lone surrogates force \\u escapes (valid JSON
    that reads back to the same string; raw, they are not UTF-8)."""
    text = json.dumps(value, ensure_ascii=False, **options)
    if _SURROGATES.search(text):
        text = json.dumps(value, ensure_ascii=True, **options)
    return text


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


#: temp files of an abandoned write older than this are removed even when their writer cannot be told (old names)
STALE_TEMP_SECONDS = 3600


def _remove_stale_temps(path: Path) -> None:
    """Remove temp files a killed writer left beside `path`; never another live writer's.

    Temp names carry their writer's pid (`.<name>.<pid>-<random>.tmp`): only those whose process is gone are removed,
    so two runs writing one file never delete each other's work in progress.
    """
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[^/]*\.tmp")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = own.fullmatch(stale.name)
        try:
            if match:
                if int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
                    continue
            elif time.time() - stale.stat().st_mtime < STALE_TEMP_SECONDS:
                continue
            stale.unlink(missing_ok=True)
        except OSError:
            continue


class _WriteFailed(Exception):
    """An OSError of the output file itself (not of the code producing its content)."""


class _GuardedHandle:
    """A text handle whose write errors (ENOSPC, EIO, EFBIG) are told apart from errors of whatever produces the rows
    (e.g. reading the input), so only the former become "cannot write <file>"."""

    def __init__(self, handle: Any):
        self._handle = handle

    def write(self, text: str) -> int:
        try:
            return self._handle.write(text)
        except OSError as exc:
            raise _WriteFailed() from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _write_error(path: Path, exc: BaseException, existed: bool) -> OutputError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    kept = f"the previous {path.name} is kept unchanged" if existed else f"no partial {path.name} was left"
    return OutputError(f"cannot write {path}: {reason}; {kept}")


def make_folder(folder: Path, what: str = "output folder") -> Path:
    """Create `folder` (and parents); a path that is a file or a device, no permission, or a full disk is a one-line
    OutputError naming it."""
    if "\x00" in str(folder):
        raise OutputError(f"{what} {str(folder)!r} contains a NUL character")
    try:
        if folder.is_symlink() and not folder.exists():
            raise OutputError(f"{what} {folder} is a symlink that leads nowhere (dangling, or a loop)")
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {folder} is not a folder (a file or a device is in the way)") from None
    except OSError as exc:
        raise OutputError(f"cannot create {what} {str(folder)[:200]}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is not a folder (a file or a device is in the way)")
    return folder


def atomic_write(path: str | Path, write: Any, text: bool = True) -> Path:
    """Create `path` atomically: `write(handle_or_tmp_path)` fills a temp file beside it, which is flushed to disk
    and renamed into place, so readers see the old file or the whole new one, never a part.

    `text=True` passes an open UTF-8 text handle; `text=False` passes the temp file's path (for writers that open
    it themselves; they raise `WriteFailed` around their own I/O). Temp files left by a killed writer are removed
    first (never a live writer's). The file gets the mode a plain `open()` would give it: an existing file's mode,
    else 0666 less the umask. A failed write (full disk, no permission) is a one-line `OutputError` that says the
    previous file is kept; errors of the code producing the content propagate as they are.
    """
    path = Path(path).expanduser()
    make_folder(path.parent)
    _remove_stale_temps(path)
    try:
        existed = path.exists()
        mode = stat.S_IMODE(path.stat().st_mode) if existed else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc, path.exists()) from None
    try:
        try:
            _guarded(os.fchmod, fd, mode)
            if text:
                handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
                try:
                    write(_GuardedHandle(handle))  # errors of the code producing the rows propagate as they are
                    _guarded(handle.flush)
                    _guarded(os.fsync, handle.fileno())
                except BaseException:
                    try:  # close() flushes what is buffered again: on a full disk that fails too, and is moot
                        handle.close()
                    except OSError:
                        pass
                    raise
                _guarded(handle.close)
            else:
                os.close(fd)
                write(tmp)
                with open(tmp, "rb") as handle:
                    _guarded(os.fsync, handle.fileno())
            _guarded(os.replace, tmp, path)
        except _WriteFailed as exc:
            raise _write_error(path, exc.__cause__ or exc, existed) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _guarded(call: Any, *args: Any) -> Any:
    """`call(*args)` with an OSError turned into `_WriteFailed` (it is the output file's own I/O)."""
    try:
        return call(*args)
    except OSError as exc:
        raise _WriteFailed() from exc


#: for writers given a temp path (`text=False`): raise this from an OSError of their own output I/O
WriteFailed = _WriteFailed


def write_rows(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows to `path` (format from its extension), atomically: a temp file renamed into place (see
    `atomic_write`), so an interrupted run leaves the previous file whole and no partial one.

    JSONL and CSV are written as the rows arrive (a generator streams with flat memory); JSON and Parquet collect
    the rows first. Text holding lone surrogates (invalid Unicode) is written as \\u escapes in JSON/JSONL (read back
    unchanged) and as U+FFFD in CSV/Parquet.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"unsupported output type '{suffix or path.name}'; use one of: {', '.join(FORMATS)}")

    def write_text(handle: Any) -> None:
        if suffix == ".jsonl":
            for row in rows:
                handle.write(json_text(row) + "\n")
        elif suffix == ".json":
            handle.write(json_text(list(rows), indent=1))
        elif suffix == ".csv":
            writer = None
            for row in rows:
                if writer is None:  # columns from the first row; later extra keys are an error
                    writer = csv.DictWriter(handle, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow({k: _scrub(_jsonable(v)) for k, v in row.items()})

    def write_parquet(tmp: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(_scrub(list(rows)))
        try:
            pq.write_table(table, tmp)
        except OSError as exc:
            raise WriteFailed() from exc

    if suffix == ".parquet":
        return atomic_write(path, write_parquet, text=False)
    return atomic_write(path, write_text)


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (temp file, fsync, rename: see `atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(json_text(data, indent=1)))

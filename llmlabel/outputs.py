"""The output folder of a run: created and checked before any model loads, and held by one run at a time.

Two runs writing one folder would interleave their predictions, reports and shards, so a run holds an advisory lock
(`flock`) on `<folder>/.llmlabel.lock` while it works; a second run fails at once with one line naming the holder's
pid. The lock belongs to the open file, so a run that is killed (even with SIGKILL) releases it: there is no stale
lock to delete by hand. A run that finishes deletes the file; a run that locked a file just deleted this way sees
that the path no longer names its file and locks the new one instead (so two runs never both hold the folder).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmlabel.errors import OutputError

LOCK_FILE = ".llmlabel.lock"

#: folders this process holds -> (lock file descriptor, how many nested holders): a run inside a run (a CLI command
#: around `run_recipe`) shares its caller's lock instead of blocking on it
_held: dict[str, tuple[int, int]] = {}
_held_guard = threading.Lock()


def _holder(fd: int) -> str:
    """What the lock file says about its holder: 'pid 123 since 10:42:07 UTC: llmlabel run r.yaml'."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(info.get("started", 0)))
    command = f": {info['command']}" if info.get("command") else ""
    return f"pid {info['pid']} since {since}{command}"


@contextmanager
def hold_output_folder(folder: str | Path) -> Iterator[Path]:
    """Create `folder` if needed and hold it for this run; yields its path.

    A folder that cannot be created or written, or that another run holds, raises a one-line `OutputError`.
    """
    from llmlabel.io import make_folder

    path = make_folder(Path(folder).expanduser())
    key = str(path.resolve())
    with _held_guard:
        if key in _held:  # nested in a run of this process that holds it already
            fd, count = _held[key]
            _held[key] = (fd, count + 1)
        else:
            _held[key] = (_acquire(path), 1)
    try:
        yield path
    finally:
        with _held_guard:
            fd, count = _held[key]
            if count > 1:
                _held[key] = (fd, count - 1)
            else:
                del _held[key]
                try:
                    os.unlink(path / LOCK_FILE)  # while still locked: see the module docstring
                except OSError:
                    pass
                os.close(fd)  # releases the lock


def _acquire(path: Path) -> int:
    for _ in range(20):
        fd = _try_acquire(path)
        try:  # still the file at the path? (the holder before us may have deleted it on its way out)
            on_disk = os.stat(path / LOCK_FILE)
            mine = os.fstat(fd)
            if (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:  # pragma: no cover - would need 20 runs finishing in a row within microseconds
        raise OutputError(f"cannot lock output folder {path}: its lock file keeps being replaced")
    command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:200] if sys.argv else ""
    info: dict[str, Any] = {"pid": os.getpid(), "started": time.time(), "command": command}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode("utf-8", "replace"))
    except OSError as exc:
        os.close(fd)
        raise OutputError(f"output folder {path} is not writable ({exc.strerror or exc}); choose another one "
                          "(--output / output.dir) or free some disk space") from None
    return fd


def _try_acquire(path: Path) -> int:
    lock = path / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(f"output folder {path} is not writable ({exc.strerror or exc}); choose another one "
                          "(--output / output.dir) or fix its permissions") from None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks, runs are not serialized
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise OutputError(f"output folder {path} is in use by another llmlabel run ({holder}); wait for it to "
                          "finish, or give this run another folder (--output / output.dir)") from None
    except OSError as exc:  # a filesystem without locks: say so rather than pretend
        os.close(fd)
        raise OutputError(f"cannot lock output folder {path} ({exc.strerror or exc}); use a local folder") from None
    return fd

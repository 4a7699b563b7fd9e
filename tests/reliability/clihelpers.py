"""Helpers for the CLI reliability tests: run the CLI in-process or as the console script, and file systems that
fail for real (a read-only mount, a full tmpfs) in a private mount namespace."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_cli as cli  # noqa: F401 - the CLI runner, shared with every test module

#: the console script of this environment (the real entry point, as a user runs it)
LLMLABEL = str(Path(sys.executable).with_name("llmlabel"))


def one_error_line(err: str) -> str:
    """The single `error: ...` line a user mistake prints (anything else on stderr fails the test)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got:\n{err}"
    assert "Traceback" not in err and "errors.pydantic.dev" not in err
    return lines[0]


@functools.lru_cache(maxsize=1)
def can_mount() -> bool:
    """Whether this process may mount file systems in a private mount namespace (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def in_namespace(script: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell `script` in a private mount namespace (its mounts vanish with it); `$LLMLABEL` is the CLI."""
    if not can_mount():
        pytest.skip("needs root with CAP_SYS_ADMIN to mount a read-only or a full file system")
    env = dict(os.environ, LLMLABEL=LLMLABEL)
    return subprocess.run(["unshare", "-m", "sh", "-c", "set -u\n" + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)

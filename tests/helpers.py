"""Helpers shared by the test modules (imported as `helpers`; tests/ is on sys.path via tests/conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LLMLABEL_SHARED_DATA", REPO.parent / "shared" / "data"))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL."""
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return Path(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `llmlabel argv` in-process through `llmlabel.cli.main`; returns (exit code, stdout, stderr).

    An exception that escapes `main` (what a user sees as a traceback) fails the test that called this."""
    from llmlabel.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def cached_rows(path) -> int:
    """Rows stored in the result cache (SQLite) at `path`; 0 while it has no results table yet."""
    import sqlite3

    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0

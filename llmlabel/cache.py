"""SQLite result store: one row per (everything that shapes a result) key, so killed runs resume losslessly.

Several processes may label into one cache at once (WAL mode, a 60 s busy timeout, one short transaction per chunk).
Corruption is detected, never served: the file is checked with `PRAGMA quick_check` when it is opened, and every
stored value carries a digest that is verified when it is read (SQLite itself has no checksums on its pages, so a
flipped byte inside a stored number would otherwise come back as a wrong score). Either failure is a one-line
`CacheError` naming the file and how to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from llmlabel.errors import CacheError

#: seconds a writer waits for another process's transaction before giving up
BUSY_TIMEOUT = 60


def cache_key(**parts: Any) -> str:
    """Stable hash of everything that shapes a result (backend, model, prompt version, exemplars, text, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def _digest(value: str) -> str:
    """Short checksum of a stored JSON value."""
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _dumps(value: Any) -> str:
    """JSON text of a result; ASCII-escaped when it holds lone surrogates (SQLite stores valid UTF-8 only)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text


class ResultCache:
    """Key -> JSON result store in one SQLite file (WAL mode, so several processes can share it).

    Results are written in small transactions as they are computed; a run killed at any point keeps everything it
    committed, and a restarted run looks results up before computing them.
    """

    def __init__(self, path: str | Path):
        from llmlabel.io import make_folder

        self.path = Path(path)
        make_folder(self.path.parent, "cache folder")  # a file in the way, no permission: one line, not a traceback
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT * 1000}")
            self._db.execute("PRAGMA journal_mode=WAL")
            check = self._db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise self._corrupted(check[0] if check else "quick_check returned nothing")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "digest TEXT)")
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(results)")]
            if "digest" not in columns:  # a cache written before values carried digests: those stay unchecked
                try:
                    self._db.execute("ALTER TABLE results ADD COLUMN digest TEXT")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process added it first
                        raise
            self._db.commit()
        except CacheError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None

    # -- errors ---------------------------------------------------------------------------------------------------
    def _corrupted(self, detail: str) -> CacheError:
        detail = " ".join(str(detail).split())[:200]
        return CacheError(f"cache file {self.path} is corrupted ({detail}); delete it and its -wal/-shm files, then "
                          "run again to rebuild it (finished rows are recomputed)")

    def _error(self, exc: sqlite3.Error) -> CacheError:
        """The one-line CacheError for an SQLite error: busy, unwritable, or (anything else) corrupted."""
        message = " ".join(str(exc).split())
        if "locked" in message or "busy" in message:
            return CacheError(f"cache file {self.path} is busy: another process held it for more than "
                              f"{BUSY_TIMEOUT} s ({message}); run again when it is done")
        if any(s in message for s in ("unable to open", "readonly", "read-only", "disk I/O", "full")):
            return CacheError(f"cache file {self.path} cannot be opened or written ({message}); check its folder, "
                              "permissions and free disk space")
        return self._corrupted(message)

    # -- reads and writes -----------------------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Stored results for the keys that have one; a value that fails its digest raises CacheError."""
        found: dict[str, Any] = {}
        try:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                marks = ",".join("?" * len(part))
                query = f"SELECT key, value, digest FROM results WHERE key IN ({marks})"
                for key, value, digest in self._db.execute(query, part):
                    if digest is not None and digest != _digest(value):
                        raise self._corrupted(f"the stored value of key {key[:12]}... fails its checksum")
                    found[key] = json.loads(value)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise self._corrupted(f"a stored value is not JSON: {exc}") from None
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store results (one transaction)."""
        if not items:
            return
        rows = []
        for key, value in items.items():
            text = _dumps(value)
            rows.append((key, text, _digest(text)))
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO results (key, value, digest) VALUES (?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def __len__(self) -> int:
        try:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Close the database."""
        self._db.close()

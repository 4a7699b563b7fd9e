"""SQLite result store: one row per (everything that shapes a result) key, so killed runs resume losslessly."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from llmlabel.errors import CacheError


def cache_key(**parts: Any) -> str:
    """Stable hash of everything that shapes a result (backend, model, prompt version, exemplars, text, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class ResultCache:
    """Key -> JSON result store in one SQLite file (WAL mode, so several processes can share it).

    Results are written in small transactions as they are computed; a run killed at any point keeps everything it
    committed, and a restarted run looks results up before computing them.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cache file {self.path} is unreadable ({exc}); delete it to rebuild the cache") from None

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Stored results for the keys that have one."""
        found: dict[str, Any] = {}
        try:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                marks = ",".join("?" * len(part))
                for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", part):
                    found[key] = json.loads(value)
        except (sqlite3.DatabaseError, json.JSONDecodeError) as exc:
            raise CacheError(f"cache file {self.path} is corrupted ({exc}); delete it to rebuild the cache") from None
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store results (one transaction)."""
        if not items:
            return
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", rows)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cache file {self.path} cannot be written ({exc}); delete it to rebuild the cache") from None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        self._db.close()

"""Corruption: a damaged cache is a one-line error naming the file and how to rebuild it, never a wrong result;
outputs are replaced atomically, so a crash leaves the previous files whole."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_jsonl
from llmlabel.backends.fake import FakeBackend
from llmlabel.cache import ResultCache, cache_key
from llmlabel.errors import CacheError
from relhelpers import sentiment_rows

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(60)]

ITEMS = {cache_key(i=i): {"scores": [-0.25 * i, -1.2345678 - i]} for i in range(3000)}


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory) -> Path:
    """A checkpointed cache file (no -wal beside it) holding ITEMS."""
    path = tmp_path_factory.mktemp("cache") / "good.sqlite"
    cache = ResultCache(path)
    cache.put_many(ITEMS)
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _truncate(fraction: float):
    def damage(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.truncate(int(path.stat().st_size * fraction))
    return damage


def _overwrite(offset: int, data: bytes):
    def damage(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.seek(offset if offset >= 0 else path.stat().st_size + offset)
            handle.write(data)
    return damage


def _flip_a_stored_digit(path: Path) -> None:
    """Change one digit of one stored score: structurally still a fine database, just a wrong number."""
    data = bytearray(path.read_bytes())
    at = data.find(b"-1.2345678")
    assert at > 0
    data[at + 3] = ord("9")
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated to half": _truncate(0.5),
    "truncated to 10%": _truncate(0.1),
    "truncated inside the header": lambda p: os.truncate(p, 50),
    "garbage over the header": _overwrite(0, os.urandom(100)),
    "garbage over a b-tree page": _overwrite(4096, b"\xff" * 4096),
    "garbage in the middle": _overwrite(-300_000, os.urandom(8192)),
    "a flipped digit in a stored value": _flip_a_stored_digit,
    "not a database at all": lambda p: p.write_text("hello, I am a text file\n" * 200),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_cache_is_a_one_line_error_never_a_wrong_result(name, good_cache, tmp_path):
    path = tmp_path / "cache.sqlite"
    shutil.copy(good_cache, path)
    DAMAGE[name](path)
    with pytest.raises(CacheError) as info:
        cache = ResultCache(path)  # most damage is caught here, by PRAGMA quick_check
        cache.get_many(list(ITEMS))  # the rest when a damaged value is read
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cache file {path} is corrupted (")
    assert message.endswith("delete it and its -wal/-shm files, then run again to rebuild it (finished rows are "
                            "recomputed)")


def test_an_emptied_cache_file_is_an_empty_cache(good_cache, tmp_path):
    """A zero-length file is a valid empty SQLite database: every row is recomputed, none is wrong."""
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"")
    cache = ResultCache(path)
    assert cache.get_many(list(ITEMS)) == {} and len(cache) == 0


def test_an_old_cache_without_digests_still_works(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema before values carried digests
        db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO results VALUES (?, ?)", ("k1", json.dumps({"scores": [-1.0, -2.0]})))
    cache = ResultCache(path)
    cache.put_many({"k2": {"scores": [-3.0, -4.0]}})
    assert cache.get_many(["k1", "k2"]) == {"k1": {"scores": [-1.0, -2.0]}, "k2": {"scores": [-3.0, -4.0]}}


def test_the_cli_reports_a_corrupted_cache_in_one_line_and_writes_nothing(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(30))
    out = tmp_path / "out"
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"name": "c", "model": {"backend": "fake"}, "data": {"path": str(data)},
                                  "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(out)}}))
    cmd = [sys.executable, "-m", "llmlabel.cli", "run", str(recipe), "-q"]
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    first = (out / "predictions.jsonl").read_bytes()
    with sqlite3.connect(out / "cache.sqlite") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _truncate(0.5)(out / "cache.sqlite")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cache file {out / 'cache.sqlite'} is corrupted (")
    assert "delete it" in done.stderr and "rebuild" in done.stderr
    assert (out / "predictions.jsonl").read_bytes() == first  # the previous output is untouched


class _Crashing(FakeBackend):
    """A fake backend that dies (like a bug or Ctrl-C) on its `crash_on`-th call."""

    def __init__(self, crash_on: int, error: BaseException):
        super().__init__()
        self.crash_on, self.error = crash_on, error

    def score(self, prompts, candidates):
        if self.calls["score"] + 1 >= self.crash_on:
            raise self.error
        return super().score(prompts, candidates)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("a bug")], ids=["interrupt", "crash"])
def test_a_crash_midway_leaves_the_previous_outputs_whole(error, tmp_path):
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    data = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(50))
    out = tmp_path / "out"
    recipe = load_recipe(data={"name": "a", "model": {"backend": "fake"}, "data": {"path": str(data)},
                               "task": {"labels": ["negative", "positive"]}, "labeling": {"chunk_size": 10},
                               "output": {"dir": str(out), "cache": None}})
    run_recipe(recipe, progress=False)
    before = {name: (out / name).read_bytes() for name in ("predictions.jsonl", "report.json")}
    with pytest.raises(type(error)):
        run_recipe(recipe, progress=False, backend=_Crashing(crash_on=3, error=error))
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "report.json"]  # no temp files left


def test_outputs_are_replaced_by_rename_never_rewritten_in_place(tmp_path, monkeypatch):
    """A reader holding the old file keeps reading the old content; the new one appears whole, under a new inode."""
    from llmlabel.io import write_rows

    path = tmp_path / "p.jsonl"
    write_rows([{"a": 1}] * 1000, path)
    inode = path.stat().st_ino
    renames = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src).name, Path(dst).name)),
                                                        real(src, dst))[1])
    with open(path, encoding="utf-8") as reader:
        write_rows([{"b": 2}] * 10, path)
        assert len(reader.read().splitlines()) == 1000  # still the old, whole file
    assert path.stat().st_ino != inode
    assert len(renames) == 1 and renames[0][1] == "p.jsonl" and renames[0][0].startswith(".p.jsonl.")
    assert path.read_text(encoding="utf-8").splitlines() == ['{"b": 2}'] * 10

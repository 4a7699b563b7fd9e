"""Small real datasets shipped with llmlabel as package data, named in recipes and flags as `llmlabel:<path>`.

`llmlabel:sst2` is the folder (split files + labels.json, so `data.split` and `labels.json` work as for any folder);
`llmlabel:sst2/test.jsonl` one file in it. Each sample folder has a SOURCE.md with its origin and license.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from llmlabel.errors import DataError, unknown

#: prefix that names a shipped sample instead of a path or a Hub dataset
SCHEME = "llmlabel:"


def samples_dir() -> Path:
    """Folder holding the shipped samples (inside the installed package)."""
    return Path(str(resources.files("llmlabel.samples")))


def names() -> list[str]:
    """Names of the shipped samples, e.g. ['sst2']."""
    return sorted(p.name for p in samples_dir().iterdir() if p.is_dir() and (p / "SOURCE.md").exists())


def is_sample(source: str) -> bool:
    """Whether `source` names a shipped sample (`llmlabel:...`)."""
    return str(source).startswith(SCHEME)


def resolve(source: str) -> Path:
    """The path of `llmlabel:<name>[/<file>]`; an unknown name or file is a one-line DataError naming the valid ones."""
    rest = str(source)[len(SCHEME):].strip("/")
    name, _, file = rest.partition("/")
    if name not in names():
        raise DataError(unknown("shipped sample", SCHEME + name, [SCHEME + n for n in names()]))
    folder = samples_dir() / name
    if not file:
        return folder
    path = folder / file
    if not path.is_file() or path.name == "SOURCE.md":
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "SOURCE.md")
        raise DataError(unknown(f"file in {SCHEME}{name}", file, files))
    return path

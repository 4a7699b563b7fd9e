"""Run every shipped recipe on the fake backend (small slices) and fingerprint what it wrote.

The check of a behaviour-preserving refactor: run it before and after, then compare the two files.

    python benchmarks/recipes_on_fake.py --out /tmp/before.json
    ... change the code ...
    python benchmarks/recipes_on_fake.py --out /tmp/after.json --compare /tmp/before.json

Files of rows (predictions, labeled data, taxonomies) are fingerprinted byte for byte; JSON reports by their keys. Recipes that train a student
use the real default model for the student (the fake backend only stands in for the LLM labeler), on a few rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE = ["model.backend=fake", "model.name=fake", "model.options={}"]

#: per recipe: the overrides that make it small and put the LLM on the fake backend
OVERRIDES: dict[str, list[str]] = {
    "audit": FAKE + ["data.limit=120"],
    "estimate": FAKE + ["data.limit=300", "estimate.gold.size=60"],
    "distill_student": FAKE + ["data.limit=40", "eval_data.limit=20", "student.epochs=1"],
    "weak_to_strong": ["half_size=30", "eval_data.limit=20", "student.epochs=1", "losses=[ce]"],
    "symbol_tuning": None,  # type: ignore[dict-item]  # trains the real model: not a fake-backend recipe
    "tnt_llm": FAKE + ["data.limit=80"],
}
DEFAULT = FAKE + ["data.limit=60"]


def _keys(value: object) -> object:
    """The shape of a JSON report: its keys, nested (lists by their first item)."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(value[0])] if value else []
    return None


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of each file of rows (predictions, labeled data, taxonomies), byte for byte; of each JSON report only
    its keys, nested (its numbers include timings, which differ from run to run by design)."""
    prints = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".jsonl", ".csv", ".yaml", ".json") or "adapter" in path.parts:
            continue
        # the run's own folder (a new temp folder each run) may be named inside a file: it is not the behaviour
        data = path.read_bytes().replace(str(folder).encode(), b"<out>")
        if path.suffix == ".json":
            try:
                data = json.dumps(_keys(json.loads(data)), sort_keys=True).encode()
            except ValueError:
                pass
        prints[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()[:16]
    return prints


def run_all(only: list[str]) -> dict[str, dict]:
    results = {}
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        name = recipe.stem
        overrides = OVERRIDES.get(name, DEFAULT)
        if overrides is None or (only and name not in only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            args = [sys.executable, "-m", "llmlabel.cli", "run", str(recipe), "-q", "--set", f"output.dir={tmp}"]
            for item in overrides:
                args += ["--set", item]
            start = time.perf_counter()
            proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - start
            entry = {"rc": proc.returncode, "files": fingerprint(Path(tmp))}
            if proc.returncode:
                entry["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            results[name] = entry
            print(f"{name}: rc={proc.returncode} {seconds:.0f}s {len(entry['files'])} files", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="a previous --out file: exit 1 if anything differs")
    parser.add_argument("--only", nargs="*", default=[], help="recipe names to run (default: all)")
    args = parser.parse_args()
    results = run_all(args.only)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    differ = 0
    for name, entry in results.items():
        old = before.get(name)
        if old != entry:
            differ += 1
            print(f"DIFFERS {name}: before {old} after {entry}")
    print(f"{len(results) - differ} of {len(results)} recipes byte-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's quickstart, measured: `llmlabel run recipes/quickstart.yaml` from an empty output folder (model
already converted), then the same command again (every row from the cache, the model not loaded), in the default
dtype (auto) and in float32 (what `auto` picks on CPUs without AMX). Optionally (`--cold-model`) the first use of
the default model too: converting its GGUF into a fresh cache folder.

Writes benchmarks/results/quickstart.json and the README block between <!-- quickstart:start/end -->.

    python benchmarks/quickstart.py [--threads 1] [--cold-model]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "quickstart.json"
README = ROOT / "README.md"
COMMAND = ["llmlabel", "run", "recipes/quickstart.yaml"]


def _run(extra: list[str], out: Path, env: dict[str, str]) -> dict:
    """One run of the quickstart command (via this interpreter's llmlabel), timed; its report's numbers."""
    cmd = [sys.executable, "-m", "llmlabel.cli", *COMMAND[1:], "--set", f"output.dir={out}", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    report = json.loads((out / "report.json").read_text())
    metrics = report["metrics"]
    return {"wall_s": round(wall, 2), "labeling_s": report["stats"]["seconds"],
            "model_load_s": report.get("model_load_seconds"), "model_loaded": report.get("model_loaded"),
            "rows": report["rows"], "cached": report["stats"]["cached"], "model": report["model"],
            "accuracy": round(metrics["accuracy"], 4), "macro_f1": round(metrics["macro_f1"], 4),
            "ece": round(metrics.get("ece", 0.0), 4), "output_lines": len(proc.stdout.splitlines())}


def _table(results: dict) -> str:
    load = results.get("load_average")
    shared = f", load average {load[0]} -> {load[-1]} (other jobs shared the machine)" if load else ""
    lines = [f"Measured by `python benchmarks/quickstart.py` ({results['machine']}, {results['threads']} torch "
             f"thread(s), {results['date']}{shared}; the model already converted):", "",
             "| dtype | rows | accuracy | macro-F1 | ECE | first run (s) | re-run, all cached (s) | re-run / first |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in results["runs"].items():
        first, again = run["first"], run["cached"]
        lines.append(f"| {name} | {first['rows']} | {first['accuracy']:.3f} | {first['macro_f1']:.3f} | "
                     f"{first['ece']:.3f} | {first['wall_s']:.1f} | {again['wall_s']:.1f} | "
                     f"{again['wall_s'] / first['wall_s']:.2f} |")
    if results.get("cold_model"):
        cold = results["cold_model"]
        lines += ["", f"First use of the default model (GGUF -> Hugging Face folder, into an empty cache): "
                      f"{cold['wall_s']:.1f} s for the first run of 200 rows, conversion included."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS) for every run")
    parser.add_argument("--cold-model", action="store_true", help="also time a first run that converts the model")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README block")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results: dict = {"command": " ".join(COMMAND), "date": date.today().isoformat(), "threads": args.threads,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": {},
                     # other jobs on the machine slow every wall time here: the 1-minute load average before/after
                     "load_average": [round(os.getloadavg()[0], 1)]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("auto", []), ("float32", ["--set", "model.options.dtype=float32"])):
            out = Path(tmp) / name
            first = _run(extra, out, env)
            cached = _run(extra, out, env)
            assert cached["cached"] == cached["rows"] and cached["model_loaded"] is False, cached
            results["runs"][f"{name} ({first['model'].rsplit('@', 1)[-1]})"] = {"first": first, "cached": cached}
            print(name, first, cached, flush=True)
        if args.cold_model:
            from llmlabel.models import SMOLLM2_GGUF, _fetch_smollm2_gguf

            cold_cache = Path(tmp) / "cache"
            (cold_cache / "downloads").mkdir(parents=True)
            shutil.copy(_fetch_smollm2_gguf(), cold_cache / "downloads" / SMOLLM2_GGUF)  # the file, not a download
            results["cold_model"] = _run([], Path(tmp) / "cold", {**env, "LLMLABEL_CACHE_DIR": str(cold_cache)})
    results["load_average"].append(round(os.getloadavg()[0], 1))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    if not args.no_readme:
        text = README.read_text()
        block = f"<!-- quickstart:start -->\n{_table(results)}\n<!-- quickstart:end -->"
        text, n = re.subn(r"<!-- quickstart:start -->.*?<!-- quickstart:end -->", block, text, flags=re.S)
        if n:
            README.write_text(text)
            print("README quickstart block updated")
        else:
            print("README has no quickstart block; table:\n" + _table(results))


if __name__ == "__main__":
    main()

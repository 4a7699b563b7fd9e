"""Scale-out benchmark: items/s of the ray executor with 1 vs 2 local workers, and what a worker costs.

Columns: labeling s is the wall time of the Ray job (actors starting included); busiest engine s the time the busiest
actor spent labeling; overhead s the difference (actor processes starting, scheduling, transfers); engine build s
the time an actor took to build its backend and Labeler (the model load).

Two engines: the fake backend with a fixed time per row (it stands in for a GPU engine of known throughput: sleeping
costs no CPU, so two workers really run side by side on 2 cores) and the real transformers backend (SmolLM2,
quickstart recipe on SST-2). Each run starts from empty outputs on one local Ray cluster started once.

Writes benchmarks/results/scale.json and the README table between `<!-- scale:start -->` / `<!-- scale:end -->`:

    python benchmarks/scale.py                       # fake: 400 rows at 20 ms/row; transformers: 200 sst2 rows
    python benchmarks/scale.py --real-rows 0         # fake engine only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
#: corpus sizes the prediction table extrapolates to
PREDICT_ROWS = 1_000_000
PREDICT_ENGINES = (1, 2, 4, 8, 16, 64)


def one_run(recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run a recipe dict into a fresh output folder; return the numbers the tables use."""
    from llmlabel.config import load_recipe

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = load_recipe(data={**recipe, "output": {"dir": str(out), "cache": None}}).run(progress=False)
    wall = time.perf_counter() - start
    rows = summary["rows"]
    record: dict[str, Any] = {"rows": rows, "wall_seconds": round(wall, 3),
                              "items_per_second": round(rows / wall, 3),
                              "accuracy": summary.get("metrics", {}).get("accuracy")}
    ex = summary.get("executor")
    if ex:
        workers = ex["per_worker"]
        busy = max(w["seconds"] for w in workers.values())
        record.update(
            workers=ex["workers"], shards=ex["shards"],
            labeling_seconds=ex["labeling_seconds"],
            # engine time of the busiest worker; the rest of the labeling wall time is what scaling out costs
            busiest_worker_seconds=round(busy, 3),
            overhead_seconds=round(ex["labeling_seconds"] - busy, 3),
            actor_init_seconds=round(sum(w.get("init_seconds", 0) for w in workers.values()) / len(workers), 3),
            engine_items_per_second=round(sum(w["rows"] for w in workers.values())
                                          / sum(w["seconds"] for w in workers.values()), 3),
            driver_seconds=round(ex["put_seconds"] + ex["collect_seconds"] + ex["merge_seconds"], 3),
            rows_per_worker=sorted(w["rows"] for w in workers.values()))
    else:
        record["engine_items_per_second"] = summary["stats"]["items_per_second"]
    return record


def scenario(name: str, recipe: dict[str, Any], shard_size: int, scratch: Path, repeats: int) -> dict[str, Any]:
    """Local executor, then ray with 1 and with 2 workers, on the same recipe; `repeats` rounds in turn, and the best
    round of each setting is kept (the machine is shared, so the slower rounds measure other people's jobs)."""
    settings = {"local": recipe}
    for workers in (1, 2):
        settings[f"ray{workers}"] = {**recipe, "executor": "ray", "ray": {"num_workers": workers, "shard_size": shard_size}}
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in settings}
    for _ in range(repeats):
        for key, config in settings.items():
            rounds[key].append(one_run(config, scratch / f"{name}-{key}"))
            print(f"{name} {key}: {rounds[key][-1]}", flush=True)
    runs = {key: max(rs, key=lambda r: r["items_per_second"]) | {"items_per_second_all": [r["items_per_second"] for r in rs]}
            for key, rs in rounds.items()}
    r1, r2 = runs["ray1"], runs["ray2"]
    summary = {
        "speedup_2_vs_1": round(r2["items_per_second"] / r1["items_per_second"], 3),
        "labeling_speedup_2_vs_1": round(r1["labeling_seconds"] / r2["labeling_seconds"], 3),
        # rows/s of the driver's serial work (put shards, write results, merge): the ceiling of the whole cluster
        "driver_rows_per_second": round(r2["rows"] / r2["driver_seconds"], 1) if r2["driver_seconds"] else None,
    }
    return {"recipe": {k: v for k, v in recipe.items() if k != "output"}, "shard_size": shard_size, "runs": runs,
            "repeats": repeats, "summary": summary}


def predict(engine_rate: float, overhead: float, driver_rate: float) -> list[dict[str, Any]]:
    """The design's prediction for N engines on PREDICT_ROWS rows: every engine labels its share at the measured
    single-engine rate after a one-off start (actor + model load, in parallel), and the driver's serial work caps the
    rate: items/s(N) = R / (overhead + R / min(N * engine_rate, driver_rate))."""
    out = []
    for n in PREDICT_ENGINES:
        rate = min(n * engine_rate, driver_rate)
        seconds = overhead + PREDICT_ROWS / rate
        out.append({"engines": n, "items_per_second": round(PREDICT_ROWS / seconds, 1),
                    "speedup": round((PREDICT_ROWS / seconds) / (PREDICT_ROWS / (overhead + PREDICT_ROWS / engine_rate)), 2)})
    return out


def render(results: dict[str, Any]) -> str:
    """The README table from the results file."""
    meta = results["meta"]
    lines = [f"{meta['machine']}, {meta['date']}; local Ray cluster of {meta['ray_cpus']} CPUs (started in "
             f"{meta['cluster_start_seconds']:.1f} s, not counted), one actor per worker (1 CPU, so 1 torch thread, each; "
             f"the local executor also runs 1 thread); best of {meta['repeats']} rounds per setting; load average "
             f"{meta['load_average']:.1f} during the runs (the machine is shared with other jobs).", "",
             "| engine (rows) | executor | workers | items/s | labeling s | busiest engine s | overhead s "
             "| engine build s | accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    for name, sc in results["scenarios"].items():
        for key, run in sc["runs"].items():
            if key == "local":
                lines.append(f"| {name} ({run['rows']}) | local | 1 | {run['items_per_second']:.1f} | | | | | "
                             f"{run['accuracy'] if run['accuracy'] is None else format(run['accuracy'], '.3f')} |")
                continue
            lines.append(f"| {name} ({run['rows']}) | ray | {run['workers']} | {run['items_per_second']:.1f} | "
                         f"{run['labeling_seconds']:.1f} | {run['busiest_worker_seconds']:.1f} | "
                         f"{run['overhead_seconds']:.1f} | {run['actor_init_seconds']:.1f} | "
                         f"{run['accuracy'] if run['accuracy'] is None else format(run['accuracy'], '.3f')} |")
    lines.append("")
    for name, sc in results["scenarios"].items():
        s = sc["summary"]
        lines.append(f"- {name}: 2 workers vs 1: {s['speedup_2_vs_1']:.2f}x end to end, "
                     f"{s['labeling_speedup_2_vs_1']:.2f}x in labeling time; the driver's serial work runs at "
                     f"{s['driver_rows_per_second']:,.0f} rows/s.")
    driver = results.get("driver")
    if driver:
        lines.append(f"- driver ceiling: the driver's serial work (shards into the object store, results into Parquet, "
                     f"the merge) on {driver['rows']:,} rows of a zero-cost engine took {driver['driver_seconds']:.1f} s: "
                     f"{driver['driver_rows_per_second']:,.0f} rows/s.")
    preds = results.get("prediction") or {}
    if preds:
        engines = next(iter(preds.values()))["table"]
        lines += ["", f"What the design predicts for {PREDICT_ROWS:,} rows on N engines (one per GPU or worker), from each engine's "
                  "measured single-engine rate and one-off start (1-worker run), capped by the driver ceiling: "
                  "items/s(N) = R / (start + R / min(N x rate, driver)):", "",
                  "| engine (rate, start) | " + " | ".join(f"N={p['engines']}" for p in engines) + " |",
                  "|---|" + "---|" * len(engines)]
        for name, pred in preds.items():
            lines.append(f"| {name} ({pred['engine_items_per_second']:.1f} rows/s, {pred['overhead_seconds']:.0f} s) | "
                         + " | ".join(f"{p['items_per_second']:,.0f} ({p['speedup']:.1f}x)" for p in pred["table"])
                         + " |")
    return "\n".join(lines)


def main() -> None:
    from benchmarks.common import save_results, update_readme

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake-rows", type=int, default=400)
    parser.add_argument("--fake-delay", type=float, default=0.02, help="seconds per row of the fake engine")
    parser.add_argument("--real-rows", type=int, default=200, help="sst2 rows for the transformers runs (0: skip)")
    parser.add_argument("--driver-rows", type=int, default=20000, help="rows of the driver-ceiling run (0: skip)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per setting; the best is kept")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results or README")
    args = parser.parse_args()

    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the local executor's torch: one core, like one actor
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, logging_level="WARNING")
    cluster_start = time.perf_counter() - start
    scratch = Path(tempfile.mkdtemp(prefix="llmlabel-scale-"))
    sst2 = DATA / "sst2" / "test.jsonl"
    loads = [os.getloadavg()[0]]
    scenarios = {}
    driver: dict[str, Any] = {}
    try:
        fake = {"name": "scale-fake", "model": {"backend": "fake", "options": {"delay": args.fake_delay}},
                "data": {"path": str(sst2), "limit": args.fake_rows},
                "task": {"labels": ["negative", "positive"]}}
        # Warm-up (not recorded): the first Ray Data job of a process pays one-off imports and set-up.
        one_run({**fake, "data": {"path": str(sst2), "limit": 8}, "executor": "ray", "ray": {"num_workers": 2}},
                scratch / "warmup")
        scenarios[f"fake {1000 * args.fake_delay:g} ms/row"] = scenario("fake", fake, max(args.fake_rows // 8, 1),
                                                                        scratch, args.repeats)
        loads.append(os.getloadavg()[0])
        if args.driver_rows:
            # The driver's serial work (shards into the object store, results into Parquet, the merge) measured on
            # many rows of an engine that costs nothing: the ceiling of the cluster's rate.
            from llmlabel.data import Dataset
            from llmlabel.io import write_rows

            base = list(Dataset(sst2))
            corpus = write_rows(({**base[i % len(base)], "id": i} for i in range(args.driver_rows)),
                                scratch / "corpus.jsonl")
            quick = {**fake, "model": {"backend": "fake"}, "data": {"path": str(corpus)}}
            run = one_run({**quick, "executor": "ray", "ray": {"num_workers": 2, "shard_size": 1000}},
                          scratch / "driver")
            driver = {"rows": run["rows"], "driver_seconds": run["driver_seconds"],
                      "driver_rows_per_second": round(run["rows"] / run["driver_seconds"], 1)}
            print(f"driver: {driver}", flush=True)
        if args.real_rows:
            real = {"name": "scale-transformers", "model": {"backend": "transformers", "name": "smollm2"},
                    "data": {"path": str(sst2), "limit": args.real_rows},
                    "task": {"labels": ["negative", "positive"], "instruction": "Classify the sentiment of the movie review.",
                             "text_name": "Review"},
                    "labeling": {"calibration": "contextual"}}
            scenarios["transformers SmolLM2 bf16"] = scenario("transformers", real, max(args.real_rows // 8, 1),
                                                              scratch, args.repeats)
            loads.append(os.getloadavg()[0])
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    # The design's prediction per engine: its measured single-engine rate and one-off actor overhead (1 worker),
    # capped by the measured driver ceiling.
    predictions = {}
    for name, sc in scenarios.items():
        r1 = sc["runs"]["ray1"]
        ceiling = driver.get("driver_rows_per_second") or sc["summary"]["driver_rows_per_second"]
        predictions[name] = {
            "engine_items_per_second": r1["engine_items_per_second"], "overhead_seconds": r1["overhead_seconds"],
            "driver_rows_per_second": ceiling,
            "table": predict(r1["engine_items_per_second"], r1["overhead_seconds"], ceiling)}
    results = {"meta": {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                        "date": time.strftime("%Y-%m-%d"), "ray": ray.__version__, "ray_cpus": 2,
                        "repeats": args.repeats,
                        "cluster_start_seconds": round(cluster_start, 2),
                        "load_average": round(sum(loads) / len(loads), 2)},
               "scenarios": scenarios, "driver": driver, "prediction": predictions}
    print(render(results))
    if not args.no_write:
        save_results(RESULTS, results)
        update_readme("scale", render(results))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

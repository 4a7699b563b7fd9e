"""ICL stress suite: regular ICL, SUL-ICL, flipped-label ICL and label-free zero-shot on held-out tasks.

Default: runs `recipes/symbol_tuning.yaml` (symbol-tune the default model with LoRA per seed, then the stress suite on
held-out sst2 and trec, base vs tuned, 3 seeds), writes benchmarks/results/icl_stress.json and the README table
between the icl_stress markers. `--eval-only` runs only the stress suite for any model (and adapter):

    python benchmarks/icl_stress.py                                  # the recipe, 3 seeds (~17 min on 1 CPU thread)
    python benchmarks/icl_stress.py --set seeds=[0] --set tuning.steps=10 --no-write   # a quick look
    python benchmarks/icl_stress.py --eval-only --model smollm2 --adapter runs/icl_stress/seed0/adapter
    python benchmarks/icl_stress.py --set seeds=[0] --set tuning.steps=300 --set tuning.prompts=1200 \\
        --out-dir runs/icl_stress_long \\
        --results benchmarks/results/icl_stress_long.json           # a longer tuning run (no README table)
    python benchmarks/icl_stress.py --in-domain      # the saved adapters on ag_news test (a tuning task, new rows)
    python benchmarks/icl_stress.py --render-only                    # rebuild the README table

Threads: `LLMLABEL_THREADS` (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import update_readme  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "icl_stress.json"
RECIPE = ROOT / "recipes" / "symbol_tuning.yaml"
NAMES = {"regular": "regular ICL", "sul": "SUL-ICL", "flipped": "flipped labels", "zero_shot": "zero-shot"}


def _cell(stat: dict | None) -> str:
    return "-" if not stat else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _spread(flag: bool | None) -> str:
    return "n/a (1 seed)" if flag is None else ("yes" if flag else "no")


def render(record: dict) -> str:
    """The README table: per held-out task and setting, base and symbol-tuned accuracy and the gain."""
    meta = record["meta"]
    lines = [f"Held-out tasks, {meta['rows']} test rows each, accuracy mean ± std over seeds {meta['seeds']} "
             f"({meta['model']}, LoRA r={meta['lora_r']}, {meta['steps']} steps x {meta['batch_size']} prompts, "
             f"{meta['tuning_seconds']:.0f} s tuning per seed; {meta['machine']}, {meta['threads']} thread(s), "
             f"{meta['minutes']:.0f} min in all). Flipped: accuracy against the flipped labels (binary tasks only).",
             "",
             "| task | setting | base | symbol-tuned | gain | beyond seed spread |",
             "|---|---|---|---|---|---|"]
    for task, settings in record["summary"].items():
        for setting, row in settings.items():
            if not row.get("base"):
                continue
            lines.append(f"| {task} | {NAMES.get(setting, setting)} | {_cell(row['base'])} | {_cell(row['tuned'])} | "
                         f"{row['gain']:+.3f} | {_spread(row['beyond_spread'])} |")
    extra = record.get("in_domain")
    if extra:
        lines += ["", f"Diagnostic, not held out: {extra['task']} test rows ({extra['rows']}), a task the adapters were "
                  "tuned on (other rows, eval words never tuned on), same adapters and seeds.", "",
                  "| task | setting | base | symbol-tuned | gain | beyond seed spread |", "|---|---|---|---|---|---|"]
        for task, settings in extra["summary"].items():
            for setting, row in settings.items():
                lines.append(f"| {task} (tuned on) | {NAMES.get(setting, setting)} | {_cell(row['base'])} | "
                             f"{_cell(row['tuned'])} | {row['gain']:+.3f} | {_spread(row['beyond_spread'])} |")
    return "\n".join(lines)


def in_domain(record: dict, rows: int, model_options: dict) -> dict:
    """The saved adapters (and the base model) on ag_news test rows: tuned on that task (other rows), so this shows
    whether tuning learned the mapping at all, apart from whether it transfers to held-out tasks."""
    from llmlabel.backends.base import load_backend
    from llmlabel.config import DataConfig
    from llmlabel.training.icl_stress import StressConfig, StressTask, evaluate_stress, summarize

    data = ROOT.parent / "shared" / "data" / "ag_news"
    config = StressConfig(tasks=[StressTask(data=DataConfig(path=str(data / "test.jsonl")),
                                            pool=DataConfig(path=str(data / "train.jsonl")))],
                          settings=["regular", "sul", "zero_shot"], rows=rows)
    base = load_backend(record["meta"]["backend"], model=record["meta"]["model"], **model_options)
    records = []
    try:
        for seed_record in record["records"]:
            seed = seed_record["seed"]
            tuned = load_backend(record["meta"]["backend"], model=record["meta"]["model"],
                                 adapter=seed_record["adapter"], **model_options)
            try:
                records.append({"seed": seed, "base": evaluate_stress(base, config, seed),
                                "tuned": evaluate_stress(tuned, config, seed)})
            finally:
                tuned.close()
    finally:
        base.close()
    return {"task": "ag_news", "rows": rows, "records": records, "summary": summarize(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. seeds=[0]")
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "icl_stress"), help="adapters and the report")
    parser.add_argument("--eval-only", action="store_true", help="only the stress suite, for --model/--adapter")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--results", default=str(RESULTS),
                        help="results file; the README table is written only for the default one")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results and README alone")
    parser.add_argument("--in-domain", action="store_true",
                        help="add the ag_news (tuned-on task) diagnostic for the adapters in the results file")
    parser.add_argument("--render-only", action="store_true", help="rebuild the README table from the results file")
    args = parser.parse_args()
    results = Path(args.results)
    readme = results.resolve() == RESULTS.resolve()
    if args.render_only:
        update_readme("icl_stress", render(json.loads(RESULTS.read_text())))
        return
    import torch

    threads = int(os.environ.get("LLMLABEL_THREADS", "1"))
    torch.set_num_threads(threads)
    from llmlabel.config import load_recipe

    recipe = load_recipe(args.recipe, [f"output.dir={args.out_dir}", *args.set])
    if args.in_domain:
        record = json.loads(results.read_text())
        record["in_domain"] = in_domain(record, recipe.eval.rows, recipe.model.options)
        print(render(record))
        results.write_text(json.dumps(record, indent=1) + "\n")
        if readme:
            update_readme("icl_stress", render(record))
        return
    started = time.perf_counter()
    if args.eval_only:
        from llmlabel.backends.base import load_backend
        from llmlabel.training.icl_stress import evaluate_stress

        options = dict(recipe.model.options, **({"adapter": args.adapter} if args.adapter else {}))
        backend = load_backend(args.backend, model=args.model, **options)
        try:
            out = {seed: evaluate_stress(backend, recipe.eval, seed) for seed in recipe.seeds}
        finally:
            backend.close()
        print(json.dumps({"model": backend.model_id, "results": out}, indent=1))
        return
    recipe.tuning.threads = threads
    summary = recipe.run(progress=True)
    minutes = (time.perf_counter() - started) / 60
    record = {
        "meta": {"model": recipe.model.name, "backend": recipe.model.backend, "seeds": recipe.seeds,
                 "rows": recipe.eval.rows, "lora_r": recipe.tuning.lora_r, "steps": recipe.tuning.steps,
                 "batch_size": recipe.tuning.batch_size, "threads": threads, "minutes": round(minutes, 1),
                 "tuning_seconds": sum(r["tuning"]["seconds"] for r in summary["records"]) / len(summary["records"]),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")},
        "tuning": summary["tuning"], "eval": summary["eval"], "records": summary["records"],
        "summary": summary["summary"]}
    print(render(record))
    if args.no_write:
        return
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=1) + "\n")
    if readme:
        update_readme("icl_stress", render(record))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()

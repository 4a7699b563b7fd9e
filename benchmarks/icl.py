"""In-context exemplar selection benchmark: every selector x k x seed x calibration on the shared datasets.

For each dataset, a fixed random sample of test rows is labeled by the default model (transformers backend, score
mode). Each seed draws a different exemplar pool (a random sample of the train split), so every selector has a seed
spread. Calibrations are applied to the same raw scores (one LLM pass per selector/k/seed; probes are extra).
Results are appended to benchmarks/results/icl.json after every configuration (a killed run keeps what it finished,
and the persistent result cache makes a re-run skip every row already scored); the README table is rebuilt from it.

    python benchmarks/icl.py --datasets sst2 --rows 500               # the spec's size, one dataset
    python benchmarks/icl.py --datasets sst2,trec,ag_news,rte,banking77 --rows 200   # the committed table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from llmlabel.cache import ResultCache
from llmlabel.data import Dataset, load_labels_file
from llmlabel.labeling.labeler import Labeler
from llmlabel.metrics import evaluate, majority_baseline
from llmlabel.models import cache_dir
from llmlabel.selection.base import make_selector, pool_from_rows
from llmlabel.core.task import LabelTask

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LLMLABEL_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(os.environ.get("LLMLABEL_ICL_RESULTS", ROOT / "benchmarks" / "results" / "icl.json"))
sys.path.insert(0, str(ROOT))
SELECTORS = ("random", "balanced", "knn", "bm25", "mmr", "votek", "epr")
CALIBRATIONS = ("none", "contextual", "domain", "incontext", "batch")
TASKS = {
    "sst2": dict(instruction="Classify the sentiment of the movie review.", text_name="Review"),
    "ag_news": dict(instruction="Classify the topic of the news article.", text_name="Article"),
    "trec": dict(instruction="Classify the type of answer the question asks for.", text_name="Question"),
    "rte": dict(instruction="Does the premise entail the hypothesis?", text_name="Premise",
                text_pair_name="Hypothesis", text_pair_field="text_pair"),
    "banking77": dict(instruction="Classify the intent of the bank customer's message.", text_name="Message",
                      humanize_labels=True),
    "clinc150": dict(instruction="Classify the intent of the user's request.", text_name="Request",
                     humanize_labels=True),
}
#: Selector options sized for a 2-core CPU run (EPR scores train_queries x candidates one-shot prompts per seed).
SELECTOR_OPTIONS = {"epr": dict(train_queries=48, candidates=6), "votek": dict(budget=100)}
#: Many-label tasks: per-row candidate labels for the embedding selectors (random/balanced score every label).
RESTRICT = {"banking77": 10}


def make_task(dataset: str) -> LabelTask:
    """The LabelTask of a shared dataset."""
    return LabelTask(labels=load_labels_file(DATA / dataset / "labels.json"), **TASKS[dataset])


def test_rows(dataset: str, rows: int) -> list[dict]:
    """A fixed random sample (seed 1234) of `rows` test rows (all of them where fewer)."""
    items = list(Dataset(DATA / dataset / "test.jsonl"))
    if len(items) > rows:
        items = random.Random(1234).sample(items, rows)
    return items


def summarize(gold: list[str], out: list[dict], names: list[str]) -> dict:
    """Accuracy and macro-F1 of one labeling."""
    report = evaluate(gold, [r["label"] for r in out], names, [r["confidence"] for r in out])
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}


def _threads_for_load() -> None:
    """On a shared machine, one torch thread per process wastes less CPU than threads waiting on descheduled
    siblings; use every core only when the machine is otherwise idle. (Accuracy does not depend on it.)"""
    import torch

    if os.environ.get("LLMLABEL_BENCH_THREADS"):  # set by the caller: trust it
        torch.set_num_threads(int(os.environ["LLMLABEL_BENCH_THREADS"]))
        return
    busy = os.getloadavg()[0] > (os.cpu_count() or 1) + 0.5
    torch.set_num_threads(1 if busy else os.cpu_count() or 1)


def add_engine_args(parser) -> None:
    """--dtype and --threads, shared by the accuracy benchmarks."""
    parser.add_argument("--dtype", default="auto", help="transformers dtype (auto: the faster one on this machine)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: all cores on an idle machine, 1 when it is busy)")


def record_dtype(record: dict) -> str:
    """The model dtype a results record was made with (records from before the dtype field ran in bfloat16)."""
    return record.get("dtype") or "bfloat16"


def run_config(backend, task, items, gold, cache, selector, k, seed, restrict, record_base) -> list[dict]:
    """One LLM pass (selector, k, seed); every calibration evaluated on its raw scores. Returns result records."""
    _threads_for_load()
    records = []
    for calibration in CALIBRATIONS:
        labeler = Labeler(backend, task, cache=cache, chunk_size=64, calibration=calibration, selector=selector,
                          k=k, ordering="similar_last", restrict_labels=restrict if selector is not None and
                          hasattr(selector, "similarities") else None, seed=seed, progress=calibration == "none")
        start = time.perf_counter()
        out = labeler.label(items)
        records.append({**record_base, "calibration": calibration, **summarize(gold, out, task.names),
                        "seconds": round(time.perf_counter() - start, 1), "computed": labeler.stats.computed})
    return records


def knn_vote(selector, items, task, k: int = 4) -> list[dict]:
    """The retrieval-only baseline: majority label of the k nearest pool examples (similarity-weighted ties)."""
    texts, pairs = zip(*(task.texts(r) for r in items))
    sims = selector.similarities(list(texts), list(pairs))
    out = []
    for row in sims:
        top = np.argsort(-row, kind="stable")[:k]
        votes: dict[str, float] = {}
        for j in top:
            votes[selector.pool[j].label] = votes.get(selector.pool[j].label, 0.0) + 1.0 + 1e-3 * float(row[j])
        label = max(votes, key=votes.get)
        out.append({"label": label, "confidence": votes[label] / sum(votes.values())})
    return out


def run_dataset(dataset: str, rows: int, ks: list[int], seeds: list[int], selectors: list[str], pool_size: int,
                backend, results: list[dict], save) -> None:
    """All configurations of one dataset, appending records to `results` and saving after each."""
    task = make_task(dataset)
    items = test_rows(dataset, rows)
    gold = [task.gold(r) for r in items]
    train = list(Dataset(DATA / dataset / "train.jsonl"))
    cache = ResultCache(cache_dir() / "bench-icl" / f"{dataset}.sqlite")
    done = {(r["dataset"], r["selector"], r["k"], r["seed"], r["calibration"], r["rows"]) for r in results}
    base = {"dataset": dataset, "rows": len(items), "dtype": getattr(backend, "dtype", None)}
    majority = majority_baseline(gold)[1]
    if (dataset, "majority", 0, 0, "none", len(items)) not in done:
        results.append({**base, "selector": "majority", "k": 0, "seed": 0, "calibration": "none",
                        "accuracy": round(majority, 4), "macro_f1": None})
    if 0 in ks and (dataset, "zero-shot", 0, 0, "none", len(items)) not in done:
        results.extend(run_config(backend, task, items, gold, cache, None, 0, 0, None,
                                  {**base, "selector": "zero-shot", "k": 0, "seed": 0}))
        save()
    for k in [k for k in ks if k > 0]:
        for seed in seeds:
            pool_rows = random.Random(seed).sample(train, min(pool_size, len(train)))
            pool = pool_from_rows(pool_rows, "text", "label", task.text_pair_field, label_of=task.gold)
            for name in selectors:
                if (dataset, name, k, seed, "none", len(items)) in done:
                    continue
                start = time.perf_counter()
                selector = make_selector(name, seed=seed, **SELECTOR_OPTIONS.get(name, {}))
                scorer = Labeler(backend, task, cache=cache) if selector.needs_scorer else None
                selector.fit(pool, scorer=scorer.demo_scores if scorer else None)
                fit_seconds = round(time.perf_counter() - start, 1)
                if name == "knn" and (dataset, "4-NN vote (no LLM)", 4, seed, "none", len(items)) not in done:
                    results.append({**base, "selector": "4-NN vote (no LLM)", "k": 4, "seed": seed,
                                    "calibration": "none", **summarize(gold, knn_vote(selector, items, task), task.names)})
                records = run_config(backend, task, items, gold, cache, selector, k, seed, RESTRICT.get(dataset),
                                     {**base, "selector": name, "k": k, "seed": seed, "fit_seconds": fit_seconds})
                results.extend(records)
                save()
                print(f"{dataset} {name} k={k} seed={seed}: " + ", ".join(
                    f"{r['calibration']} {r['accuracy']:.3f}/{r['macro_f1']:.3f}" for r in records), flush=True)


def _key(record: dict) -> tuple:
    return (record["dataset"], record["selector"], record["k"], record["seed"], record["calibration"], record["rows"])


def _agg(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def render(results: list[dict], meta: dict) -> str:
    """Markdown tables: accuracy per selector and k (no calibration), and macro-F1 per calibration at the largest k."""
    lines = [f"{meta['model']}, {meta['machine']}, {meta['date']}; mean ± std over seeds (exemplar pools); "
             "ordering most-similar-last. Accuracy % (no calibration) and macro-F1 % at the largest k per calibration.",
             ""]
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        rs = [r for r in results if r["dataset"] == dataset]
        ks = sorted({r["k"] for r in rs if r["selector"] not in ("majority", "4-NN vote (no LLM)", "zero-shot")})
        top_k = max(ks) if ks else 0
        lines.append(f"**{dataset}** ({rs[0]['rows']} test rows, {record_dtype(rs[0])})\n")
        lines.append("| selector | " + " | ".join(f"acc k={k}" for k in ks) + " | "
                     + " | ".join(f"F1 {c}" for c in CALIBRATIONS) + " |")
        lines.append("|---|" + "---|" * (len(ks) + len(CALIBRATIONS)))
        for name in dict.fromkeys(r["selector"] for r in rs):
            sel = [r for r in rs if r["selector"] == name]
            accs = [_agg([r["accuracy"] for r in sel if r["k"] == k and r["calibration"] == "none"]) for k in ks]
            if name in ("majority", "4-NN vote (no LLM)", "zero-shot"):
                accs = [_agg([r["accuracy"] for r in sel if r["calibration"] == "none"])] + ["–"] * (len(ks) - 1)
            f1_k = 0 if name in ("zero-shot", "4-NN vote (no LLM)", "majority") else top_k
            f1s = [_agg([r["macro_f1"] for r in sel if r["k"] == (f1_k if name != "4-NN vote (no LLM)" else 4)
                         and r["calibration"] == c and r["macro_f1"] is not None]) for c in CALIBRATIONS]
            label = name if name != "zero-shot" else "zero-shot (k=0)"
            lines.append(f"| {label} | " + " | ".join(accs) + " | " + " | ".join(f1s) + " |")
        lines.append("")
    return "\n".join(lines).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sst2,trec,ag_news,rte,banking77")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--ks", default="0,4,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--selectors", default=",".join(SELECTORS))
    parser.add_argument("--pool-size", type=int, default=2000, help="exemplar pool drawn from train per seed")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--render-only", action="store_true", help="rebuild the README table from the results file")
    add_engine_args(parser)
    args = parser.parse_args()
    from llmlabel.backends.base import load_backend
    from benchmarks.common import update_readme

    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
    meta = {"model": f"SmolLM2-135M-Instruct ({args.backend})",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    data["meta"] = {**data.get("meta", {}), **meta}

    def save() -> None:
        # Merge with what is on disk, so runs of different datasets/selectors can go on side by side.
        on_disk = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
        keys = {_key(r) for r in data["results"]}
        data["results"].extend(r for r in on_disk["results"] if _key(r) not in keys)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(RESULTS)
        update_readme("icl", render(data["results"], data["meta"]))

    if not args.render_only:
        if args.threads:
            os.environ["LLMLABEL_BENCH_THREADS"] = str(args.threads)
        options = {"dtype": args.dtype} if args.backend == "transformers" else {}
        backend = load_backend(args.backend, model="smollm2", **options)
        start = time.perf_counter()
        for dataset in args.datasets.split(","):
            run_dataset(dataset, args.rows, [int(k) for k in args.ks.split(",")],
                        [int(s) for s in args.seeds.split(",")], args.selectors.split(","), args.pool_size,
                        backend, data["results"], save)
        data["meta"]["last_run_seconds"] = round(time.perf_counter() - start, 1)
    save()
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

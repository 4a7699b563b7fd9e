"""Beat the retrieval-only baseline: LLM methods vs kNN vote / logistic-regression baselines, in one run.

Per dataset, a fixed random sample of test rows; per seed, a labeled pool drawn from the train split (a fifth held
out as the dev slice that picks fusion weights, kNN-prompting k and the automatic calibration). Methods:

- baselines (no LLM): majority class, 4-NN label vote over MiniLM embeddings, logistic regression on MiniLM
  embeddings and on TF-IDF;
- the zero-shot LLM (no labeled data) under each calibration, and `auto` (the calibration with the best dev macro-F1);
- kNN prompting (Xu et al. 2023) on the LM's next-token distributions;
- fusion of the zero-shot LLM (auto calibration) with the 4-NN vote and with embedding logistic regression.

    python benchmarks/retrieval.py --datasets sst2,trec,ag_news,rte,banking77 --rows 200 --seeds 0,1,2

Writes benchmarks/results/retrieval.json (appending, one record per dataset/method/seed) and the README table.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.icl import (DATA, TASKS, _threads_for_load, add_engine_args, make_task,  # noqa: E402
                            record_dtype, test_rows)
from llmlabel.cache import ResultCache  # noqa: E402
from llmlabel.classifiers.base import make_classifier  # noqa: E402
from llmlabel.data import Dataset  # noqa: E402
from llmlabel.labeler import Labeler  # noqa: E402
from llmlabel.methods.base import split_dev  # noqa: E402
from llmlabel.methods.fusion import Fusion  # noqa: E402
from llmlabel.methods.knn_prompting import KNNPrompting  # noqa: E402
from llmlabel.metrics import evaluate, majority_baseline  # noqa: E402
from llmlabel.models import cache_dir  # noqa: E402
from llmlabel.selection.base import pool_from_rows  # noqa: E402

RESULTS = Path(os.environ.get("LLMLABEL_RETRIEVAL_RESULTS", ROOT / "benchmarks" / "results" / "retrieval.json"))
CALIBRATIONS = ("none", "contextual", "domain", "batch")
BASELINE = "4-NN vote (no LLM)"


def metrics(gold: list[str], pred: list[str], names: list[str]) -> dict:
    """Accuracy and macro-F1 (over the labels that occur in gold or predictions)."""
    report = evaluate(gold, pred, names)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}


class MemoNextToken:
    """Memoizes `next_token_logprobs` per prompt within the run (test queries repeat across seeds)."""

    def __init__(self, backend):
        self.backend = backend
        self.memo: dict[str, np.ndarray] = {}
        self.original = backend.next_token_logprobs
        backend.next_token_logprobs = self

    def __call__(self, prompts):
        todo = [p for p in dict.fromkeys(prompts) if p not in self.memo]
        if todo:
            for p, row in zip(todo, self.original(todo)):
                self.memo[p] = row.astype(np.float16)  # halves memory; KL is insensitive at this precision
        return np.stack([self.memo[p].astype(np.float32) for p in prompts])


def run_dataset(dataset: str, rows: int, seeds: list[int], pool_size: int, dev_size: int, backend, results: list,
                save) -> None:
    task = make_task(dataset)
    items = test_rows(dataset, rows)
    texts = [task.texts(r)[0] for r in items]
    pairs = [task.texts(r)[1] for r in items]
    joined = [t if p is None else f"{t}\n{p}" for t, p in zip(texts, pairs)]
    gold = [task.gold(r) for r in items]
    names = task.names
    train = list(Dataset(DATA / dataset / "train.jsonl"))
    cache = ResultCache(cache_dir() / "bench-retrieval" / f"{dataset}.sqlite")
    done = {(r["dataset"], r["method"], r["seed"], r["rows"]) for r in results}
    base = {"dataset": dataset, "rows": len(items), "dtype": backend.dtype}

    def add(method: str, seed: int, pred: list[str], **extra) -> None:
        record = {**base, "method": method, "seed": seed, **metrics(gold, pred, names), **extra}
        results.append(record)
        print(f"{dataset} seed={seed} {method}: acc {record['accuracy']:.3f} F1 {record['macro_f1']:.3f}", flush=True)

    majority_label = majority_baseline(gold)[0]
    if (dataset, "majority class", 0, len(items)) not in done:
        add("majority class", 0, [majority_label] * len(items))
    for seed in seeds:
        if (dataset, "fusion: LLM (auto cal.) + LR embeddings", seed, len(items)) in done:
            continue
        _threads_for_load()
        pool_rows = random.Random(seed).sample(train, min(pool_size, len(train)))
        pool = pool_from_rows(pool_rows, "text", "label", task.text_pair_field, label_of=task.gold)
        fit_pool, dev = split_dev(pool, dev_size, seed)
        fit_texts = [e.text if e.text_pair is None else f"{e.text}\n{e.text_pair}" for e in fit_pool]
        fit_labels = [e.label for e in fit_pool]
        for name, options, label in [("knn_vote", {"k": 4}, BASELINE),
                                     ("logreg_embeddings", {}, "LR on MiniLM embeddings (no LLM)"),
                                     ("logreg_tfidf", {}, "LR on TF-IDF (no LLM)")]:
            clf = make_classifier(name, labels=names, seed=seed, **options).fit(fit_texts, fit_labels)
            add(label, seed, clf.predict(joined))
        # Zero-shot LLM, every calibration; `auto` = best dev macro-F1 (raw scores are cached, so this is cheap).
        dev_gold = [e.label for e in dev]
        best, best_f1 = "none", -1.0
        for calibration in CALIBRATIONS:
            labeler = Labeler(backend, task, cache=cache, calibration=calibration, chunk_size=64, seed=seed)
            dev_pred = [r.label for r in labeler.label_texts([e.text for e in dev], [e.text_pair for e in dev])]
            dev_f1 = metrics(dev_gold, dev_pred, names)["macro_f1"]
            if dev_f1 > best_f1:
                best, best_f1 = calibration, dev_f1
            add(f"zero-shot LLM, calibration {calibration}", seed,
                [r.label for r in labeler.label_texts(texts, pairs)], dev_macro_f1=dev_f1)
        auto = Labeler(backend, task, cache=cache, calibration=best, chunk_size=64, seed=seed)
        add("zero-shot LLM, auto calibration (dev)", seed, [r.label for r in auto.label_texts(texts, pairs)],
            chosen=best)
        start = time.perf_counter()
        knnp = KNNPrompting(Labeler(backend, task, progress=True)).fit(fit_pool, dev)
        add("kNN prompting", seed, [r.label for r in knnp.label_texts(texts, pairs)], k=knnp.report["k"],
            seconds=round(time.perf_counter() - start, 1))
        for classifier, label in [("knn_vote", "fusion: LLM (auto cal.) + 4-NN vote"),
                                  ("logreg_embeddings", "fusion: LLM (auto cal.) + LR embeddings")]:
            options = {"k": 4} if classifier == "knn_vote" else {}
            fusion = Fusion(auto, seed=seed, classifier=classifier, classifier_options=options).fit(fit_pool, dev)
            add(label, seed, [r.label for r in fusion.label_texts(texts, pairs)], weight=fusion.report["weight"])
        save()


def _agg(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.pstdev(values):.1f}"


def render(results: list[dict], meta: dict) -> str:
    """One table: methods x datasets, accuracy and macro-F1 (mean ± std over seeds)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    def dtype_of(d: str) -> str:
        return record_dtype(next(r for r in results if r["dataset"] == d))

    lines = [f"{meta['model']}, {meta['machine']}, {meta['date']}; accuracy / macro-F1 %, mean ± std over seeds "
             "(labeled pools); test rows (model dtype) per dataset: "
             + ", ".join(f"{d} {next(r['rows'] for r in results if r['dataset'] == d)} ({dtype_of(d)})"
                         for d in datasets), ""]
    lines.append("| method | " + " | ".join(datasets) + " |")
    lines.append("|---|" + "---|" * len(datasets))
    for method in methods:
        cells = []
        for d in datasets:
            rs = [r for r in results if r["dataset"] == d and r["method"] == method]
            cells.append(f"{_agg([r['accuracy'] for r in rs])} / {_agg([r['macro_f1'] for r in rs])}" if rs else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sst2,trec,ag_news,rte,banking77")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--dev-size", type=int, default=200)
    parser.add_argument("--render-only", action="store_true")
    add_engine_args(parser)
    args = parser.parse_args()
    from benchmarks.zero_shot import update_readme
    from llmlabel.backends.transformers import TransformersBackend

    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
    if args.threads:
        os.environ["LLMLABEL_BENCH_THREADS"] = str(args.threads)
    data["meta"] = {"model": "SmolLM2-135M-Instruct (transformers)",
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}

    def save() -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=1) + "\n")
        update_readme("retrieval", render(data["results"], data["meta"]))

    if not args.render_only:
        backend = TransformersBackend(dtype=args.dtype)
        MemoNextToken(backend)
        for dataset in args.datasets.split(","):
            run_dataset(dataset, args.rows, [int(s) for s in args.seeds.split(",")], args.pool_size, args.dev_size,
                        backend, data["results"], save)
    save()
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""With labels, never worse than the cheap baseline: LLM methods vs kNN vote / logistic-regression baselines.

Per dataset, a fixed random sample of test rows; per seed, a labeled pool of train rows (drawn from one fixed
candidate set of 1.2 x the pool size, so the LLM scores fewer rows). Every method uses the whole pool: settings
(fusion's weight, stacking, kNN prompting's k, the calibration) are cross-fitted over it by `llmlabel.tuning`, and
the LLM gets a weight only when its cross-fitted gain over the classifier alone is beyond the noise. Methods:

- baselines (no LLM), trained on the whole pool: majority class, 4-NN label vote over MiniLM embeddings, logistic
  regression on MiniLM embeddings and on TF-IDF;
- the zero-shot LLM (no labeled data) under each calibration, and `auto` (`choose_calibration` over the pool);
- kNN prompting (Xu et al. 2023) on the LM's next-token distributions (where they are stored: `--precompute next`);
- fusion of the zero-shot LLM (auto calibration) with the 4-NN vote and with embedding logistic regression, and
  stacking (a logistic regression on LR's and the LLM's cross-fitted log-probs).

The LLM's scores of pool and test rows do not depend on folds or seeds: `--precompute score,next` fills the caches
once (resumable), and the run itself then costs embeddings and small fits.

    python benchmarks/retrieval.py --datasets sst2,trec,ag_news,rte,banking77,clinc150 --rows 200 --seeds 0,1,2 \
        --threads 1 --precompute score,next
    python benchmarks/retrieval.py --datasets sst2,trec,ag_news,rte,banking77,clinc150 --rows 200 --seeds 0,1,2 \
        --threads 1

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
from llmlabel.labeling.labeler import Labeler  # noqa: E402
from llmlabel.methods.fusion import Fusion  # noqa: E402
from llmlabel.methods.knn_prompting import KNNPrompting  # noqa: E402
from llmlabel.metrics import evaluate, majority_baseline  # noqa: E402
from llmlabel.models import cache_dir  # noqa: E402
from llmlabel.selection.base import pool_from_rows  # noqa: E402

RESULTS = Path(os.environ.get("LLMLABEL_RETRIEVAL_RESULTS", ROOT / "benchmarks" / "results" / "retrieval.json"))
CALIBRATIONS = ("none", "contextual", "domain", "batch")
BASELINE = "4-NN vote (no LLM)"
#: Many-label sets: the LLM scores each label by its first token only (one forward pass per row). Scoring all 77 /
#: 150 multi-token labels costs about 1 CPU-second a row, which the 1,400 rows per dataset this benchmark scores
#: cannot afford on a 2-core machine shared by six jobs.
NORMALIZE = {"banking77": "first", "clinc150": "first"}


def metrics(gold: list[str], pred: list[str], names: list[str]) -> dict:
    """Accuracy and macro-F1 (over the labels that occur in gold or predictions)."""
    report = evaluate(gold, pred, names)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}


class NextTokenStore:
    """`next_token_logprobs` memoized per prompt on disk (SQLite, float16 rows): the pool and test rows' LM
    distributions do not depend on the seed's folds or settings, so every re-run and every seed reuses them."""

    def __init__(self, backend, path: Path):
        import sqlite3

        self.original = backend.next_token_logprobs
        backend.next_token_logprobs = self
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")  # two benchmark processes may fill it at once
        self.db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, value BLOB)")
        self.model_id = backend.model_id

    def _key(self, prompt: str) -> str:
        from llmlabel.cache import cache_key

        return cache_key(model=self.model_id, prompt=prompt)

    def __call__(self, prompts):
        keys = [self._key(p) for p in prompts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            marks = ",".join("?" * len(batch))
            for key, blob in self.db.execute(f"SELECT key, value FROM rows WHERE key IN ({marks})", batch):
                found[key] = np.frombuffer(blob, dtype=np.float16)
        todo = [i for i in dict.fromkeys(range(len(prompts))) if keys[i] not in found]
        todo = list({keys[i]: i for i in todo}.values())
        for start in range(0, len(todo), 64):  # commit every 64 rows: a killed run keeps them
            chunk = todo[start:start + 64]
            rows = self.original([prompts[i] for i in chunk])
            with self.db:
                for i, row in zip(chunk, rows):
                    found[keys[i]] = row.astype(np.float16)  # halves the store; KL is insensitive at this precision
                    self.db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?)", (keys[i], found[keys[i]].tobytes()))
        return np.stack([found[k].astype(np.float32) for k in keys])


def pools(dataset: str, seeds: list[int], pool_size: int) -> dict[int, list[dict]]:
    """Each seed's labeled pool: `pool_size` train rows drawn from one fixed candidate set of 1.2 x `pool_size`
    rows (seed 1234), so the LLM scores 1.2 x pool_size train rows per dataset instead of seeds x pool_size (on a
    shared 2-core machine that is what fits; seeds' pools overlap by about 83%)."""
    train = list(Dataset(DATA / dataset / "train.jsonl"))
    candidates = random.Random(1234).sample(train, min(len(train), pool_size * 6 // 5))
    return {seed: random.Random(seed).sample(candidates, min(pool_size, len(candidates))) for seed in seeds}


def precompute(dataset: str, rows: int, seeds: list[int], pool_size: int, backend, what: str = "score,next") -> None:
    """Score every pool and test row once (zero-shot raw scores into the result cache; next-token distributions
    into the NextTokenStore). Everything later (folds, weights, calibrations, seeds) reads these."""
    task = make_task(dataset)
    union = {}
    for row in [*test_rows(dataset, rows), *(r for pool in pools(dataset, seeds, pool_size).values() for r in pool)]:
        union.setdefault(task.texts(row), row)
    texts = [t for t, _ in union]
    pairs = [p for _, p in union]
    cache = ResultCache(cache_dir() / "bench-retrieval" / f"{dataset}.sqlite")
    labeler = Labeler(backend, task, cache=cache, calibration="none", chunk_size=64, progress=True,
                      normalize=NORMALIZE.get(dataset, "sum"))
    start = time.perf_counter()
    if "score" in what:
        labeler.label_texts(texts, pairs)
        print(f"{dataset}: scored {len(texts)} rows ({labeler.stats.computed} computed) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    if "next" in what:
        start = time.perf_counter()
        prompts = [labeler._render(*labeler._fit(t, p)[:2]) for t, p in zip(texts, pairs)]
        backend.next_token_logprobs(prompts)
        print(f"{dataset}: next-token distributions of {len(texts)} rows in {time.perf_counter() - start:.0f} s",
              flush=True)


LR = "LR on MiniLM embeddings (no LLM)"
#: the methods the guarantee is about: they contain LR on embeddings (the LLM's weight 0)
GUARDED = ("fusion: LLM (auto cal.) + LR embeddings", "stacking: LLM (auto cal.) + LR embeddings")


def has_next_token(backend, labeler: Labeler, texts: list[str], pairs: list) -> bool:
    """Whether every row's next-token distribution is already stored (kNN prompting then costs no LM pass)."""
    store = backend.next_token_logprobs
    keys = [store._key(labeler._render(*labeler._fit(t, p)[:2])) for t, p in zip(texts, pairs)]
    marks = ",".join("?" * len(keys))
    return store.db.execute(f"SELECT COUNT(*) FROM rows WHERE key IN ({marks})", keys).fetchone()[0] == len(set(keys))


def run_dataset(dataset: str, rows: int, seeds: list[int], pool_size: int, backend, results: list, save,
                folds: int, skip_stacking: bool = False) -> None:
    from llmlabel.calibration.select import choose_calibration
    from llmlabel.methods.stacking import Stacking

    task = make_task(dataset)
    items = test_rows(dataset, rows)
    texts = [task.texts(r)[0] for r in items]
    pairs = [task.texts(r)[1] for r in items]
    joined = [t if p is None else f"{t}\n{p}" for t, p in zip(texts, pairs)]
    gold = [task.gold(r) for r in items]
    names = task.names
    normalize = NORMALIZE.get(dataset, "sum")
    cache = ResultCache(cache_dir() / "bench-retrieval" / f"{dataset}.sqlite")
    done = {(r["dataset"], r["method"], r["seed"], r["rows"]) for r in results}
    base = {"dataset": dataset, "rows": len(items), "dtype": backend.dtype, "pool": pool_size, "folds": folds,
            "llm_scoring": "first token" if normalize == "first" else "full label"}

    def add(method: str, seed: int, pred: list[str], **extra) -> None:
        record = {**base, "method": method, "seed": seed, **metrics(gold, pred, names), **extra}
        results.append(record)
        print(f"{dataset} seed={seed} {method}: acc {record['accuracy']:.3f} F1 {record['macro_f1']:.3f}"
              + (f" {extra}" if extra else ""), flush=True)

    def labels(engine) -> list[str]:
        return [r.label for r in engine.label_texts(texts, pairs)]

    majority_label = majority_baseline(gold)[0]
    if (dataset, "majority class", 0, len(items)) not in done:
        add("majority class", 0, [majority_label] * len(items))
    seed_pools = pools(dataset, seeds, pool_size)
    for seed in seeds:
        if (dataset, GUARDED[0] if skip_stacking else GUARDED[-1], seed, len(items)) in done:
            continue
        _threads_for_load()
        pool = pool_from_rows(seed_pools[seed], "text", "label", task.text_pair_field, label_of=task.gold)
        pool_texts = [e.text if e.text_pair is None else f"{e.text}\n{e.text_pair}" for e in pool]
        pool_labels = [e.label for e in pool]
        # Baselines on the whole pool: the methods below use every pool row too (cross-fitting holds none out).
        for name, options, label in [("knn_vote", {"k": 4}, BASELINE), ("logreg_embeddings", {}, LR),
                                     ("logreg_tfidf", {}, "LR on TF-IDF (no LLM)")]:
            clf = make_classifier(name, labels=names, seed=seed, **options).fit(pool_texts, pool_labels)
            add(label, seed, clf.predict(joined))
        # Zero-shot LLM, every calibration (raw scores cached: cheap); auto = choose_calibration over the pool.
        options = dict(cache=cache, chunk_size=64, seed=seed, normalize=normalize)
        for calibration in CALIBRATIONS:
            add(f"zero-shot LLM, calibration {calibration}", seed,
                labels(Labeler(backend, task, calibration=calibration, **options)))
        choice = choose_calibration(backend, task, [e.text for e in pool], pool_labels,
                                    [e.text_pair for e in pool] if task.text_pair_field else None, **options)
        auto = Labeler(backend, task, calibration=choice.chosen, **options)
        add("zero-shot LLM, auto calibration (pool)", seed, labels(auto), chosen=choice.chosen,
            earned=choice.earned, pool_macro_f1={k: round(v, 4) for k, v in choice.scores.items()})
        knn_labeler = Labeler(backend, task, progress=False)
        if has_next_token(backend, knn_labeler, [*texts, *(e.text for e in pool)],
                          [*pairs, *(e.text_pair for e in pool)]):
            start = time.perf_counter()
            knnp = KNNPrompting(knn_labeler, seed=seed, folds=folds).fit(pool)
            add("kNN prompting", seed, labels(knnp), k=knnp.report["k"],
                k_earned=knnp.report["selection"]["earned"], seconds=round(time.perf_counter() - start, 1))
        for kind, classifier, label in [(Fusion, "knn_vote", "fusion: LLM (auto cal.) + 4-NN vote"),
                                        (Fusion, "logreg_embeddings", GUARDED[0]),
                                        (Stacking, "logreg_embeddings", GUARDED[1])][:2 if skip_stacking else 3]:
            start = time.perf_counter()
            method = kind(auto, seed=seed, classifier=classifier, folds=folds,
                          classifier_options={"k": 4} if classifier == "knn_vote" else {}).fit(pool)
            selection = method.report["selection"]
            add(label, seed, labels(method), weight=method.report.get("weight"),
                llm_earned=method.report["llm_earned_weight"], z=selection["z"],
                cross_fitted_log_loss=selection["scores"], seconds=round(time.perf_counter() - start, 1),
                **{k: selection[k] for k in ("classifier_exponent", "classifier_recalibrated_log_loss")
                   if k in selection})
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
    lines += ["", "Where the LLM earns weight (cross-fitted over the pool; per seed) and the guarded methods' accuracy "
              "minus LR on embeddings trained on the same rows (points; worst seed):", "",
              "| dataset | fusion + 4-NN: LLM weight | fusion + LR: LLM weight | stacking: LLM used | "
              "fusion + LR − LR | stacking − LR |", "|---|---|---|---|---|---|"]
    for d in datasets:
        def of(method: str) -> list[dict]:
            return sorted((r for r in results if r["dataset"] == d and r["method"] == method), key=lambda r: r["seed"])

        def weights(method: str) -> str:
            return ", ".join(f"{r['weight']:g}" for r in of(method)) or "–"

        def worst(method: str) -> str:
            lr = {r["seed"]: r["accuracy"] for r in of(LR)}
            gaps = [100 * (r["accuracy"] - lr[r["seed"]]) for r in of(method) if r["seed"] in lr]
            return f"{min(gaps):+.1f}" if gaps else "–"

        used = ", ".join("yes" if r["llm_earned"] else "no" for r in of(GUARDED[1])) or "–"
        lines.append(f"| {d} | {weights('fusion: LLM (auto cal.) + 4-NN vote')} | {weights(GUARDED[0])} | {used} | "
                     f"{worst(GUARDED[0])} | {worst(GUARDED[1])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sst2,trec,ag_news,rte,banking77,clinc150")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds over each pool")
    parser.add_argument("--skip-stacking", action="store_true",
                        help="leave stacking out (its nested fits are slow with 77 / 150 labels on a busy CPU)")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--precompute", default="",
                        help="only fill the score caches: 'score', 'next' or 'score,next' (no results written)")
    add_engine_args(parser)
    args = parser.parse_args()
    from benchmarks.common import save_results, update_readme
    from llmlabel.backends.transformers import TransformersBackend

    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
    if args.threads:
        os.environ["LLMLABEL_BENCH_THREADS"] = str(args.threads)
    data["meta"] = {"model": "SmolLM2-135M-Instruct (transformers)",
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}

    def save() -> None:
        save_results(RESULTS, data)
        if "LLMLABEL_RETRIEVAL_RESULTS" not in os.environ:  # a side run leaves the README alone
            update_readme("retrieval", render(data["results"], data["meta"]))

    if not args.render_only:
        backend = TransformersBackend(dtype=args.dtype)
        NextTokenStore(backend, cache_dir() / "bench-retrieval" / "next_token.sqlite")
        if args.precompute:
            _threads_for_load()
            for what in args.precompute.split(","):  # every dataset's scores before any next-token pass
                for dataset in args.datasets.split(","):
                    precompute(dataset, args.rows, [int(s) for s in args.seeds.split(",")], args.pool_size, backend,
                               what)
            return
        for dataset in args.datasets.split(","):
            run_dataset(dataset, args.rows, [int(s) for s in args.seeds.split(",")], args.pool_size, backend,
                        data["results"], save, args.folds, args.skip_stacking)
    save()
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

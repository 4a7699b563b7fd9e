"""Label-error audits measured where the truth is known: planted noise in labeled subsets of four datasets.

Rows: the first rows of each dataset's benchmark sample (benchmarks/stats_scores.py AUDIT_ROWS: SST-2 600, AG News
400, TREC 400, Banking77 400), with their gold labels. Noise: 5%, 10% or 20% of the labels flipped, uniform (to a random other label) or class-conditional
(every label to one fixed partner label), 3 seeds each. Each audit ranks the rows by suspect score (1 - cleanlab's
self-confidence label quality) and cleanlab's find_label_issues flags a set:

- classifiers: cleanlab as people use it today: out-of-fold probabilities of logistic regression on TF-IDF and on
  MiniLM embeddings (5-fold cross-fitting on the noisy labels), averaged (each alone is in the results file too);
- LLM zero-shot: the default model's probabilities with the benchmarks' instruction (batch calibration);
- LLM ensemble: the mean of the LLM prompt variants scored for the dataset (two instructions, and 4-shot
  demonstration sets drawn from the train split, never an audited row: 4 variants on SST-2 and TREC, 3 on AG News
  and Banking77, whose long prompts cost more: see `llm_variants` in the results), each batch-calibrated and re-tempered on the noisy labels (cross-fitted);
- ensemble: the mean of the classifier ensemble and the LLM ensemble.

The LLM's probabilities are computed once per dataset (benchmarks/results/llm_probs/, by stats_scores.py) and reused
across noise settings and seeds. Metrics: AUROC of the scores for the planted flips, precision@k at k = the number
of flips (so it equals recall@k there), recall@2k, and the precision / recall of cleanlab's flagged set. Writes
benchmarks/results/audit.json and the README table:

    python benchmarks/stats_scores.py     # once: the LLM probabilities
    python benchmarks/audit.py            # all four datasets (minutes, no LLM calls)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "audit.json"
DATASETS = ("sst2", "ag_news", "trec", "banking77")
RATES = (0.05, 0.1, 0.2)
KINDS = ("uniform", "class_conditional")
SEEDS = (0, 1, 2)
LLM_VARIANTS = ("zero_shot", "zero_shot_alt", "few_shot_0", "few_shot_1")
CLASSIFIERS = ("logreg_tfidf", "logreg_embeddings")
METHODS = ("classifiers", "llm_zero_shot", "llm_ensemble", "ensemble")


def run_dataset(dataset: str, rows: int, seeds: tuple[int, ...]) -> dict:
    """Every noise setting x seed on one dataset; metrics averaged over seeds."""
    from benchmarks.stats_scores import load
    from llmlabel.embeddings import Embedder
    from llmlabel.stats import audit as au

    data = load(dataset)
    from benchmarks.stats_scores import AUDIT_ROWS

    n = min(rows, AUDIT_ROWS[dataset])
    gold = data["gold"][:n].astype(np.int64)
    names = [str(x) for x in data["labels"]]
    texts = [str(t) for t in data["texts"][:n]]
    variants = [v for v in LLM_VARIANTS if len(data.get(f"{v}.batch", [])) >= n]
    llm_raw = {v: data[f"{v}.batch"][:n].astype(np.float64) for v in variants}
    embedder = Embedder()
    embedder.encode(texts)  # once: the folds then read the cache
    record = {"dataset": dataset, "rows": n, "labels": len(names), "model": str(data["model"]),
              "llm_variants": variants,
              "llm_accuracy": {v: round(float(np.mean(p.argmax(1) == gold)), 4) for v, p in llm_raw.items()},
              "settings": []}
    for rate in RATES:
        for kind in KINDS:
            per_seed: dict[str, list[dict]] = {}
            start = time.perf_counter()
            for seed in seeds:
                noisy, flipped = au.plant_noise(gold, len(names), rate, kind, seed=seed)
                signals = {}
                for clf in CLASSIFIERS:
                    options = {"embedder": embedder} if clf == "logreg_embeddings" else None
                    signals[clf] = au.classifier_signal(texts, noisy, names, clf, folds=5, seed=seed,
                                                        options=options)
                for v in variants:
                    signals[f"llm:{v}"] = au.temperature_calibrate(llm_raw[v], noisy, seed=seed)
                merged = au.combine(signals, {"classifiers": list(CLASSIFIERS),
                                              "llm_ensemble": [f"llm:{v}" for v in variants]})
                scored = {"classifiers": merged["classifiers"], "llm_zero_shot": signals["llm:zero_shot"],
                          "llm_ensemble": merged["llm_ensemble"], "ensemble": merged["ensemble"],
                          **{clf: signals[clf] for clf in CLASSIFIERS}}
                k = int(flipped.sum())
                for name, probs in scored.items():
                    score = au.suspicion(noisy, probs)
                    m = au.audit_metrics(score, au.flag_issues(noisy, probs), flipped, k=k)
                    m["recall_at_2k"] = au.audit_metrics(score, np.zeros(n, bool), flipped, k=2 * k)["recall_at_k"]
                    per_seed.setdefault(name, []).append(m)
            setting = {"rate": rate, "kind": kind, "flips": int(round(rate * n)), "seeds": len(seeds),
                       "methods": {name: {key: round(float(np.nanmean([m[key] for m in ms])), 4)
                                          for key in ("auroc", "precision_at_k", "recall_at_2k", "flagged",
                                                      "flagged_precision", "flagged_recall")}
                                   for name, ms in per_seed.items()}}
            record["settings"].append(setting)
            print(f"{dataset} {kind} {rate:.0%}: {time.perf_counter() - start:.0f} s; " + "; ".join(
                f"{name} AUROC {v['auroc']:.3f} P@k {v['precision_at_k']:.3f}"
                for name, v in setting["methods"].items()), flush=True)
    return record


def render(results: dict) -> str:
    """Markdown table of the results file: AUROC and precision@k per method, averaged over seeds."""
    heads = ["classifiers", "llm_zero_shot", "llm_ensemble", "ensemble"]
    titles = ["cleanlab on classifiers", "LLM zero-shot", "LLM ensemble", "classifiers + LLM"]
    lines = ["AUROC of the suspect ranking / precision@k (k = the number of planted flips) of each audit, mean of "
             f"{next(iter(results.values()))['settings'][0]['seeds']} seeds:", "",
             "| dataset (rows, LLM zero-shot accuracy) | noise | " + " | ".join(titles) + " |",
             "|---|---|" + "---|" * len(heads)]
    for r in results.values():
        for s in r["settings"]:
            noise = f"{s['rate']:.0%} {'uniform' if s['kind'] == 'uniform' else 'class-cond.'}"
            cells = []
            best = max(s["methods"][h]["auroc"] for h in heads)
            for h in heads:
                v = s["methods"][h]
                text = f"{v['auroc']:.3f} / {v['precision_at_k']:.2f}"
                cells.append(f"**{text}**" if v["auroc"] == best else text)
            lines.append(f"| {r['dataset']} ({r['rows']}, {r['llm_accuracy']['zero_shot']:.2f}) | {noise} | "
                         + " | ".join(cells) + " |")
    first = next(iter(results.values()))
    lines += ["", f"Bold: the best AUROC of the row. Model: {first['model']}; {first.get('machine', '')}; "
              f"{first.get('date', '')}. Flagged-set precision / recall and recall@2k: benchmarks/results/audit.json."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--rows", type=int, default=10_000, help="at most this many audit rows")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    from benchmarks.common import save_results, update_readme

    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with threadpool_limits(limits=1):
        for dataset in args.datasets.split(","):
            record = run_dataset(dataset, args.rows, tuple(range(args.seeds)))
            record.update(machine=f"{platform.machine()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"))
            results[dataset] = record
            save_results(RESULTS, results)
    update_readme("audit", render({d: results[d] for d in DATASETS if d in results}))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

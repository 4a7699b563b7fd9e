"""Estimates from LLM labels plus a small gold sample, by simulation where the truth is known.

Population per dataset: a fixed random sample of its test set (benchmarks/stats_scores.py: SST-2 all 1,821 rows,
AG News 2,000, TREC all 500, Banking77 1,000), every row with gold and with the default model's label probabilities
(zero-shot, batch calibration: the default Labeler), computed once and read from benchmarks/results/llm_probs/.
Targets: the share of every label (the truth: the population's gold shares), and the coefficient of standardized
log word count in a logistic regression of "the gold label is <the population's most common label>" on it.

For n = 100, 200, 500 (n <= N / 2 only), 500 gold samples are drawn; each method's 95% interval is checked against
the truth: coverage (share of intervals holding it; shares: averaged over labels) and mean width. Methods: naive
(LLM counts), classical (gold only), PPI (lambda 1), PPI++ (tuned lambda), DSL, all on a simple random sample; and
active PPI++ / active DSL, whose gold rows are drawn independently with probabilities tilted toward rows the LLM is
unsure about (expected size n, 20% of the budget spread uniformly) and weighted back. Finite-population intervals
(the population is the corpus). Writes benchmarks/results/estimate.json and the README table:

    python benchmarks/stats_scores.py      # once: the LLM probabilities (about 25 minutes on one thread)
    python benchmarks/estimate.py          # the simulation (minutes, no model)
    python benchmarks/estimate.py --draws 100 --datasets sst2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "estimate.json"
DATASETS = ("sst2", "ag_news", "trec", "banking77")
SIZES = (100, 200, 500)
METHODS = ("naive", "classical", "ppi", "ppi++", "dsl")
ACTIVE = ("ppi++", "dsl")
ALL = (*METHODS, *(f"active {m}" for m in ACTIVE))


def simulate(dataset: str, draws: int, sizes: tuple[int, ...], seed: int = 0) -> dict:
    """Coverage and mean width of every method on one dataset."""
    from benchmarks.stats_scores import load
    from llmlabel.stats import estimate as es

    data = load(dataset)
    probs = data["zero_shot.batch"].astype(np.float64)
    gold = data["gold"].astype(np.int64)
    names = [str(x) for x in data["labels"]]
    n_rows, n_classes = probs.shape
    truth_shares = es.true_shares(gold, n_classes)
    words = np.array([np.log1p(len(str(t).split())) for t in data["texts"]])
    covariate = es.standardize(words)[0]
    outcome_class = int(np.argmax(truth_shares))
    outcome = (gold == outcome_class).astype(np.float64)
    truth_coef = float(es.true_coefficients(covariate, outcome)[0])
    f = probs[:, outcome_class]
    hard_outcome = (probs.argmax(1) == outcome_class).astype(np.float64)
    rng = np.random.default_rng(seed)
    record = {"dataset": dataset, "rows": n_rows, "labels": n_classes, "draws": draws,
              "llm_accuracy": round(float(np.mean(probs.argmax(1) == gold)), 4),
              "llm_outcome_auroc": _auroc(f, outcome), "outcome_label": names[outcome_class],
              "truth": {"shares": {n: round(float(s), 6) for n, s in zip(names, truth_shares)},
                        "coef_log_words": round(truth_coef, 6)},
              "model": str(data["model"]), "sizes": {}}
    for n in sizes:
        if n > n_rows // 2:
            record["sizes"][str(n)] = {"skipped": f"n > N/2 (N = {n_rows})"}
            continue
        stats = {m: {"share_cover": [], "share_width": [], "coef_cover": [], "coef_width": [], "coef_failed": 0,
                     "gold_rows": []} for m in ALL}
        start = time.perf_counter()
        pi_s = es.sampling_probabilities(es.uncertainty(probs), n, 0.2)
        pi_c = es.sampling_probabilities(es.uncertainty(f), n, 0.2)
        for _ in range(draws):
            rows = rng.choice(n_rows, n, replace=False)
            samples = [("", rows, None, "srs", METHODS, METHODS)]
            take_s = np.flatnonzero(rng.random(n_rows) < pi_s)
            take_c = np.flatnonzero(rng.random(n_rows) < pi_c)
            samples.append(("active ", take_s, pi_s[take_s], "poisson", ACTIVE, ()))
            samples.append(("active ", take_c, pi_c[take_c], "poisson", (), ACTIVE))
            for prefix, sample, pis, design, share_methods, coef_methods in samples:
                if share_methods:
                    for item in es.estimate_shares(probs, sample, gold[sample], names, share_methods, pis, design):
                        s = stats[prefix + item.method]
                        k = names.index(item.target[6:-1])
                        s["share_cover"].append(item.covers(truth_shares[k]))
                        s["share_width"].append(item.width)
                    for m in share_methods:
                        stats[prefix + m]["gold_rows"].append(len(sample))
                if coef_methods:
                    for item in es.estimate_regression(covariate, ["log_words"], f, sample, outcome[sample],
                                                       "logistic", coef_methods, pis, design,
                                                       llm_outcome=hard_outcome):
                        s = stats[prefix + item.method]
                        if item.note is not None:
                            s["coef_failed"] += 1
                            s["coef_cover"].append(False)
                            continue
                        s["coef_cover"].append(item.covers(truth_coef))
                        s["coef_width"].append(item.width)
        out = {}
        for m, s in stats.items():
            out[m] = {"share_coverage": _mean(s["share_cover"]), "share_width": _mean(s["share_width"], 5),
                      "coef_coverage": _mean(s["coef_cover"]), "coef_width": _mean(s["coef_width"], 4),
                      "coef_no_estimate": s["coef_failed"],
                      "mean_gold_rows": _mean(s["gold_rows"], 1) if s["gold_rows"] else float(n)}
        record["sizes"][str(n)] = out
        print(f"{dataset} n={n}: {time.perf_counter() - start:.0f} s; " + "; ".join(
            f"{m} {v['share_coverage']:.3f}/{v['share_width']:.4f} coef {v['coef_coverage']:.3f}/{v['coef_width']:.3f}"
            for m, v in out.items()), flush=True)
    return record


def _mean(values: list, digits: int = 4) -> float | None:
    return round(float(np.mean(values)), digits) if len(values) else None


def _auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    from llmlabel.stats.audit import auroc

    return round(auroc(scores, positives.astype(bool)), 4)


def render(results: dict) -> str:
    """Markdown tables of the results file: shares, then the coefficient; each cell coverage / mean width."""
    head = ["naive", "classical", "ppi", "ppi++", "dsl", "active ppi++", "active dsl"]

    def cell(v: dict, cov: str, width: str, digits: int) -> str:
        if v.get(cov) is None:
            return "–"
        return f"{v[cov]:.1%} / {v[width]:.{digits}f}"

    def table(caption: str, row_head: str, row_name: Callable[[dict], str], key: str, digits: int) -> list[str]:
        lines = ["", caption, "", f"| {row_head} | n | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
        for r in results.values():
            for n, v in r["sizes"].items():
                if "skipped" in v:
                    continue
                lines.append(f"| {row_name(r)} | {n} | "
                             + " | ".join(cell(v[m], f"{key}_coverage", f"{key}_width", digits) for m in head) + " |")
        return lines

    lines = ["Coverage of the true value by 95% intervals / mean interval width, over "
             f"{next(iter(results.values()))['draws']} gold samples of n rows each "
             "(target coverage 95%; narrower is better only at valid coverage)."]
    lines += table("**Label shares** (every label's share; coverage and width averaged over labels):",
                   "dataset (N rows, LLM accuracy)", lambda r: f"{r['dataset']} ({r['rows']}, {r['llm_accuracy']:.2f})",
                   "share", 3)
    lines += table("**Logistic regression coefficient** of standardized log word count on \"the label is "
                   "<most common label>\":", "dataset (label, LLM AUROC for it)",
                   lambda r: f"{r['dataset']} ({r['outcome_label']}, {r['llm_outcome_auroc']:.2f})", "coef", 2)
    failed = [f"{r['dataset']} n={n} {m}: {x['coef_no_estimate']}" for r in results.values()
              for n, v in r["sizes"].items() if "skipped" not in v for m, x in v.items() if x["coef_no_estimate"]]
    if failed:
        lines += ["", "Draws whose logistic fit had no finite estimate (too few gold rows of the outcome for its "
                  "estimating equation; counted as misses in the coverage above), of "
                  f"{first_draws(results)}: " + "; ".join(failed) + "."]
    skipped = [f"{r['dataset']} n={n}" for r in results.values() for n, v in r["sizes"].items() if "skipped" in v]
    first = next(iter(results.values()))
    lines += ["", f"Model: {first['model']}; {first.get('machine', '')}; {first.get('date', '')}. "
              + (f"Not run: {', '.join(skipped)} (n above half the population)." if skipped else "")]
    return "\n".join(lines)


def first_draws(results: dict) -> int:
    """The number of draws per cell (the same for every dataset in one results file)."""
    return next(iter(results.values()))["draws"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from benchmarks.common import save_results, update_readme

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with threadpool_limits(limits=1):
        for dataset in args.datasets.split(","):
            record = simulate(dataset, args.draws, tuple(int(x) for x in args.sizes.split(",")), args.seed)
            record.update(machine=f"{platform.machine()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"))
            results[dataset] = record
            save_results(RESULTS, results)
    ordered = {d: results[d] for d in DATASETS if d in results}
    update_readme("estimate", render(ordered))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

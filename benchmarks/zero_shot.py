"""Zero-shot labeling with the default `Labeler` (no labeled data) on every shared dataset, in one run.

Per dataset, a fixed random sample of test rows (seed 1234, as in benchmarks/icl.py); settings: the default Labeler
(calibration 'auto' = batch), no calibration, contextual calibration, and optionally free generation (parsed);
each against the majority class's accuracy and macro-F1. Writes benchmarks/results/zero_shot.json and the README
table:

    python benchmarks/zero_shot.py                              # all six datasets, 200 rows each
    python benchmarks/zero_shot.py --datasets sst2 --rows 500 --generate
    python benchmarks/zero_shot.py --dtype float32 --labels-out /tmp/labels.json   # a check: every row's label per
                                                              # setting, written there (results and README untouched)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "zero_shot.json"

from benchmarks.common import save_results, update_readme  # noqa: E402
DATASETS = ("sst2", "ag_news", "trec", "rte", "banking77", "clinc150")


def run(dataset: str, rows: int, generate: bool, backend, labels: dict | None = None) -> dict:
    """Label the rows under each setting with one loaded model; return the results record (and put each setting's
    row labels into `labels`, when given)."""
    from benchmarks.icl import make_task, test_rows
    from llmlabel.cache import ResultCache
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.metrics import evaluate, majority_baseline

    task = make_task(dataset)
    items = test_rows(dataset, rows)
    gold = [task.gold(r) for r in items]
    names = task.names
    settings = [("default Labeler (calibration auto = batch)", dict(mode="score")),
                ("score, no calibration", dict(mode="score", calibration="none")),
                ("score + contextual calibration", dict(mode="score", calibration="contextual"))]
    if generate:
        settings.append(("generate (free text, parsed)", dict(mode="generate")))
    majority_label, majority_acc = majority_baseline(gold)
    majority = evaluate(gold, [majority_label] * len(gold), names)
    record = {"dataset": dataset, "rows": len(items), "labels": len(names),
              "model": f"SmolLM2-135M-Instruct ({backend.dtype}, transformers)",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "settings": [{"setting": f"majority class ('{majority_label}')", "accuracy": majority_acc,
                            "macro_f1": majority["macro_f1"], "ece": None, "items_per_second": None,
                            "unparseable": 0}]}
    with tempfile.TemporaryDirectory() as tmp:
        # One cache for the score settings: the model scores each row once (timed in the first setting); the
        # others apply their calibration to the same raw scores. Generation gets its own.
        for name, options in settings:
            if options["mode"] == "generate":
                backend.supports_choices = False  # the naive way: free generation, then parse the answer
            cache = ResultCache(Path(tmp) / f"{options['mode']}.sqlite")
            labeler = Labeler(backend, task, cache=cache, progress=True, chunk_size=64, **options)
            out = labeler.label(items)
            backend.supports_choices = True
            if labels is not None:
                labels.setdefault(dataset, {})[name] = [r["label"] for r in out]
            report = evaluate(gold, [r["label"] for r in out], names, [r["confidence"] for r in out])
            timed = labeler.stats.computed == len(items)
            record["settings"].append({
                "setting": name, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                "ece": report["ece"] if options["mode"] == "score" else None,
                "items_per_second": labeler.stats.items_per_second if timed else None,
                "unparseable": labeler.stats.statuses.get("unparseable", 0),
                "beats_majority_macro_f1": report["macro_f1"] > majority["macro_f1"]})
            print(f"{dataset} {name}: acc {report['accuracy']:.4f} f1 {report['macro_f1']:.4f} "
                  f"(majority f1 {majority['macro_f1']:.4f})", flush=True)
    return record


def render(results: dict) -> str:
    """Markdown table of the results file."""
    lines = []
    for record in results.values():
        lines.append(f"**{record['dataset']}** ({record['labels']} labels), {record['rows']} random test rows, "
                     f"{record['model']}, {record['machine']}, {record['date']}:\n")
        lines.append("| setting | accuracy | macro-F1 | ECE | items/s | unparseable |")
        lines.append("|---|---|---|---|---|---|")
        for s in record["settings"]:
            fmt = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
            lines.append(f"| {s['setting']} | {fmt(s['accuracy'])} | {fmt(s['macro_f1'])} | {fmt(s['ece'])} | "
                         f"{fmt(s['items_per_second'], 1)} | {s['unparseable']} |")
        lines.append("")
    return "\n".join(lines).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--generate", action="store_true", help="add the slow free-generation setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--dtype", default="auto", help="model dtype (float32 for comparing two versions of the code)")
    parser.add_argument("--labels-out", type=Path, help="write every row's label per setting here instead of the "
                        "results file and README (a before/after check of a refactor)")
    args = parser.parse_args()
    import torch

    from llmlabel.backends.transformers import TransformersBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    backend = TransformersBackend(dtype=args.dtype)
    if args.labels_out is not None:
        labels: dict = {}
        for dataset in args.datasets.split(","):
            run(dataset, args.rows, args.generate, backend, labels)
        args.labels_out.write_text(json.dumps(labels, indent=1) + "\n")
        print(f"wrote {args.labels_out}")
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = {k: v for k, v in results.items() if "labels" in v}  # drop records from the older format
    for dataset in args.datasets.split(","):
        results[dataset] = run(dataset, args.rows, args.generate, backend)
        save_results(RESULTS, results)
        update_readme("zero_shot", render(results))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

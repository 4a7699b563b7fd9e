"""Zero-shot accuracy of the default model on the first N rows of a shared dataset, in one run.

Writes benchmarks/results/zero_shot.json and refreshes the README table built from it:

    python benchmarks/zero_shot.py            # sst2, first 500 test rows
    python benchmarks/zero_shot.py --rows 100 --no-generate
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from llmlabel.backends.transformers import TransformersBackend
from llmlabel.cache import ResultCache
from llmlabel.data import Dataset, load_labels_file
from llmlabel.labeler import Labeler
from llmlabel.metrics import evaluate, majority_baseline
from llmlabel.task import LabelTask

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "zero_shot.json"
INSTRUCTIONS = {
    "sst2": ("Classify the sentiment of the movie review.", "Review"),
    "ag_news": ("Classify the topic of the news article.", "Article"),
    "trec": ("Classify the type of answer the question asks for.", "Question"),
}


def run(dataset: str, rows: int, generate: bool) -> dict:
    """Label the rows under each setting with one loaded model; return the results record."""
    data = Dataset(DATA / dataset / "test.jsonl", limit=rows)
    names = load_labels_file(DATA / dataset / "labels.json")
    instruction, text_name = INSTRUCTIONS[dataset]
    task = LabelTask(labels=names, instruction=instruction, text_name=text_name)
    items = list(data)
    gold = [task.gold(r) for r in items]
    backend = TransformersBackend()
    settings = [("score", dict(mode="score")), ("score + contextual calibration",
                                                   dict(mode="score", calibration="contextual"))]
    if generate:
        settings.append(("generate (free text, parsed)", dict(mode="generate")))
    majority_label, majority_acc = majority_baseline(gold)
    record = {"dataset": dataset, "rows": len(items), "model": "SmolLM2-135M-Instruct (bf16, transformers)",
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"),
              "settings": [{"setting": f"majority class ('{majority_label}')", "accuracy": majority_acc,
                            "macro_f1": None, "ece": None, "items_per_second": None, "unparseable": 0}]}
    with tempfile.TemporaryDirectory() as tmp:  # a fresh cache: every number is computed, not looked up
        for name, options in settings:
            if options["mode"] == "generate":
                backend.supports_choices = False  # the naive way: free generation, then parse the answer
            labeler = Labeler(backend, task, cache=ResultCache(Path(tmp) / f"{len(record['settings'])}.sqlite"),
                              progress=True, **options)
            out = labeler.label(items)
            backend.supports_choices = True
            report = evaluate(gold, [r["label"] for r in out], names, [r["confidence"] for r in out])
            record["settings"].append({
                "setting": name, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                "ece": report["ece"] if options["mode"] == "score" else None,
                "items_per_second": labeler.stats.items_per_second,
                "unparseable": labeler.stats.statuses.get("unparseable", 0)})
            print(f"{dataset} {name}: acc {report['accuracy']:.4f} f1 {report['macro_f1']:.4f} "
                  f"{labeler.stats.items_per_second:.2f} items/s")
    return record


def render(results: dict) -> str:
    """Markdown table of the results file."""
    lines = []
    for record in results.values():
        lines.append(f"**{record['dataset']}**, first {record['rows']} test rows, {record['model']}, "
                     f"{record['machine']}, {record['date']}:\n")
        lines.append("| setting | accuracy | macro-F1 | ECE | items/s | unparseable |")
        lines.append("|---|---|---|---|---|---|")
        for s in record["settings"]:
            fmt = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
            lines.append(f"| {s['setting']} | {fmt(s['accuracy'])} | {fmt(s['macro_f1'])} | {fmt(s['ece'])} | "
                         f"{fmt(s['items_per_second'], 1)} | {s['unparseable']} |")
        lines.append("")
    return "\n".join(lines).strip()


def update_readme(marker: str, table: str) -> None:
    """Replace the text between `<!-- marker:start -->` and `<!-- marker:end -->` in README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sst2", help="comma-separated: " + ", ".join(INSTRUCTIONS))
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--no-generate", action="store_true", help="skip the slow free-generation setting")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for dataset in args.datasets.split(","):
        results[dataset] = run(dataset, args.rows, not args.no_generate)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    update_readme("zero_shot", render(results))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

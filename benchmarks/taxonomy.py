"""TnT-LLM side by side: LLM-generated vs cluster-named taxonomies vs the gold label names (a person's taxonomy, the
upper reference), on TREC (coarse question types) and CLINC150 (domains), gold hidden from the pipeline until the
evaluation. Every method runs the same phase 2 (LLM labels on a sample, then students on the whole corpus).

Writes benchmarks/results/taxonomy.json and the README table between the taxonomy markers:

    python benchmarks/taxonomy.py                                   # default model, transformers, CPU
    python benchmarks/taxonomy.py --backend vllm --model Qwen/Qwen2.5-7B-Instruct --device-note "1x H100"
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `benchmarks` is importable

from benchmarks.common import DATA, save_results, update_readme  # noqa: E402
from llmlabel.backends.base import load_backend  # noqa: E402
from llmlabel.config import load_recipe  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "taxonomy.json"

DATASETS = {
    "trec": {"use_case": "Categorize questions by the type of answer they ask for (a person, a place, a number, a "
                         "definition, ...).", "text_name": "Question", "gold": "label"},
    "clinc150": {"use_case": "Categorize requests to a virtual assistant by the domain they belong to (banking, "
                             "travel, cooking, ...).", "text_name": "Request", "gold": "domain"},
}
GOLD_DESCRIPTIONS = {
    "trec": {"abbreviation": "asks what an abbreviation stands for", "entity": "asks for a thing, animal, "
             "product, event or other entity", "description": "asks for a definition, description or reason",
             "human": "asks for a person or group", "location": "asks for a place",
             "numeric": "asks for a number, date, amount or duration"},
}


def corpus(name: str, rows: int, seed: int, folder: Path) -> Path:
    """The benchmark corpus: TREC's test split; CLINC150's in-scope test rows (a seeded sample), as JSONL."""
    if name == "trec":
        return DATA / "trec" / "test.jsonl"
    lines = [json.loads(x) for x in (DATA / "clinc150" / "test.jsonl").read_text().splitlines() if x.strip()]
    lines = [r for r in lines if r["domain"] != "oos"]
    lines = random.Random(seed).sample(lines, min(rows, len(lines)))
    path = folder / "clinc150_domains.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def gold_labels(name: str, path: Path, field: str) -> dict[str, str] | list[str]:
    """The gold label names (with descriptions where we wrote them) as a person's taxonomy."""
    if name in GOLD_DESCRIPTIONS:
        return GOLD_DESCRIPTIONS[name]
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return sorted({r[field] for r in rows})


def run_one(backend, dataset: str, method: str, path: Path, args, out: Path) -> dict:
    """One tnt_llm run; returns its metrics."""
    spec = DATASETS[dataset]
    taxonomy = {"method": method, "use_case": spec["use_case"], "text_name": spec["text_name"],
                "max_labels": 8 if dataset == "trec" else 12, "min_labels": 3}
    if method == "llm":
        taxonomy.update(sample=args.llm_sample, minibatch_size=args.minibatch, minibatches=args.llm_sample
                        // args.minibatch, max_tokens=args.max_tokens)
    elif method == "cluster":
        taxonomy.update(sample=args.cluster_sample)
    else:
        taxonomy.update(method="given", labels=gold_labels(dataset, path, spec["gold"]))
    recipe = load_recipe(data={
        "name": f"{dataset}-{method}", "kind": "tnt_llm",
        "model": {"backend": args.backend, "name": args.model},
        "data": {"path": str(path), "label_field": spec["gold"]},
        "taxonomy": taxonomy, "labeling": {"sample": args.label_sample},
        "output": {"dir": str(out / f"{dataset}-{method}"), "cache": None}, "seed": args.seed}, source="benchmark")
    return recipe.run(progress=False, backend=backend)


def row(dataset: str, method: str, m: dict) -> dict:
    """The numbers the table shows."""
    gold = m.get("gold", {})
    best = m["classifiers"][m["chosen_classifier"]]
    return {
        "dataset": dataset, "taxonomy": method, "labels": m["taxonomy"]["labels"], "names": m["taxonomy"]["names"],
        "steps": m["taxonomy"]["steps"], "schema_valid": m["taxonomy"]["schema_valid"],
        "llm_ari": gold["llm_sample"]["ari"], "llm_nmi": gold["llm_sample"]["nmi"],
        "llm_accuracy": gold["llm_sample"].get("accuracy"),
        "clf_ari": gold["classifier_corpus"]["ari"], "clf_nmi": gold["classifier_corpus"]["nmi"],
        "clf_accuracy": gold["classifier_corpus"].get("accuracy"),
        "cluster_ari": gold.get("clusters", {}).get("ari"), "cluster_nmi": gold.get("clusters", {}).get("nmi"),
        "coverage": m["llm_labeling"]["coverage"], "corpus_coverage": m["corpus"]["coverage"],
        "classifier": m["chosen_classifier"], "kappa_vs_llm": best["holdout_kappa"],
        "llm_items_per_second": m["llm_labeling"]["items_per_second"],
        "classifier_items_per_second": best["items_per_second"], "speedup": best["speedup_vs_llm"],
        "phase1_seconds": m["seconds"]["taxonomy"], "seconds": m["seconds"]["total"],
        "rows": m["rows"], "llm_rows": m["llm_labeling"]["rows"]}


def render(record: dict) -> str:
    """Markdown table of a results record."""
    fmt = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"{record['model']} ({record['backend']}), {record['machine']}, {record['date']}, seed {record['seed']}; "
             f"phase 1 reads {record['settings']['llm_sample']} texts (llm) / embeds "
             f"{record['settings']['cluster_sample']}"
             f" (cluster); the LLM labels {record['settings']['label_sample']} rows; the best student labels the whole "
             "corpus.\n",
             "| dataset (rows) | taxonomy | labels | steps ok/repaired/failed | ARI / NMI, LLM on sample | ARI / NMI, "
             "student on corpus | ARI, k-means clusters | coverage | student kappa vs LLM | student items/s (x LLM) | "
             "phase 1 s | total s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        steps = "/".join(str(r["steps"].get(k, 0)) for k in ("ok", "repaired", "failed"))
        acc = f" (acc {fmt(r['clf_accuracy'])})" if r["clf_accuracy"] is not None else ""
        lines.append(
            f"| {r['dataset']} ({r['rows']}) | {r['taxonomy']} | {r['labels']} | {steps} | {fmt(r['llm_ari'])} / "
            f"{fmt(r['llm_nmi'])} | {fmt(r['clf_ari'])} / {fmt(r['clf_nmi'])}{acc} | {fmt(r['cluster_ari'])} | "
            f"{fmt(r['coverage'], 2)} | {fmt(r['kappa_vs_llm'])} | {r['classifier_items_per_second']:.0f} "
            f"({fmt(r['speedup'], 0)}x) | {r['phase1_seconds']:.0f} | {r['seconds']:.0f} |")
    lines.append("")
    lines.append("Induced label names: " + "; ".join(
        f"{r['dataset']}/{r['taxonomy']}: {', '.join(r['names'])}" for r in record["rows"] if r["taxonomy"] != "gold"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="trec,clinc150")
    parser.add_argument("--methods", default="llm,cluster,gold")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repetition-penalty", type=float, default=1.15)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a busy machine)")
    parser.add_argument("--clinc-rows", type=int, default=1500)
    parser.add_argument("--llm-sample", type=int, default=40)
    parser.add_argument("--minibatch", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--cluster-sample", type=int, default=400)
    parser.add_argument("--label-sample", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device-note", default=None, help="machine description for the table (e.g. '1x H100')")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    backend = load_backend(args.backend, model=args.model, repetition_penalty=args.repetition_penalty)
    record = {"model": backend.model_id.split("/")[-1], "backend": args.backend, "seed": args.seed,
              "machine": args.device_note or f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
                                             f"{args.threads} torch thread(s)",
              "date": time.strftime("%Y-%m-%d"), "settings": vars(args), "rows": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for dataset in args.datasets.split(","):
                path = corpus(dataset, args.clinc_rows, args.seed, Path(tmp))
                for method in args.methods.split(","):
                    metrics = run_one(backend, dataset, method, path, args, Path(tmp))
                    record["rows"].append(row(dataset, method, metrics))
                    print(json.dumps(record["rows"][-1]), flush=True)
    finally:
        backend.close()
    save_results(RESULTS, record)
    update_readme("taxonomy", render(record))
    print(render(record))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

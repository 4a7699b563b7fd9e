"""LLM label probabilities for the stats benchmarks (benchmarks/estimate.py, benchmarks/audit.py), computed once per
dataset subset and prompt variant and kept in benchmarks/results/llm_probs/<dataset>.npz, so the simulations (500
gold draws, planted noise x seeds) never call the model again.

Rows: a fixed random sample (seed 1234, as benchmarks/icl.py) of each test set (`ROWS`); the audit uses the first
`AUDIT_ROWS` of the same sample. Variants: `zero_shot` (the default Labeler: the benchmarks' task instruction,
score mode) on every row, and, on the audit rows only, `zero_shot_alt` (another instruction) and `few_shot_0` /
`few_shot_1` (4 fixed demonstrations drawn from the train split, so never the row itself), as `VARIANTS` lists. Each variant is saved
with calibration none, batch (the default) and contextual, all from one model pass (the result cache holds the raw
scores). Model: SmolLM2-135M-Instruct, transformers backend, int8, one torch thread by default.

    python benchmarks/stats_scores.py                          # all four datasets
    python benchmarks/stats_scores.py --datasets trec --rows 500 --audit-rows 400
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "llm_probs"
DATASETS = ("sst2", "ag_news", "trec", "banking77")
#: population rows per dataset (the estimate benchmark's population; TREC's test set has 500)
ROWS = {"sst2": 1821, "ag_news": 1000, "trec": 500, "banking77": 400}
#: audit rows per dataset (the first rows of the population) and the prompt variants scored on them: fewer where a
#: prompt is long (AG News articles in 4-shot prompts; Banking77's 77 label names in every prompt) on a shared CPU
AUDIT_ROWS = {"sst2": 600, "ag_news": 400, "trec": 400, "banking77": 400}
VARIANTS = {"sst2": ("zero_shot", "zero_shot_alt", "few_shot_0", "few_shot_1"),
            "ag_news": ("zero_shot", "zero_shot_alt", "few_shot_0"),
            "trec": ("zero_shot", "zero_shot_alt", "few_shot_0", "few_shot_1"),
            "banking77": ("zero_shot", "zero_shot_alt", "few_shot_0")}
CALIBRATIONS = ("none", "batch", "contextual")
ALT_INSTRUCTIONS = {
    "sst2": "Is this movie review negative or positive?",
    "ag_news": "What is this news article about? Pick its section of the newspaper.",
    "trec": "What kind of thing is the answer to this question?",
    "banking77": "What does the customer want help with? Pick the matching banking request.",
}


def variants(dataset: str) -> dict[str, dict]:
    """Prompt variant name -> Labeler options (examples are filled in by `few_shot`)."""
    every = {"zero_shot": {}, "zero_shot_alt": {"instruction": ALT_INSTRUCTIONS[dataset]},
             "few_shot_0": {"few_shot_seed": 0}, "few_shot_1": {"few_shot_seed": 1}}
    return {name: every[name] for name in VARIANTS[dataset]}


def few_shot(dataset: str, seed: int, k: int = 4) -> list[dict]:
    """`k` demonstrations from the train split, of `k` different labels where there are that many."""
    from benchmarks.icl import DATA, make_task
    from llmlabel.data import Dataset

    task = make_task(dataset)
    rng = random.Random(seed)
    train = list(Dataset(DATA / dataset / "train.jsonl"))
    rng.shuffle(train)
    chosen, seen = [], set()
    for row in train:
        label = task.gold(row)
        if label in seen and len(seen) < len(task.names):
            continue
        chosen.append({"text": row["text"], "label": label})
        seen.add(label)
        if len(chosen) == k:
            break
    return chosen


def load(dataset: str) -> dict[str, np.ndarray]:
    """The saved arrays of a dataset: `gold` (class indices), `texts`, `labels` and `<variant>.<calibration>`."""
    path = OUT / f"{dataset}.npz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run python benchmarks/stats_scores.py --datasets {dataset}")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def score(dataset: str, rows: int, audit_rows: int, backend, model_name: str) -> None:
    """Compute (or resume) every variant of one dataset and save the npz after each."""
    from benchmarks.icl import make_task, test_rows
    from llmlabel.cache import ResultCache
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.models import cache_dir

    task = make_task(dataset)
    items = test_rows(dataset, rows)
    gold = np.array([task.names.index(task.gold(r)) for r in items])
    path = OUT / f"{dataset}.npz"
    saved: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            saved = {k: data[k] for k in data.files}
        if len(saved.get("gold", [])) != len(items):
            saved = {}
    saved.update(gold=gold, labels=np.array(task.names), texts=np.array([r["text"] for r in items]),
                 model=np.array(model_name), audit_rows=np.array(min(audit_rows, len(items))))
    cache = ResultCache(cache_dir() / "bench-stats" / f"{dataset}.sqlite")
    try:
        for name, options in variants(dataset).items():
            subset = items if name == "zero_shot" else items[:audit_rows]
            if len(saved.get(f"{name}.batch", [])) >= len(subset):
                continue
            vtask = task.model_copy(update={"instruction": options["instruction"]}) if "instruction" in options \
                else task
            examples = few_shot(dataset, options["few_shot_seed"]) if "few_shot_seed" in options else None
            for calibration in CALIBRATIONS:
                start = time.perf_counter()
                labeler = Labeler(backend, vtask, calibration=calibration, examples=examples, cache=cache,
                                  chunk_size=64, progress=calibration == "none")
                out = labeler.label(subset)
                saved[f"{name}.{calibration}"] = np.array([[r["label_probs"][n] for n in task.names] for r in out],
                                                          dtype=np.float32)
                acc = float(np.mean(saved[f"{name}.{calibration}"].argmax(1) == gold[: len(subset)]))
                print(f"{dataset} {name} {calibration}: {len(subset)} rows, accuracy {acc:.3f}, "
                      f"{time.perf_counter() - start:.0f} s ({labeler.stats.computed} computed)", flush=True)
            OUT.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **saved)
            os.replace(tmp, path)
    finally:
        cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--rows", type=int, default=0, help="population rows (0: the per-dataset default)")
    parser.add_argument("--audit-rows", type=int, default=0, help="audit rows (0: the per-dataset default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quantize", default="int8", help="int8 or none (float32)")
    args = parser.parse_args()
    import torch

    from llmlabel.backends.transformers import TransformersBackend

    torch.set_num_threads(args.threads)
    quantize = None if args.quantize == "none" else args.quantize
    backend = TransformersBackend(dtype="float32", quantize=quantize)
    model_name = f"SmolLM2-135M-Instruct (float32{', ' + quantize if quantize else ''}, transformers)"
    for dataset in args.datasets.split(","):
        score(dataset, args.rows or ROWS[dataset], args.audit_rows or AUDIT_ROWS[dataset], backend, model_name)
    backend.close()


if __name__ == "__main__":
    main()

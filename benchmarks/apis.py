"""The same labels through the ways a model is reached: chat completions, completions (`openai`), the in-process vLLM
engine and transformers, in one run, on one local vLLM server with the default model (float32 everywhere).

Per dataset, a fixed random sample of test rows (seed 1234, as benchmarks/icl.py); zero-shot, the task's prompt
(the same template for every backend; the chat backend sends it as the user message and the server applies the same
chat template). Each backend scores each row once (calibration none: the raw distribution); batch calibration (the
default Labeler's: divide out the mean distribution of the labeled rows) is then applied to those raw
probabilities. Reported per backend and dataset: accuracy, macro-F1, ECE (raw and calibrated), items/s, HTTP
requests per row (client side) and prompt tokens per row (the server's `vllm:prompt_tokens_total`, follow-ups and
probes included; in-process engines: the rendered prompts' tokens).

    python benchmarks/apis.py                                  # SST-2 200, AG News 200, Banking77 100
    python benchmarks/apis.py --rows sst2=50,ag_news=50,banking77=30 --backends chat,openai

Writes benchmarks/results/apis.json and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "apis.json"
DEFAULT_ROWS = {"sst2": 200, "ag_news": 200, "banking77": 100}
BACKENDS = ("chat", "openai", "vllm", "transformers")


def _server_counters(base_url: str) -> dict[str, float]:
    """Prompt tokens and finished engine requests so far, from the vLLM server's Prometheus `/metrics`."""
    import httpx

    text = httpx.get(base_url[:-3] + "/metrics", timeout=30).text
    out = {"prompt_tokens": 0.0, "engine_requests": 0.0}
    for line in text.splitlines():
        if line.startswith("vllm:prompt_tokens_total"):
            out["prompt_tokens"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:request_success_total"):
            out["engine_requests"] += float(line.rsplit(" ", 1)[1])
    return out


def _metrics(gold: list[str], probs: list[list[float]], names: list[str]) -> dict[str, float]:
    from llmlabel.metrics import evaluate

    pred = [names[max(range(len(p)), key=p.__getitem__)] if any(p) else None for p in probs]
    conf = [max(p) if any(p) else 0.0 for p in probs]
    report = evaluate(gold, pred, names, conf)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4),
            "ece": round(report.get("ece", float("nan")), 4)}


def _batch_calibrated(probs: list[list[float]]) -> list[list[float]]:
    """The default Labeler's batch calibration over all rows at once: divide by the mean distribution."""
    import numpy as np

    from llmlabel.calibration.base import Calibrator

    ok = [p for p in probs if any(p)]
    if not ok:
        return probs
    arr = np.asarray(ok)
    calibrated = iter(Calibrator.apply(arr, arr.mean(axis=0)).tolist())
    return [next(calibrated) if any(p) else p for p in probs]


def run_backend(name: str, backend: Any, dataset: str, rows: list[dict], base_url: str | None) -> dict[str, Any]:
    """Label `rows` with `backend` (calibration none), time it, and measure raw and batch-calibrated quality."""
    from benchmarks.icl import make_task
    from llmlabel.labeling.labeler import Labeler

    task = make_task(dataset)
    gold = [task.gold(r) for r in rows]
    labeler = Labeler(backend, task, calibration="none", chunk_size=len(rows), progress=False)
    if hasattr(backend, "ledger"):  # this dataset's tokens only
        backend.ledger = {key: 0 for key in backend.ledger}
    before = _server_counters(base_url) if base_url and name in ("chat", "openai") else None
    sent = getattr(backend, "requests_sent", 0)
    start = time.perf_counter()
    results = labeler.label_texts([r["text"] for r in rows])
    seconds = time.perf_counter() - start
    probs = [[r.label_probs[n] for n in task.names] for r in results]
    record: dict[str, Any] = {"backend": name, "dataset": dataset, "rows": len(rows), "labels": len(task.names),
                              "seconds": round(seconds, 2), "items_per_second": round(len(rows) / seconds, 3),
                              "statuses": dict(labeler.stats.statuses),
                              "raw": _metrics(gold, probs, task.names),
                              "calibrated": _metrics(gold, _batch_calibrated(probs), task.names)}
    if before is not None:
        after = _server_counters(base_url)
        record["requests_per_row"] = round((backend.requests_sent - sent) / len(rows), 3)
        record["prompt_tokens_per_row"] = round((after["prompt_tokens"] - before["prompt_tokens"]) / len(rows), 1)
        record["engine_requests_per_row"] = round((after["engine_requests"] - before["engine_requests"])
                                                  / len(rows), 3)
    else:
        prompts = [labeler.prompting.render(r["text"], None) for r in rows]
        record["requests_per_row"] = None
        record["prompt_tokens_per_row"] = round(sum(backend.count_tokens(p) for p in prompts) / len(rows), 1)
    if name == "chat":
        record["options"] = labeler.option_plan.describe()
        record["ledger"] = backend.api_report(len(rows))["ledger"]
    print(json.dumps(record), flush=True)
    return record


def render(record: dict[str, Any]) -> str:
    """The README table."""
    lines = [f"Default model (SmolLM2-135M-Instruct, float32), zero-shot, one local vLLM server "
             f"({record['machine']}, {record['date']}); rows per dataset: "
             + ", ".join(f"{k} {v}" for k, v in record["rows"].items())
             + "".join(f"; {k.replace(':', ' on ')}: {v} rows" for k, v in record.get("caps", {}).items()) + ".", "",
             "| dataset | backend | rows | accuracy raw / calibrated | macro-F1 raw / calibrated | ECE raw / calibrated "
             "| items/s | requests/row | prompt tokens/row |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in record["results"]:
        req = "-" if r.get("requests_per_row") is None else f"{r['requests_per_row']:.2f}"
        lines.append(f"| {r['dataset']} | {r['backend']} | {r['rows']} | {r['raw']['accuracy']:.3f} / "
                     f"{r['calibrated']['accuracy']:.3f} | {r['raw']['macro_f1']:.3f} / "
                     f"{r['calibrated']['macro_f1']:.3f} | {r['raw']['ece']:.3f} / {r['calibrated']['ece']:.3f} | "
                     f"{r['items_per_second']:.2f} | {req} | {r['prompt_tokens_per_row']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(f"{k}={v}" for k, v in DEFAULT_ROWS.items()),
                        help="dataset=rows, comma-separated")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--cap", default="openai:banking77=10,vllm:banking77=10",
                        help="backend:dataset=rows, comma-separated: fewer rows (the sample's first ones) where a "
                             "backend is too slow on this machine (trie scoring of 77 labels: ~100 s a row on 2 "
                             "shared cores); empty: none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-url", default=None, help="use this running vLLM server (float32, the default model) "
                        "instead of starting one")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="only rewrite the README table from the results file")
    args = parser.parse_args()
    from benchmarks.common import update_readme

    if args.readme:
        update_readme("apis", render(json.loads(args.output.read_text())))
        return
    rows_per = {k: int(v) for k, v in (part.split("=") for part in args.rows.split(","))}
    caps = {tuple(k.split(":")): int(v) for k, v in (part.split("=") for part in args.cap.split(",") if part)}
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in names:
        if b not in BACKENDS:
            from llmlabel.errors import unknown

            sys.exit(unknown("backend", b, BACKENDS))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.icl import test_rows
    from llmlabel.backends import http
    from llmlabel.backends.base import load_backend
    from llmlabel.models import resolve_model
    from llmlabel.testing.vllm_server import start_vllm_server

    http.PROGRESS_MIN_REQUESTS = 10**9
    data = {d: test_rows(d, n) for d, n in rows_per.items()}
    record: dict[str, Any] = {"rows": {d: len(r) for d, r in data.items()},
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "date": time.strftime("%Y-%m-%d"), "dtype": "float32",
                              "caps": {f"{b}:{d}": n for (b, d), n in caps.items()}, "results": []}

    def save() -> None:  # after every record, so a long run that is stopped keeps what it measured
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1) + "\n")

    def label(b: str, backend: Any, url: str | None) -> None:
        for d, rows in data.items():
            record["results"].append(run_backend(b, backend, d, rows[:caps.get((b, d), len(rows))], url))
            save()

    model_dir = resolve_model(None)
    http_backends = [b for b in names if b in ("chat", "openai")]
    if http_backends:
        import contextlib

        server = (contextlib.nullcontext(args.base_url) if args.base_url
                  else start_vllm_server(model_dir, dtype="float32", timeout=900))
        with server as url:
            for b in http_backends:
                label(b, load_backend(b, base_url=url, timeout=600, concurrency=8), url)
    for b in names:
        if b in http_backends:
            continue
        options = {"dtype": "float32"}
        backend = load_backend(b, **options)
        try:
            label(b, backend, None)
        finally:
            backend.close()
    order = {b: i for i, b in enumerate(BACKENDS)}
    record["results"].sort(key=lambda r: (list(rows_per).index(r["dataset"]), order[r["backend"]]))
    save()
    if args.output == RESULTS:
        update_readme("apis", render(record))
    print(render(record))


if __name__ == "__main__":
    main()

"""The review loop end to end on real runs of the default model: SST-2 and Banking77 (200 rows each).

For each dataset the default model labels the rows (cached), then each way back from a person is exercised on its
own copy of the run, with a simulated reviewer who always answers with the gold label:

- label_studio: `review export --select random` -> a real Label Studio server (own virtualenv, SQLite): project from
  the exported config, tasks imported, one annotation per task through the API, JSON export -> `review import`;
- argilla: `--select mixed` -> records.json with responses filled in (the SDK's record layout) -> `review import`;
- csv: `--select mixed --audit-share 0.5` -> the spreadsheet filled in -> `review import`;
- serve: `review serve --select random` in headless Chromium, 20 rows answered with the keyboard.

Each records the agreement `review import` reports on the random audit sample next to the true accuracy of those
same rows (they must be equal: the reviewer is the gold) and the run's accuracy on all rows (which the audit's 95%
interval should usually cover). It also takes the README screenshots (docs/img/). Writes
benchmarks/results/review_roundtrip.json.

    python benchmarks/review_roundtrip.py                 # the committed results (~6 min once the runs are cached)
    python benchmarks/review_roundtrip.py --no-label-studio   # without the Label Studio server
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LLMLABEL_SHARED_DATA", REPO.parent / "shared" / "data"))
if not SHARED.exists():
    SHARED = Path("/work/shared/data")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def base_run(dataset: str, work: Path, rows: int) -> Path:
    """Label `rows` rows of `dataset` with the default model (the result cache makes re-runs instant)."""
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe
    from llmlabel.recipes_index import find_recipe

    out = work / dataset
    if dataset == "sst2":
        recipe = load_recipe(find_recipe("quickstart"), overrides=[
            f"data.path={SHARED / 'sst2' / 'test.jsonl'}", f"data.limit={rows}", f"output.dir={out}"])
    else:  # banking77's test file is sorted by label: a seeded shuffle gives a sample of every intent
        data = work / "data" / "banking77"
        data.mkdir(parents=True, exist_ok=True)
        all_rows = _rows(SHARED / "banking77" / "test.jsonl")
        random.Random(0).shuffle(all_rows)
        (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in all_rows[:rows]))
        shutil.copy(SHARED / "banking77" / "labels.json", data / "labels.json")
        recipe = load_recipe(data={
            "name": "label", "model": {"backend": "transformers", "name": "smollm2", "options": {}},
            "data": {"path": str(data / "test.jsonl"), "split": None, "limit": None, "text_field": "text",
                     "text_pair_field": None, "label_field": "label"},
            "task": {"instruction": "Classify the intent of the bank customer's message.", "labels": None},
            "labeling": {"mode": "score", "normalize": "sum", "calibration": "auto", "answer_prefix": ""},
            "output": {"dir": str(out)}}, source="flags")
    started = time.perf_counter()
    summary = run_recipe(recipe, progress=False)
    print(f"{dataset}: {summary['rows']} rows, accuracy {summary['metrics']['accuracy']:.4f} "
          f"({time.perf_counter() - started:.1f} s, {summary['stats']['cached']} from cache)", flush=True)
    return out


def copy_run(run_dir: Path, name: str) -> Path:
    """A fresh copy of the run's outputs (no reviews yet), so each format's audit sample stands alone."""
    copy = run_dir.parent / "copies" / name
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    for file in ("predictions.jsonl", "report.json"):
        shutil.copy(run_dir / file, copy / file)
    return copy


def cli(*args: str) -> None:
    from llmlabel.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"llmlabel {' '.join(args)} exited with {exc.code}") from None


def check(run_dir: Path, method: str, seconds: float) -> dict:
    """The agreement on the audit sample next to the truth of those rows and of the whole run."""
    from llmlabel.review.agreement import agreement
    from llmlabel.review.run import Run

    run = Run.load(run_dir)
    report = agreement(run)
    audit = report["audit"]
    latest = [r for r in map(json.loads, run.reviews_path.read_text().splitlines()) if r["label"] is not None]
    rows = sorted({r["row"] for r in latest if r["selected_by"] == "random"})
    true_audit = sum(run.llm_label(i) == run.gold(i) for i in rows) / len(rows)
    full = sum(run.llm_label(i) == run.gold(i) for i in range(len(run.rows))) / len(run.rows)
    low, high = audit["ci95"]
    result = {"method": method, "reviewed": report["reviewed"], "by_policy": report["by_policy"],
              "audit_rows": audit["n"], "audit_agreement": audit["accuracy"], "audit_true_accuracy": true_audit,
              "matches": abs(audit["accuracy"] - true_audit) < 1e-12, "audit_ci95": [low, high],
              "audit_kappa": audit["kappa"], "run_accuracy_all_rows": full,
              "ci_covers_run_accuracy": low <= full <= high,
              "seconds": round(seconds, 1)}
    print(f"  {method:<12} audit {audit['n']:3d} rows: agreement {audit['accuracy']:.4f} = true {true_audit:.4f} "
          f"({'match' if result['matches'] else 'MISMATCH'}); CI {low:.3f}-{high:.3f} vs all-row accuracy "
          f"{full:.4f}; {seconds:.1f} s", flush=True)
    return result


def via_label_studio(run_dir: Path, server: tuple[str, str], budget: int) -> dict:
    from llmlabel.review.run import Run
    from llmlabel.testing.review import label_in_label_studio

    started = time.perf_counter()
    run = Run.load(run_dir)
    cli("review", "export", str(run_dir), "--select", "random", "--budget", str(budget), "--format", "label_studio")
    exported = label_in_label_studio(*server, run_dir / "review", run.gold, f"llmlabel {run_dir.name}")
    (run_dir / "label_studio_export.json").write_bytes(exported)
    cli("review", "import", str(run_dir / "label_studio_export.json"), "--run", str(run_dir))
    return check(run_dir, "label_studio", time.perf_counter() - started)


def via_argilla(run_dir: Path, budget: int) -> dict:
    from llmlabel.review.run import Run

    started = time.perf_counter()
    run = Run.load(run_dir)
    cli("review", "export", str(run_dir), "--select", "mixed", "--budget", str(budget), "--format", "argilla")
    records = json.loads((run_dir / "review" / "argilla" / "records.json").read_text())
    for record in records:
        record["responses"] = {"label": [{"value": run.gold(record["metadata"]["row"]), "user_id": "sim",
                                          "status": "submitted"}]}
    (run_dir / "argilla_answers.json").write_text(json.dumps(records))
    cli("review", "import", str(run_dir / "argilla_answers.json"), "--run", str(run_dir))
    return check(run_dir, "argilla", time.perf_counter() - started)


def via_csv(run_dir: Path, budget: int) -> dict:
    from llmlabel.review.run import Run

    started = time.perf_counter()
    run = Run.load(run_dir)
    cli("review", "export", str(run_dir), "--select", "mixed", "--budget", str(budget), "--audit-share", "0.5",
        "--format", "csv")
    with open(run_dir / "review" / "review.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.update(label=run.gold(int(row["row"])), reviewer="sim")
    with open(run_dir / "answers.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cli("review", "import", str(run_dir / "answers.csv"), "--run", str(run_dir))
    return check(run_dir, "csv", time.perf_counter() - started)


def via_serve(run_dir: Path, budget: int, screenshot: Path | None) -> dict:
    from llmlabel.review.run import Run
    from llmlabel.testing.review import ReviewServerProcess, answer_rows, chromium

    started = time.perf_counter()
    run = Run.load(run_dir)
    server = ReviewServerProcess(run_dir, "--select", "random", "--budget", str(budget), "--reviewer", "sim")
    try:
        with chromium(width=1100, height=760) as page:
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            answer_rows(page, budget - 1, run.gold)
            if screenshot:
                page.keyboard.press("/")
                page.keyboard.type("transfer")  # a person narrowing 77 intents down
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot))
                page.keyboard.press("Escape")
            answer_rows(page, 1, run.gold)
    finally:
        server.kill()
    return check(run_dir, "serve", time.perf_counter() - started)


def report_screenshot(run_dir: Path, path: Path) -> None:
    from llmlabel.review.report_html import write_report
    from llmlabel.testing.review import chromium

    report = write_report(run_dir)
    with chromium(width=1150, height=1500) as page:
        page.goto(report.as_uri())
        sizes = page.eval_on_selector_all("img.plot", "imgs => imgs.map(i => i.naturalWidth)")
        assert sizes and all(w > 0 for w in sizes), sizes
        page.screenshot(path=str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "review-bench")
    parser.add_argument("--no-label-studio", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "review_roundtrip.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("LLMLABEL_BENCH_THREADS", "1")))
    images = REPO / "docs" / "img"
    images.mkdir(parents=True, exist_ok=True)
    runs = {dataset: base_run(dataset, args.work, args.rows) for dataset in ("sst2", "banking77")}
    results: dict = {"rows": args.rows, "model": "SmolLM2-135M-Instruct (default)", "reviewer": "simulated: gold label",
                     "datasets": {}}
    server_cm = None
    if not args.no_label_studio:
        from llmlabel.testing.review import install_label_studio, label_studio_server

        data_dir = args.work / "label-studio-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        started = time.perf_counter()
        server_cm = label_studio_server(install_label_studio(), data_dir)
        server = server_cm.__enter__()
        results["label_studio_start_seconds"] = round(time.perf_counter() - started, 1)
    try:
        for dataset, run_dir in runs.items():
            print(dataset, flush=True)
            out = []
            if server_cm is not None:
                out.append(via_label_studio(copy_run(run_dir, f"{dataset}-label_studio"), server, 60))
            out.append(via_argilla(copy_run(run_dir, f"{dataset}-argilla"), 60))
            out.append(via_csv(copy_run(run_dir, f"{dataset}-csv"), 40))
            shot = images / "review_page.png" if dataset == "banking77" else None
            out.append(via_serve(copy_run(run_dir, f"{dataset}-serve"), 20, shot))
            results["datasets"][dataset] = out
        report_screenshot(args.work / "copies" / "sst2-argilla", images / "report_html.png")
    finally:
        if server_cm is not None:
            server_cm.__exit__(None, None, None)
    results["all_match"] = all(r["matches"] for rs in results["datasets"].values() for r in rs)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"all audit agreements equal the true accuracy of their rows: {results['all_match']}\n{args.output}")
    if not results["all_match"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

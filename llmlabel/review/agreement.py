"""The LLM's agreement with the reviewers: on the random audit sample (an unbiased estimate of the run's accuracy
when the reviewers are right) and, separately, on every reviewed row (biased toward hard rows by design)."""

from __future__ import annotations

import math
from typing import Any

from llmlabel.metrics import cohen_kappa
from llmlabel.review.run import AGREEMENT_FILE, ReviewLog, Run


def wilson_interval(successes: int, n: int, population: int | None = None, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion; with `population` (sampling without replacement from N rows) the
    finite-population correction shrinks it (n = N gives the point)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    if population is not None and population > 1 and n >= population:
        return p, p
    n_eff = n * (population - 1) / (population - n) if population is not None and population > n else n
    denom = 1 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / denom
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _summary(records: list[dict[str, Any]], labels: list[str], population: int | None) -> dict[str, Any]:
    gold = [r["label"] for r in records]
    pred = [r["llm_label"] if r["llm_label"] is not None else "\x00none" for r in records]
    agree = sum(g == p for g, p in zip(gold, pred))
    n = len(records)
    low, high = wilson_interval(agree, n, population)
    per_label = {}
    for label in labels:
        reviewed = [p for g, p in zip(gold, pred) if g == label]
        predicted = [g for g, p in zip(gold, pred) if p == label]
        if reviewed or predicted:
            per_label[label] = {
                "reviewed": len(reviewed), "llm_agrees": sum(p == label for p in reviewed),
                "recall": sum(p == label for p in reviewed) / len(reviewed) if reviewed else None,
                "predicted": len(predicted),
                "precision": sum(g == label for g in predicted) / len(predicted) if predicted else None,
            }
    return {"n": n, "agree": agree, "accuracy": agree / n if n else None, "ci95": [low, high],
            "kappa": cohen_kappa(gold, pred) if n else None, "per_label": per_label}


def agreement(run: Run) -> dict[str, Any]:
    """Agreement of the run's labels with the latest reviews: `audit` (the random sample: an estimate of accuracy
    over all the run's rows, with a 95% interval) and `all_reviewed` (every reviewed row, by policy)."""
    latest = list(ReviewLog(run.reviews_path).latest().values())
    audit = [r for r in latest if r["selected_by"] == "random"]
    out: dict[str, Any] = {
        "run": str(run.folder), "rows": len(run.rows), "reviewed": len(latest),
        "by_policy": {p: sum(r["selected_by"] == p for r in latest)
                      for p in sorted({r["selected_by"] for r in latest})},
        "audit": _summary(audit, run.labels, len(run.rows)) if audit else None,
        "all_reviewed": _summary(latest, run.labels, None) if latest else None,
    }
    return out


def write_agreement(run: Run) -> tuple[dict[str, Any], Any]:
    """Compute `agreement(run)` and write it to `review_agreement.json` beside the predictions."""
    from llmlabel.io import write_json

    report = agreement(run)
    path = run.reviews_path.parent / AGREEMENT_FILE
    write_json(report, path)
    return report, path


def format_agreement(report: dict[str, Any]) -> str:
    """Readable lines of an `agreement` report."""
    lines = [f"reviewed rows: {report['reviewed']} of {report['rows']} ("
             + ", ".join(f"{k} {v}" for k, v in report["by_policy"].items()) + ")"]
    audit = report["audit"]
    if audit:
        low, high = audit["ci95"]
        lines.append(f"random audit sample: {audit['n']} rows, LLM agrees with reviewers on {audit['agree']}: "
                     f"accuracy {audit['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}), kappa {audit['kappa']:.4f}")
        width = min(max([len(k) for k in audit["per_label"]] + [5]), 40)
        lines.append(f"  {'label':<{width}}  reviewed  LLM agrees  recall  precision")
        for label, m in audit["per_label"].items():
            recall = f"{m['recall']:.3f}" if m["recall"] is not None else "  -  "
            precision = f"{m['precision']:.3f}" if m["precision"] is not None else "  -  "
            lines.append(f"  {label[:width]:<{width}}  {m['reviewed']:8d}  {m['llm_agrees']:10d}  {recall:>6}  "
                         f"{precision:>9}")
    else:
        lines.append("random audit sample: none reviewed yet (export with --select random or mixed for an unbiased "
                     "accuracy estimate)")
    every = report["all_reviewed"]
    if every and (not audit or every["n"] != audit["n"]):
        lines.append(f"all reviewed rows (not a random sample: biased toward the rows picked): {every['n']} rows, "
                     f"agreement {every['accuracy']:.4f}, kappa {every['kappa']:.4f}")
    return "\n".join(lines)

"""Evaluation: accuracy, macro-F1, per-class P/R/F1, confusion matrix, ECE, Cohen's kappa, and cost."""

from __future__ import annotations

from typing import Any


def confusion(gold: list[str], pred: list[str | None], labels: list[str]) -> list[list[int]]:
    """Confusion matrix, rows = gold, columns = predicted; a missing prediction counts in no column."""
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred):
        if p in index:
            matrix[index[g]][index[p]] += 1
    return matrix


def per_class(gold: list[str], pred: list[str | None], labels: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each label."""
    out = {}
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == lab and p == lab)
        fp = sum(1 for g, p in zip(gold, pred) if g != lab and p == lab)
        fn = sum(1 for g, p in zip(gold, pred) if g == lab and p != lab)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[lab] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return out


def cohen_kappa(a: list[Any], b: list[Any]) -> float:
    """Cohen's kappa between two labelings of the same rows."""
    n = len(a)
    if n == 0:
        return 0.0
    observed = sum(x == y for x, y in zip(a, b)) / n
    cats = set(a) | set(b)
    expected = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def expected_calibration_error(confidences: list[float], correct: list[bool], bins: int = 10) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    n = len(confidences)
    if n == 0:
        return 0.0
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if (lo < c <= hi) or (b == 0 and c == 0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidences[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - conf)
    return total


def majority_baseline(gold: list[str]) -> tuple[str, float]:
    """The most frequent gold label and the accuracy of always predicting it."""
    if not gold:
        return "", 0.0
    top = max(set(gold), key=gold.count)
    return top, gold.count(top) / len(gold)


def evaluate(gold: list[str], pred: list[str | None], labels: list[str],
             confidences: list[float] | None = None) -> dict[str, Any]:
    """Every metric for one labeling against gold (rows with no prediction count as wrong)."""
    n = len(gold)
    classes = per_class(gold, pred, labels)
    present = [lab for lab in labels if classes[lab]["support"] > 0 or any(p == lab for p in pred)]
    correct = [g == p for g, p in zip(gold, pred)]
    majority_label, majority_acc = majority_baseline(gold)
    report = {
        "n": n,
        "accuracy": sum(correct) / n if n else 0.0,
        "macro_f1": sum(classes[lab]["f1"] for lab in present) / len(present) if present else 0.0,
        "kappa": cohen_kappa(gold, [p if p is not None else "\x00none" for p in pred]),
        "majority_label": majority_label,
        "majority_accuracy": majority_acc,
        "unlabeled": sum(p is None for p in pred),
        "per_class": classes,
        "labels": labels,
        "confusion": confusion(gold, pred, labels),
    }
    if confidences is not None:
        report["ece"] = expected_calibration_error(confidences, correct)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A readable table of a report from `evaluate`."""
    lines = [
        f"rows {report['n']}   accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
        f"kappa {report['kappa']:.4f}" + (f"   ECE {report['ece']:.4f}" if "ece" in report else ""),
        f"majority baseline ('{report['majority_label']}') {report['majority_accuracy']:.4f}"
        + (f"   unlabeled rows {report['unlabeled']}" if report["unlabeled"] else ""),
    ]
    width = max(len(lab) for lab in report["labels"]) if report["labels"] else 5
    width = min(max(width, 5), 40)
    lines.append(f"{'label':<{width}}  precision  recall     f1  support")
    for lab, m in report["per_class"].items():
        if m["support"] or m["precision"]:
            lines.append(f"{lab[:width]:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  "
                         f"{m['support']:7d}")
    if "cost" in report:
        cost = report["cost"]
        lines.append(f"cost: {cost.get('seconds', 0):.1f} s, {cost.get('items_per_second', 0):.2f} items/s, "
                     f"{cost.get('computed', 0)} computed, {cost.get('cached', 0)} from cache")
    return "\n".join(lines)

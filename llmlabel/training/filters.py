"""Which generated labels a student trains on, and how much each counts.

- confidence: drop rows whose labeler confidence is below a floor, or weight rows by it;
- confident learning (Northcutt, Jiang & Chuang 2021, "Confident Learning: Estimating Uncertainty in Dataset
  Labels"; cleanlab's `find_label_issues`): flag rows whose given label disagrees with what out-of-sample predicted
  probabilities confidently say, and drop them.

Everything here is numpy; the out-of-sample probabilities come from `llmlabel.training.weak.out_of_fold_probs`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from llmlabel.errors import ConfigError

ISSUE_METHODS = ("prune_by_noise_rate", "confident_learning")


def per_class_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """t_j = mean predicted probability of class j over the rows labeled j (the self-confidence of class j).

    A class with no labeled rows gets threshold 1 + eps, so it is never confidently counted.
    """
    n_classes = pred_probs.shape[1]
    thresholds = np.full(n_classes, 1.0 + 1e-6)
    for j in range(n_classes):
        rows = labels == j
        if rows.any():
            thresholds[j] = pred_probs[rows, j].mean()
    return thresholds


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The confident joint C[i][j]: rows labeled i whose true class is confidently j, and each row's confident class.

    A row counts toward class j when p_j >= t_j; among several such classes the most probable wins. Rows above no
    threshold have confident class -1 and are not counted.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    n_classes = pred_probs.shape[1]
    thresholds = per_class_thresholds(labels, pred_probs)
    above = pred_probs >= thresholds[None, :]
    masked = np.where(above, pred_probs, -np.inf)
    confident = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    joint = np.zeros((n_classes, n_classes), dtype=np.int64)
    for given, true in zip(labels, confident):
        if true >= 0:
            joint[given, true] += 1
    return joint, confident


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray,
                      method: Literal["prune_by_noise_rate", "confident_learning"] = "prune_by_noise_rate",
                      min_keep_per_class: int = 1) -> np.ndarray:
    """Boolean mask of rows whose label is likely wrong.

    Args:
        labels: (n,) given class indices (e.g. the LLM's labels).
        pred_probs: (n, C) out-of-sample predicted probabilities.
        method: 'confident_learning' flags every off-diagonal row of the confident joint (its confident class differs
            from its label); 'prune_by_noise_rate' (cleanlab's default) calibrates the joint to the label counts and,
            for each (given i, true j) pair, flags the round(C_cal[i][j]) rows labeled i with the largest margin
            p_j - p_i.
        min_keep_per_class: never flag so many rows of a given label that fewer than this remain.
    """
    if method not in ISSUE_METHODS:
        from llmlabel.errors import unknown

        raise ConfigError(unknown("label-issue method", method, ISSUE_METHODS))
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if pred_probs.ndim != 2 or len(labels) != len(pred_probs):
        raise ConfigError(f"pred_probs must be (n, classes) for n={len(labels)} labels, got {pred_probs.shape}")
    joint, confident = confident_joint(labels, pred_probs)
    n_classes = pred_probs.shape[1]
    if method == "confident_learning":
        issues = (confident >= 0) & (confident != labels)
    else:
        counts = np.bincount(labels, minlength=n_classes)
        row_sums = joint.sum(axis=1, keepdims=True)
        calibrated = np.divide(joint * counts[:, None], row_sums, out=np.zeros(joint.shape, dtype=np.float64),
                               where=row_sums > 0)
        issues = np.zeros(len(labels), dtype=bool)
        for i in range(n_classes):
            rows = np.flatnonzero(labels == i)
            for j in range(n_classes):
                k = int(round(calibrated[i, j])) if i != j else 0
                if k <= 0 or not len(rows):
                    continue
                margin = pred_probs[rows, j] - pred_probs[rows, i]
                issues[rows[np.argsort(-margin, kind="stable")[:k]]] = True
    # Keep at least `min_keep_per_class` rows of each label: un-flag the least suspicious (highest self-confidence).
    for i in range(n_classes):
        rows = np.flatnonzero(labels == i)
        flagged = rows[issues[rows]]
        excess = min_keep_per_class - (len(rows) - len(flagged))
        if excess > 0:
            keep = flagged[np.argsort(-pred_probs[flagged, i], kind="stable")[:excess]]
            issues[keep] = False
    return issues


def confidence_weights(confidence: np.ndarray, min_confidence: float | None = None, weight: bool = False
                       ) -> np.ndarray:
    """Per-row training weights: 0 below `min_confidence`, else the confidence itself (`weight`) or 1."""
    confidence = np.asarray(confidence, dtype=np.float64)
    weights = confidence.copy() if weight else np.ones_like(confidence)
    if min_confidence is not None:
        weights[confidence < min_confidence] = 0.0
    return weights

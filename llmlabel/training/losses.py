"""Training losses for students: soft-label cross-entropy and the auxiliary confidence loss of weak-to-strong.

The auxiliary confidence loss (Burns et al. 2023, "Weak-to-strong generalization", section 4.3.2) mixes the weak
labels with the student's own *hardened* predictions::

    loss = (1 - alpha) * CE(p, weak) + alpha * CE(p, hard(p))

`hard(p)` thresholds the student's predictions adaptively: the threshold is chosen in each batch so the hardened
predictions have the class proportions of the weak labels in that batch (for two classes this is the quantile rule of
the reference implementation; for more classes a greedy quota assignment, see `harden`). `alpha` warms up linearly
from 0 to its maximum over the first part of training (`aux_alpha`). Because cross-entropy is linear in its target,
the loss is computed as one CE against the mixed target.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _torch() -> Any:
    import torch

    return torch


def soft_cross_entropy(logits: Any, targets: Any, weights: Any = None) -> Any:
    """Mean cross-entropy of `logits` (n, C) against target distributions `targets` (n, C), optionally weighted.

    With per-row `weights` the mean is sum(w * loss) / sum(w), so weights rescale rows relative to each other, not the
    learning rate.
    """
    torch = _torch()
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    per_row = -(targets.float() * log_probs).sum(dim=-1)
    if weights is None:
        return per_row.mean()
    weights = weights.float()
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)


def quotas(proportions: np.ndarray, n: int) -> np.ndarray:
    """Integer counts per class that sum to `n` and follow `proportions` (largest-remainder rounding)."""
    proportions = np.clip(np.asarray(proportions, dtype=np.float64), 0.0, None)
    total = proportions.sum()
    proportions = proportions / total if total > 0 else np.full(len(proportions), 1.0 / len(proportions))
    exact = proportions * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        # Ties in the remainders go to the lower class index (argsort is stable on the negated remainders).
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def harden(probs: np.ndarray, proportions: np.ndarray) -> np.ndarray:
    """Hard class of each row such that the class counts match `proportions` of the batch (adaptive threshold).

    Greedy quota assignment: (row, class) pairs are visited from the most to the least probable; a row takes the class
    if it has none yet and the class still has room. Each class's threshold is thus the probability at which its quota
    filled. For two classes this gives class 0 to exactly the rows with the highest p(class 0), the quantile threshold
    of Burns et al.'s reference code.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n, c = probs.shape
    room = quotas(proportions, n)
    assigned = np.full(n, -1, dtype=np.int64)
    left = n
    for flat in np.argsort(-probs, axis=None, kind="stable"):
        row, cls = divmod(int(flat), c)
        if assigned[row] < 0 and room[cls] > 0:
            assigned[row] = cls
            room[cls] -= 1
            left -= 1
            if left == 0:
                break
    return assigned


def aux_alpha(step: int, total_steps: int, alpha_max: float = 0.75, warmup_frac: float = 0.2) -> float:
    """Weight of the hardened-prediction term at `step` (0-based): linear from 0 to `alpha_max` over the first
    `warmup_frac` of the steps, then constant."""
    warmup = warmup_frac * total_steps
    if warmup <= 0:
        return float(alpha_max)
    return float(alpha_max) * min(1.0, step / warmup)


def aux_confidence_loss(logits: Any, weak_targets: Any, alpha: float, weights: Any = None) -> Any:
    """Burns et al.'s auxiliary confidence loss: CE against (1 - alpha) * weak + alpha * hardened predictions.

    `weak_targets` are (n, C) distributions (soft or one-hot weak labels); the hardening threshold makes the hardened
    predictions match the batch's mean weak label distribution. The hardened target carries no gradient.
    """
    torch = _torch()
    probs = torch.softmax(logits.detach().float(), dim=-1).cpu().numpy()
    proportions = weak_targets.detach().float().mean(dim=0).cpu().numpy()
    hard = torch.as_tensor(harden(probs, proportions), device=logits.device)
    hard_targets = torch.nn.functional.one_hot(hard, logits.shape[-1]).float()
    target = (1.0 - alpha) * weak_targets.float() + alpha * hard_targets
    return soft_cross_entropy(logits, target, weights)


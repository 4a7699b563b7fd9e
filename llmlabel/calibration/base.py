"""The calibrator family. A calibrator estimates the label prior the prompt itself induces, and the Labeler divides
it out: p_cal(y) ∝ p(y | x) / prior(y).

Probe-based calibrators (`contextual`, `domain`, `incontext`) name inputs to score in the same context (same
instruction and demonstrations) as the real query; their mean label distribution is the prior. `batch` instead uses
the mean distribution of the rows being labeled (Zhou et al. 2024), so it needs no extra forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass
class CalibrationContext:
    """What probe builders may draw on: the demonstrations of this context and in-domain texts (pool or data)."""

    examples: Sequence[dict[str, Any]]
    domain_texts: Sequence[str]
    has_pair: bool = False
    seed: int = 0
    #: how many contexts the prior is averaged over (probe budgets are split across them)
    contexts: int = 1


class Calibrator:
    """Base class: `probes(context)` -> (text, text_pair) inputs whose mean label distribution is the prior."""

    name: ClassVar[str] = "none"
    #: True when the prior comes from the labeled batch itself, not from probes.
    from_batch: ClassVar[bool] = False

    def probes(self, context: CalibrationContext) -> list[tuple[str, str | None]]:
        """Inputs to score in the same context as the query."""
        return []

    @staticmethod
    def apply(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Divide out `prior` and renormalize (rows of `probs` are distributions; zeros stay zero)."""
        scaled = probs / np.maximum(prior, 1e-12)
        total = scaled.sum(axis=-1, keepdims=True)
        return np.where(total > 0, scaled / np.where(total > 0, total, 1), probs)

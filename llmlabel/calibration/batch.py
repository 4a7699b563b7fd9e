"""Batch calibration (Zhou et al. 2024): the prior is the mean label distribution of the rows being labeled, so it
costs no extra forward passes. The engine shows it each labeled chunk (`chunk_size` rows); the prior is the mean of
every row scored so far, that chunk included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmlabel.calibration.base import Calibrator
from llmlabel.calibration.contextual import ContextualCalibrator
from llmlabel.core.results import LabelResult
from llmlabel.errors import BackendError

#: Batch calibration needs this many scored rows before a batch mean is a usable prior.
MIN_BATCH = 16


class BatchCalibrator(Calibrator):
    """Prior = mean predicted distribution over the rows scored so far. Until `MIN_BATCH` rows have been seen
    (e.g. labeling a handful of texts), the content-free prior of contextual calibration stands in, so a single row
    is not calibrated against itself."""

    name = "batch"

    def __init__(self) -> None:
        super().__init__()
        self._sum: Any = 0.0
        self._count = 0
        self._fallback = ContextualCalibrator()

    def needs_warmup(self, per_row_demonstrations: bool) -> bool:
        """No: the running mean cannot be reproduced by priming (every engine keeps its own; see executors.ray)."""
        return False

    def prior(self, examples: tuple[dict[str, Any], ...], chunk: Sequence[tuple[dict[str, Any], ...]]) -> None:
        """No per-row prior: the chunk is calibrated as a whole in `observe`."""
        return None

    def observe(self, results: list[LabelResult], names: Sequence[str],
                context: tuple[dict[str, Any], ...]) -> list[LabelResult]:
        """Divide out the mean distribution of every row scored so far (this chunk included)."""
        scored = [r for r in results if r.status == "ok"]
        if not scored:
            return results
        probs = np.asarray([[r.label_probs[n] for n in names] for r in scored])
        self._sum = self._sum + probs.sum(axis=0)
        self._count += len(probs)
        if self._count >= MIN_BATCH:
            prior = self._sum / self._count
        else:
            try:
                prior = np.asarray(self._fallback_prior(context))
            except BackendError as exc:  # no prior: the rows are kept, as failed; a re-run retries the probes
                return [LabelResult.without_label(names, "failed", f"calibration: {exc}", r.truncated)
                        if r.status == "ok" else r for r in results]
        calibrated = Calibrator.apply(probs, prior)
        for r, row in zip(scored, calibrated):
            best = int(np.argmax(row))
            r.label, r.confidence = names[best], float(row[best])
            r.label_probs = dict(zip(names, row.tolist()))
        return results

    def _fallback_prior(self, context: tuple[dict[str, Any], ...]) -> list[float]:
        """The content-free prior of `context`, estimated once per context (not once per chunk)."""
        self._fallback.bind(self._scorer())
        key = repr(context)
        if key not in self._priors:
            self._priors[key] = self._fallback.estimate([context])
        return self._priors[key]

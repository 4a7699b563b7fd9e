"""Contextual calibration (Zhao et al. 2021): the prior is the label distribution for content-free inputs."""

from __future__ import annotations

from llmlabel.calibration.base import CalibrationContext, Calibrator

#: Content-free inputs (Zhao et al. 2021).
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")


class ContextualCalibrator(Calibrator):
    """Prior = mean label distribution of 'N/A', '' and '[MASK]' in the same prompt."""

    name = "contextual"

    def probes(self, context: CalibrationContext) -> list[tuple[str, str | None]]:
        pair = "N/A" if context.has_pair else None
        return [(text, pair) for text in CONTENT_FREE_INPUTS]

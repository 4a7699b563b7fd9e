"""Batch calibration (Zhou et al. 2024): the prior is the mean label distribution of the batch being labeled, so it
costs no extra forward passes. The Labeler applies it per chunk of rows (`chunk_size`)."""

from __future__ import annotations

from llmlabel.calibration.base import Calibrator


class BatchCalibrator(Calibrator):
    """Prior = mean predicted distribution over the rows of the current chunk."""

    name = "batch"
    from_batch = True

"""In-context calibration (Jang et al. 2024, "Rectifying Demonstration Shortcut"): the prior is the label distribution
the prompt assigns to its own demonstrations' inputs, which measures how much the demonstrations (not the query) push
each label. Without demonstrations it falls back to in-domain texts."""

from __future__ import annotations

import numpy as np

from llmlabel.calibration.base import CalibrationContext, SampledCalibrator


class InContextCalibrator(SampledCalibrator):
    """Prior = mean label distribution of the demonstrations' own texts asked as queries in the same prompt.

    Args:
        samples: at most this many probes (default 8).
    """

    name = "incontext"
    default_samples = 8

    def probes(self, context: CalibrationContext) -> list[tuple[str, str | None]]:
        probes = [(str(ex["text"]), ex.get("text_pair")) for ex in context.examples][: self.samples]
        if probes:
            return probes
        texts = list(context.domain_texts)
        if not texts:
            return [("N/A", "N/A" if context.has_pair else None)]
        rng = np.random.default_rng(context.seed)
        picks = rng.choice(len(texts), size=min(self.samples, len(texts)), replace=False)
        return [(texts[i], "N/A" if context.has_pair else None) for i in picks]

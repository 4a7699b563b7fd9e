"""Domain-context calibration (Fei et al. 2023): the prior is the label distribution for bags of random in-domain
words, which captures the domain's label bias as well as the template's."""

from __future__ import annotations

import numpy as np

from llmlabel.calibration.base import CalibrationContext, SampledCalibrator


class DomainCalibrator(SampledCalibrator):
    """Prior = mean label distribution of `samples` random in-domain word bags, each as long as an average text.

    Args:
        samples: how many word bags in all (default 20, as in the paper), split across the contexts the prior
            averages.
    """

    name = "domain"
    default_samples = 20

    def probes(self, context: CalibrationContext) -> list[tuple[str, str | None]]:
        texts = [t for t in context.domain_texts if t]
        if not texts:
            return [("N/A", "N/A" if context.has_pair else None)]
        words = [w for t in texts for w in t.split()]
        length = max(1, round(len(words) / len(texts)))
        rng = np.random.default_rng(context.seed)
        probes = []
        for _ in range(max(1, self.samples // max(context.contexts, 1))):
            bag = " ".join(words[i] for i in rng.integers(0, len(words), size=length))
            pair = " ".join(words[i] for i in rng.integers(0, len(words), size=length)) if context.has_pair else None
            probes.append((bag, pair))
        return probes

"""Choose a calibration from a small labeled dev slice: the one whose labels get the best macro-F1 there.

The model scores the dev rows once (the raw scores are cached when the Labeler has a cache, and every calibration is
applied to the same scores); probe-based calibrations add their probes. Without labeled data, `calibration: auto`
(batch calibration on the rows being labeled) is the default instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: What `choose_calibration` compares by default.
CANDIDATES = ("none", "contextual", "domain", "batch")


def choose_calibration(backend: Any, task: Any, texts: Sequence[str], labels: Sequence[str],
                       text_pairs: Sequence[str | None] | None = None, candidates: Sequence[str] = CANDIDATES,
                       **labeler_options: Any) -> tuple[str, dict[str, float]]:
    """(best calibration, {calibration: dev macro-F1}) over `candidates` on the labeled dev rows.

    `labeler_options` go to every `Labeler` (e.g. `cache`, `examples`, `seed`); ties keep the earlier candidate.
    """
    from llmlabel.errors import ConfigError, suggest
    from llmlabel.labeler import Labeler
    from llmlabel.metrics import evaluate

    if not texts or len(texts) != len(labels):
        raise ConfigError(f"choose_calibration needs labeled dev rows (got {len(texts)} texts, {len(labels)} labels)")
    bad = sorted(set(labels) - set(task.names))
    if bad:
        raise ConfigError(f"dev label '{bad[0]}' is not a task label" + suggest(bad[0], task.names))
    scores: dict[str, float] = {}
    for calibration in candidates:
        labeler = Labeler(backend, task, calibration=calibration, **labeler_options)
        predicted = [r.label for r in labeler.label_texts(list(texts), list(text_pairs) if text_pairs else None)]
        scores[calibration] = float(evaluate(list(labels), predicted, task.names)["macro_f1"])
    best = max(candidates, key=lambda c: scores[c])  # max keeps the first of equal scores
    return best, scores

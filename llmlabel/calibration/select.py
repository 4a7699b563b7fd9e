"""Choose a calibration from labeled rows: the one whose labels get the best macro-F1 there, if it beats the default
beyond the noise.

The model scores the labeled rows once (the raw scores are cached when the Labeler has a cache, and every
calibration is applied to the same scores); probe-based calibrations add their probes. No calibration is fit on the
labels (the priors come from probes or from the rows' own mean), so every labeled row is already "out of fold": the
choice goes through `llmlabel.tuning.choose`, which keeps the default (`batch`, what `calibration: auto` uses in
score mode) unless another calibration's macro-F1 gain is beyond the row-to-row noise (a paired bootstrap). Without
labeled data, `calibration: auto` is the default instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmlabel.tuning import Z, Choice

#: What `choose_calibration` compares by default.
CANDIDATES = ("none", "contextual", "domain", "batch")


def choose_calibration(backend: Any, task: Any, texts: Sequence[str], labels: Sequence[str],
                       text_pairs: Sequence[str | None] | None = None, candidates: Sequence[str] = CANDIDATES,
                       baseline: str | None = None, z: float = Z, **labeler_options: Any) -> Choice:
    """The calibration to use on the labeled rows, as a `Choice` (unpacks as `(chosen, {calibration: macro-F1})`;
    `.as_dict()` for a report).

    `baseline` is kept unless beaten beyond the noise (default: `batch` when it is a candidate, else the first);
    `labeler_options` go to every `Labeler` (e.g. `cache`, `examples`, `seed`); `z` is the paired z a challenger needs.
    """
    import numpy as np

    from llmlabel.errors import ConfigError, suggest
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.tuning import choose

    if not texts or len(texts) != len(labels):
        raise ConfigError(f"choose_calibration needs labeled dev rows (got {len(texts)} texts, {len(labels)} labels)")
    bad = sorted(set(labels) - set(task.names))
    if bad:
        raise ConfigError(f"dev label '{bad[0]}' is not a task label" + suggest(bad[0], task.names))
    if baseline is None:
        baseline = "batch" if "batch" in candidates else candidates[0]
    elif baseline not in candidates:
        raise ConfigError(f"baseline calibration '{baseline}' is not one of the candidates"
                          + suggest(baseline, list(candidates)))
    probs: dict[str, Any] = {}
    for calibration in candidates:
        labeler = Labeler(backend, task, calibration=calibration, **labeler_options)
        results = labeler.label_texts(list(texts), list(text_pairs) if text_pairs else None)
        probs[calibration] = np.asarray([[r.label_probs.get(n, 0.0) for n in task.names] for r in results])
    gold = [task.names.index(y) for y in labels]
    return choose(probs, gold, baseline=baseline, metric="macro_f1", z=z)

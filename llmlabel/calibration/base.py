"""The calibrator family. A calibrator estimates the label prior the prompt itself induces, and the Labeler divides
it out: p_cal(y) ∝ p(y | x) / prior(y).

Probe-based calibrators (`contextual`, `domain`, `incontext`) name inputs to score in the same context (same
instruction and demonstrations) as the real query; their mean label distribution is the prior. `batch` instead uses
the mean distribution of the rows being labeled (Zhou et al. 2024), so it needs no extra forward passes.

A calibrator owns its state (the priors it estimated, the in-domain texts it saw, a batch's running mean); the engine
that uses it gives it a `ProbeScorer` (`bind`), shows it the texts it is about to label (`observe_texts`), asks it
for each scored row's `prior` and shows it every labeled chunk (`observe`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from llmlabel.core.results import LabelResult

#: in-domain texts kept from the first rows labeled when none were given (probe builders draw on them)
SEEN_TEXTS = 200

#: (text, text_pair, demonstrations): one calibration probe, scored in the context of those demonstrations
Probe = tuple[str, str | None, tuple[dict[str, Any], ...]]


def resolve_calibration(calibration: str | None, mode: str, multi_label: bool = False) -> str | None:
    """The calibrator a Labeler uses: 'auto' (the default) is 'batch' for single-label score mode, else none.

    The one place 'auto' is resolved (the Labeler and the Ray executor ask here). Why batch by default:
    uncalibrated zero-shot scores collapse onto the label whose first token is likeliest
    (benchmarks/results/retrieval.json: SST-2 macro-F1 35.5 = the majority class's, TREC 6.8); dividing out the
    mean distribution of the rows being labeled (Zhou et al. 2024) needs no labeled data and raised macro-F1 on every
    dataset measured there. Generated answers and independent yes/no decisions have no label distribution to divide.
    """
    if calibration == "auto":
        return "batch" if mode == "score" and not multi_label else None
    return None if calibration in (None, "none") else calibration


def make_calibrator(calibration: str | None, mode: str, multi_label: bool = False) -> "Calibrator | None":
    """The calibrator for a (possibly 'auto') calibration name, or None; an unknown name or a mode without label
    scores is a one-line `ConfigError`."""
    from llmlabel.errors import ConfigError, unknown
    from llmlabel.registry import calibrators

    name = resolve_calibration(calibration, mode, multi_label)
    if name is None:
        return None
    if name not in calibrators:
        raise ConfigError(unknown("calibration", name, ["auto", "none", *calibrators.names()]))
    if mode != "score":
        raise ConfigError(f"calibration '{name}' needs mode 'score'")
    return calibrators.get(name)()


@dataclass
class CalibrationContext:
    """What probe builders may draw on: the demonstrations of this context and in-domain texts (pool or data)."""

    examples: Sequence[dict[str, Any]]
    domain_texts: Sequence[str]
    has_pair: bool = False
    seed: int = 0
    #: how many contexts the prior is averaged over (probe budgets are split across them)
    contexts: int = 1


@dataclass
class ProbeScorer:
    """What the engine lends a calibrator: how to score probes, and what shapes the probes.

    Args:
        distributions: scores probes in their contexts -> the label distribution of each one the endpoint answered
            (raises `BackendError` when a probe failed for good, or when every probe was refused).
        domain_texts: the in-domain texts given (explicitly, or the exemplar pool's), or None: the rows seen first.
        has_pair: whether inputs have a second text.
        seed: seed of the probe builders.
        per_row_demonstrations: demonstrations are chosen per row, so one prior is shared, estimated from the
            contexts of the first chunk's rows.
        calibration_sets: with per-row demonstrations, the shared prior averages this many contexts.
    """

    distributions: Callable[[list[Probe]], list[list[float]]]
    domain_texts: Callable[[], list[str] | None]
    has_pair: bool = False
    seed: int = 0
    per_row_demonstrations: bool = False
    calibration_sets: int = 4


class Calibrator:
    """Base class: `probes(context)` -> (text, text_pair) inputs whose mean label distribution is the prior."""

    name: ClassVar[str] = "none"
    #: True when the probes draw on in-domain texts, which are the first rows labeled when none were given
    draws_on_seen_texts: ClassVar[bool] = False

    def __init__(self) -> None:
        self.scorer: ProbeScorer | None = None
        #: estimated priors by context (repr of its demonstrations), and the one shared by per-row contexts
        self._priors: dict[str, list[float]] = {}
        self._shared: list[float] | None = None
        self._seen: list[str] | None = None
        self._domain: list[str] | None = None

    def needs_warmup(self, per_row_demonstrations: bool) -> bool:
        """Whether the prior depends on the first rows an engine labels, so an engine that labels a later part of
        the data must first see the data's first chunk to calibrate as one engine over all of it does. Probe
        priors do when they draw on the texts seen first, or when demonstrations are chosen per row (the shared
        prior comes from the first chunk's)."""
        return self.draws_on_seen_texts or per_row_demonstrations

    def bind(self, scorer: ProbeScorer) -> None:
        """Lend the calibrator the engine's probe scoring (once, before the first row)."""
        self.scorer = scorer

    def probes(self, context: CalibrationContext) -> list[tuple[str, str | None]]:
        """Inputs to score in the same context as the query."""
        return []

    def observe_texts(self, texts: Sequence[str]) -> None:
        """The texts of a chunk about to be labeled: the first chunk's are the in-domain texts when none were given."""
        if self._seen is None:
            self._seen = list(texts[:SEEN_TEXTS])

    def domain_texts(self) -> list[str]:
        """The in-domain texts probes draw on (fixed at first use)."""
        if self._domain is None:
            given = self._scorer().domain_texts()
            self._domain = given if given is not None else list(self._seen or [])
        return self._domain

    def prior(self, examples: tuple[dict[str, Any], ...], chunk: Sequence[tuple[dict[str, Any], ...]]
              ) -> list[float] | None:
        """The prior of a scored row whose demonstrations are `examples` (`chunk`: every scored row's in its
        chunk): exact for shared demonstrations, sampled for per-row ones. None: this calibrator has no row prior."""
        scorer = self._scorer()
        if scorer.per_row_demonstrations:
            if self._shared is None:
                distinct = {repr(ex): ex for ex in chunk}
                self._shared = self.estimate(list(distinct.values())[: scorer.calibration_sets])
            return self._shared
        key = repr(examples)
        if key not in self._priors:
            self._priors[key] = self.estimate([examples])
        return self._priors[key]

    def estimate(self, contexts: list[tuple[dict[str, Any], ...]]) -> list[float]:
        """Mean label distribution of this calibrator's probes, each scored in each of `contexts`."""
        scorer = self._scorer()
        probes: list[Probe] = []
        for examples in contexts:
            context = CalibrationContext(examples=examples, domain_texts=self.domain_texts(),
                                         has_pair=scorer.has_pair, seed=scorer.seed, contexts=len(contexts))
            probes += [(t, p, examples) for t, p in self.probes(context)]
        dists = scorer.distributions(probes)
        return [sum(col) / len(dists) for col in zip(*dists)]

    def observe(self, results: list["LabelResult"], names: Sequence[str],
                context: tuple[dict[str, Any], ...]) -> list["LabelResult"]:
        """A labeled chunk (`context`: its first row's demonstrations): calibrators that learn from the rows
        themselves recalibrate them here. Probe calibrators applied their prior per row already."""
        return results

    def _scorer(self) -> ProbeScorer:
        if self.scorer is None:
            raise RuntimeError(f"calibrator '{self.name}' is not bound to an engine (call bind first)")
        return self.scorer

    @staticmethod
    def apply(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Divide out `prior` and renormalize (rows of `probs` are distributions; zeros stay zero)."""
        scaled = probs / np.maximum(prior, 1e-12)
        total = scaled.sum(axis=-1, keepdims=True)
        return np.where(total > 0, scaled / np.where(total > 0, total, 1), probs)


class SampledCalibrator(Calibrator):
    """Base of calibrators whose probes are a sample (`samples` of them) drawn from in-domain texts or
    demonstrations, which are the first rows labeled when none were given."""

    draws_on_seen_texts = True
    #: probes when `samples` is not given
    default_samples: ClassVar[int] = 8

    def __init__(self, samples: int | None = None):
        super().__init__()
        self.samples = self.default_samples if samples is None else samples

"""The calibrator family on its own: 'auto' resolved in one place, warm-up answers, and the state each calibrator
owns (priors estimated once per context, in-domain texts seen first, a batch's running mean), with a stub probe
scorer instead of a backend."""

from __future__ import annotations

import numpy as np
import pytest

from llmlabel.calibration.base import Calibrator, ProbeScorer, make_calibrator, resolve_calibration
from llmlabel.calibration.batch import MIN_BATCH, BatchCalibrator
from llmlabel.calibration.contextual import CONTENT_FREE_INPUTS, ContextualCalibrator
from llmlabel.calibration.domain import DomainCalibrator
from llmlabel.calibration.incontext import InContextCalibrator
from llmlabel.core.results import LabelResult
from llmlabel.errors import BackendError, ConfigError

NAMES = ["negative", "positive"]


class StubScorer:
    """Scores every probe as [0.25, 0.75] and records what it was asked."""

    def __init__(self, fail: bool = False):
        self.calls: list[list[tuple]] = []
        self.fail = fail

    def __call__(self, probes):
        self.calls.append(list(probes))
        if self.fail:
            raise BackendError("probe endpoint down")
        return [[0.25, 0.75] for _ in probes]


def bound(calibrator: Calibrator, scorer: StubScorer, domain_texts=None, **options) -> Calibrator:
    calibrator.bind(ProbeScorer(scorer, lambda: domain_texts, **options))
    return calibrator


def test_auto_is_resolved_in_one_place():
    assert resolve_calibration("auto", "score") == "batch"
    assert resolve_calibration("auto", "score", multi_label=True) is None
    assert resolve_calibration("auto", "generate") is None
    assert resolve_calibration("none", "score") is None and resolve_calibration(None, "score") is None
    assert resolve_calibration("domain", "score") == "domain"
    assert isinstance(make_calibrator("auto", "score"), BatchCalibrator)
    assert make_calibrator("auto", "generate") is None


def test_bad_calibrations_are_one_line():
    with pytest.raises(ConfigError, match=r"^unknown calibration 'contextal' \(did you mean 'contextual'\?\); "
                                          r"valid: auto, batch, contextual, domain, incontext, none$"):
        make_calibrator("contextal", "score")
    with pytest.raises(ConfigError, match="^calibration 'domain' needs mode 'score'$"):
        make_calibrator("domain", "generate")


def test_calibrators_say_whether_they_need_the_first_chunk():
    assert not ContextualCalibrator().needs_warmup(per_row_demonstrations=False)
    assert ContextualCalibrator().needs_warmup(per_row_demonstrations=True)
    assert DomainCalibrator().needs_warmup(False) and InContextCalibrator().needs_warmup(False)
    assert not BatchCalibrator().needs_warmup(True)


def test_a_probe_prior_is_estimated_once_per_context():
    scorer = StubScorer()
    calibrator = bound(ContextualCalibrator(), scorer)
    context = ({"text": "a", "label": "positive", "text_pair": None},)
    assert calibrator.prior(context, [context]) == [0.25, 0.75]
    assert calibrator.prior(context, [context]) == [0.25, 0.75]
    assert calibrator.prior((), [()]) == [0.25, 0.75]
    assert len(scorer.calls) == 2  # one estimate per distinct context
    assert [p[:2] for p in scorer.calls[0]] == [(t, None) for t in CONTENT_FREE_INPUTS]
    assert all(p[2] == context for p in scorer.calls[0])


def test_per_row_demonstrations_share_one_prior_from_the_first_chunk():
    scorer = StubScorer()
    calibrator = bound(ContextualCalibrator(), scorer, per_row_demonstrations=True, calibration_sets=2)
    contexts = [({"text": str(i), "label": "negative"},) for i in range(5)]
    calibrator.prior(contexts[0], contexts)
    calibrator.prior(contexts[4], contexts[3:])
    assert len(scorer.calls) == 1
    # the first `calibration_sets` contexts, three content-free probes each
    assert [p[2] for p in scorer.calls[0]] == [contexts[0]] * 3 + [contexts[1]] * 3


def test_in_domain_texts_are_the_given_ones_else_the_first_chunk_seen():
    seen = bound(DomainCalibrator(samples=4), StubScorer())
    seen.observe_texts(["alpha beta", "gamma delta"])
    seen.observe_texts(["later chunk"])  # only the first chunk counts
    assert seen.domain_texts() == ["alpha beta", "gamma delta"]
    given = bound(DomainCalibrator(), StubScorer(), domain_texts=["pool text"])
    given.observe_texts(["row text"])
    assert given.domain_texts() == ["pool text"]


def test_an_unbound_calibrator_says_so():
    with pytest.raises(RuntimeError, match="not bound to an engine"):
        ContextualCalibrator().prior((), [()])


def results(probs):
    return [LabelResult(NAMES[int(np.argmax(p))], dict(zip(NAMES, p)), max(p)) for p in probs]


def test_batch_calibration_falls_back_then_divides_its_running_mean():
    scorer = StubScorer()
    batch = bound(BatchCalibrator(), scorer)
    assert batch.prior((), [()]) is None  # no per-row prior: the chunk is calibrated as a whole
    few = batch.observe(results([[0.4, 0.6]]), NAMES, ())
    # Fewer than MIN_BATCH rows: the content-free prior [0.25, 0.75] stands in (estimated once per context).
    assert few[0].label == "negative" and few[0].label_probs["negative"] == pytest.approx(2 / 3)
    batch.observe(results([[0.4, 0.6]]), NAMES, ())
    assert len(scorer.calls) == 1
    many = batch.observe(results([[0.2, 0.8]] * MIN_BATCH), NAMES, ())
    assert len(scorer.calls) == 1  # the running mean now: no probes
    mean = (2 * np.asarray([0.4, 0.6]) + MIN_BATCH * np.asarray([0.2, 0.8])) / (2 + MIN_BATCH)
    expected = np.asarray([0.2, 0.8]) / mean
    assert many[0].label_probs["positive"] == pytest.approx(expected[1] / expected.sum())


def test_batch_fallback_failure_keeps_the_rows_as_failed():
    batch = bound(BatchCalibrator(), StubScorer(fail=True))
    rows = batch.observe(results([[0.4, 0.6]]) + [LabelResult.without_label(NAMES, "skipped", "empty text")],
                         NAMES, ())
    assert [r.status for r in rows] == ["failed", "skipped"]
    assert rows[0].reason == "calibration: probe endpoint down" and rows[0].label is None


def test_apply_divides_the_prior_out_and_keeps_zero_rows():
    probs = np.asarray([[0.5, 0.5], [0.0, 0.0]])
    out = Calibrator.apply(probs, np.asarray([0.25, 0.75]))
    assert out[0] == pytest.approx([0.75, 0.25]) and out[1].tolist() == [0.0, 0.0]

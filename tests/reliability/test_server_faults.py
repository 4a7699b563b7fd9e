"""The openai backend against a fault-injecting server: every fault is survived or recorded, nothing is lost.

A run with faults must give exactly the labels and probabilities of a run without (the server's logprobs are
deterministic); a request that keeps failing fails only its own rows, which are kept with a reason, counted, not
cached, and computed (alone) by a re-run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import write_jsonl
from llmlabel.testing.fault_server import FAULT_KINDS, serve_faults, synthetic_score
from relhelpers import assert_complete, openai_recipe, run, sentiment_rows

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

#: faults a client survives by retrying (the rest, `garbage`, are recorded as failed rows)
TRANSIENT = [k for k in FAULT_KINDS if k != "garbage"]
ROWS = 48


def _outcome(predictions: list[dict]) -> list[tuple]:
    return [(p["id"], p["label"], p["label_probs"], p["status"]) for p in predictions]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "rows.jsonl", sentiment_rows(ROWS))


@pytest.fixture(scope="module")
def reference(data, tokenizer_dir, tmp_path_factory) -> dict[str, list[tuple]]:
    """Predictions of fault-free runs (score and generate mode), to compare faulty runs with."""
    out = {}
    with serve_faults() as server:
        for mode in ("score", "generate"):
            recipe = openai_recipe(tmp_path_factory.mktemp(mode), data, server.url, tokenizer_dir)
            recipe["labeling"]["mode"] = mode
            summary, predictions = run(recipe)
            assert summary["stats"]["statuses"] == {"ok": ROWS}
            out[mode] = _outcome(predictions)
    return out


def test_fault_server_scores_are_what_the_backend_reads(tokenizer_dir):
    """The server speaks both scoring dialects the backend uses, with the same synthetic logprobs."""
    from llmlabel.backends.openai import OpenAIBackend

    prompts, cands = ["Hello there", "Is this good?"], [["negative", "positive", "card arrival"]] * 2
    for token_ids in (True, False):
        with serve_faults({"token_id_logprobs": token_ids}) as server:
            backend = OpenAIBackend(base_url=server.url, served_model=server.served_model, tokenizer=tokenizer_dir)
            got = backend.score(prompts, cands)
            want = [[synthetic_score(backend.encode(p), backend.encode(c)) for c in cs] for p, cs in zip(prompts, cands)]
            assert got == [[pytest.approx(w, abs=1e-9) for w in ws] for ws in want]
            assert backend._token_id_scoring is token_ids
            assert backend.max_context == 2048
            answers = backend.generate([f"prompt {i}" for i in range(20)], choices=["yes", "no"])
            assert set(answers) == {"yes", "no"}


@pytest.mark.parametrize("kind", TRANSIENT)
def test_each_transient_fault_is_survived(kind, data, reference, tokenizer_dir, tmp_path):
    rate = 0.2 if kind in ("slow", "trickle") else 0.35
    with serve_faults({"rates": {kind: rate}, "seed": 7, "slow_seconds": 1.0, "retry_after": 0.05}) as server:
        summary, predictions = run(openai_recipe(tmp_path, data, server.url, tokenizer_dir, timeout=0.4))
        injected = server.stats()["faults"].get(kind, 0)
    assert injected >= 3, f"only {injected} '{kind}' faults were injected: the test proves nothing"
    assert summary["stats"]["statuses"] == {"ok": ROWS}
    assert_complete(predictions, list(range(ROWS)))
    assert _outcome(predictions) == reference["score"]


@pytest.mark.parametrize("token_ids", [True, False], ids=["trie-scoring", "echo-scoring"])
def test_all_faults_mixed_give_the_fault_free_labels(token_ids, data, reference, tokenizer_dir, tmp_path):
    rates = {k: 0.06 for k in TRANSIENT}  # 48% of requests fail somehow
    plan = {"rates": rates, "seed": 3, "slow_seconds": 1.0, "token_id_logprobs": token_ids}
    with serve_faults(plan) as server:
        summary, predictions = run(openai_recipe(tmp_path, data, server.url, tokenizer_dir, timeout=0.4,
                                                 max_retries=10))
        stats = server.stats()
    assert sum(stats["faults"].values()) >= 20 and len(stats["faults"]) >= 6
    assert summary["stats"]["statuses"] == {"ok": ROWS}
    assert_complete(predictions, list(range(ROWS)))
    assert _outcome(predictions) == reference["score"]


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_given_up_rows_are_failed_with_a_reason_and_a_rerun_retries_only_them(mode, data, reference,
                                                                               tokenizer_dir, tmp_path):
    plan = {"outage": 0.25, "rates": {"503": 0.1, "drop": 0.05, "not_json": 0.05}, "seed": 11}
    with serve_faults(plan) as server:
        recipe = openai_recipe(tmp_path, data, server.url, tokenizer_dir, max_retries=3)
        recipe["labeling"]["mode"] = mode
        summary, predictions = run(recipe)
        outage = server.stats()["stats"]["outage"]
        failed = [p for p in predictions if p["status"] == "failed"]
        ok = [p for p in predictions if p["status"] == "ok"]
        # The run completed; every row is there; the failed ones say why, and carry no label.
        assert_complete(predictions, list(range(ROWS)))
        assert failed and ok and len(failed) + len(ok) == ROWS
        assert summary["stats"]["statuses"] == {"ok": len(ok), "failed": len(failed)}
        assert outage == 4 * len(failed)  # 1 + max_retries attempts each, all answered by the outage
        for row in failed:
            assert row["label"] is None and row["confidence"] == 0.0
            assert "HTTP 503: outage" in row["reason"] and "after 4 attempts" in row["reason"]
            assert "\n" not in row["reason"]
        assert summary["stats"]["computed"] == len(ok)  # failed rows are not cached
        want = {r[0]: r for r in reference[mode]}
        assert all(_outcome([p])[0] == want[p["id"]] for p in ok)

        server.configure(outage=0.0, rates={})  # the server recovers
        server.reset()
        summary, predictions = run(recipe)
        requests = server.stats()["stats"].get("POST /v1/completions", 0)
    assert summary["stats"]["cached"] == len(ok) and summary["stats"]["computed"] == len(failed)
    assert requests == len(failed)  # one request per row (single-token labels): only the failed rows
    assert_complete(predictions, list(range(ROWS)))
    assert _outcome(predictions) == reference[mode]


def test_garbage_answers_are_failed_rows_never_results(data, reference, tokenizer_dir, tmp_path):
    """NaN logprobs or a missing choice in a well-formed 200: the row fails (with the reason), no value is used."""
    with serve_faults({"rates": {"garbage": 0.3}, "seed": 5}) as server:
        recipe = openai_recipe(tmp_path, data, server.url, tokenizer_dir)
        summary, predictions = run(recipe)
        garbage = server.stats()["faults"]["garbage"]
        failed = [p for p in predictions if p["status"] == "failed"]
        assert garbage >= 5 and len(failed) == garbage  # one request per row, none retried, none used
        reasons = {("non-finite" in p["reason"]) or ("choices in the answer" in p["reason"]) for p in failed}
        assert reasons == {True}
        want = {r[0]: r for r in reference["score"]}
        assert all(_outcome([p])[0] == want[p["id"]] for p in predictions if p["status"] == "ok")
        server.configure(rates={})
        summary, predictions = run(recipe)
    assert summary["stats"]["computed"] == len(failed)
    assert _outcome(predictions) == reference["score"]


def test_backoff_is_exponential_with_jitter_and_capped(tokenizer_dir, monkeypatch):
    from llmlabel.backends import openai

    backend = openai.OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", backoff=0.1)
    for attempt in range(4):
        waits = {backend._wait(attempt) for _ in range(50)}
        assert all(0.1 * 2 ** attempt <= w < 0.2 * 2 ** attempt for w in waits)
        assert len(waits) > 40  # jittered
    assert backend._wait(0, retry_after=3.0) == 3.0
    assert backend._wait(30) == openai.MAX_RETRY_WAIT and backend._wait(0, 1e6) == openai.MAX_RETRY_WAIT


def test_retry_after_is_honoured_on_429_and_503_and_attempts_are_capped(tokenizer_dir, monkeypatch):
    from llmlabel.backends import openai

    with serve_faults({"script": ["429", "503"], "retry_after": 0.6}) as server:
        backend = openai.OpenAIBackend(base_url=server.url, served_model="m", tokenizer=tokenizer_dir, backoff=0.0)
        start = time.perf_counter()
        assert backend.generate(["hi"], choices=["yes", "no"])[0] in ("yes", "no")
        elapsed = time.perf_counter() - start
        assert server.stats()["stats"]["POST /v1/completions"] == 3
    assert 1.2 <= elapsed < 3.0, f"two Retry-After: 0.6 answers took {elapsed:.2f} s"

    from llmlabel.backends import http

    monkeypatch.setattr(http, "MAX_RETRY_WAIT", 0.1)  # a huge Retry-After is capped (the shared HTTP client's cap)
    with serve_faults({"script": ["429"] * 10, "retry_after": 25}) as server:
        backend = openai.OpenAIBackend(base_url=server.url, served_model="m", tokenizer=tokenizer_dir,
                                       backoff=0.0, max_retries=2)
        start = time.perf_counter()
        with pytest.raises(openai.RequestFailed, match=r"HTTP 429: injected 429 after 3 attempts$"):
            backend.generate(["hi"])
        assert time.perf_counter() - start < 2.0
        assert server.stats()["stats"]["POST /v1/completions"] == 3  # attempts capped at 1 + max_retries


def test_context_length_is_read_despite_faults(tokenizer_dir):
    from llmlabel.backends.openai import OpenAIBackend

    with serve_faults({"script": ["503", "drop", "not_json"], "max_model_len": 1234}) as server:
        backend = OpenAIBackend(base_url=server.url, served_model="m", tokenizer=tokenizer_dir, backoff=0.0)
        assert backend.max_context == 1234  # not the tokenizer's fallback
        assert backend.max_context == 1234 and server.stats()["stats"]["GET /v1/models"] == 4  # asked once


@pytest.mark.parametrize("calibration", ["contextual", "batch"])
def test_failed_calibration_probes_fail_rows_not_the_run(calibration, tmp_path):
    """When the content-free probes of calibration fail for good, the scored rows are kept as failed (their raw
    scores cached) and the run completes; once the server answers, a re-run finishes them from the cache."""
    from llmlabel.backends.fake import FakeBackend
    from llmlabel.cache import ResultCache
    from llmlabel.errors import BackendError
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    class ProbesFail(FakeBackend):
        down = True

        def score(self, prompts, candidates):
            if self.down and any("[MASK]" in p for p in prompts):
                raise BackendError("POST /v1/completions failed: HTTP 503: down after 6 attempts")
            return super().score(prompts, candidates)

    rows = sentiment_rows(8)  # fewer than batch calibration's 16 rows: the content-free prior stands in
    task = LabelTask(labels=["negative", "positive"])
    backend = ProbesFail()
    labeler = Labeler(backend, task, calibration=calibration, cache=ResultCache(tmp_path / "c.sqlite"))
    first = labeler.label(rows)
    assert [r["id"] for r in first] == list(range(8))
    assert {r["status"] for r in first} == {"failed"}
    assert all(r["reason"].startswith("calibration: POST /v1/completions failed: HTTP 503") for r in first)
    backend.down = False
    again = Labeler(backend, task, calibration=calibration, cache=ResultCache(tmp_path / "c.sqlite"))
    second = again.label(rows)
    assert {r["status"] for r in second} == {"ok"} and again.stats.cached >= 8


def test_a_down_server_trips_the_breaker_and_a_recovered_one_closes_it(tokenizer_dir, tmp_path):
    """A server that answers 503 to everything: after BREAKER_FAILURES requests in a row fail for good, the rest
    of the rows fail at once (kept, with the reason) instead of each waiting out its retries; once the server is
    back, one probe request closes the breaker and a re-run labels exactly the failed rows."""
    from llmlabel.backends import openai

    rows = 120
    data = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(rows))
    with serve_faults({"outage": 1.0}) as server:
        recipe = openai_recipe(tmp_path, data, server.url, tokenizer_dir, max_retries=1, concurrency=4)
        summary, predictions = run(recipe)
        sent = server.stats()["stats"]["POST /v1/completions"]
        assert_complete(predictions, list(range(rows)))
        assert summary["stats"]["statuses"] == {"failed": rows}
        tried = [p for p in predictions if p["reason"].startswith("POST ") and
                 p["reason"].endswith("HTTP 503: outage after 2 attempts")]
        skipped = [p for p in predictions if p["reason"].startswith("not sent: the last ")]
        assert len(tried) + len(skipped) == rows
        assert openai.BREAKER_FAILURES <= len(tried) < openai.BREAKER_FAILURES + 4 + 16  # + requests in flight
        assert sent == 2 * len(tried)  # the skipped rows cost no request
        assert "so the server looks down (last: POST" in skipped[0]["reason"]

        server.configure(outage=0.0)
        server.reset()
        summary, predictions = run(recipe)
        assert summary["stats"]["statuses"] == {"ok": rows} and summary["stats"]["computed"] == rows
        assert server.stats()["stats"]["POST /v1/completions"] == rows

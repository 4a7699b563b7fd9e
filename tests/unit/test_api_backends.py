"""The chat, decisions and systemone backends against the fault server's endpoints (real HTTP, real Labeler); the
decisions wire format checked against the official `openai` SDK's types (`DecisionCreateParams`, `Decision`)."""

from __future__ import annotations

import collections.abc
import functools
import json
import math
import subprocess
import sys
import typing

import typing_extensions

import pytest

from llmlabel.backends.api import label_groups, plan_options
from llmlabel.errors import ConfigError
from llmlabel.testing.fault_server import serve_faults
from llmlabel.labeling.labeler import Labeler
from llmlabel.core.task import LabelTask

SENTIMENT = ["positive", "negative"]
TEXTS = ["a wonderful, moving film", "dull and far too long", "I laughed all the way through", "a waste of time",
         "the cast is superb", "nothing works in this mess"] * 3


@pytest.fixture(scope="module")
def server():
    with serve_faults() as handle:
        yield handle


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    from llmlabel.models import resolve_model

    return resolve_model(None)


def backend(name: str, server, tokenizer_dir: str, **options):
    from llmlabel.backends.base import load_backend

    return load_backend(name, base_url=server.url, served_model="fault-model", tokenizer=tokenizer_dir,
                        max_context=2048, backoff=0.0, **options)


def banking_labels() -> list[str]:
    from helpers import SHARED_DATA

    path = SHARED_DATA / "banking77" / "labels.json"
    if not path.exists():
        pytest.skip("shared data not found")
    return json.loads(path.read_text())


# -- the SDK's types -------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _hints(typed_dict) -> dict:
    return typing.get_type_hints(typed_dict, include_extras=True)


def conforms(value, hint, path="body") -> None:
    """Assert `value` is exactly of type `hint` (TypedDicts: no unknown keys, required keys present)."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is __import__("types").UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                conforms(value, option, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: {value!r} matches no member of {hint}: {errors}")
    if origin is typing.Literal:
        assert value in typing.get_args(hint), f"{path}: {value!r} not in {typing.get_args(hint)}"
        return
    if origin in (typing.Required, typing.NotRequired) or str(origin).endswith(("Required", "NotRequired")):
        return conforms(value, typing.get_args(hint)[0], path)
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
        assert isinstance(value, list), f"{path}: expected a list, got {type(value).__name__}"
        for i, item in enumerate(value):
            conforms(item, typing.get_args(hint)[0], f"{path}[{i}]")
        return
    if isinstance(hint, type) and typing_extensions.is_typeddict(hint):
        assert isinstance(value, dict), f"{path}: expected an object"
        hints = _hints(hint)
        unknown = set(value) - set(hints)
        assert not unknown, f"{path}: keys {sorted(unknown)} are not in {hint.__name__}"
        missing = set(hint.__required_keys__) - set(value)
        assert not missing, f"{path}: required keys {sorted(missing)} missing"
        for key, item in value.items():
            conforms(item, hints[key], f"{path}.{key}")
        return
    if hint is type(None):
        assert value is None, f"{path}: expected null"
        return
    if hint is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path}: expected a number"
        return
    assert isinstance(value, hint), f"{path}: expected {hint}, got {type(value).__name__}"


def test_decisions_requests_are_the_sdks_params_and_answers_parse_as_its_decision(server, tokenizer_dir):
    types = pytest.importorskip("openai.types")
    from llmlabel.backends.api import DecisionRow, Question

    be = backend("decisions", server, tokenizer_dir)
    choice = DecisionRow("Classify the sentiment.", "Review: great", (("Review: awful", "negative"),),
                         (Question("choice", "label", "Which label fits?", (("positive", "glad"), ("negative", None))),))
    predicates = DecisionRow("Tag the text.", "Text: rain and wind", (),
                             tuple(Question("predicate", n, f"The label '{n}' applies.") for n in ("weather", "sport")))
    for row in (choice, predicates):
        body = be.request_body(row)
        conforms(body, types.DecisionCreateParams)
        import httpx

        answer = httpx.post(f"{server.url}/decisions", json=body, timeout=10).json()
        decision = types.Decision.model_validate(answer)  # the SDK's own response model
        assert len(decision.answers) == len(body["questions"])
        assert decision.usage.input_tokens > 0
    # Choice answers: every option's probability, summing to 1; predicates: one probability each.
    got = be.decide([choice, predicates])
    assert len(got[0].answers[0]) == 2 and math.isclose(sum(math.exp(v) for v in got[0].answers[0]), 1, rel_tol=1e-6)
    assert len(got[1].answers) == 2 and all(len(a) == 2 for a in got[1].answers)
    assert got[0].usage["cached_tokens"] > 0  # the fault server reports cached tokens; the ledger keeps them


def test_decisions_limits_are_the_apis(server):
    import httpx

    body = {"model": "m", "input": "x", "questions": [{"type": "choice", "instructions": "?",
                                                      "choices": [{"value": str(i)} for i in range(256)]}]}
    answer = httpx.post(f"{server.url}/decisions", json=body, timeout=10)
    assert answer.status_code == 400 and "between 2 and 255" in answer.text
    body["questions"] = [{"type": "predicate", "instructions": "?"}] * 401
    assert httpx.post(f"{server.url}/decisions", json=body, timeout=10).status_code == 400


# -- labeling through each endpoint ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["decisions", "systemone", "chat"])
def test_each_endpoint_labels_rows_with_a_ledger(name, server, tokenizer_dir):
    be = backend(name, server, tokenizer_dir)
    labeler = Labeler(be, LabelTask(labels=SENTIMENT))
    results = labeler.label_texts(TEXTS)
    assert [r.status for r in results] == ["ok"] * len(TEXTS)
    assert all(r.label in SENTIMENT and math.isclose(sum(r.label_probs.values()), 1, rel_tol=1e-6) for r in results)
    # Batch calibration ran on the endpoint's raw probabilities: calibrated and raw differ.
    raw = Labeler(be, LabelTask(labels=SENTIMENT), calibration="none").label_texts(TEXTS)
    assert any(abs(a.label_probs["positive"] - b.label_probs["positive"]) > 1e-6 for a, b in zip(results, raw))
    ledger = be.api_report(len(TEXTS))["ledger"]
    assert ledger["requests"] >= len(TEXTS) and ledger["input_tokens"] > 0 and ledger["output_tokens"] > 0
    assert labeler._option_plan.strategy == "direct"


def test_multi_label_rows_are_one_predicate_per_label(server, tokenizer_dir):
    for name in ("decisions", "systemone", "chat"):
        be = backend(name, server, tokenizer_dir)
        task = LabelTask(labels=["weather", "sport", "politics"], multi_label=True)
        results = Labeler(be, task).label_texts(["rain in the final", "the vote was close"])
        assert all(r.status == "ok" and set(r.label_probs) == set(task.names) for r in results), name
        assert all(0 <= p <= 1 for r in results for p in r.label_probs.values())


def test_refusals_are_refused_rows_and_not_cached(server, tokenizer_dir, tmp_path):
    from llmlabel.cache import ResultCache

    server.configure(refuse=0.3)
    try:
        for name in ("decisions", "systemone"):
            cache = ResultCache(tmp_path / f"{name}.sqlite")
            labeler = Labeler(backend(name, server, tokenizer_dir), LabelTask(labels=SENTIMENT), cache=cache)
            results = labeler.label_texts([f"{t} #{i}" for i, t in enumerate(TEXTS)])
            refused = [r for r in results if r.status == "refused"]
            assert refused and len(refused) < len(results), name
            assert all(r.label is None and r.reason.startswith("refused") for r in refused)
            assert labeler.stats.statuses["refused"] == len(refused)
    finally:
        server.configure(refuse=0.0)


def test_option_limits_choose_two_levels_or_a_shortlist_and_say_so(server, tokenizer_dir):
    labels = banking_labels()
    assert plan_options(labels, 26, None).strategy == "two_level"
    assert plan_options(labels, 26, 10).strategy == "shortlist"
    assert plan_options(labels, 255, None).strategy == "direct"
    with pytest.raises(ConfigError, match="restrict_labels 30 is more than this endpoint's 26 options"):
        plan_options(labels, 26, 30)
    groups = label_groups(labels, 26)
    assert len(groups) <= 26 and max(map(len, groups)) <= 26 and sorted(i for g in groups for i in g) == list(
        range(len(labels)))
    for name, limit in (("systemone", 26), ("chat", 20)):
        be = backend(name, server, tokenizer_dir)
        labeler = Labeler(be, LabelTask(labels=labels))
        results = labeler.label_texts(["my card has not arrived", "how do I top up by bank transfer?"] * 9)
        assert all(r.status == "ok" and r.label in labels for r in results)
        plan = labeler._option_plan.describe()
        assert plan["strategy"] == "two_level" and plan["option_limit"] == limit and plan["groups"] <= limit
        # Only the chosen group's labels carry probability.
        assert 0 < sum(p > 0 for p in results[0].label_probs.values()) <= plan["largest_group"]


def test_systemone_rejects_more_than_26_options_like_vllm(server):
    import httpx

    body = {"state": "x", "questions": {"q": {"type": "choice", "criteria": {f"o{i}": None for i in range(27)}}}}
    answer = httpx.post(f"{server.url}/systemone", json=body, timeout=10)
    assert answer.status_code == 400 and "at most 26 options for this model" in answer.text


def test_chat_without_logprobs_samples_and_flags_the_rows(server, tokenizer_dir):
    server.configure(chat_logprobs=False)
    try:
        be = backend("chat", server, tokenizer_dir, samples=8)
        results = Labeler(be, LabelTask(labels=SENTIMENT), calibration="none").label_texts(TEXTS[:4])
        assert all(r.status == "ok" and r.reason.startswith("sampled: empirical distribution of 8") for r in results)
        assert be.distribution == "samples"
    finally:
        server.configure(chat_logprobs=True)


def test_chat_generate_mode_uses_structured_outputs(server, tokenizer_dir):
    be = backend("chat", server, tokenizer_dir)
    results = Labeler(be, LabelTask(labels=SENTIMENT), mode="generate").label_texts(TEXTS[:4])
    assert all(r.status == "ok" and r.label in SENTIMENT for r in results)


def test_cache_keys_hold_the_endpoint_kind_model_and_wire_version(server, tokenizer_dir):
    ids = {name: backend(name, server, tokenizer_dir).model_id for name in ("chat", "decisions", "systemone")}
    assert len(set(ids.values())) == 3
    assert all(i.startswith(f"{name}/v1:") and i.endswith(":fault-model") for name, i in ids.items())


def test_failed_requests_fail_only_their_rows_and_faults_do_not_change_labels(server, tokenizer_dir):
    for name in ("decisions", "systemone", "chat"):
        clean = [r.label for r in Labeler(backend(name, server, tokenizer_dir), LabelTask(labels=SENTIMENT),
                                          calibration="none").label_texts(TEXTS)]
        server.configure(rates={"503": 0.2, "drop": 0.1, "truncated": 0.1, "garbage": 0.05}, seed=3)
        try:
            faulty = Labeler(backend(name, server, tokenizer_dir, max_retries=8), LabelTask(labels=SENTIMENT),
                             calibration="none").label_texts(TEXTS)
        finally:
            server.configure(rates={})
        assert [r.label for r in faulty] == clean, name
        server.configure(outage=0.5)
        try:
            outage = Labeler(backend(name, server, tokenizer_dir, max_retries=1), LabelTask(labels=SENTIMENT),
                             calibration="none").label_texts(TEXTS[:6])
        finally:
            server.configure(outage=0.0)
        statuses = {r.status for r in outage}
        assert statuses == {"ok", "failed"}, (name, statuses)


def test_cli_label_prints_the_ledger_and_writes_it_to_the_report(server, tokenizer_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": SENTIMENT[i % 2]}) + "\n" for i, t in enumerate(TEXTS)))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fault-model": {"input": 1.0, "cached": 0.5, "output": 4.0}}))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "llmlabel.cli", "label", str(data), "--labels", "positive,negative",
                           "--backend", "decisions", "--option", f"base_url={server.url}",
                           "--option", "served_model=fault-model", "--option", f"tokenizer={tokenizer_dir}",
                           "--option", f"prices={prices}", "--option", "max_context=2048", "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "decisions endpoint, direct options (limit 255):" in proc.stdout and "cost " in proc.stdout
    report = json.loads((out / "report.json").read_text())
    ledger = report["api"]["ledger"]
    assert ledger["requests"] >= len(TEXTS) and 0 < ledger["cached_tokens"] <= ledger["input_tokens"]
    fresh = ledger["input_tokens"] - ledger["cached_tokens"]
    assert ledger["cost"] == pytest.approx((fresh * 1.0 + ledger["cached_tokens"] * 0.5
                                            + ledger["output_tokens"] * 4.0) / 1e6, abs=1e-6)
    assert report["api"]["options"]["strategy"] == "direct"


def test_bad_options_are_one_line_errors(server, tokenizer_dir):
    from llmlabel.backends.base import load_backend

    with pytest.raises(ConfigError, match="max_options must be between 2 and 26"):
        backend("systemone", server, tokenizer_dir, max_options=30)
    with pytest.raises(ConfigError, match="unknown distribution 'sample'"):
        backend("chat", server, tokenizer_dir, distribution="sample")
    with pytest.raises(ConfigError, match="prices must map input, cached and output"):
        backend("decisions", server, tokenizer_dir, prices={"inputs": 1})
    with pytest.raises(ConfigError, match="option for backend 'chat'"):
        load_backend("chat", base_url=server.url, top_logprob=5)
    be = backend("chat", server, tokenizer_dir)
    with pytest.raises(ConfigError, match="no token-level scores"):
        be.score(["x"], [["a"]])


def test_a_shortlist_plan_asks_probes_without_neighbours_in_two_levels(server, tokenizer_dir):
    from llmlabel.selection.base import make_selector, pool_from_rows

    labels = banking_labels()
    task = LabelTask(labels=labels)
    pool = pool_from_rows([{"text": f"question about {lab.replace('_', ' ')}", "label": lab} for lab in labels],
                          "text", "label", None, label_of=task.gold)
    selector = make_selector("knn").fit(pool)
    # Fewer than 16 rows: batch calibration's content-free probes run, and they have no shortlist.
    labeler = Labeler(backend("systemone", server, tokenizer_dir), task, selector=selector, k=2, restrict_labels=8)
    results = labeler.label_texts(["my card has not arrived yet", "what is the exchange rate?"])
    assert all(r.status == "ok" and r.label in labels for r in results)
    assert labeler._option_plan.strategy == "shortlist"
    assert all(sum(p > 0 for p in r.label_probs.values()) <= 8 for r in results)


def test_clinc150_runs_through_chat_and_systemone_in_two_levels(server, tokenizer_dir):
    from helpers import SHARED_DATA

    path = SHARED_DATA / "clinc150" / "labels.json"
    if not path.exists():
        pytest.skip("shared data not found")
    labels = json.loads(path.read_text())
    for name in ("chat", "systemone"):
        labeler = Labeler(backend(name, server, tokenizer_dir), LabelTask(labels=labels, humanize_labels=True))
        results = labeler.label_texts(["book me a flight to Boston", "what is my credit score?"] * 9)
        assert all(r.status == "ok" and r.label in labels for r in results), name
        assert labeler._option_plan.strategy == "two_level"

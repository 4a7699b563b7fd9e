"""OpenAIBackend's HTTP handling against a scripted stdlib server: retries, one-line failures, no leaked key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmlabel.backends.openai import OpenAIBackend, RequestFailed, RequestRejected
from llmlabel.errors import BackendError

SECRET = "sk-test-PLANTED-SECRET-123"


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    """The converted default model folder (its tokenizer is all the backend needs here)."""
    from llmlabel.models import resolve_model

    return resolve_model(None)


class Script:
    """Answers a scripted server gives, in order; the last one repeats. Records what it received."""

    def __init__(self, answers: list[tuple[int, dict[str, str], object]]):
        self.answers = answers
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def next(self, body: dict, headers: dict[str, str]) -> tuple[int, dict[str, str], object]:
        with self.lock:
            self.requests.append(body)
            self.headers.append(headers)
            index = min(len(self.requests) - 1, len(self.answers) - 1)
            return self.answers[index]


@pytest.fixture
def serve() -> Iterator:
    """Start a scripted HTTP server on 127.0.0.1; returns (base_url, script). Stopped after the test."""
    servers = []

    def start(answers: list[tuple[int, dict[str, str], object]]):
        script = Script(answers)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, headers, payload = script.next(body, dict(self.headers))
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", script

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def completion(token_logprobs_per_choice: list[list[float | None]]) -> dict:
    """A minimal OpenAI completions answer with echoed logprobs."""
    return {"object": "text_completion", "choices": [
        {"index": i, "text": "x", "finish_reason": "length",
         "logprobs": {"token_logprobs": lps, "tokens": ["t"] * len(lps), "top_logprobs": [None] * len(lps)}}
        for i, lps in enumerate(token_logprobs_per_choice)]}


def token_id_completion(rows: list[dict[int, float]]) -> dict:
    """A completions answer to a `logprob_token_ids` request: one choice per prompt, ids keyed 'token_id:<id>'."""
    return {"object": "text_completion", "choices": [
        {"index": i, "text": "x", "finish_reason": "length",
         "logprobs": {"token_logprobs": [-0.1], "tokens": ["token_id:1"],
                      "top_logprobs": [{f"token_id:{tok}": lp for tok, lp in row.items()}]}}
        for i, row in enumerate(rows)]}


def test_retries_429_and_503_then_succeeds(serve, tokenizer_dir):
    from llmlabel.backends.trie import CandidateTrie

    backend = OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", api_key=SECRET, backoff=0.01)
    cand = backend.encode("positive")
    rows = CandidateTrie([cand]).requests()  # one row per candidate token: (path so far, [next token])
    url, script = serve([
        (429, {"Retry-After": "0"}, {"error": {"message": "slow down"}}),
        (503, {}, {"error": {"message": "overloaded"}}),
        (200, {}, token_id_completion([{tok: -1.25 for tok in children} for _, children in rows])),
    ])
    backend.base_url = url
    scores = backend.score(["Hello"], [["positive"]])
    assert scores == [[pytest.approx(-1.25 * len(cand))]]
    assert len(script.requests) == 3
    sent = script.requests[-1]
    assert sent["prompt"] == [backend.encode("Hello") + path for path, _ in rows]
    assert sent["logprob_token_ids"] == cand and sent["return_tokens_as_token_ids"] is True
    assert sent["max_tokens"] == 1 and sent["logprobs"] == 1 and sent["model"] == "m" and not sent.get("echo")
    assert script.headers[-1].get("Authorization") == f"Bearer {SECRET}"


@pytest.mark.parametrize("first", [
    (200, {}, completion([[-0.5]])),  # ignores logprob_token_ids: plain top logprobs, no asked ids
    (400, {}, {"error": {"message": "Unrecognized request argument supplied: logprob_token_ids"}}),
])
def test_scoring_falls_back_to_echo_without_logprob_token_ids(serve, tokenizer_dir, first):
    backend = OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", backoff=0.0)
    prompt_len = len(backend.encode("Hello"))
    cand_len = len(backend.encode("positive"))
    lps = [None] + [-0.5] * (prompt_len - 1) + [-1.25] * cand_len + [-7.0]
    url, script = serve([first, (200, {}, completion([lps]))])
    backend.base_url = url
    assert backend.score(["Hello"], [["positive"]]) == [[pytest.approx(-1.25 * cand_len)]]
    assert [bool(r.get("echo")) for r in script.requests] == [False, True]
    assert "logprob_token_ids" in script.requests[0]
    sent = script.requests[-1]
    assert sent["prompt"] == [backend.encode("Hello") + backend.encode("positive")]
    assert sent["echo"] is True and sent["max_tokens"] == 1 and sent["logprobs"] == 0 and sent["model"] == "m"
    # Decided once: later calls go straight to echo.
    assert backend.score(["Hello"], [["positive"]]) == [[pytest.approx(-1.25 * cand_len)]]
    assert len(script.requests) == 3 and script.requests[-1]["echo"] is True


def test_trie_rows_pack_into_requests_of_at_most_the_limit():
    from llmlabel.backends.openai import _packs
    from llmlabel.backends.trie import CandidateTrie

    # rows: root asks [1, 2, 3], node 1 asks [4, 5], node 2 asks [6]
    trie = CandidateTrie([[1, 4], [1, 5], [2, 6], [3]])
    one = _packs(trie, 128)
    assert len(one) == 1 and one[0].rows == [0, 1, 2] and one[0].ids == [1, 2, 3, 4, 5, 6]
    assert one[0].paths == [[], [1], [2]] and one[0].asked == [[1, 2, 3], [4, 5], [6]]
    small = _packs(trie, 2)  # the root's 3 ids are split across requests; no request asks more than 2 ids
    assert [(p.rows, p.asked) for p in small] == [([0], [[1, 2]]), ([0], [[3]]), ([1], [[4, 5]]), ([2], [[6]])]
    assert all(len(p.ids) <= 2 for p in small)


def test_gives_up_after_max_retries(serve, tokenizer_dir):
    url, script = serve([(503, {}, {"error": {"message": "down"}})])
    backend = OpenAIBackend(base_url=url, tokenizer=tokenizer_dir, served_model="m", max_retries=2, backoff=0.0)
    with pytest.raises(RequestFailed) as info:
        backend.generate(["Hello"], max_tokens=2)
    assert isinstance(info.value, BackendError)  # the labeler records such rows as failed
    message = str(info.value)
    assert "\n" not in message and "503" in message and "3 attempts" in message
    assert len(script.requests) == 3


def test_400_fails_at_once_with_one_line_and_no_key(serve, tokenizer_dir):
    url, script = serve([(400, {}, {"error": {"message": f"bad request\nyour key {SECRET} is\nnot welcome"}})])
    backend = OpenAIBackend(base_url=url, tokenizer=tokenizer_dir, served_model="m", api_key=SECRET)
    with pytest.raises(RequestRejected) as info:  # a config mistake: stops the run, not a per-row failure
        backend.score(["Hello"], [["positive", "negative"]])
    message = str(info.value)
    assert "\n" not in message
    assert "400" in message and "bad request" in message
    assert SECRET not in message and SECRET not in repr(backend)
    assert len(script.requests) == 1  # no retry on a plain 4xx


def test_connection_refused_is_one_line(tokenizer_dir):
    from llmlabel.testing.vllm_server import free_port

    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}/v1", tokenizer=tokenizer_dir,
                            served_model="m", max_retries=1, backoff=0.0, timeout=5)
    with pytest.raises(RequestFailed) as info:
        backend.generate(["Hello"])
    assert "\n" not in str(info.value) and "2 attempts" in str(info.value)


def test_generate_sends_structured_outputs(serve, tokenizer_dir):
    url, script = serve([(200, {}, {"choices": [{"index": 0, "text": " yes "}]})])
    backend = OpenAIBackend(base_url=url, tokenizer=tokenizer_dir, served_model="m", concurrency=2)
    assert backend.generate(["a", "b", "c"], choices=["yes", "no"]) == ["yes"] * 3
    assert all(r["structured_outputs"] == {"choice": ["yes", "no"]} and r["temperature"] == 0
               for r in script.requests)
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    backend.generate(["a"], json_schema=schema)
    assert script.requests[-1]["structured_outputs"] == {"json": schema}


def test_max_context_and_model_id(serve, tokenizer_dir):
    url, _ = serve([(200, {}, {"object": "list", "data": [{"id": "m", "max_model_len": 1234}]})])
    backend = OpenAIBackend(base_url=url, tokenizer=tokenizer_dir, served_model="m")
    assert backend.max_context == 1234
    assert backend.model_id == f"openai:{url}:m"


def test_missing_tokenizer_is_a_model_error(tmp_path):
    from llmlabel.errors import ModelError

    with pytest.raises(ModelError) as info:
        OpenAIBackend(tokenizer=str(tmp_path))
    assert "\n" not in str(info.value) and "tokenizer=" in str(info.value)


def test_works_inside_a_running_event_loop(serve, tokenizer_dir):
    import asyncio

    url, _ = serve([(200, {}, {"choices": [{"index": 0, "text": "ok"}]})])
    backend = OpenAIBackend(base_url=url, tokenizer=tokenizer_dir, served_model="m")

    async def main() -> list[str]:
        return backend.generate(["Hello"])

    assert asyncio.run(main()) == ["ok"]

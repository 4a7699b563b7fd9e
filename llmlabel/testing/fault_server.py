"""A small fault-injecting OpenAI-compatible completions server, for reliability tests and benchmarks.

Stdlib only (asyncio, HTTP/1.1 with keep-alive). It answers what the `openai` backend sends, in the shapes it parses:

- `POST /v1/completions` with token-id prompts and `logprob_token_ids` (trie scoring): one choice per prompt whose
  `logprobs.top_logprobs[0]` maps `"token_id:<id>"` to a logprob for every asked id;
- the same with `echo: true` (the fallback scoring): `logprobs.token_logprobs` holds `null` and then one logprob
  per prompt token, plus the generated token's;
- generation (`max_tokens`, optional `structured_outputs: {"choice": [...]}`): a `text` answer;
- `GET /v1/models`: the served model with its `max_model_len` (prompts longer than that get vLLM's 400);
- `POST /v1/chat/completions` (a model that answers one of the labels its prompt lists, with `top_logprobs`,
  assistant-prefix follow-ups, `n` structured samples), `POST /v1/decisions` (the OpenAI SDK's shapes and limits)
  and `POST /v1/systemone` (vLLM's wire format and limits), for the chat, decisions and systemone backends.

Logprobs are synthetic and deterministic: a function of the token and a CRC of the tokens before it, so every
request, every retry and both scoring paths agree exactly, and a run with faults must give the same labels as a run
without. No model, no tokenizer, thousands of requests per second.

Faults are drawn per request (`FaultPlan.rates`, seeded) from `FAULT_KINDS`: 429 with `Retry-After`, 500, 503, an
answer slower than the client's timeout (`slow`), headers at once and then a body that trickles (`trickle`), a
body cut off by a closed connection (`truncated`), a complete 200 whose body is cut JSON (`not_json`), and a
connection closed without an answer (`drop`); and `garbage`: a well-formed 200 whose content is wrong (NaN
logprobs, a missing choice), which a client must record as a failure rather than use. `FaultPlan.script` lists
faults for the first requests, in order, for tests that need an exact sequence. `FaultPlan.outage` makes a fixed share of prompts (by hash) fail
with 503 on every attempt, so a client has to give up on exactly those; clear it and a re-run can succeed.

Everything is bounded: waits by `MAX_FAULT_SECONDS`, idle connections by `IDLE_SECONDS`, requests by
`FaultPlan.max_requests` (after which every request gets a 503), bodies by `MAX_BODY_BYTES`. Control endpoints,
never faulted: `GET /_faults/stats` (counters), `POST /_faults/config` (change the plan), `POST /_faults/reset`.

    with serve_faults({"rates": {"503": 0.2, "drop": 0.05}, "seed": 1}) as server:
        backend = OpenAIBackend(base_url=server.url, served_model="fault", tokenizer=...)
        ...
        server.stats()["faults"]     # {"503": 41, "drop": 9}

`serve_faults(..., process=True)` runs it in a child process (`python -m llmlabel.testing.fault_server`), so a load test
measures the client alone; the handle works the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import threading
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: the faults a plan can inject, by name
FAULT_KINDS = ("429", "500", "503", "slow", "trickle", "truncated", "not_json", "drop", "garbage")
#: longest time any fault keeps a request waiting (seconds)
MAX_FAULT_SECONDS = 30.0
#: an idle keep-alive connection is closed after this many seconds
IDLE_SECONDS = 30.0
#: largest request body accepted (bytes)
MAX_BODY_BYTES = 64 * 1024 * 1024
#: the model name `GET /v1/models` reports (any name is accepted in requests)
SERVED_MODEL = "fault-model"


@dataclass
class FaultPlan:
    """What the server does. Every field can be changed while it runs (`FaultServer.configure`).

    Attributes:
        rates: fault kind -> probability per request (their sum at most 1).
        script: faults for the first requests, in order ("" or "ok": no fault), before `rates` apply.
        outage: share of completions requests (fixed by a hash of the first prompt) answered 503 every time.
        seed: seed of the per-request fault draw.
        retry_after: `Retry-After` header value on 429 and 503 answers (seconds; None: no header).
        slow_seconds: how long `slow` waits before answering and `trickle` takes to send its body.
        latency: seconds every answer waits (a stand-in for model time).
        max_model_len: context length reported by `/models` and enforced with a 400 like vLLM's.
        token_id_logprobs: honour `logprob_token_ids`; False answers 400 naming the field (echo fallback).
        obey_choices: generation answers one of `structured_outputs.choice`; False ignores it and answers from
            `answers` (a server without structured outputs, or a model talked out of its label space).
        answers: free generation answers, one picked per prompt by hash.
        reflect_auth: put the received Authorization header into error messages and answers (a hostile server:
            the client must not store or show what comes back).
        require_key: answer 401 unless the request carries `Authorization: Bearer <require_key>`.
        max_requests: requests served before every further one gets a 503.
        refuse: share of decision questions (`/v1/decisions`, `/v1/systemone`; fixed by a hash of the question and
            the input) answered with a refusal.
        chat_logprobs: `/v1/chat/completions` answers with logprobs when asked; False: a 400 naming `logprobs`
            (a hosted model without them).
    """

    rates: dict[str, float] = field(default_factory=dict)
    script: list[str] = field(default_factory=list)
    outage: float = 0.0
    seed: int = 0
    retry_after: float | None = 0.0
    slow_seconds: float = 2.0
    latency: float = 0.0
    max_model_len: int = 2048
    token_id_logprobs: bool = True
    obey_choices: bool = True
    answers: list[str] = field(default_factory=lambda: ["I cannot tell."])
    reflect_auth: bool = False
    require_key: str | None = None
    max_requests: int = 1_000_000
    refuse: float = 0.0
    chat_logprobs: bool = True

    def __post_init__(self) -> None:
        unknown = sorted((set(self.rates) | set(self.script)) - set(FAULT_KINDS) - {"", "ok"})
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; valid: {', '.join(FAULT_KINDS)}")
        if any(not 0 <= r <= 1 for r in self.rates.values()) or sum(self.rates.values()) > 1 + 1e-9:
            raise ValueError("fault rates must be probabilities that sum to at most 1")
        if not 0 <= self.outage <= 1:
            raise ValueError("outage must be between 0 and 1")
        if not 0 <= self.slow_seconds <= MAX_FAULT_SECONDS or not 0 <= self.latency <= MAX_FAULT_SECONDS:
            raise ValueError(f"slow_seconds and latency must be between 0 and {MAX_FAULT_SECONDS:g}")
        if self.retry_after is not None and not 0 <= self.retry_after <= MAX_FAULT_SECONDS:
            raise ValueError(f"retry_after must be between 0 and {MAX_FAULT_SECONDS:g}")
        if not self.answers:
            raise ValueError("answers must hold at least one answer")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | FaultPlan | None) -> FaultPlan:
        """A plan from a dict of its fields (unknown keys are an error)."""
        if isinstance(data, FaultPlan):
            return data
        names = {f.name for f in fields(cls)}
        extra = sorted(set(data or {}) - names)
        if extra:
            raise ValueError(f"unknown fault plan keys {extra}; valid: {', '.join(sorted(names))}")
        return cls(**(data or {}))


# -- synthetic logprobs ---------------------------------------------------------------------------------------------
def _crc(ids: list[int], start: int = 0) -> int:
    """CRC32 of token ids (4 bytes each), continuing from `start`."""
    return zlib.crc32(array("I", ids).tobytes(), start)


def synthetic_logprob(prefix_crc: int, token: int) -> float:
    """The logprob the server gives `token` after a prefix whose `_crc` is `prefix_crc`: in (-8.05, -0.05]."""
    h = zlib.crc32(array("I", [token]).tobytes(), prefix_crc)
    return -0.05 - (h % 1000) / 125.0


def synthetic_score(prompt_ids: list[int], cand_ids: list[int]) -> float:
    """What scoring `cand_ids` after `prompt_ids` against this server must return (for tests to compare)."""
    crc, total = _crc(prompt_ids), 0.0
    for tok in cand_ids:
        total += synthetic_logprob(crc, tok)
        crc = _crc([tok], crc)
    return total


# -- chat completions, decisions, System One ------------------------------------------------------------------------
#: the POST routes the server answers
API_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/decisions", "/v1/systemone")
#: vLLM's System One limits (letters A-Z; NextTokenStrategy's questions per request)
SYSTEMONE_MAX_OPTIONS = 26
SYSTEMONE_MAX_QUESTIONS = 64


def _text_crc(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def synthetic_probs(context: Any, options: list[Any]) -> list[float]:
    """A deterministic distribution over `options` for `context`: a softmax of `synthetic_logprob`s."""
    crc = _text_crc(context)
    logits = [synthetic_logprob(crc, _text_crc(o) & 0x7FFFFFFF) * 2.0 for o in options]
    top = max(logits)
    exps = [2.718281828459045 ** (v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _tokens_estimate(value: Any) -> int:
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


def _prompt_options(text: str) -> list[str]:
    """The label names listed in a prompt as "- name" or "- name: description" lines (llmlabel's templates)."""
    names = []
    for line in text.splitlines():
        if line.startswith("- "):
            name = line[2:].split(": ", 1)[0].strip()
            if name and name not in names:
                names.append(name)
    return names or ["yes", "no"]


def chat_answer(data: dict[str, Any], plan: FaultPlan, shown: str = "", garbage: bool = False) -> bytes:
    """`/v1/chat/completions`: a model that answers one of the labels listed in the user message. Its "tokens" are
    whole label names (after an assistant prefix: the rest of the names that continue it), with synthetic logprobs;
    no `/tokenize`, so a client discovers the labels' tokens from the answers."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise _BadRequest(400, "messages must be a non-empty list of {role, content} objects")
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise _BadRequest(400, "messages need a user message")
    prefix = ""
    if messages[-1]["role"] == "assistant":
        if not data.get("continue_final_message"):
            raise _BadRequest(400, "a final assistant message needs continue_final_message")
        prefix = messages[-1]["content"]
    options = _prompt_options(users[-1])
    n = data.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise _BadRequest(400, "n must be between 1 and 128")
    usage = {"prompt_tokens": _tokens_estimate(messages), "completion_tokens": n, "total_tokens": 0,
             "prompt_tokens_details": {"cached_tokens": 0}}
    usage["total_tokens"] = usage["prompt_tokens"] + n
    choices = []
    if data.get("logprobs"):
        if not plan.chat_logprobs:
            raise _BadRequest(400, "logprobs is not supported for this model")
        k = data.get("top_logprobs", 0)
        if not isinstance(k, int) or not 0 <= k <= 20:
            raise _BadRequest(400, "top_logprobs must be between 0 and 20")
        rests = [o[len(prefix):] for o in options if o.startswith(prefix) and len(o) > len(prefix)]
        rests = list(dict.fromkeys(rests)) or ["\n"]
        probs = synthetic_probs([users[-1], prefix], rests)
        ranked = sorted(zip(rests, probs), key=lambda rp: -rp[1])[:max(k, 1)]
        top = [{"token": tok, "logprob": float("nan") if garbage else _log(p), "bytes": list(tok.encode())}
               for tok, p in ranked]
        choices.append({"index": 0, "message": {"role": "assistant", "content": ranked[0][0]},
                        "finish_reason": "length", "logprobs": {"content": [
                            {"token": ranked[0][0], "logprob": top[0]["logprob"], "top_logprobs": top}]}})
    else:
        fmt = data.get("response_format")
        schema = fmt.get("json_schema", {}).get("schema", {}) if isinstance(fmt, dict) else {}
        enum = (schema.get("properties", {}).get("label", {}).get("enum") if isinstance(schema, dict) else None)
        for i in range(n):
            if isinstance(enum, list) and enum:
                probs = synthetic_probs([users[-1], i if n > 1 else None], enum)
                pick = enum[max(range(len(enum)), key=probs.__getitem__)] if n == 1 else enum[
                    _text_crc(users[-1], i) % len(enum)]
                content = json.dumps({"label": pick})
            else:
                content = plan.answers[_text_crc(users[-1]) % len(plan.answers)]
            choices.append({"index": i, "message": {"role": "assistant", "content": content + shown},
                            "finish_reason": "stop", "logprobs": None})
    if garbage and not data.get("logprobs"):
        choices = []
    return json.dumps({"id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
                       "model": SERVED_MODEL, "choices": choices, "usage": usage}).encode()


def _log(p: float) -> float:
    import math

    return math.log(p) if p > 0 else -1e4


def decisions_answer(data: dict[str, Any], plan: FaultPlan, garbage: bool = False) -> bytes:
    """`/v1/decisions` in the OpenAI SDK's shapes (`openai.types.DecisionCreateParams` in, `Decision` out), with the
    API's limits: 1-400 questions, 2-255 unique choices, predicate / choice / score questions."""
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise _BadRequest(400, "model is required")
    given = data.get("input")
    if not (isinstance(given, str) or (isinstance(given, list) and given and all(isinstance(m, dict)
                                                                                 for m in given))):
        raise _BadRequest(400, "input must be a string or a non-empty list of messages")
    if isinstance(given, list):
        for m in given:
            if m.get("role") not in ("user", "developer", "system", "assistant") or not isinstance(
                    m.get("content"), (str, list)) or m.get("type", "message") != "message":
                raise _BadRequest(400, "input messages need a role (user, developer, system, assistant) and content")
    questions = data.get("questions")
    if not isinstance(questions, list) or not 1 <= len(questions) <= 400:
        raise _BadRequest(400, "questions: provide 1-400 questions")
    answers = []
    for q in questions:
        if not isinstance(q, dict) or q.get("type") not in ("predicate", "choice", "score"):
            raise _BadRequest(400, "each question needs type predicate, choice or score")
        if not isinstance(q.get("instructions"), (str, list)):
            raise _BadRequest(400, "each question needs instructions")
        name = q.get("name")
        if plan.refuse and _text_crc(given, q) % 10_000 < plan.refuse * 10_000:
            answers.append({"type": "refusal", "name": name})
            continue
        if q["type"] == "predicate":
            p = synthetic_probs([given, q], [True, False])[0]
            answers.append({"type": "predicate", "name": name, "probability": p})
        elif q["type"] == "choice":
            choices = q.get("choices")
            if not isinstance(choices, list) or not 2 <= len(choices) <= 255:
                raise _BadRequest(400, "choice questions take between 2 and 255 choices")
            values = [c.get("value") if isinstance(c, dict) else None for c in choices]
            if not all(isinstance(v, (str, bool)) for v in values):
                raise _BadRequest(400, "every choice needs a string or boolean value")
            if len({(type(v), v) for v in values}) != len(values):
                raise _BadRequest(400, "each choice must be unique")
            probs = synthetic_probs([given, q.get("instructions")], [str(v) for v in values])
            best = max(range(len(values)), key=probs.__getitem__)
            answers.append({"type": "choice", "name": name, "choice": values[best], "confidence": probs[best],
                            "probabilities": [{"value": v, "probability": p} for v, p in zip(values, probs)]})
        else:
            levels = q.get("levels")
            if not isinstance(levels, list) or len(levels) < 2 or not all(
                    isinstance(lv, dict) and isinstance(lv.get("label"), str) for lv in levels):
                raise _BadRequest(400, "score questions take at least 2 levels with labels")
            probs = synthetic_probs([given, q.get("instructions")], [lv["label"] for lv in levels])
            best = max(range(len(levels)), key=probs.__getitem__)
            answers.append({"type": "score", "name": name, "score": sum(i * p for i, p in enumerate(probs)),
                            "confidence": probs[best], "probabilities": [
                                {"label": lv["label"], "value": i, "probability": p}
                                for i, (lv, p) in enumerate(zip(levels, probs))]})
    if garbage:
        answers = answers[:-1]
    tokens = _tokens_estimate(given) + _tokens_estimate(questions)
    usage = {"input_tokens": tokens, "input_tokens_details": {"cached_tokens": tokens // 2, "cache_write_tokens": 0},
             "output_tokens": len(questions), "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": tokens + len(questions)}
    return json.dumps({"answers": answers, "model": data["model"], "usage": usage}).encode()


def systemone_answer(data: dict[str, Any], plan: FaultPlan, garbage: bool = False) -> bytes:
    """`/v1/systemone` in vLLM's wire format (`structured_decisions/protocol.py`) with its limits: at most 26
    options per choice question and 64 questions per request (400 beyond, with vLLM's messages)."""
    if "state" not in data:
        raise _BadRequest(400, "state: field required")
    questions = data.get("questions")
    if not isinstance(questions, dict) or not questions:
        raise _BadRequest(400, "questions: needs at least one question")
    if len(questions) > SYSTEMONE_MAX_QUESTIONS:
        raise _BadRequest(400, f"questions: at most {SYSTEMONE_MAX_QUESTIONS} for this model")
    answers, diagnostics = {}, {}
    for qid, q in questions.items():
        if not isinstance(q, dict) or not isinstance(q.get("type"), str):
            raise _BadRequest(400, f"question {qid!r}: needs a type")
        extra = sorted(set(q) - {"type", "instructions", "criteria"})
        if extra:
            raise _BadRequest(400, f"question {qid!r}: unknown field(s) {extra}")
        criteria = q.get("criteria")
        if plan.refuse and _text_crc(data["state"], q) % 10_000 < plan.refuse * 10_000:
            answers[qid] = {"type": "refusal"}
            continue
        if q["type"] == "choice":
            if not isinstance(criteria, dict) or not criteria:
                raise _BadRequest(400, f"question {qid!r}: choice criteria must map option names to a description "
                                       "or null")
            if len(criteria) > SYSTEMONE_MAX_OPTIONS:
                raise _BadRequest(400, f"question {qid!r}: at most {SYSTEMONE_MAX_OPTIONS} options for this model")
            names = [str(k) for k in criteria]
            probs = synthetic_probs([data["state"], data.get("instructions"), q.get("instructions")], names)
            best = max(range(len(names)), key=probs.__getitem__)
            answers[qid] = {"type": "choice", "choice": names[best], "confidence": probs[best] * 0.9,
                            "probabilities": dict(zip(names, probs))}
        elif q["type"] == "noul":
            p = synthetic_probs([data["state"], q.get("instructions")], ["yes", "no"])[0]
            answers[qid] = {"type": "noul", "noul": p, "probabilities": {"yes": p, "no": 1 - p},
                            "confidence": max(p, 1 - p) * 0.9}
        elif q["type"] == "score":
            if not isinstance(criteria, list) or len(criteria) < 2:
                raise _BadRequest(400, f"question {qid!r}: score criteria must be an ordered list of levels")
            probs = synthetic_probs([data["state"], q.get("instructions")], [str(c) for c in criteria])
            answers[qid] = {"type": "score", "score": sum(i * p for i, p in enumerate(probs)),
                            "legend": {str(i): str(c) for i, c in enumerate(criteria)},
                            "probabilities": {str(i): p for i, p in enumerate(probs)}, "confidence": max(probs)}
        else:
            raise _BadRequest(400, f"unknown question type {q['type']!r}; supported: ['choice', 'noul', 'score']")
        diagnostics[qid] = {"label_mass": 0.9, "argmax_is_label": True}
    if garbage:
        for answer in answers.values():
            if isinstance(answer.get("probabilities"), dict):
                answer["probabilities"] = {k: None for k in answer["probabilities"]}
    tokens = _tokens_estimate(data.get("state")) * len(questions)
    return json.dumps({"id": "decision-fault", "object": "structured_decision", "created": int(time.time()),
                       "model": data.get("model") or SERVED_MODEL, "answers": answers,
                       "usage": {"input_tokens": tokens, "output_tokens": len(questions)},
                       "diagnostics": diagnostics}).encode()


# -- the server -----------------------------------------------------------------------------------------------------
class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error_body(message: str, kind: str = "error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind}}).encode()


class _Server:
    """The asyncio server; runs in one event loop (a thread's or a process's)."""

    def __init__(self, plan: FaultPlan):
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.scripted = 0
        self.stats: Counter = Counter()
        self.faults: Counter = Counter()
        self.in_flight = 0
        self.open_connections = 0
        self.started = time.time()
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.Task] = set()

    # -- HTTP plumbing --------------------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        self.stats["connections"] += 1
        self.open_connections += 1
        self.stats["max_open_connections"] = max(self.stats["max_open_connections"], self.open_connections)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(self._read(reader), IDLE_SECONDS)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                if request is None:
                    return
                method, path, headers, body = request
                keep = await self._respond(writer, method, path, headers, body)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open_connections -= 1
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self.connections.discard(task)

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            raise ValueError("bad request line")
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        body = await reader.readexactly(length) if length else b""
        return parts[0].upper(), parts[1], headers, body

    @staticmethod
    def _head(status: int, length: int, extra: dict[str, str] | None = None) -> bytes:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                    extra: dict[str, str] | None = None) -> None:
        writer.write(self._head(status, len(body), extra) + body)
        await writer.drain()

    # -- dispatch -------------------------------------------------------------------------------------------------
    async def _respond(self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str],
                       body: bytes) -> bool:
        """Answer one request; False closes the connection."""
        if path.startswith("/_faults/"):
            await self._control(writer, method, path, body)
            return True
        self.stats["requests"] += 1
        self.stats[f"{method} {path}"] += 1
        self.in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)
        try:
            return await self._api(writer, method, path, headers, body)
        finally:
            self.in_flight -= 1

    async def _api(self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str],
                   body: bytes) -> bool:
        plan = self.plan
        auth = headers.get("authorization", "")
        shown = f" (request had Authorization: {auth})" if plan.reflect_auth else ""
        if self.stats["requests"] > plan.max_requests:
            self.stats["over_budget"] += 1
            await self._send(writer, 503, _error_body(f"request budget of {plan.max_requests} exhausted"))
            return True
        if plan.require_key is not None:
            if auth != f"Bearer {plan.require_key}":
                self.stats["unauthorized"] += 1
                await self._send(writer, 401, _error_body(f"invalid API key{shown}", "auth"))
                return True
            self.stats["authorized"] += 1
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            self.stats["bad_requests"] += 1
            await self._send(writer, 400, _error_body("request body is not JSON"))
            return True
        if method == "POST" and path in API_PATHS and plan.outage and isinstance(data, dict):
            first = data.get("prompt", data.get("messages", data.get("input", data.get("state"))))
            first = first[0] if isinstance(first, list) and first and isinstance(first[0], list) else first
            if zlib.crc32(json.dumps(first).encode()) % 10_000 < plan.outage * 10_000:
                self.stats["outage"] += 1
                await self._send(writer, 503, _error_body(f"outage{shown}"), self._retry_after())
                return True
        kind = self._draw()
        if kind in ("429", "500", "503", "drop", "slow"):
            self.faults[kind] += 1
            if kind in ("429", "500", "503"):
                extra = self._retry_after() if kind in ("429", "503") else None
                await self._send(writer, int(kind), _error_body(f"injected {kind}{shown}"), extra)
                return True
            if kind == "drop":
                return False
            if kind == "slow":
                await asyncio.sleep(plan.slow_seconds)
        if plan.latency:
            await asyncio.sleep(plan.latency)
        try:
            status, answer = 200, self._answer(method, path, data, shown, garbage=kind == "garbage")
        except _BadRequest as exc:
            self.stats["bad_requests"] += 1
            status, answer = exc.status, _error_body(exc.message)
            kind = None if kind == "garbage" else kind
        if kind in ("not_json", "garbage") and (status != 200 or (kind == "garbage" and path not in API_PATHS)):
            kind = None  # content faults are for completions; an error answer is sent as it is
        if kind in ("truncated", "not_json", "trickle", "garbage"):
            self.faults[kind] += 1
        if kind == "truncated":  # promise the whole body, send half, hang up
            writer.write(self._head(status, len(answer)) + answer[: len(answer) // 2])
            await writer.drain()
            return False
        if kind == "not_json":  # a complete answer whose body is cut JSON (a proxy's doing)
            await self._send(writer, status, answer[: max(1, len(answer) // 2)])
            return True
        if kind == "trickle":  # headers now, the body a few bytes at a time over slow_seconds
            writer.write(self._head(status, len(answer)))
            steps = max(1, min(len(answer), 20))
            size = -(-len(answer) // steps)
            for start in range(0, len(answer), size):
                await asyncio.sleep(plan.slow_seconds / steps)
                writer.write(answer[start:start + size])
                await writer.drain()
            return True
        self.stats["ok" if status == 200 else "rejected"] += 1
        await self._send(writer, status, answer)
        return True

    def _draw(self) -> str | None:
        if self.scripted < len(self.plan.script):
            kind = self.plan.script[self.scripted]
            self.scripted += 1
            return None if kind in ("", "ok") else kind
        roll, edge = self.rng.random(), 0.0
        for kind in FAULT_KINDS:
            edge += self.plan.rates.get(kind, 0.0)
            if roll < edge:
                return kind
        return None

    def _retry_after(self) -> dict[str, str]:
        value = self.plan.retry_after
        return {} if value is None else {"Retry-After": f"{value:g}"}

    async def _control(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes) -> None:
        try:
            if path == "/_faults/stats":
                answer = {"stats": dict(self.stats), "faults": dict(self.faults), "in_flight": self.in_flight,
                          "uptime": time.time() - self.started, "plan": asdict(self.plan)}
            elif path == "/_faults/config" and method == "POST":
                changes = json.loads(body or b"{}")
                self.plan = FaultPlan.from_dict({**asdict(self.plan), **changes})
                if "seed" in changes:
                    self.rng = random.Random(self.plan.seed)
                if "script" in changes:
                    self.scripted = 0
                answer = {"plan": asdict(self.plan)}
            elif path == "/_faults/reset" and method == "POST":
                self.stats.clear()
                self.faults.clear()
                answer = {"reset": True}
            else:
                await self._send(writer, 404, _error_body(f"no control endpoint {method} {path}"))
                return
        except (ValueError, TypeError) as exc:
            await self._send(writer, 400, _error_body(str(exc)))
            return
        await self._send(writer, 200, json.dumps(answer).encode())

    # -- answers --------------------------------------------------------------------------------------------------
    def _answer(self, method: str, path: str, data: Any, shown: str, garbage: bool = False) -> bytes:
        if method == "GET" and path == "/v1/models":
            return json.dumps({"object": "list", "data": [
                {"id": SERVED_MODEL, "object": "model", "max_model_len": self.plan.max_model_len}]}).encode()
        if method != "POST" or path not in API_PATHS:
            raise _BadRequest(404, f"no route {method} {path}")
        if not isinstance(data, dict):
            raise _BadRequest(400, "request body must be a JSON object")
        if path == "/v1/chat/completions":
            return chat_answer(data, self.plan, shown, garbage)
        if path == "/v1/decisions":
            return decisions_answer(data, self.plan, garbage)
        if path == "/v1/systemone":
            return systemone_answer(data, self.plan, garbage)
        prompts = data.get("prompt")
        batch = isinstance(prompts, list) and bool(prompts) and isinstance(prompts[0], list)
        seqs = prompts if batch else [prompts]
        if not all(isinstance(s, list) and s and all(isinstance(t, int) and 0 <= t < 2**31 for t in s)
                   for s in seqs):
            raise _BadRequest(400, "prompt must be token ids (a list of ints, or a list of such lists)")
        max_tokens = data.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise _BadRequest(400, "max_tokens must be a positive integer")
        for seq in seqs:
            if len(seq) + max_tokens > self.plan.max_model_len:
                raise _BadRequest(400, f"This model's maximum context length is {self.plan.max_model_len} tokens. "
                                       f"However, you requested {len(seq) + max_tokens} tokens "
                                       f"({len(seq)} in the messages, {max_tokens} in the completion).")
        if "logprob_token_ids" in data:
            if not self.plan.token_id_logprobs:
                raise _BadRequest(400, "Unrecognized request argument supplied: logprob_token_ids")
            asked = data["logprob_token_ids"]
            if not isinstance(asked, list) or not all(isinstance(t, int) for t in asked) or len(asked) > 128:
                raise _BadRequest(400, "logprob_token_ids must be at most 128 token ids")
            choices = []
            for k, seq in enumerate(seqs):
                crc = _crc(seq)
                top = {f"token_id:{t}": synthetic_logprob(crc, t) for t in asked}
                best = max(asked, key=lambda t: top[f"token_id:{t}"]) if asked else 0
                choices.append({"index": k, "text": "", "finish_reason": "length", "logprobs": {
                    "tokens": [f"token_id:{best}"], "token_logprobs": [top.get(f"token_id:{best}", -1.0)],
                    "top_logprobs": [top], "text_offset": [0]}})
            return self._completion(choices, garbage)
        if data.get("echo"):
            choices = []
            for k, seq in enumerate(seqs):
                crc, lps = _crc(seq[:1]), [None]
                for tok in seq[1:]:
                    lps.append(synthetic_logprob(crc, tok))
                    crc = _crc([tok], crc)
                generated = crc % 1000
                lps.append(synthetic_logprob(crc, generated))
                choices.append({"index": k, "text": "", "finish_reason": "length", "logprobs": {
                    "tokens": [f"token_id:{t}" for t in seq + [generated]], "token_logprobs": lps,
                    "top_logprobs": [None] * len(lps), "text_offset": list(range(len(lps)))}})
            return self._completion(choices, garbage)
        choices = []
        structured = data.get("structured_outputs")
        options = structured.get("choice") if isinstance(structured, dict) else None
        for k, seq in enumerate(seqs):
            pick = _crc(seq)
            if self.plan.obey_choices and isinstance(options, list) and options:
                text = str(options[pick % len(options)])
            else:
                text = self.plan.answers[pick % len(self.plan.answers)]
            choices.append({"index": k, "text": text + shown, "finish_reason": "stop", "logprobs": None})
        return self._completion(choices, garbage)

    def _completion(self, choices: list[dict[str, Any]], garbage: bool = False) -> bytes:
        if garbage:  # well-formed JSON, wrong content: NaN logprobs, or a choice missing
            if self.rng.random() < 0.5 and len(choices) > 0 and isinstance(choices[0].get("logprobs"), dict):
                for choice in choices:
                    lp = choice["logprobs"]
                    lp["token_logprobs"] = [None if v is None else float("nan") for v in lp["token_logprobs"]]
                    if isinstance(lp["top_logprobs"][0], dict):
                        lp["top_logprobs"] = [{k: float("nan") for k in lp["top_logprobs"][0]}]
            else:
                choices = choices[1:]
        return json.dumps({"id": "cmpl-fault", "object": "text_completion", "created": int(time.time()),
                           "model": SERVED_MODEL, "choices": choices}).encode()

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self.handle, host, port, backlog=512)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)


# -- handles --------------------------------------------------------------------------------------------------------
class FaultServer:
    """A running fault server: `url` is its API root (`http://127.0.0.1:PORT/v1`); `stats()`, `configure()` and
    `reset()` talk to its control endpoints. Made by `serve_faults`."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}/v1"
        self.served_model = SERVED_MODEL

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        response = httpx.request(method, f"http://{self.host}:{self.port}/_faults/{path}", json=body, timeout=10)
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])
        return response.json()

    def stats(self) -> dict[str, Any]:
        """Counters: `stats` (requests, per route, ok, outage, connections, max_in_flight, ...) and `faults` (per
        kind injected), plus the current `plan`."""
        return self._control("GET", "stats")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change fields of the running plan (see `FaultPlan`); returns the new plan."""
        return self._control("POST", "config", changes)["plan"]

    def reset(self) -> None:
        """Zero the counters."""
        self._control("POST", "reset", {})


def _thread_server(plan: FaultPlan, host: str, port: int) -> tuple[int, Any]:
    """Start the server on an event loop in a daemon thread; returns (port, stop function)."""
    loop = asyncio.new_event_loop()
    server = _Server(plan)
    ready: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["port"] = loop.run_until_complete(server.start(host, port))
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=run, name="llmlabel-fault-server", daemon=True)
    thread.start()
    started.wait(30)
    if "error" in ready:
        raise ready["error"]

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)

    return ready["port"], stop


def _process_server(plan: FaultPlan, host: str, port: int) -> tuple[int, Any]:
    """Start the server as `python -m llmlabel.testing.fault_server` in its own process group; returns (port, stop)."""
    from llmlabel.testing.vllm_server import stop_process

    cmd = [sys.executable, "-m", "llmlabel.testing.fault_server", "--host", host, "--port", str(port),
           "--plan", json.dumps(asdict(plan))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise RuntimeError(f"fault server did not start: {line.strip()} {err.strip()[-500:]}")
    except BaseException:
        stop_process(proc, grace=5)
        raise
    return int(line.split()[1]), lambda: stop_process(proc, grace=5)


@contextlib.contextmanager
def serve_faults(plan: dict[str, Any] | FaultPlan | None = None, process: bool = False, host: str = "127.0.0.1",
                 port: int = 0) -> Iterator[FaultServer]:
    """Run a fault server for the `with` block and yield its `FaultServer` handle; always stopped on exit.

    `plan`: a `FaultPlan` or a dict of its fields (None: no faults). `process=True` runs it in a child process.
    `port=0` lets the OS pick a free port.
    """
    plan = FaultPlan.from_dict(plan)
    port, stop = (_process_server if process else _thread_server)(plan, host, port)
    try:
        yield FaultServer(port, host)
    finally:
        stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m llmlabel.testing.fault_server --port 0 --plan '{"rates": {"503": 0.1}}'`: serve until killed.

    Prints `READY <port>` once it listens.
    """
    parser = argparse.ArgumentParser(description="A fault-injecting OpenAI-compatible completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plan", default="{}", help="JSON object of FaultPlan fields")
    args = parser.parse_args(argv)
    plan = FaultPlan.from_dict(json.loads(args.plan))

    async def run() -> None:
        server = _Server(plan)
        port = await server.start(args.host, args.port)
        print(f"READY {port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()

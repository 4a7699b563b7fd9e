"""Schema-valid JSON from any backend.

Where the backend can constrain decoding (`Backend.supports_json_schema`: vLLM structured outputs, xgrammar on the
transformers backend, a vLLM server) every answer is generated under the schema; elsewhere the answer is generated
freely and parsed. Either way each answer is parsed (code fences and surrounding prose are tolerated, JSON cut short
by the token limit is closed after its last complete element), validated with pydantic, and re-asked with a repair
prompt a bounded number of times. Every attempt is kept; an answer that never validates is a `failed` result with a
reason, never an exception.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from llmlabel.backends.base import Backend
from llmlabel.errors import BackendError
from llmlabel.core.prompts import load_prompt

log = logging.getLogger("llmlabel")


@dataclass
class StructuredResult:
    """One request's outcome: `value` (a validated model instance, None when failed), `status` ('ok', 'repaired':
    valid only after a fix or a retry, 'failed'), `reason` (what went wrong last, None when ok), and every attempt
    as {'raw', 'error', 'constrained'}."""

    value: Any = None
    status: str = "failed"
    reason: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether a valid value was obtained (possibly after a repair)."""
        return self.value is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record for logs."""
        value = self.value.model_dump() if isinstance(self.value, BaseModel) else self.value
        return {"status": self.status, "reason": self.reason, "value": value, "attempts": self.attempts}


def close_truncated(text: str) -> str | None:
    """JSON cut short (e.g. by the token limit) closed after its last complete element, or None if there is none.

    `{"labels": [{"name": "a"}, {"name": "b", "desc` becomes `{"labels": [{"name": "a"}]}`.
    """
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []  # (end of a complete nested value, closers needed there)
    in_string = escaped = False
    for pos, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack:
                return None
            stack.pop()
            if not stack:
                return None  # complete already: nothing to close
            cuts.append((pos + 1, "".join(reversed(stack))))
    for end, closers in reversed(cuts):
        candidate = text[:end].rstrip().rstrip(",") + closers
        try:
            json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return candidate
    return None


def extract_json(text: str) -> tuple[Any, str | None]:
    """(parsed JSON, repair note or None) from a model answer; raises ValueError with a one-line reason.

    Accepts surrounding prose and ```json fences; closes JSON cut short after its last complete element.
    """
    if not text or not text.strip():
        raise ValueError("empty answer")
    body = re.sub(r"^```(?:json)?\s*|\s*```\s*$", "", text.strip())
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError(f"no JSON in answer '{_shown(text)}'")
    note = "dropped text around the JSON" if body[:start].strip() else None
    try:
        value, end = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as exc:
        closed = close_truncated(body[start:])
        if closed is None:
            raise ValueError(f"invalid JSON ({exc.msg} at char {exc.pos})") from None
        return json.loads(closed), "closed JSON cut short after its last complete element"
    if body[start + end:].strip():
        note = "dropped text around the JSON"
    return value, note


def _shown(text: str, limit: int = 60) -> str:
    return " ".join(str(text).split())[:limit]


def validation_reason(exc: ValidationError) -> str:
    """One line for the first problem of a pydantic ValidationError."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"schema violation at '{where}': {err['msg']}{more}"


def parse_structured(raw: str, model: type[BaseModel], check: Callable[[Any], str | None] | None = None
                     ) -> tuple[BaseModel | None, str | None, str | None]:
    """(value, error, repair note): `raw` parsed and validated against `model`, then by `check` (which returns a
    one-line problem or None)."""
    try:
        data, note = extract_json(raw)
    except ValueError as exc:
        return None, str(exc), None
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        return None, validation_reason(exc), note
    problem = check(value) if check else None
    return (None, problem, note) if problem else (value, None, note)


def generate_structured(backend: Backend, requests: list[str], model: type[BaseModel], *,
                        schema: dict[str, Any] | None = None, max_tokens: int = 256, retries: int = 2,
                        system: str | None = None, check: Callable[[Any], str | None] | None = None
                        ) -> list[StructuredResult]:
    """Ask `backend` for one JSON object per request (a user message) that validates as `model`.

    `schema` (default: the model's JSON schema) constrains decoding where the backend can; `check` adds rules a
    schema cannot say (e.g. distinct names) and returns a one-line problem or None. Failed answers are asked again,
    at most `retries` times, with the `json_repair` prompt (the request, the bad answer and the error).
    """
    schema = schema or model.model_json_schema()
    constrained = bool(backend.supports_json_schema)
    reason = None if constrained else getattr(backend, "unconstrained_reason", None)
    if reason and not getattr(backend, "_unconstrained_warned", False):
        log.warning("%s", reason)
        backend._unconstrained_warned = True
    repair = load_prompt("json_repair")
    results = [StructuredResult() for _ in requests]
    messages = list(requests)
    pending = list(range(len(requests)))
    for attempt in range(retries + 1):
        if not pending:
            break
        prompts = [backend.chat_prompt(([{"role": "system", "content": system}] if system else [])
                                       + [{"role": "user", "content": messages[i]}]) for i in pending]
        try:
            answers = backend.generate(prompts, max_tokens=max_tokens, json_schema=schema if constrained else None)
        except BackendError as exc:
            answers = [None] * len(pending)
            failure = f"backend failed: {exc}"
        still = []
        for i, raw in zip(pending, answers):
            result = results[i]
            if raw is None:
                value, error, note = None, failure, None
            else:
                value, error, note = parse_structured(raw, model, check)
            result.attempts.append({"raw": raw, "error": error, "repair": note, "constrained": constrained})
            if value is not None:
                result.value = value
                result.status = "ok" if attempt == 0 and note is None else "repaired"
                result.reason = note if note else (None if attempt == 0 else f"valid on retry {attempt}")
                continue
            result.reason = error
            still.append(i)
            messages[i] = repair.render(request=requests[i], answer=_shown(raw or "", 600), error=error,
                                        schema=json.dumps(schema, separators=(",", ":")))
        pending = still
    return results

"""OpenAI Decisions backend: `POST /v1/decisions` (public beta; the official `openai` package ships its types as
`openai.types.DecisionCreateParams` and `openai.types.Decision`).

One row is one request. `input` is a list of messages: a system message with the task's instruction, each
demonstration as a user message (its text) and an assistant message (its label), then the row's text as a user
message. `questions` holds one `choice` question (`name: "label"`, the labels as `choices` with their
descriptions), or, for multi-label tasks, one `predicate` per label ("The label 'x' applies to the text.").
The answer's `probabilities` (every option's) become the row's label distribution; a `refusal` answer makes the
row `refused`; `usage` (input, cached, output tokens) goes into the run's ledger.

Request bodies are built as plain JSON in exactly the SDK's shapes (the tests check them against the SDK's
TypedDicts and parse answers with its `Decision` model), so the runtime needs `httpx` only. Limits: 2-255 choices
per question, 1-400 questions per request (more predicates are split over several requests).

No live OpenAI Decisions endpoint was tried: the backend is tested against `llmlabel.testing.fault_server`'s
`/v1/decisions`, which validates the same shapes.
"""

from __future__ import annotations

from typing import Any

from llmlabel.backends.api import DecisionEndpoint, DecisionRow, Question, log_prob
from llmlabel.backends.http import is_number

#: choices per choice question
MAX_CHOICES = 255
#: questions per request
MAX_QUESTIONS = 400


class DecisionsBackend(DecisionEndpoint):
    """A model behind the OpenAI Decisions API (`POST /v1/decisions`).

    Args:
        model: the model name (e.g. the one the API documents; required: there is no local default on this API).
        base_url: the API root (default https://api.openai.com/v1).
        max_options: choices per question (255 on the API).
        max_questions: questions per request (400 on the API).
        api_key, api_key_env, api_key_file, served_model, tokenizer, max_context, prices, concurrency, timeout,
            max_retries, backoff: as for the `chat` backend.
    """

    name = "decisions"
    endpoint = "decisions"
    wire_version = "1"
    default_base_url = "https://api.openai.com/v1"
    option_cap = MAX_CHOICES
    question_cap = MAX_QUESTIONS

    def request_body(self, row: DecisionRow, start: int = 0) -> dict[str, Any]:
        """The `/v1/decisions` body (a `DecisionCreateParams`) for `row`'s questions from `start`."""
        messages: list[dict[str, Any]] = []
        if row.instructions:
            messages.append({"type": "message", "role": "system", "content": row.instructions})
        for text, answer in row.examples:
            messages.append({"type": "message", "role": "user", "content": text})
            messages.append({"type": "message", "role": "assistant", "content": answer})
        messages.append({"type": "message", "role": "user", "content": row.state})
        questions: list[dict[str, Any]] = []
        for q in row.questions[start:start + self.max_questions]:
            if q.kind == "choice":
                choices = [{"value": name, **({"description": desc} if desc else {})} for name, desc in q.options]
                questions.append({"type": "choice", "name": q.name, "instructions": q.instructions,
                                  "choices": choices})
            else:
                questions.append({"type": "predicate", "name": q.name, "instructions": q.instructions})
        return {"model": self.served_model, "input": messages, "questions": questions}

    def _check_response(self, data: Any, body: dict[str, Any]) -> None:
        got = data.get("answers") if isinstance(data, dict) else None
        if not isinstance(got, list) or len(got) != len(body["questions"]):
            n = len(got) if isinstance(got, list) else "no"
            raise self._fail("POST", "/decisions", f"expected {len(body['questions'])} answers, got {n}")

    def _read_answers(self, data: Any, body: dict[str, Any], questions: tuple[Question, ...],
                      refusals: list[str]) -> list[list[float] | None]:
        return [self._parse(answer, question, refusals) for answer, question in zip(data["answers"], questions)]

    def _parse(self, answer: Any, question: Any, refusals: list[str]) -> list[float] | None:
        """One answer (in the SDK's `Answer` shapes) as log-probabilities per option; None for a refusal."""
        kind = answer.get("type") if isinstance(answer, dict) else None
        if kind == "refusal":
            refusals.append(f"refused: question '{answer.get('name') or question.name}'")
            return None
        if question.kind == "predicate":
            p = answer.get("probability") if kind == "predicate" else None
            if not is_number(p) or not 0 <= p <= 1:
                raise self._fail("POST", "/decisions", f"answer to '{question.name}' is not a predicate probability")
            return [log_prob(p), log_prob(1 - p)]
        probs = answer.get("probabilities") if kind == "choice" else None
        if not isinstance(probs, list):
            raise self._fail("POST", "/decisions", f"answer to '{question.name}' is not a choice answer")
        by_value = {}
        for entry in probs:
            if isinstance(entry, dict) and isinstance(entry.get("value"), str) and is_number(entry.get("probability")):
                by_value[entry["value"]] = entry["probability"]
        names = [o[0] for o in question.options]
        if any(n not in by_value for n in names):
            raise self._fail("POST", "/decisions", f"answer to '{question.name}' lacks the probability of every "
                             "choice")
        return [log_prob(by_value[n]) for n in names]

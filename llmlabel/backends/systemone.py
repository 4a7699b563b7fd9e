"""System One backend: decision servers that speak `POST /v1/systemone` (vLLM >= 0.32, SGLang, LiteLLM, hosted
decision models).

One row is one request: `state` is the row's text, `instructions` the task's instruction plus the demonstrations,
and `questions` holds one `choice` question whose `criteria` map each (candidate) label to its description (or
null), or, for multi-label tasks, one `noul` (yes/no) question per label. The answer's `probabilities` become the
row's label distribution (logs of them, so calibration divides them like token scores); its per-question
`diagnostics` (`label_mass`: the probability the model put on the option letters at all; `argmax_is_label`) are
summed into the report. A `refusal` answer makes the row `refused`.

vLLM reads a choice as one next-token read over the letters A-Z, so a question takes at most 26 options
(`max_options`; more is vLLM's 400) and a request at most 64 questions (more are split over several requests).
vLLM 0.32 serves it for Qwen3 / Qwen3.5 / LFM2 models started with `--logprobs-mode processed_logprobs` (or raw);
other models answer 501.
"""

from __future__ import annotations

from typing import Any

from llmlabel.backends.api import DecisionEndpoint, DecisionRow, Question, log_prob
from llmlabel.backends.http import is_number

#: options per choice question (vLLM labels them A-Z)
MAX_OPTIONS = 26
#: questions per request (vLLM's NextTokenStrategy limit)
MAX_QUESTIONS = 64


def demonstrations(row: DecisionRow) -> str:
    """The task's instruction and the row's demonstrations, as one context text."""
    parts = [row.instructions] if row.instructions else []
    if row.examples:
        parts.append("Examples:\n\n" + "\n\n".join(f"{text}\nAnswer: {answer}" for text, answer in row.examples))
    return "\n\n".join(parts)


class SystemOneBackend(DecisionEndpoint):
    """A decision model behind the System One wire format (`POST /v1/systemone`).

    Args:
        model: the served model name (None = the embedded default model's folder path, as vLLM names it).
        base_url: the API root, e.g. "http://127.0.0.1:8000/v1".
        max_options: options per question (26 on vLLM; lower it for servers with smaller limits).
        max_questions: questions per request (64 on vLLM).
        api_key, api_key_env, api_key_file, served_model, tokenizer, max_context, prices, concurrency, timeout,
            max_retries, backoff: as for the `chat` backend.
    """

    name = "systemone"
    endpoint = "systemone"
    wire_version = "1"
    option_cap = MAX_OPTIONS
    default_questions = MAX_QUESTIONS
    #: summed per-question diagnostics: questions, label mass, reads whose top token was not an option letter
    diagnostics: dict[str, Any]

    def _init_state(self) -> None:
        self.diagnostics = {"questions": 0, "label_mass": 0.0, "argmax_not_label": 0}

    def request_body(self, row: DecisionRow, start: int = 0) -> dict[str, Any]:
        """The `/v1/systemone` body for `row`'s questions `start .. start + max_questions - 1` (ids q0, q1, ...)."""
        questions: dict[str, Any] = {}
        for k, q in enumerate(row.questions[start:start + self.max_questions], start):
            if q.kind == "choice":
                questions[f"q{k}"] = {"type": "choice", "instructions": q.instructions,
                                      "criteria": {name: desc for name, desc in q.options}}
            else:
                questions[f"q{k}"] = {"type": "noul", "instructions": q.instructions}
        body: dict[str, Any] = {"model": self.served_model, "state": row.state, "questions": questions}
        context = demonstrations(row)
        if context:
            body["instructions"] = context
        return body

    def _check_response(self, data: Any, body: dict[str, Any]) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("answers"), dict):
            raise self._fail("POST", "/systemone", "answer has no 'answers' object")

    def _read_answers(self, data: Any, body: dict[str, Any], questions: tuple[Question, ...],
                      refusals: list[str]) -> list[list[float] | None]:
        answers: list[list[float] | None] = []
        diagnostics = data.get("diagnostics") if isinstance(data.get("diagnostics"), dict) else {}
        for qid, question in zip(body["questions"], questions):
            answer = data["answers"].get(qid)
            if not isinstance(answer, dict):
                raise self._fail("POST", "/systemone", f"answer lacks question '{qid}'")
            if answer.get("type") == "refusal":
                answers.append(None)
                refusals.append(f"refused: {answer.get('reason') or answer.get('refusal') or qid}")
                continue
            probs = answer.get("probabilities")
            names = [o[0] for o in question.options] if question.kind == "choice" else ["yes", "no"]
            if not isinstance(probs, dict) or not all(is_number(probs.get(n)) for n in names):
                raise self._fail("POST", "/systemone", f"answer to '{qid}' lacks the probability of "
                                 "every option")
            answers.append([log_prob(probs[n]) for n in names])
            diag = diagnostics.get(qid)
            if isinstance(diag, dict) and is_number(diag.get("label_mass")):
                self.diagnostics["questions"] += 1
                self.diagnostics["label_mass"] += float(diag["label_mass"])
                self.diagnostics["argmax_not_label"] += int(diag.get("argmax_is_label") is False)
        return answers

    def api_report(self, rows: int = 0) -> dict[str, Any]:
        out = super().api_report(rows)
        n = self.diagnostics["questions"]
        if n:
            out["diagnostics"] = {"questions": n, "mean_label_mass": float(f"{self.diagnostics['label_mass'] / n:.4g}"),
                                  "argmax_not_label": self.diagnostics["argmax_not_label"]}
        return out

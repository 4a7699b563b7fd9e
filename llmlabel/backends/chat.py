"""Chat completions backend: any server that speaks `POST /v1/chat/completions` (hosted APIs, `vllm serve`, SGLang).

The label list is in the prompt (the task's template, sent as the user message; the server applies the model's chat
template). Score mode reads the reply's first-token `top_logprobs` (at most `top_logprobs`, 20 on most servers):

- labels are mapped to their tokens with the server's `POST /tokenize` where it has one (vLLM, SGLang), and the
  answers are asked with `return_tokens_as_token_ids` so tokens are matched by id; elsewhere the mapping is
  discovered from the answer: a label takes the longest listed token that its text starts with;
- labels that share a first token (`card_arrival`, `card_linking`) are resolved by a follow-up request that
  continues the assistant's reply after the shared token (`continue_final_message`), recursively at each branching
  point of the label trie (the likeliest two groups at the first token, the likeliest one deeper; the others share
  their group's probability evenly); a label's score is the sum of its log-probabilities at those points;
- where the server honours vLLM's `logprob_token_ids` on chat, exactly the labels' tokens are asked at each point
  (up to 128 labels per question, each with its own logprob), instead of the top-k listed ones;
- a label whose token is not among the listed ones gets the lowest listed log-probability (an upper bound).

Beyond `top_logprobs` labels the Labeler asks a shortlist or a two-level question (see `llmlabel.backends.api`).
Servers without logprobs (`distribution=samples`, or chosen automatically when the server rejects `logprobs`) give
an empirical distribution from `samples` structured answers per row (temperature 1), flagged in the row's reason.
Generate mode uses structured outputs: `response_format` with a JSON schema whose `label` is one of the labels.

Retries, backoff, Retry-After, the circuit breaker, secrets and per-row failures are the shared HTTP client's
(`llmlabel.backends.http`); token usage goes into the run's ledger (`api_report`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from llmlabel.backends.api import LOG_ZERO, APIBackend, DecisionAnswer, DecisionRow, Question, add_usage
from llmlabel.backends.http import RequestRejected, is_number
from llmlabel.errors import ConfigError, unknown

#: deepest follow-up chain for labels that share leading tokens
MAX_FOLLOW_UPS = 6
#: groups of labels sharing a token that are followed up: the likeliest two at the reply's first token, then the
#: likeliest one at each deeper branching point (the others share their group's probability evenly), so a row
#: costs about 1 + 2 x depth requests however many labels share prefixes
FOLLOW_UP_BRANCHES_AT_ROOT = 2
#: most token ids one request may ask logprobs for (vLLM's `logprob_token_ids` limit)
MAX_LOGPROB_TOKEN_IDS = 128
#: smoothing of sampled counts: an option never sampled keeps a small probability (calibration divides by it)
SAMPLE_SMOOTHING = 0.5


class ChatBackend(APIBackend):
    """A model behind an OpenAI-compatible chat completions API.

    Args:
        model: the model name the server knows (None = the embedded default model, served under its folder's path).
        base_url: the API root, e.g. "http://127.0.0.1:8000/v1".
        api_key, api_key_env, api_key_file: the API key (see `llmlabel.backends.http`; never in a recipe).
        served_model: the server's model name when it differs from `model`.
        tokenizer: a local tokenizer for token counting (default: the default model's, for the default model only).
        top_logprobs: logprobs listed per position (most servers allow 20): the option limit of a question,
            unless the server honours vLLM's `logprob_token_ids` (then 128 labels, each with its exact logprob).
        label_token_ids: ask `logprob_token_ids` where the server tokenizes (False: top_logprobs only).
        distribution: 'auto' (logprobs, or samples when the server rejects them), 'logprobs' or 'samples'.
        samples: answers per row in samples mode.
        max_context: context length in tokens (default: the server's `GET /models`, else 32768).
        prices: price table for the ledger's cost ({input, cached, output} per million tokens, or a JSON file).
        concurrency, timeout, max_retries, backoff: as for the `openai` backend.
    """

    name = "chat"
    endpoint = "chat"
    wire_version = "1"
    supports_choices = True
    supports_json_schema = True

    def __init__(self, model: str | None = None, base_url: str = "http://127.0.0.1:8000/v1",
                 api_key: str | None = None, served_model: str | None = None, tokenizer: str | None = None,
                 top_logprobs: int = 20, distribution: str = "auto", samples: int = 10, label_token_ids: bool = True,
                 max_context: int | None = None, prices: Any = None, concurrency: int = 16, timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 0.5, api_key_env: str = "OPENAI_API_KEY",
                 api_key_file: str | None = None):
        if distribution not in ("auto", "logprobs", "samples"):
            raise ConfigError(unknown("distribution", distribution, ["auto", "logprobs", "samples"]))
        if not 2 <= int(top_logprobs) <= 20:
            raise ConfigError(f"top_logprobs must be between 2 and 20, got {top_logprobs}")
        if int(samples) < 1:
            raise ConfigError(f"samples must be at least 1, got {samples}")
        self._init_api(model, base_url, served_model, tokenizer, max_context, prices,
                       dict(api_key=api_key, api_key_env=api_key_env, api_key_file=api_key_file,
                            concurrency=concurrency, timeout=timeout, max_retries=max_retries, backoff=backoff))
        self.top_logprobs = int(top_logprobs)
        self.distribution = distribution
        self.samples = int(samples)
        #: None: not asked yet; False: the server has no /tokenize (discover tokens from answers)
        self._tokenize_ok: bool | None = None
        self._token_ids: dict[str, list[int]] = {}
        self._texts: dict[tuple[int, ...], str] = {}
        #: whether the server continues an assistant message (follow-ups); None: not known yet
        self._can_continue: bool | None = None
        #: whether the server honours vLLM's `logprob_token_ids` on chat (exact label logprobs, up to 128 ids);
        #: None: not known yet (asked on first use), False: `label_token_ids=False` or the server lacks it
        self._token_id_logprobs: bool | None = None if label_token_ids else False
        self._max_options: int | None = None
        if distribution == "samples":
            self.model_id += ":samples"
        if not label_token_ids:
            self.model_id += ":top_logprobs"

    @property
    def max_options(self) -> int:  # type: ignore[override]
        """Options per question: 128 where the server tokenizes and honours `logprob_token_ids` on chat (asked
        once, with one tiny request), else `top_logprobs`."""
        if self._max_options is None:
            limit = self.top_logprobs
            if self.distribution != "samples" and self._token_id_logprobs is not False:
                async def probe() -> Any:
                    async with self._client(1) as client:
                        ids = await self._tokens(client, ["yes", "no"])
                        if ids is None:
                            return None
                        return await self._top(client, "Answer yes or no.", "", True, self.ledger,
                                               sorted({i[0] for i in ids.values()}))

                try:
                    self._run(probe)
                except Exception:  # noqa: BLE001 - a failing probe keeps the portable limit
                    self._token_id_logprobs = False
                if self._token_id_logprobs:
                    limit = MAX_LOGPROB_TOKEN_IDS
            self._max_options = limit
        return self._max_options

    # -- tokens ---------------------------------------------------------------------------------------------------
    @property
    def _root(self) -> str:
        """The server root (`/tokenize` lives beside `/v1`, not under it, on vLLM and SGLang)."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    async def _tokens(self, client: Any, names: list[str]) -> dict[str, list[int]] | None:
        """Token ids of each label via `POST /tokenize`; None when the server has none (then: discovery)."""
        if self._tokenize_ok is False:
            return None
        missing = [n for n in names if n not in self._token_ids]
        for name in missing:
            try:
                data = await self._post_root(client, "/tokenize", {"model": self.served_model, "prompt": name,
                                                                   "add_special_tokens": False})
            except RequestRejected:
                self._tokenize_ok = False
                return None
            tokens = data.get("tokens") if isinstance(data, dict) else None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, int) for t in tokens):
                self._tokenize_ok = False
                return None
            self._token_ids[name] = tokens
        self._tokenize_ok = True
        return {n: self._token_ids[n] for n in names}

    async def _text_of(self, client: Any, ids: list[int]) -> str:
        """The text of token ids (for a follow-up's assistant prefix), via `POST /detokenize`, cached."""
        key = tuple(ids)
        if key not in self._texts:
            data = await self._post_root(client, "/detokenize", {"model": self.served_model, "tokens": ids})
            text = data.get("prompt") if isinstance(data, dict) else None
            if not isinstance(text, str):
                raise self._fail("POST", "/detokenize", "answer has no 'prompt' text")
            self._texts[key] = text
        return self._texts[key]

    async def _post_root(self, client: Any, path: str, body: dict[str, Any]) -> Any:
        """POST to a path beside the API root (the shared client's retries and errors apply)."""
        return await self._request(client, "POST", path, body, root=self._root)

    def decide(self, rows: list[DecisionRow]) -> list[DecisionAnswer]:
        """As `APIBackend.decide`; the labels' token ids are asked once first, not by every row at once."""
        if self.distribution != "samples" and self._tokenize_ok is not False:
            names = sorted({o[0] for row in rows for q in row.questions for o in q.options} | {"yes", "no"})

            async def tokenize() -> Any:
                async with self._client(1) as client:
                    return await self._tokens(client, names)

            self._run(tokenize)
        return super().decide(rows)

    # -- requests -------------------------------------------------------------------------------------------------
    async def _top(self, client: Any, prompt: str, prefix: str, by_id: bool, ledger: dict[str, int],
                   asked: list[int] | None = None) -> dict[Any, float] | None:
        """The reply's next-token `top_logprobs` after `prefix` (continuing the assistant's message when given):
        token id (by_id) or token text -> logprob. With `asked` ids and a server that honours vLLM's
        `logprob_token_ids`, exactly those ids' logprobs (no top-k limit). None: the server cannot continue a
        message."""
        messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": self.served_model, "max_tokens": 1, "temperature": 0, "logprobs": True,
                                "top_logprobs": self.top_logprobs}
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        if by_id:
            body["return_tokens_as_token_ids"] = True
        use_ids = bool(by_id and asked and self._token_id_logprobs is not False)
        if use_ids:
            body["logprob_token_ids"] = sorted(set(asked or []))[:MAX_LOGPROB_TOKEN_IDS]
        body["messages"] = messages
        try:
            data = await self._request(client, "POST", "/chat/completions", body)
        except RequestRejected as exc:
            if use_ids and "logprob_token_ids" in str(exc) and self._token_id_logprobs is None:
                self._token_id_logprobs = False
                return await self._top(client, prompt, prefix, by_id, ledger, asked)
            if prefix and self._can_continue is not True:
                self._can_continue = False
                return None
            if self.distribution != "logprobs" and "logprobs" in str(exc) and not prefix:
                raise _NoLogprobs() from None
            raise
        if prefix:
            self._can_continue = True
        add_usage(ledger, data.get("usage") if isinstance(data, dict) else None)
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None:
            raise self._fail("POST", "/chat/completions", "answer has no choices")
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not isinstance(content, list) or not content or not isinstance(content[0], dict):
            if self.distribution != "logprobs" and not prefix:
                raise _NoLogprobs()
            raise self._fail("POST", "/chat/completions", "answer has no logprobs (the server may not support "
                             "them: pass distribution=samples)")
        top = content[0].get("top_logprobs")
        if not isinstance(top, list) or not top:
            raise self._fail("POST", "/chat/completions", "answer has no top_logprobs")
        out: dict[Any, float] = {}
        for entry in top:
            if not isinstance(entry, dict) or not is_number(entry.get("logprob")):
                continue
            token, value = entry.get("token"), float(entry["logprob"])
            if not math.isfinite(value) and value != float("-inf"):
                raise self._fail("POST", "/chat/completions", "answer has non-finite logprobs (NaN)")
            if by_id:
                if isinstance(token, str) and token.startswith("token_id:"):
                    try:
                        token = int(token[len("token_id:"):])
                    except ValueError:
                        continue
                else:
                    continue
            elif not isinstance(token, str):
                continue
            out[token] = max(value, out.get(token, float("-inf")))
        if not out:
            raise self._fail("POST", "/chat/completions", "answer's top_logprobs hold no usable tokens")
        if use_ids:
            if any(t not in out for t in body["logprob_token_ids"]):
                if self._token_id_logprobs:
                    raise self._fail("POST", "/chat/completions", "answer lacks the logprobs of the asked "
                                     "logprob_token_ids")
                self._token_id_logprobs = False  # the server ignores the field: top_logprobs from now on
            else:
                self._token_id_logprobs = True
        return out

    async def _question_scores(self, client: Any, question: Question, names: list[str],
                               ledger: dict[str, int]) -> list[float]:
        """Log-probability per option name of `question` from first-token logprobs (see module docstring)."""
        ids = await self._tokens(client, names)
        by_id = ids is not None
        scores = [0.0] * len(names)

        async def node(prefix_ids: list[int], prefix_text: str, members: list[int], depth: int) -> None:
            asked = sorted({ids[names[m]][len(prefix_ids)] for m in members
                            if len(ids[names[m]]) > len(prefix_ids)}) if by_id else None
            if prefix_ids or prefix_text:
                if self._can_continue is False:
                    return
                text = await self._text_of(client, prefix_ids) if by_id else prefix_text
                top = await self._top(client, question.prompt, text, by_id, ledger, asked)
                if top is None:
                    return
            else:
                top = await self._top(client, question.prompt, "", by_id, ledger, asked)
                assert top is not None
            finite = [v for v in top.values() if math.isfinite(v)]
            floor = min(finite) if finite else LOG_ZERO
            groups: dict[Any, list[int]] = {}
            ended: list[int] = []
            for m in members:
                if by_id:
                    rest_ids = ids[names[m]][len(prefix_ids):]
                    if not rest_ids:
                        ended.append(m)
                        continue
                    groups.setdefault(rest_ids[0], []).append(m)
                else:
                    rest = names[m][len(prefix_text):]
                    if not rest:
                        ended.append(m)
                        continue
                    # Longest listed token the label continues with (leading spaces dropped at the reply's start).
                    best = None
                    for token in top:
                        piece = token if prefix_text else token.lstrip()
                        if piece and rest.startswith(piece) and (best is None or len(piece) > len(best[1])):
                            best = (token, piece)
                    groups.setdefault(best if best else ("", m), []).append(m)
            # A label that ends here (a prefix of another label): the chance the reply stops, i.e. not continuing
            # with a listed token of the labels that go on.
            if ended:
                going = sum(math.exp(top.get(k if by_id else k[0], LOG_ZERO)) for k in groups if
                            (k in top if by_id else k[0] in top))
                for m in ended:
                    scores[m] += math.log(max(1.0 - going, 1e-6))
            valued = []
            for key, group in groups.items():
                listed = (key in top) if by_id else (key[0] in top)
                valued.append((top[key if by_id else key[0]] if listed else floor, listed, key, group))
            valued.sort(key=lambda v: -v[0])
            branches = FOLLOW_UP_BRANCHES_AT_ROOT if depth == 0 else 1
            for value, listed, key, group in valued:
                for m in group:
                    scores[m] += value
                if len(group) == 1:
                    continue
                if listed and depth < MAX_FOLLOW_UPS and branches > 0:
                    branches -= 1
                    if by_id:
                        await node(prefix_ids + [key], "", group, depth + 1)
                    else:
                        await node([], prefix_text + key[1] if prefix_text else key[1], group, depth + 1)
                else:  # not followed up: the group's probability is shared evenly
                    for m in group:
                        scores[m] -= math.log(len(group))

        await node([], "", list(range(len(names))), 0)
        return [max(s, LOG_ZERO) for s in scores]

    async def _sampled(self, client: Any, question: Question, names: list[str], ledger: dict[str, int]
                       ) -> list[float]:
        """Log of the smoothed share of `samples` structured answers that picked each option."""
        body = {"model": self.served_model, "messages": [{"role": "user", "content": question.prompt}],
                "n": self.samples, "temperature": 1.0, "max_tokens": 64,
                "response_format": _label_schema(names)}
        data = await self._request(client, "POST", "/chat/completions", body)
        add_usage(ledger, data.get("usage") if isinstance(data, dict) else None)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise self._fail("POST", "/chat/completions", "answer has no choices")
        counts: Counter = Counter()
        for choice in choices:
            label = _parse_label(_content(choice), names)
            if label is not None:
                counts[label] += 1
        total = sum(counts.values()) + SAMPLE_SMOOTHING * len(names)
        return [math.log((counts[n] + SAMPLE_SMOOTHING) / total) for n in names]

    def _decide_job(self, row: DecisionRow) -> Any:
        async def job(client: Any) -> DecisionAnswer:
            ledger: dict[str, int] = {}
            answers: list[list[float] | None] = []
            method = "samples" if self.distribution == "samples" else "logprobs"
            for question in row.questions:
                names = [o[0] for o in question.options] if question.kind == "choice" else ["yes", "no"]
                if method == "logprobs":
                    try:
                        answers.append(await self._question_scores(client, question, names, ledger))
                        continue
                    except _NoLogprobs:
                        self.distribution = method = "samples"
                answers.append(await self._sampled(client, question, names, ledger))
            requests = ledger.pop("requests", 0)
            usage = self._spent(ledger, requests)
            return DecisionAnswer(answers, usage, method)

        return job

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """Greedy answers; with `choices`, a structured answer `{"label": <one of choices>}` (returned as the
        label); with `json_schema`, JSON following it."""
        if choices is not None and json_schema is not None:
            raise ConfigError("generate() takes choices or json_schema, not both")
        body: dict[str, Any] = {"model": self.served_model, "max_tokens": max(int(max_tokens), 1), "temperature": 0}
        if choices is not None:
            body["response_format"] = _label_schema([str(c) for c in choices])
            body["max_tokens"] = max(body["max_tokens"], 16 + max(len(c) for c in choices))
        elif json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer",
                                                                             "schema": json_schema}}

        def make(prompt: str) -> Any:
            async def job(client: Any) -> str:
                data = await self._request(client, "POST", "/chat/completions",
                                           dict(body, messages=[{"role": "user", "content": prompt}]))
                self._spent(data.get("usage") if isinstance(data, dict) else None)
                choice = (data.get("choices") or [None])[0] if isinstance(data, dict) else None
                if not isinstance(choice, dict):
                    raise self._fail("POST", "/chat/completions", "answer has no choices")
                text = _content(choice)
                if choices is not None:
                    label = _parse_label(text, [str(c) for c in choices])
                    text = label if label is not None else text
                return self._redact(text.strip())

            return job

        jobs = [make(p) for p in prompts]
        return self._per_prompt(self._run(lambda: self._gather(jobs, "generating")) if jobs else [])


class _NoLogprobs(Exception):
    """The server answers without logprobs (or rejects the field): switch to sampled distributions."""


def _label_schema(names: list[str]) -> dict[str, Any]:
    """`response_format` asking for `{"label": one of names}` (OpenAI structured outputs; vLLM honours it)."""
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": list(names)}},
              "required": ["label"], "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}


def _content(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _parse_label(text: str, names: list[str]) -> str | None:
    """The label of a structured answer (`{"label": ...}`), or of a bare answer equal to a label."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text.strip()
    if isinstance(value, dict):
        value = value.get("label")
    return value if isinstance(value, str) and value in names else None

"""What the API backends (`chat`, `decisions`, `systemone`) share: the questions the Labeler asks them, their answers,
the token ledger, and the plan for label sets larger than an endpoint's option limit.

These backends have no token-level `score`: the Labeler hands them one `DecisionRow` per row through
`decide(rows)` (the `supports_decide` capability) and gets one `DecisionAnswer` per row back. A single-label row is
one choice question whose options are the (candidate) labels, with their descriptions; a multi-label row is one
predicate per label. Answers are log-probabilities per option, so calibration, caching and evaluation work on them
exactly as on token scores; a question the endpoint declines is a refusal (the row's status is `refused`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.backends.base import Backend
from llmlabel.backends.http import HTTPClient
from llmlabel.errors import ConfigError

#: log-probability stored for an option the endpoint gave probability 0 (JSON has no -inf; exp() of it is 0.0)
LOG_ZERO = -1e4
#: characters per token assumed when no tokenizer is known (an over-estimate for English, so texts are cut early
#: rather than rejected by the server)
CHARS_PER_TOKEN_ESTIMATE = 3


@dataclass(frozen=True)
class Question:
    """One question about a row.

    `kind` is 'choice' (pick one of `options`, (name, description) pairs) or 'predicate' (is `instructions` true?).
    `prompt` is the whole user message for endpoints that take free text (chat): the task's prompt template
    rendered with these options.
    """

    kind: str
    name: str
    instructions: str
    options: tuple[tuple[str, str | None], ...] = ()
    prompt: str = ""


@dataclass(frozen=True)
class DecisionRow:
    """A row as the API backends see it: the task's `instructions`, the row's text (`state`), demonstrations as
    (text, answer) pairs, and its questions (one choice, or one predicate per label)."""

    instructions: str
    state: str
    examples: tuple[tuple[str, str], ...]
    questions: tuple[Question, ...]


@dataclass
class DecisionAnswer:
    """A row's answers, one per question: log-probabilities per option (a predicate: [log P(true), log P(false)]),
    or None where the endpoint refused that question (`refusals` says why). `usage` holds the tokens the row's
    requests cost; `method` how the distribution was obtained ('endpoint', 'logprobs', 'samples')."""

    answers: list[list[float] | None]
    usage: dict[str, int] = field(default_factory=dict)
    method: str = "endpoint"
    refusals: list[str] = field(default_factory=list)

    def as_raw(self) -> dict[str, Any]:
        """JSON form stored in the result cache."""
        return {"answers": self.answers, "usage": self.usage, "method": self.method, "refusals": self.refusals}


def log_prob(p: Any) -> float:
    """log(p) for a probability from an endpoint; 0 (or a bad value) maps to `LOG_ZERO`."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return LOG_ZERO
    return math.log(p) if p > 0 and math.isfinite(p) else LOG_ZERO


# -- the token ledger ------------------------------------------------------------------------------------------------
LEDGER_FIELDS = ("requests", "input_tokens", "cached_tokens", "output_tokens")


def add_usage(ledger: dict[str, int], usage: Any, requests: int = 1) -> dict[str, int]:
    """Add one response's `usage` (OpenAI chat/completions, Decisions or System One shapes) to `ledger`."""
    ledger["requests"] = ledger.get("requests", 0) + requests
    if not isinstance(usage, dict):
        return ledger

    def number(*path: str) -> int:
        value: Any = usage
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    inputs = number("input_tokens") or number("prompt_tokens")
    cached = number("input_tokens_details", "cached_tokens") or number("prompt_tokens_details", "cached_tokens")
    outputs = number("output_tokens") or number("completion_tokens")
    for key, value in (("input_tokens", inputs), ("cached_tokens", cached), ("output_tokens", outputs)):
        ledger[key] = ledger.get(key, 0) + value
    return ledger


def load_prices(prices: Any, model: str) -> dict[str, float] | None:
    """The price table option: a dict {input, cached, output} in currency units per million tokens, or a JSON file
    (path) mapping model names to such dicts (the served model's entry is used). None: no costs are computed."""
    if prices is None:
        return None
    if isinstance(prices, (str, Path)):
        path = Path(str(prices)).expanduser()
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"prices file {path} not found") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"prices file {path} is not a JSON price table ({type(exc).__name__})") from None
        if isinstance(table, dict) and model in table:
            prices = table[model]
        elif isinstance(table, dict) and "default" in table:
            prices = table["default"]
        else:
            prices = table
    if not isinstance(prices, dict) or not set(prices) <= {"input", "cached", "output"} or not prices:
        raise ConfigError("prices must map input, cached and output to prices per million tokens, e.g. "
                          "{input: 0.15, cached: 0.075, output: 0.6}, or name a JSON file of such tables by model")
    out = {}
    for key in ("input", "cached", "output"):
        value = prices.get(key, prices.get("input", 0.0) if key == "cached" else 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"prices.{key} must be a number >= 0, got {value!r}")
        out[key] = float(value)
    return out


def ledger_report(ledger: dict[str, int], prices: dict[str, float] | None, rows: int = 0) -> dict[str, Any]:
    """The ledger as reported: totals, per computed row, and the cost when a price table is given (cached input
    tokens are billed at the cached price, the rest of the input at the input price)."""
    out: dict[str, Any] = {key: int(ledger.get(key, 0)) for key in LEDGER_FIELDS}
    if rows:
        out["per_row"] = {key: round(out[key] / rows, 3) for key in LEDGER_FIELDS}
    if prices is not None:
        fresh = max(out["input_tokens"] - out["cached_tokens"], 0)
        cost = (fresh * prices["input"] + out["cached_tokens"] * prices["cached"]
                + out["output_tokens"] * prices["output"]) / 1e6
        out["prices_per_million"] = prices
        out["cost"] = round(cost, 6)
    return out


# -- label sets beyond an endpoint's option limit --------------------------------------------------------------------
def first_word(name: str) -> str:
    """A label's first word (labels like 'card_arrival' and 'card linking' share 'card'): the first level of the
    label trie, built on words so that it needs no tokenizer."""
    return re.split(r"[\s_\-/:.]+", name.strip(), maxsplit=1)[0].lower() or name


def label_groups(names: list[str], limit: int) -> list[list[int]]:
    """Label indices in at most `limit` groups of at most `limit` labels, for a two-level question.

    Labels are grouped by the first level of the label trie (their first word); neighbouring groups (in order of
    that word) are merged until there are at most `limit` groups, and a group larger than `limit` is split.
    """
    if limit < 2:
        raise ConfigError(f"an option limit of {limit} cannot hold a question")
    if len(names) > limit * limit:
        raise ConfigError(f"{len(names)} labels do not fit a two-level question of at most {limit} options each "
                          f"({limit * limit} labels); give a shortlist (selection.restrict_labels)")
    by_word: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_word.setdefault(first_word(name), []).append(i)
    words = []
    for word in sorted(by_word):
        members = by_word[word]
        words += [members[j:j + limit] for j in range(0, len(members), limit)]
    size = max(math.ceil(len(names) / limit), max(len(w) for w in words))
    while True:
        groups: list[list[int]] = []
        for members in words:
            if groups and len(groups[-1]) + len(members) <= size:
                groups[-1] = groups[-1] + members
            else:
                groups.append(list(members))
        if len(groups) <= limit:
            return groups
        size += 1


@dataclass
class OptionPlan:
    """How a task's labels are asked on an endpoint: 'direct' (every label is an option), 'shortlist' (each row's
    candidate labels from `restrict_labels` neighbours) or 'two_level' (a group, then a label in the chosen group)."""

    strategy: str
    limit: int
    labels: int
    groups: list[list[int]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The plan as written into the report."""
        out: dict[str, Any] = {"strategy": self.strategy, "option_limit": self.limit, "labels": self.labels}
        if self.groups:
            out["groups"] = len(self.groups)
            out["largest_group"] = max(len(g) for g in self.groups)
        return out


def plan_options(names: list[str], limit: int, shortlist: int | None) -> OptionPlan:
    """The plan for asking `names` on an endpoint that takes at most `limit` options per question.

    All labels fit: direct. Otherwise a shortlist when the Labeler has per-row candidates (`shortlist`: their
    number, which must fit the limit), else a two-level question over the label trie's first level.
    """
    if len(names) <= limit:
        return OptionPlan("direct", limit, len(names))
    if shortlist is not None:
        if shortlist > limit:
            raise ConfigError(f"restrict_labels {shortlist} is more than this endpoint's {limit} options per "
                              f"question; set selection.restrict_labels to {limit} or fewer")
        return OptionPlan("shortlist", limit, len(names))
    return OptionPlan("two_level", limit, len(names), label_groups(names, limit))


# -- the common backend base -----------------------------------------------------------------------------------------
class APIBackend(HTTPClient, Backend):
    """Base of the backends that label through `decide` (chat completions, decision endpoints).

    Token counting uses a local tokenizer when one is known (`tokenizer=`, or the default model), else an estimate
    of `CHARS_PER_TOKEN_ESTIMATE` characters per token; the context length is `max_context=`, else the server's
    `GET /models` `max_model_len`, else 32768.
    """

    supports_decide = True
    #: most options one question may have on this endpoint
    max_options: int = 26
    #: wire format version: part of every cache key (a change in how requests are built invalidates old results)
    wire_version: str = "1"
    #: endpoint kind, part of the model id and so of every cache key
    endpoint: str = ""

    def _init_api(self, model: str | None, base_url: str, served_model: str | None, tokenizer: str | None,
                  max_context: int | None, prices: Any, http: dict[str, Any]) -> None:
        self._init_http(base_url, **http)
        from llmlabel.models import DEFAULT_ALIASES

        default = model is None or model.lower() in DEFAULT_ALIASES
        if served_model:
            self.served_model = served_model
        elif not default:
            self.served_model = str(model)
        else:  # the default model is served under its converted folder's path (`vllm serve <folder>`)
            from llmlabel.models import resolve_model

            self.served_model = resolve_model(None)
        self.tokenizer = None
        if tokenizer is not None or default:
            from llmlabel.backends.openai import load_tokenizer

            self.tokenizer = load_tokenizer(None if default else model, tokenizer)
        if max_context is not None and int(max_context) < 16:
            raise ConfigError(f"max_context must be at least 16 tokens, got {max_context}")
        self._max_context = None if max_context is None else int(max_context)
        self.prices = load_prices(prices, self.served_model)
        self.model_id = f"{self.endpoint}/v{self.wire_version}:{self.base_url}:{self.served_model}"
        #: tokens and requests spent by this backend (the run's ledger)
        self.ledger: dict[str, int] = {key: 0 for key in LEDGER_FIELDS}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, served_model={self.served_model!r}, "
                f"api_key={'set' if self._api_key else 'unset'})")

    # -- Backend ------------------------------------------------------------------------------------------------
    def score(self, prompts: list[str], candidates: list[list[str]], first_token: bool = False) -> list[list[float]]:
        raise ConfigError(f"the '{self.name}' backend has no token-level scores; it labels through the Labeler "
                          "(mode score or generate); use openai, vllm or transformers for methods that need them")

    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        raise ConfigError(f"the '{self.name}' backend answers decision questions only; use mode: score")

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The messages' contents: an API backend sends a prompt as one user message, the server applies its own
        chat template."""
        return "\n\n".join(m["content"] for m in messages)

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text.encode("utf-8", "surrogatepass")) / CHARS_PER_TOKEN_ESTIMATE)

    def truncate(self, text: str, max_tokens: int) -> str:
        if self.tokenizer is not None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max(max_tokens, 0)])
        cut = max(max_tokens, 0) * CHARS_PER_TOKEN_ESTIMATE
        data = text.encode("utf-8", "surrogatepass")
        return text if len(data) <= cut else data[:cut].decode("utf-8", "ignore")

    @property
    def max_context(self) -> int:
        if self._max_context is None:
            length = None
            try:
                async def fetch() -> Any:
                    async with self._client() as client:
                        return await self._request(client, "GET", "/models")

                body = self._run(fetch)
                entries = body.get("data", []) if isinstance(body, dict) else []
                mine = [e for e in entries if isinstance(e, dict) and e.get("id") == self.served_model] or [
                    e for e in entries if isinstance(e, dict)][:1]
                length = mine[0].get("max_model_len") if mine else None
            except Exception:  # noqa: BLE001 - a server without /models (hosted APIs) keeps the default
                length = None
            self._max_context = length if isinstance(length, int) and length > 0 else 32768
        return self._max_context

    # -- decide -------------------------------------------------------------------------------------------------
    def decide(self, rows: list[DecisionRow]) -> list[DecisionAnswer]:
        """One answer per row (a row that failed for good: its `RequestFailed`, inside a `PartialFailure`)."""
        jobs = [self._decide_job(row) for row in rows]
        return self._per_prompt(self._run(lambda: self._gather(jobs, "deciding")) if jobs else [])

    def _decide_job(self, row: DecisionRow) -> Any:
        raise NotImplementedError

    def _spent(self, usage: Any, requests: int = 1) -> dict[str, int]:
        """Record one response's usage in the run's ledger; returns the row's share (for its answer)."""
        mine = add_usage({}, usage, requests)
        for key, value in mine.items():
            self.ledger[key] = self.ledger.get(key, 0) + value
        return mine

    def api_report(self, rows: int = 0) -> dict[str, Any]:
        """The endpoint, its option limit and the run's token and cost ledger, for the report."""
        return {"endpoint": self.endpoint, "wire_version": self.wire_version, "option_limit": self.max_options,
                "served_model": self.served_model, "ledger": ledger_report(self.ledger, self.prices, rows)}



class DecisionEndpoint(APIBackend):
    """Base of the backends whose endpoint takes structured questions (`decisions`, `systemone`): one constructor,
    one check of the option and question limits. A subclass sets `endpoint`, `default_base_url`, `option_cap`
    (most options per question) and `question_cap` (most questions per request; None: no upper bound, only >= 1),
    and implements `request_body`, `_check_response` and `_read_answers`.

    Args:
        model: the served model name (None = the embedded default model's folder path, as vLLM names it).
        base_url: the API root (default: the subclass's `default_base_url`).
        max_options: options per question (default and upper bound: `option_cap`).
        max_questions: questions per request (default: `question_cap`, else `default_questions`); more are split
            over several requests.
        api_key, api_key_env, api_key_file, served_model, tokenizer, max_context, prices, concurrency, timeout,
            max_retries, backoff: as for the `chat` backend.
    """

    default_base_url: str = "http://127.0.0.1:8000/v1"
    option_cap: int = 26
    question_cap: int | None = None
    #: questions per request when the endpoint has no upper bound
    default_questions: int = 64

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 served_model: str | None = None, tokenizer: str | None = None, max_options: int | None = None,
                 max_questions: int | None = None, max_context: int | None = None, prices: Any = None,
                 concurrency: int = 16, timeout: float = 60.0, max_retries: int = 5, backoff: float = 0.5,
                 api_key_env: str = "OPENAI_API_KEY", api_key_file: str | None = None):
        max_options = self.option_cap if max_options is None else max_options
        max_questions = (self.question_cap or self.default_questions) if max_questions is None else max_questions
        if not 2 <= int(max_options) <= self.option_cap:
            raise ConfigError(f"max_options must be between 2 and {self.option_cap}, got {max_options}")
        if self.question_cap is None and int(max_questions) < 1:
            raise ConfigError(f"max_questions must be at least 1, got {max_questions}")
        if self.question_cap is not None and not 1 <= int(max_questions) <= self.question_cap:
            raise ConfigError(f"max_questions must be between 1 and {self.question_cap}, got {max_questions}")
        self._init_api(model, self.default_base_url if base_url is None else base_url, served_model, tokenizer,
                       max_context, prices,
                       dict(api_key=api_key, api_key_env=api_key_env, api_key_file=api_key_file,
                            concurrency=concurrency, timeout=timeout, max_retries=max_retries, backoff=backoff))
        self.max_options = int(max_options)
        self.max_questions = int(max_questions)
        self._init_state()

    def _init_state(self) -> None:
        """Hook: a subclass's own per-run state, set up at the end of the constructor."""

    def request_body(self, row: DecisionRow, start: int = 0) -> dict[str, Any]:
        """The request body for `row`'s questions `start .. start + max_questions - 1`."""
        raise NotImplementedError

    def _read_answers(self, data: Any, body: dict[str, Any], questions: tuple[Question, ...],
                      refusals: list[str]) -> list[list[float] | None]:
        """One response's answers to `questions` (log-probabilities per option, None for a refusal, whose reason
        goes into `refusals`); a malformed response raises `self._fail(...)`."""
        raise NotImplementedError

    def _check_response(self, data: Any, body: dict[str, Any]) -> None:
        """Raise `self._fail(...)` when a response does not have the answers' overall shape (before its usage is
        counted)."""

    def _decide_job(self, row: DecisionRow) -> Any:
        async def job(client: Any) -> DecisionAnswer:
            answers: list[list[float] | None] = []
            refusals: list[str] = []
            usage: dict[str, int] = {}
            for start in range(0, len(row.questions), self.max_questions):
                body = self.request_body(row, start)
                data = await self._request(client, "POST", f"/{self.endpoint}", body)
                self._check_response(data, body)
                for key, value in self._spent(data.get("usage")).items():
                    usage[key] = usage.get(key, 0) + value
                answers += self._read_answers(data, body, row.questions[start:start + self.max_questions], refusals)
            return DecisionAnswer(answers, usage, "endpoint", refusals)

        return job


def summary_line(api: dict[str, Any]) -> str:
    """One CLI line: the endpoint, how labels were asked, and the ledger (with the cost when priced)."""
    ledger = api.get("ledger", {})
    options = api.get("options", {})
    plan = f", {options['strategy']} options (limit {options['option_limit']})" if options else ""
    line = (f"{api.get('endpoint')} endpoint{plan}: {ledger.get('requests', 0)} requests, "
            f"{ledger.get('input_tokens', 0)} input tokens ({ledger.get('cached_tokens', 0)} cached), "
            f"{ledger.get('output_tokens', 0)} output tokens")
    if "cost" in ledger:
        line += f", cost {ledger['cost']:.4f}"
    return line

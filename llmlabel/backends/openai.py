"""OpenAI-compatible HTTP backend: any server that speaks `/v1/completions` (e.g. `vllm serve`), via `httpx`.

Prompts and candidates are sent as token ids built by `TokenizerMixin` from the model's local tokenizer, so the
server scores exactly the tokens the other backends score. Scoring walks a token trie of the candidates
(`llmlabel.backends.trie`): each trie row (the root, and every node with children) is one token-id prompt,
`prompt_ids + path to the node`, whose next-token logprobs are wanted for the node's child tokens only. Per prompt,
rows go out in completions requests whose `prompt` is a batch of such sequences, with `max_tokens: 1, logprobs: 1,
logprob_token_ids: [the rows' child ids, at most 128], return_tokens_as_token_ids: true` (vLLM's extensions):
`choices[k].logprobs.top_logprobs[0]` then maps `"token_id:<id>"` to the logprob of every asked id (plus the
sampled token). No echo and no prompt logprobs, so vLLM's prefix cache serves the shared prompt, and a label set of
single tokens costs one row per prompt.

Servers without `logprob_token_ids` (a 4xx naming it, or answers lacking the asked ids) are scored the old way from
then on: per prompt, one request whose `prompt` is the batch `[prompt_ids + cand_ids for each candidate]` with
`echo: true, logprobs: 0, max_tokens: 1`; the echoed `choices[k].logprobs.token_logprobs` has one entry per prompt
token (the first is `null`, nothing precedes it) followed by the generated token's, so candidate `k`'s tokens sit
at positions `len(prompt_ids) .. len(prompt_ids) + len(cand_ids) - 1`.

Generation is greedy; `choices` and `json_schema` use vLLM's `structured_outputs` extension (`{"choice": [...]}`,
`{"json": schema}`). Requests run concurrently (asyncio + one `httpx.AsyncClient`, at most `concurrency` in
flight) and are retried with exponential backoff and jitter on connection errors, timeouts (each attempt has one
deadline, so a server that trickles its answer cannot hold a request forever), bodies that are not JSON (truncated
answers), 429 and 5xx answers, honouring `Retry-After` on 429 and 503. A request that still fails fails only its
own prompts: the others' results are returned inside a `PartialFailure`, so the labeler keeps them and records
just the failed rows (with the reason), which a re-run retries.

The API key comes from the environment (`OPENAI_API_KEY`, or the variable named by `api_key_env`) or a key file
(`api_key_file`); recipes cannot carry it (see `llmlabel.config`). It is sent only in the Authorization header and
is kept out of `model_id` (so out of cache keys and reports), `repr`, error messages and generated answers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from llmlabel.backends.base import Backend, TokenizerMixin
# The HTTP machinery lives in `http.py` (shared with the chat, decisions and systemone backends); its names stay
# importable from here.
from llmlabel.backends.http import (  # noqa: F401
    BREAKER_FAILURES, MAX_RETRY_WAIT, POOL_SHARD, PROGRESS_MIN_REQUESTS, RETRY_AFTER_STATUSES, HTTPClient,
    RequestFailed, RequestRejected, is_number, one_line)
from llmlabel.errors import ConfigError, LLMLabelError, ModelError, PartialFailure

T = TypeVar("T")
log = logging.getLogger("llmlabel")

#: fallback context length when the server does not report one and the tokenizer's is unset or huge
MAX_FALLBACK_CONTEXT = 8192
#: most token ids one request may ask logprobs for (vLLM's `MAX_LOGPROB_TOKEN_IDS`)
MAX_LOGPROB_TOKEN_IDS = 128
#: request fields of trie scoring; a 4xx naming one means the server lacks them (then: echo scoring)
TOKEN_ID_FIELDS = ("logprob_token_ids", "return_tokens_as_token_ids")


class _NoTokenIdLogprobs(Exception):
    """A server answered without the logprobs of the asked `logprob_token_ids`: it ignores the field."""


class _Pack:
    """Trie rows sent in one completions request: their prompts share one `logprob_token_ids` list.

    `rows[k]` is a trie row (see `CandidateTrie.requests`), `paths[k]` its path, `asked[k]` the ids read for it;
    `ids` is the union of `asked`, at most `MAX_LOGPROB_TOKEN_IDS` long.
    """

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.paths: list[list[int]] = []
        self.asked: list[list[int]] = []
        self.ids: list[int] = []


def _packs(trie: Any, limit: int) -> list[_Pack]:
    """`trie`'s rows (split into pieces of at most `limit` asked ids) packed greedily, in order, into requests."""
    from llmlabel.backends.trie import chunked

    packs: list[_Pack] = []
    pack, known = _Pack(), set()
    for row, (path, children) in enumerate(trie.requests()):
        for asked in chunked(children, limit):
            new = [t for t in asked if t not in known]
            if pack.rows and len(pack.ids) + len(new) > limit:
                packs.append(pack)
                pack, known = _Pack(), set()
                new = list(asked)
            pack.rows.append(row)
            pack.paths.append(path)
            pack.asked.append(asked)
            pack.ids.extend(new)
            known.update(new)
    if pack.rows:
        packs.append(pack)
    return packs


def _logprobs(choice: dict[str, Any]) -> dict[str, Any]:
    """A choice's `logprobs` object; {} when it is missing or not an object."""
    value = choice.get("logprobs")
    return value if isinstance(value, dict) else {}


def load_tokenizer(model: str | None, tokenizer: str | None) -> Any:
    """The model's Hugging Face tokenizer: from `tokenizer`, else from `model` (None = the embedded default)."""
    from transformers import AutoTokenizer

    from llmlabel.models import resolve_model

    hint = "pass tokenizer=/path/to/hf-model-folder (any folder holding the served model's tokenizer files)"
    if tokenizer is not None:
        source = str(Path(tokenizer).expanduser()) if Path(tokenizer).expanduser().exists() else tokenizer
    else:
        try:
            source = resolve_model(model)
        except ModelError as exc:
            raise ModelError(f"cannot load a tokenizer for served model '{model}' ({exc}); {hint}") from None
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds (OSError, ValueError, HF errors)
        reason = one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)
        raise ModelError(f"cannot load a tokenizer from '{source}' ({reason}); {hint}") from None


class OpenAIBackend(TokenizerMixin, HTTPClient, Backend):
    """A model behind an OpenAI-compatible completions API (vLLM's `vllm serve`, and similar servers).

    Args:
        model: what the server calls the model, and where the local tokenizer comes from. None = the embedded
            default model, served under its converted folder's path (as `vllm serve <that folder>` names it).
        base_url: the API root, e.g. "http://127.0.0.1:8000/v1".
        api_key: bearer token, for Python callers (recipes refuse it: use the environment or a key file).
        api_key_env: environment variable holding the key (default `OPENAI_API_KEY`; unset = no key sent).
        api_key_file: file whose first line is the key; takes precedence over the environment.
        served_model: the server's model name when it differs from `model` (e.g. `--served-model-name`).
        tokenizer: path (or Hub id) of the tokenizer to use; default: loaded from `model`.
        concurrency: most requests in flight at once.
        timeout: seconds allowed for each request.
        max_retries: extra attempts after a connection error, timeout, 429 or 5xx answer.
        backoff: first retry wait in seconds; doubles each retry, with random jitter (a `Retry-After` header on a
            429 or 503 answer is honoured instead, up to `MAX_RETRY_WAIT`).
    """

    name = "openai"
    supports_choices = True
    supports_json_schema = True

    def __init__(self, model: str | None = None, base_url: str = "http://127.0.0.1:8000/v1",
                 api_key: str | None = None, served_model: str | None = None, tokenizer: str | None = None,
                 concurrency: int = 16, timeout: float = 60.0, max_retries: int = 5, backoff: float = 0.5,
                 api_key_env: str = "OPENAI_API_KEY", api_key_file: str | None = None):
        self._init_http(base_url, api_key, api_key_env, api_key_file, concurrency, timeout, max_retries, backoff)
        self.tokenizer = load_tokenizer(model, tokenizer)
        from llmlabel.models import DEFAULT_ALIASES, resolve_model

        if served_model:
            self.served_model = served_model
        elif model is not None and model.lower() not in DEFAULT_ALIASES:
            self.served_model = model
        else:  # the default model is served under its converted folder's path (`vllm serve <folder>`)
            self.served_model = resolve_model(None)
        self.model_id = f"openai:{self.base_url}:{self.served_model}"
        self._max_context: int | None = None
        #: whether the server honours `logprob_token_ids` (None: not known yet; False: score with echo)
        self._token_id_scoring: bool | None = None

    def __repr__(self) -> str:
        return (f"OpenAIBackend(base_url={self.base_url!r}, served_model={self.served_model!r}, "
                f"concurrency={self.concurrency}, api_key={'set' if self._api_key else 'unset'})")

    # -- context --------------------------------------------------------------------------------------------------
    @property
    def max_context(self) -> int:
        """`max_model_len` from the server's `GET /models` (asked once, with retries), else the tokenizer's limit
        (at most 8192)."""
        if self._max_context is not None:
            return self._max_context

        async def fetch() -> Any:
            async with self._client() as client:
                return await self._request(client, "GET", "/models")

        try:
            body = self._run(fetch)
            entries = body.get("data", []) if isinstance(body, dict) else []
        except RequestRejected as exc:
            if exc.status in (401, 403):  # a wrong key fails every request: say so now, once
                raise
            log.warning("cannot read the context length from GET %s/models (%s); assuming the tokenizer's",
                        self.base_url, exc)
            entries = []
        except LLMLabelError as exc:  # a server without /models, or one that keeps failing: use the fallback
            log.warning("cannot read the context length from GET %s/models (%s); assuming the tokenizer's",
                        self.base_url, exc)
            entries = []
        entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
        mine = [e for e in entries if e.get("id") == self.served_model] or entries[:1]
        length = mine[0].get("max_model_len") if mine else None
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            length = getattr(self.tokenizer, "model_max_length", None)
            if not isinstance(length, int) or length <= 0:
                length = MAX_FALLBACK_CONTEXT
            length = min(length, MAX_FALLBACK_CONTEXT)
        self._max_context = length  # asked once: the labeler reads it for every row
        return length

    # -- scoring --------------------------------------------------------------------------------------------------
    def score_ids(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """`score` on token ids: one request per candidate-trie row (see module docstring), or echo where unsupported.

        The first call finds out whether the server honours `logprob_token_ids`: a server that rejects the field
        (an HTTP 4xx naming it) or ignores it (answers without the asked ids) is scored with echoed prompt
        log-probabilities from then on.
        """
        if self._token_id_scoring is not False:
            try:
                scores = self._score_ids_token_ids(prompt_ids, cand_ids)
            except _NoTokenIdLogprobs:
                self._token_id_scoring = False
            except PartialFailure:
                self._token_id_scoring = True  # some answers held the asked ids: the server honours the field
                raise
            except RequestRejected as exc:
                if self._token_id_scoring is not None or not any(f in str(exc) for f in TOKEN_ID_FIELDS):
                    raise
                self._token_id_scoring = False
            else:
                if any(cand_ids):
                    self._token_id_scoring = True
                return scores
        return self._score_ids_echo(prompt_ids, cand_ids)

    def _score_ids_token_ids(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]
                             ) -> list[list[float]]:
        """Trie scoring: per prompt, the trie rows packed into completions requests of at most 128 asked ids."""
        from llmlabel.backends.trie import tries_for

        tries = tries_for(cand_ids)
        packs: dict[int, list[_Pack]] = {}  # id(trie) -> its requests, planned once per distinct candidate set
        jobs, owners = [], []
        for i, trie in tries.items():
            if id(trie) not in packs:
                packs[id(trie)] = _packs(trie, MAX_LOGPROB_TOKEN_IDS)
            for pack in packs[id(trie)]:
                jobs.append(self._token_id_job(prompt_ids[i], pack))
                owners.append(i)
        answers = self._run(lambda: self._gather(jobs, "scoring")) if jobs else []
        rows = {i: [{} for _ in range(len(trie) + 1)] for i, trie in tries.items()}
        failed: dict[int, RequestFailed] = {}
        for i, answer in zip(owners, answers):
            if isinstance(answer, RequestFailed):
                failed.setdefault(i, answer)  # one failed request fails its prompt; the others are kept
                continue
            for row, values in answer:
                rows[i][row].update(values)
        results: list[Any] = [[] for _ in cand_ids]
        for i, trie in tries.items():
            results[i] = failed[i] if i in failed else trie.combine(rows[i])
        return self._per_prompt(results)

    def _token_id_job(self, prompt: list[int], pack: _Pack
                      ) -> Callable[[Any], Awaitable[list[tuple[int, dict[int, float]]]]]:
        body = {"model": self.served_model, "prompt": [prompt + path for path in pack.paths], "max_tokens": 1,
                "temperature": 0, "logprobs": 1, "logprob_token_ids": pack.ids, "return_tokens_as_token_ids": True}

        async def job(client: Any) -> list[tuple[int, dict[int, float]]]:
            data = await self._request(client, "POST", "/completions", body)
            choices = self._choices(data, len(pack.paths), "/completions")
            out = []
            for choice, row, asked in zip(choices, pack.rows, pack.asked):
                top = _logprobs(choice).get("top_logprobs")
                step = top[0] if isinstance(top, list) and top and isinstance(top[0], dict) else {}
                values: dict[int, float] = {}
                for name, value in step.items():
                    if isinstance(name, str) and name.startswith("token_id:") and is_number(value):
                        try:
                            values[int(name[len("token_id:"):])] = float(value)
                        except ValueError:
                            pass
                if any(tok not in values for tok in asked):
                    if self._token_id_scoring:
                        raise self._fail("POST", "/completions", "answer lacks the logprobs of the asked "
                                         "logprob_token_ids")
                    raise _NoTokenIdLogprobs()
                picked = {tok: values[tok] for tok in asked}
                self._check_finite(picked.values())
                out.append((row, picked))
            return out

        return job

    def _score_ids_echo(self, prompt_ids: list[list[int]], cand_ids: list[list[list[int]]]) -> list[list[float]]:
        """Fallback scoring: one echo request per prompt, holding every candidate continuation."""
        jobs = [self._score_job(p, c) for p, c in zip(prompt_ids, cand_ids) if c]
        scored = iter(self._run(lambda: self._gather(jobs, "scoring")) if jobs else [])
        return self._per_prompt([next(scored) if c else [] for c in cand_ids])

    def _score_job(self, prompt: list[int], cands: list[list[int]]) -> Callable[[Any], Awaitable[list[float]]]:
        body = {"model": self.served_model, "prompt": [prompt + c for c in cands], "max_tokens": 1,
                "echo": True, "logprobs": 0, "temperature": 0}

        async def job(client: Any) -> list[float]:
            data = await self._request(client, "POST", "/completions", body)
            choices = self._choices(data, len(cands), "/completions")
            out = []
            for choice, cand in zip(choices, cands):
                logprobs = _logprobs(choice).get("token_logprobs")
                start = len(prompt)
                # Echoed list = one entry per prompt token (+ the generated one); the candidate is the prompt's tail.
                if not isinstance(logprobs, list) or len(logprobs) < start + len(cand):
                    raise self._fail("POST", "/completions", "answer lacks echoed prompt logprobs (does the "
                                     "server support echo with logprobs on token-id prompts?)")
                values = logprobs[start:start + len(cand)]
                if not all(is_number(v) for v in values):
                    raise self._fail("POST", "/completions", "answer has null or non-numeric logprobs for "
                                     "candidate tokens")
                self._check_finite(values)
                out.append(float(sum(values)))
            return out

        return job

    def _choices(self, data: Any, expected: int, path: str) -> list[dict[str, Any]]:
        """`data["choices"]` in prompt order, checked to hold `expected` objects with distinct integer indexes."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) != expected:
            got = len(choices) if isinstance(choices, list) else "no"
            raise self._fail("POST", path, f"expected {expected} choices in the answer, got {got}")
        if not all(isinstance(c, dict) for c in choices):
            raise self._fail("POST", path, "answer has choices that are not JSON objects")
        indexes = [c.get("index", 0) for c in choices]
        if expected > 1 and (not all(isinstance(i, int) and not isinstance(i, bool) for i in indexes)
                             or sorted(indexes) != list(range(expected))):
            raise self._fail("POST", path, f"answer's choice indexes are not 0..{expected - 1}")
        return sorted(choices, key=lambda c: c.get("index", 0))

    def _check_finite(self, values: Any) -> None:
        """Fail the request on NaN or infinite logprobs: they would turn into a silently wrong distribution."""
        if not all(math.isfinite(v) for v in values):
            raise self._fail("POST", "/completions", "answer has non-finite logprobs (NaN or infinity)")

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str], max_tokens: int = 64, choices: list[str] | None = None,
                 json_schema: dict[str, Any] | None = None) -> list[str]:
        """Greedy completion; constrained by the server's structured outputs to `choices` or `json_schema`."""
        if choices is not None and json_schema is not None:
            raise ConfigError("generate() takes choices or json_schema, not both")
        if choices is not None and not choices:
            raise ConfigError("generate(choices=...) needs at least one choice")
        body: dict[str, Any] = {"model": self.served_model, "max_tokens": int(max_tokens), "temperature": 0}
        if choices is not None:
            body["structured_outputs"] = {"choice": [str(c) for c in choices]}
        elif json_schema is not None:
            body["structured_outputs"] = {"json": json_schema}
        jobs = [self._generate_job(dict(body, prompt=ids)) for ids in self.encode_many(prompts)]
        return self._per_prompt(self._run(lambda: self._gather(jobs, "generating")) if jobs else [])

    def _generate_job(self, body: dict[str, Any]) -> Callable[[Any], Awaitable[str]]:
        async def job(client: Any) -> str:
            data = await self._request(client, "POST", "/completions", body)
            text = self._choices(data, 1, "/completions")[0].get("text") or ""
            # A server that reflects the Authorization header must not get the key into outputs or the cache.
            return self._redact(str(text).strip())

        return job

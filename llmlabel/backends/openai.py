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

import asyncio
import contextlib
import email.utils
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from llmlabel.backends.base import Backend, TokenizerMixin
from llmlabel.errors import BackendError, ConfigError, LLMLabelError, ModelError, PartialFailure

T = TypeVar("T")
log = logging.getLogger("llmlabel")

#: show a progress bar only for runs with more requests than this
PROGRESS_MIN_REQUESTS = 200
#: longest wait between two attempts, whatever the backoff or Retry-After says (seconds)
MAX_RETRY_WAIT = 60.0
#: fallback context length when the server does not report one and the tokenizer's is unset or huge
MAX_FALLBACK_CONTEXT = 8192
#: most token ids one request may ask logprobs for (vLLM's `MAX_LOGPROB_TOKEN_IDS`)
MAX_LOGPROB_TOKEN_IDS = 128
#: request fields of trie scoring; a 4xx naming one means the server lacks them (then: echo scoring)
TOKEN_ID_FIELDS = ("logprob_token_ids", "return_tokens_as_token_ids")
#: connections per HTTP client: larger pools cost more per request (see `OpenAIBackend._gather`)
POOL_SHARD = 8
#: after this many requests in a row fail for good (and at least twice `concurrency`), the server is taken to be
#: down: the rest of the call fails at once instead of each request waiting out its retries, and the next call
#: sends one request first to see whether it is back (a circuit breaker)
BREAKER_FAILURES = 32
#: statuses whose `Retry-After` header is honoured (RFC 9110 defines it for both)
RETRY_AFTER_STATUSES = (429, 503)
#: what an API key may look like: printable ASCII without spaces (anything else cannot go in an HTTP header)
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")


class RequestFailed(BackendError):
    """A request failed for good after retries (timeouts, 429/5xx, dropped connections, bad bodies).

    A `BackendError`: the labeler records the affected rows as failed, and a re-run retries only those.
    """


class RequestRejected(LLMLabelError):
    """The server rejected a request (4xx other than 429): a configuration mistake, so the run stops.

    `status` is the HTTP status.
    """

    status: int | None = None


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `wait` is the server's Retry-After in seconds, if any."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


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


def _is_number(value: Any) -> bool:
    """Whether a JSON value is a number (not a bool, not null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _logprobs(choice: dict[str, Any]) -> dict[str, Any]:
    """A choice's `logprobs` object; {} when it is missing or not an object."""
    value = choice.get("logprobs")
    return value if isinstance(value, dict) else {}


def _one_line(text: str, limit: int = 300) -> str:
    """`text` collapsed to a single line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response: Any, redact: Callable[[str], str]) -> str:
    """The error message in an OpenAI-style error body (`{"error": {"message": ...}}`), else the raw text; one
    line. `redact` runs before it is shortened, so a secret the server echoes cannot survive half cut."""
    def short(text: Any) -> str:
        return _one_line(redact(str(text)))

    try:
        body = response.json()
    except ValueError:
        return short(response.text or response.reason_phrase or "no message")
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if error.get(key):
                    return short(error[key])
        elif isinstance(error, str):
            return short(error)
        if body.get("detail"):
            return short(body["detail"])
    return short(response.text)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _load_tokenizer(model: str | None, tokenizer: str | None) -> Any:
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
        reason = _one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)
        raise ModelError(f"cannot load a tokenizer from '{source}' ({reason}); {hint}") from None


def _check_base_url(base_url: Any) -> str:
    """`base_url` without a trailing slash; a one-line ConfigError for a bad one (never echoing credentials)."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must start with http:// or https://, got '{base_url}'")
    parts = urllib.parse.urlsplit(base_url)
    if parts.username is not None or parts.password is not None:
        # Shown in errors, reports and the cache's model id: a key in it would leak. Not echoed here either.
        raise ConfigError("base_url must not contain credentials (user:password@host); give the API key in the "
                          "OPENAI_API_KEY environment variable or a key file (api_key_file=)")
    if parts.query or parts.fragment:
        raise ConfigError(f"base_url must be a plain API root such as http://127.0.0.1:8000/v1, without a query "
                          f"string or fragment (got one after '{parts.scheme}://{parts.netloc}{parts.path}')")
    return base_url.rstrip("/")


def _api_key(api_key: str | None, api_key_env: str, api_key_file: str | None) -> str | None:
    """The API key: `api_key` (Python callers), else the first line of `api_key_file`, else `$api_key_env`.

    Errors name where the key came from, never the key.
    """
    if api_key is not None:
        key, source = api_key, "api_key"
    elif api_key_file is not None:
        path = Path(os.path.expanduser(str(api_key_file)))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"api_key_file {path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"api_key_file {path} cannot be read ({type(exc).__name__})") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise ConfigError(f"api_key_file {path} is empty")
        key, source = lines[0], f"api_key_file {path}"
    else:
        if not isinstance(api_key_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            raise ConfigError(f"api_key_env must name an environment variable, got '{api_key_env}'")
        key, source = os.environ.get(api_key_env) or None, f"environment variable {api_key_env}"
    if key is None or key == "":
        return None
    if not isinstance(key, str) or not _KEY_CHARS.match(key):
        raise ConfigError(f"the API key from {source} has spaces or characters that cannot go in an HTTP header")
    return key


class OpenAIBackend(TokenizerMixin, Backend):
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
        base_url = _check_base_url(base_url)
        if int(concurrency) < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if float(timeout) <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if int(max_retries) < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
        if float(backoff) < 0:
            raise ConfigError(f"backoff must be 0 or more, got {backoff}")
        self.base_url = base_url
        self._api_key = _api_key(api_key, api_key_env, api_key_file)
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.tokenizer = _load_tokenizer(model, tokenizer)
        from llmlabel.models import DEFAULT_ALIASES, resolve_model

        if served_model:
            self.served_model = served_model
        elif model is not None and model.lower() not in DEFAULT_ALIASES:
            self.served_model = model
        else:  # the default model is served under its converted folder's path (`vllm serve <folder>`)
            self.served_model = resolve_model(None)
        self.model_id = f"openai:{self.base_url}:{self.served_model}"
        self._max_context: int | None = None
        self._ssl: Any = None
        #: requests in a row that failed for good, and the last one's error (the circuit breaker's state)
        self._failures_in_row = 0
        self._last_failure = ""
        #: whether the server honours `logprob_token_ids` (None: not known yet; False: score with echo)
        self._token_id_scoring: bool | None = None

    def __repr__(self) -> str:
        return (f"OpenAIBackend(base_url={self.base_url!r}, served_model={self.served_model!r}, "
                f"concurrency={self.concurrency}, api_key={'set' if self._api_key else 'unset'})")

    # -- HTTP -----------------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _redact(self, text: str) -> str:
        """`text` with the API key (should a server echo it back) replaced by '***'. Callers redact before they
        shorten a text, so no part of the key survives a cut."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _fail(self, method: str, path: str, detail: str, error: type[LLMLabelError] = RequestFailed
              ) -> LLMLabelError:
        return error(self._redact(_one_line(f"{method} {self.base_url}{path} failed: {detail}", 500)))

    async def _request(self, client: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request with retries; return the parsed JSON body or raise `RequestFailed`."""
        import httpx

        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                try:
                    # One deadline for the whole attempt: httpx's timeouts are per read, so a trickling answer
                    # would otherwise never time out.
                    response = await asyncio.wait_for(
                        client.request(method, f"{self.base_url}{path}", json=body), self.timeout)
                except (httpx.TimeoutException, asyncio.TimeoutError):
                    raise _Retryable(f"timed out after {self.timeout:g} s") from None
                except httpx.TransportError as exc:
                    reason = _one_line(str(exc) or type(exc).__name__, 160)
                    raise _Retryable(f"cannot reach the server ({type(exc).__name__}: {reason}); "
                                     "is the server running?") from None
                status = response.status_code
                if status == 429 or status >= 500:
                    wait = (_retry_after(response.headers.get("Retry-After"))
                            if status in RETRY_AFTER_STATUSES else None)
                    raise _Retryable(f"HTTP {status}: {_server_message(response, self._redact)}", wait)
                if status >= 400:
                    detail = f"HTTP {status}: {_server_message(response, self._redact)}"
                    if status == 404:
                        detail += (f" (served model asked for: '{self.served_model}'; GET {self.base_url}/models "
                                   "lists the served names, pass served_model=)")
                    elif status in (401, 403):
                        detail += " (check the API key: OPENAI_API_KEY, api_key_env or api_key_file)"
                    rejected = self._fail(method, path, detail, RequestRejected)
                    rejected.status = status
                    raise rejected
                try:
                    return response.json()
                except ValueError:  # truncated by a proxy, an HTML error page, ...: usually transient
                    raise _Retryable(f"HTTP {status} with a body that is not JSON: "
                                     f"{_one_line(self._redact(response.text), 120)!r}") from None
            except _Retryable as retry:
                if attempt + 1 >= attempts:
                    tries = f" after {attempts} attempts" if attempts > 1 else ""
                    raise self._fail(method, path, f"{retry.reason}{tries}") from None
                await asyncio.sleep(self._wait(attempt, retry.wait))
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based): the server's `Retry-After` when it gave
        one, else exponential backoff `backoff * 2**attempt` times a random factor in [1, 2) (jitter, so clients
        that failed together do not retry together); never more than `MAX_RETRY_WAIT`."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_WAIT)
        return min(self.backoff * (2 ** attempt) * (1.0 + random.random()), MAX_RETRY_WAIT)

    def _client(self, connections: int | None = None) -> Any:
        import httpx

        size = connections or self.concurrency
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        if self._ssl is None:  # one TLS context for every client: building one parses the CA bundle (slow, and
            self._ssl = httpx.create_ssl_context()  # thousands of them fragment the heap over a long run)
        return httpx.AsyncClient(headers=self._headers(), timeout=httpx.Timeout(self.timeout), limits=limits,
                                 verify=self._ssl)

    async def _gather(self, jobs: list[Callable[[Any], Awaitable[T]]], desc: str) -> list[T | RequestFailed]:
        """Run `jobs` (each takes a client) with at most `concurrency` in flight; results in order.

        `concurrency` workers pull jobs from one queue, so memory does not grow with the number of jobs. Workers
        share clients `POOL_SHARD` at a time: httpcore's pool does work proportional to its size on every request,
        so one pool of 64 connections is slower than 8 pools of 8 (measured at concurrency 64 against the fault
        server on 2 shared cores: about 100 vs 280 requests/s).

        A job that fails for good (`RequestFailed`) yields its error in its place and the others go on; any other
        error (a rejected request: a configuration mistake) cancels them all and is raised. Once `BREAKER_FAILURES`
        requests in a row have failed for good, the remaining jobs fail at once without being sent (their rows are
        recorded as failed, and retried by a re-run); when a call starts in that state, one job is sent alone first
        and a success closes the breaker again.
        """
        results: list[Any] = [None] * len(jobs)
        queue = iter(enumerate(jobs))  # shared by the workers; next() never awaits, so no two take the same job
        workers = min(self.concurrency, len(jobs))
        bar = None
        if len(jobs) > PROGRESS_MIN_REQUESTS:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc=desc, unit="req")

        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(self._client(min(POOL_SHARD, workers - start)))
                       for start in range(0, workers, POOL_SHARD)]

            threshold = max(BREAKER_FAILURES, 2 * self.concurrency)

            async def attempt(index: int, job: Callable[[Any], Awaitable[T]], client: Any) -> None:
                try:
                    results[index] = await job(client)
                    self._failures_in_row = 0
                except RequestFailed as exc:
                    results[index] = exc
                    self._failures_in_row += 1
                    self._last_failure = str(exc)
                if bar is not None:
                    bar.update(1)

            async def work(worker: int) -> None:
                client = clients[worker // POOL_SHARD]
                for index, job in queue:
                    if self._failures_in_row >= threshold:
                        results[index] = RequestFailed(_one_line(
                            f"not sent: the last {self._failures_in_row} requests failed for good, so the server "
                            f"looks down (last: {self._last_failure})", 500))
                        if bar is not None:
                            bar.update(1)
                    else:
                        await attempt(index, job, client)

            if self._failures_in_row >= threshold and clients:  # half-open: is the server back?
                index, job = next(queue)
                await attempt(index, job, clients[0])
            tasks = [asyncio.ensure_future(work(w)) for w in range(workers)]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                if bar is not None:
                    bar.close()
        return results

    @staticmethod
    def _per_prompt(results: list[Any]) -> list[Any]:
        """`results` (one per prompt) as they are when none failed; else raise the failure.

        All failed for the same reason: that `RequestFailed` itself. Otherwise a `PartialFailure` carrying every
        result, so each prompt keeps its own reason.
        """
        failed = [r for r in results if isinstance(r, BackendError)]
        if not failed:
            return results
        if len(failed) == len(results) and len({str(f) for f in failed}) == 1:
            raise failed[0]
        raise PartialFailure(results)

    def _run(self, coro_factory: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine to completion from sync code, in a private thread when an event loop already runs here."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro_factory())
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = asyncio.run(coro_factory())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="llmlabel-openai", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

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
                    if isinstance(name, str) and name.startswith("token_id:") and _is_number(value):
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
                if not all(_is_number(v) for v in values):
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

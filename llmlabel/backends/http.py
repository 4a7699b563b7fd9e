"""The HTTP client machinery shared by the backends that talk to model servers over HTTP (`openai`, `chat`,
`decisions`, `systemone`): concurrent requests over `httpx.AsyncClient` pools, retries with exponential backoff and
jitter on connection errors, timeouts (one deadline per attempt), bodies that are not JSON, 429 and 5xx answers,
`Retry-After` on 429 and 503, a circuit breaker for a server that is down, per-request failures returned in place
(so one failed request fails only its own rows), and the secrets rules: the API key comes from the environment or a
key file, goes only into the Authorization header, and is redacted from every message and answer.

Moved here unchanged from `llmlabel.backends.openai` so every HTTP backend has exactly the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from llmlabel.errors import BackendError, ConfigError, LLMLabelError, PartialFailure

T = TypeVar("T")

#: show a progress bar only for runs with more requests than this
PROGRESS_MIN_REQUESTS = 200
#: longest wait between two attempts, whatever the backoff or Retry-After says (seconds)
MAX_RETRY_WAIT = 60.0
#: connections per HTTP client: larger pools cost more per request (see `HTTPClient._gather`)
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


def is_number(value: Any) -> bool:
    """Whether a JSON value is a number (not a bool, not null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def one_line(text: str, limit: int = 300) -> str:
    """`text` collapsed to a single line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response: Any, redact: Callable[[str], str]) -> str:
    """The error message in an OpenAI-style error body (`{"error": {"message": ...}}`), else the raw text; one
    line. `redact` runs before it is shortened, so a secret the server echoes cannot survive half cut."""
    def short(text: Any) -> str:
        return one_line(redact(str(text)))

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



class HTTPClient:
    """Mixin: the HTTP side of a backend. Subclasses call `_init_http` in their constructor, then build request
    jobs (coroutines taking a client) and run them with `self._run(lambda: self._gather(jobs, desc))`."""

    base_url: str
    served_model: str = ""

    def _init_http(self, base_url: Any, api_key: str | None, api_key_env: str, api_key_file: str | None,
                   concurrency: int, timeout: float, max_retries: int, backoff: float) -> None:
        """Check and store the connection options (one-line ConfigErrors for bad ones)."""
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
        self._ssl: Any = None
        #: requests in a row that failed for good, and the last one's error (the circuit breaker's state)
        self._failures_in_row = 0
        self._last_failure = ""
        #: HTTP requests sent, retries included (benchmarks report requests per row)
        self.requests_sent = 0

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
        return error(self._redact(one_line(f"{method} {self.base_url}{path} failed: {detail}", 500)))

    async def _request(self, client: Any, method: str, path: str, body: dict[str, Any] | None = None,
                       root: str | None = None) -> Any:
        """Send one request with retries; return the parsed JSON body or raise `RequestFailed`. `root` replaces
        `base_url` for paths that live beside the API root (vLLM's `/tokenize`)."""
        import httpx

        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                try:
                    # One deadline for the whole attempt: httpx's timeouts are per read, so a trickling answer
                    # would otherwise never time out.
                    self.requests_sent = getattr(self, "requests_sent", 0) + 1
                    response = await asyncio.wait_for(
                        client.request(method, f"{root or self.base_url}{path}", json=body), self.timeout)
                except (httpx.TimeoutException, asyncio.TimeoutError):
                    raise _Retryable(f"timed out after {self.timeout:g} s") from None
                except httpx.TransportError as exc:
                    reason = one_line(str(exc) or type(exc).__name__, 160)
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
                                     f"{one_line(self._redact(response.text), 120)!r}") from None
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
                        results[index] = RequestFailed(one_line(
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


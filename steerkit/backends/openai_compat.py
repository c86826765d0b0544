"""`OpenAIBackend`: label scoring against any OpenAI-compatible ``/v1/completions`` endpoint.

vLLM in production, llama.cpp's server in tests. One request per prompt, ``max_tokens=1``, top
logprobs of the next token. The policy pieces live in one place each:

* **concurrency** — an ``asyncio.Semaphore`` (``max_concurrency`` requests in flight);
* **request rate** — an ``asyncio_throttle.Throttler`` (``rate_limit`` requests per second);
* **retries** — one tenacity loop (the SDK's own retries are off): exponential backoff with full
  jitter on timeouts, connection errors, 429 and 5xx, waiting at least the server's
  ``Retry-After``/``retry-after-ms`` (at most ``max_retry_after``; a NaN, infinite or unreadable
  value is ignored); other 4xx are never retried;
* **an untrusted server** — ``timeout`` bounds each read and ``deadline`` the whole request (a
  server that drips its answer is cut off and counts as unavailable); the HTTP client asks for
  identity encoding, refuses a compressed answer, caps the body at ``max_response_bytes`` and
  follows no redirect; an answer that is not a well-formed completion with finite logprobs ≤ 0
  raises `BackendResponseError` naming the server (a `RouterBackend` fails over);
* **top-k** — if the server rejects the number of top logprobs (vLLM's default maximum is 20),
  the backend lowers it once, to the maximum the error names, and remembers;
* **missing labels** — when neither label token is among the top-k, the backend scores the two
  label continuations explicitly: by echo (vLLM, legacy OpenAI), else by forcing each label with a
  logit bias and reading its unbiased logprob (llama.cpp); a server that supports neither raises
  `LabelTokensMissingError`. A missing label is never reported as probability 0.

The API key is handed to the SDK only; it never appears in an error, a log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
from asyncio_throttle import Throttler
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.wait import wait_base, wait_random_exponential

from steerkit.backends import _response as R
from steerkit.backends.base import BackendStats, LabelScore, score_each
from steerkit.errors import (
    BackendError,
    BackendRequestError,
    BackendResponseError,
    BackendUnavailableError,
    ContextOverflowError,
    LabelTokensMissingError,
    ModelNotFoundError,
)

__all__ = ["OpenAIBackend", "RetryPolicy", "public_url"]

log = logging.getLogger("steerkit.backends.openai")

#: The largest answer body read from a server by default (an echo of a long prompt is a few MB).
MAX_RESPONSE_BYTES = 16 * 2**20


def public_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what errors, logs and metric labels show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried (a value object, as httpx's ``Timeout``/``Limits``).

    The wait before retry *n* is uniform in ``[0, min(max_wait, initial·2ⁿ)]`` (full jitter), and
    never shorter than the server's ``Retry-After`` (capped at ``max_retry_after`` seconds).
    """

    max_retries: int = 5
    initial: float = 0.5
    max_wait: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        for name in ("initial", "max_wait", "max_retry_after"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"RetryPolicy.{name} must be a finite number of seconds >= 0, got {value!r}")
        if self.max_retries < 0:
            raise ValueError("RetryPolicy.max_retries must be >= 0")


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) if isinstance(exc, openai.APIStatusError) else None


class _DeadlineExceeded(Exception):
    """One request ran past the backend's ``deadline`` (retried like a timeout)."""


def _steerkit_cause(exc: BaseException) -> BaseException | None:
    """The `BackendResponseError` an older SDK wrapped in ``APIConnectionError``, if any."""
    cause = exc.__cause__
    return cause if isinstance(cause, BackendResponseError) else None


def is_retryable(exc: BaseException) -> bool:
    """Timeouts (and the whole-request deadline), connection errors, 429 and 5xx; never another
    4xx, nor an answer refused as unusable."""
    if isinstance(exc, _DeadlineExceeded):
        return True
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return _steerkit_cause(exc) is None
    status = _status(exc)
    return status is not None and (status == 429 or status >= 500)


def _seconds(text: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds from a header value; None when unreadable, NaN or
    infinite (ignored: the back-off applies)."""
    try:
        value = float(text) / scale
    except (ValueError, OverflowError):
        return None
    return max(value, 0.0) if math.isfinite(value) else None


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's requested wait from ``retry-after-ms`` or ``Retry-After`` (seconds or a date);
    None when absent or unusable (NaN, infinite, garbage). Not capped here: `wait_retry_after` is."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        seconds = _seconds(ms, 1000.0)
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        return _seconds(str(when.timestamp() - time.time()))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


class wait_retry_after(wait_base):
    """max(Retry-After, fallback backoff): honour the server, never wait less than the backoff,
    never more than ``cap`` for the server's sake (nor a non-finite time)."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = self.fallback(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        ra = retry_after_seconds(exc)
        wait = backoff if ra is None else max(min(ra, self.cap), backoff)
        return wait if math.isfinite(wait) and wait >= 0 else min(self.cap, 1.0)


_TOPK_MAX_RE = re.compile(
    r"(?:max(?:imum)?(?: allowed)?[^0-9]{0,20}|between\s*\d+\s*and\s*|at most\s*|less than or equal to\s*|<=\s*|up to\s*)(\d+)",
    re.IGNORECASE,
)


def _error_text(exc: openai.APIStatusError) -> str:
    """The server's error message (never request headers, so never the API key)."""
    body = exc.body
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            parts = [str(err.get(k)) for k in ("message", "type", "code") if err.get(k)]
            if parts:
                return " | ".join(parts)
        elif err:
            return str(err)
        if body.get("message"):
            return str(body["message"])
    try:
        return exc.response.text[:500]
    except (httpx.StreamError, UnicodeDecodeError, LookupError, AttributeError):  # pragma: no cover - no text
        return str(exc.message)[:500]


class _CappedStream(httpx.AsyncByteStream):
    """A response body that raises `BackendResponseError` past ``limit`` bytes, before they pile up."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, server: str) -> None:
        self._inner, self._limit, self._server = inner, limit, server

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise BackendResponseError(
                    f"the server at {self._server} sent an answer larger than {self._limit} bytes",
                    hint="raise max_response_bytes if the server's answers are legitimately that large",
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@functools.cache
def _ssl_context() -> Any:
    """One TLS context for every backend's HTTP client (loading the CA bundle costs ~0.1-0.3 s each)."""
    return httpx.create_ssl_context()


def _response_guard(limit: int, server: str) -> Callable[[httpx.Response], Awaitable[None]]:
    """An httpx response hook, run on the headers before any body is read: refuses a compressed
    answer (identity encoding was asked for, so a gzip bomb is never decompressed) and an announced
    size over ``limit``, and caps the body as it streams in (error bodies too)."""

    async def guard(response: httpx.Response) -> None:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        length = response.headers.get("content-length", "").strip()
        if encoding not in ("", "identity"):
            raise BackendResponseError(f"the server at {server} compressed its answer (Content-Encoding: "
                                       f"{encoding[:40]}) although asked for identity encoding")
        if length and (not length.isdigit() or len(length) > 15 or int(length) > limit):
            raise BackendResponseError(f"the server at {server} announced an answer of {length[:20]} bytes "
                                       f"(the limit is {limit})", hint="raise max_response_bytes if that is legitimate")
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, limit, server)

    return guard


class OpenAIBackend:
    """A `LogprobBackend` over an OpenAI-compatible completions endpoint (vLLM, llama.cpp, …).

    >>> async with OpenAIBackend("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-0.5B") as b:  # doctest: +SKIP
    ...     [s] = await b.score(["Claim: Paris is in France.\\nI think this claim is"])

    ``timeout`` bounds each read (and connecting), ``deadline`` one whole request, first byte to
    last (default: twice ``timeout``); ``max_response_bytes`` caps an answer's body. Both failures
    count as the server failing (`BackendUnavailableError` after the retries, `BackendResponseError`).

    Seams (httpx's transport is the model): ``transport`` (e.g. ``httpx.MockTransport(handler)``)
    replaces httpx's network transport under the guarded HTTP client; ``http_client`` (an
    ``httpx.AsyncClient``, used as built: its own redirects, encodings and limits) or ``client``
    (an ``openai.AsyncOpenAI``; its retries should be off: the retry policy here is the only one)
    replace the HTTP client or the SDK client; ``sleep`` is the wait between retries (default
    `asyncio.sleep`). A client or HTTP client given here is closed by `aclose` too.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        top_logprobs: int = 20,
        max_concurrency: int = 16,
        rate_limit: float | None = None,
        timeout: float = 60,
        deadline: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_retries: int = 5,
        echo_fallback: bool = True,
        retry: RetryPolicy | None = None,
        client: openai.AsyncOpenAI | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if top_logprobs < 1:
            raise ValueError("top_logprobs must be at least 1")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("rate_limit must be positive (requests per second) or None")
        deadline = 2 * timeout if deadline is None else deadline
        if not (math.isfinite(deadline) and deadline > 0):
            raise ValueError("deadline must be a positive number of seconds")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.server = public_url(self.base_url)
        """The server's address without credentials: what errors and logs name."""
        self.deadline = float(deadline)
        self.max_response_bytes = max_response_bytes
        self.model = model
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self.echo_fallback = echo_fallback
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.stats = BackendStats()
        if sum(x is not None for x in (client, http_client, transport)) > 1:
            raise ValueError("give at most one of client, http_client and transport")
        if client is None and http_client is None:
            # Ours, not the SDK's default (which follows redirects and asks for gzip).
            http_client = httpx.AsyncClient(
                transport=transport, verify=_ssl_context(), timeout=timeout, follow_redirects=False,
                headers={"Accept-Encoding": "identity"},
                event_hooks={"response": [_response_guard(max_response_bytes, self.server)]},
                limits=httpx.Limits(max_connections=max(100, max_concurrency), max_keepalive_connections=max(20, max_concurrency)),
            )
        # The SDK's retries are off: the tenacity loop below is the only one.
        self._client = client or openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0, http_client=http_client
        )
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._throttler = Throttler(rate_limit=1, period=1.0 / rate_limit) if rate_limit else None
        self._topk_lowered = False
        self._echo_ok: bool | None = None  # None: not yet known
        self._forced_ok: bool | None = None
        self._sleep: Callable[[float], Awaitable[None]] = sleep or asyncio.sleep
        self.in_flight = 0
        self.max_in_flight = 0

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.server!r}, model={self.model!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    # --- public API ---------------------------------------------------------------------------

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        """Score every prompt concurrently (bounded by ``max_concurrency``), in order."""
        return await score_each(self._score_one, prompts)

    # --- one prompt ---------------------------------------------------------------------------

    async def _score_one(self, prompt: str) -> LabelScore:
        data = await self._complete_topk(prompt)
        score, top = self._read(R.label_score, data)
        if R.has_label(score, top, top_k=self.top_logprobs, fallback_flag=None if self.echo_fallback else "echo_fallback"):
            return score
        fb = await self._fallback(prompt, top)
        self.stats.fallbacks += 1
        return R.with_fallback(score, fb.p_true, fb.p_false, fb.source)

    async def _complete_topk(self, prompt: str) -> dict[str, Any]:
        k = self.top_logprobs
        try:
            return await self._request(prompt=prompt, max_tokens=1, logprobs=k, temperature=0)
        except BackendRequestError as exc:
            new_k = self._lower_topk(exc, k)
            if new_k is None:
                raise
            return await self._request(prompt=prompt, max_tokens=1, logprobs=new_k, temperature=0)

    def _lower_topk(self, exc: BackendRequestError, k: int) -> int | None:
        """A smaller top-k after the server rejected ``k`` (once per backend), or None."""
        if exc.status != 400 or "logprob" not in exc.server_message.lower():
            return None
        if self.top_logprobs < k:  # another request already lowered it
            return self.top_logprobs
        if self._topk_lowered:
            return None
        m = _TOPK_MAX_RE.search(exc.server_message)
        limit = int(m.group(1)) if m else None
        new_k = limit if limit is not None and 0 < limit < k else (20 if k > 20 else 5 if k > 5 else None)
        if new_k is None:
            return None
        self._topk_lowered = True
        self.top_logprobs = new_k
        log.warning("server rejected %d top logprobs; using %d from now on", k, new_k)
        return new_k

    # --- fallbacks when no label is in the top-k ----------------------------------------------

    async def _fallback(self, prompt: str, top: list[tuple[str, float]]) -> LabelScore:
        t_label, f_label = R.label_continuations(prompt)
        if self._echo_ok is not False:
            lps = await asyncio.gather(self._echo(prompt, t_label), self._echo(prompt, f_label))
            if all(lp is not None for lp in lps):
                self._echo_ok = True
                return LabelScore(p_true=R.prob(lps[0]), p_false=R.prob(lps[1]), source="echo")
            if self._echo_ok is None:
                log.info("server at %s does not echo prompt logprobs; echo scoring disabled", self.server)
                self._echo_ok = False
        if self._forced_ok is not False:
            lps = await asyncio.gather(self._forced(prompt, t_label, top), self._forced(prompt, f_label, top))
            if all(lp is not None for lp in lps):
                self._forced_ok = True
                return LabelScore(p_true=R.prob(lps[0]), p_false=R.prob(lps[1]), source="forced")
            if self._forced_ok is None:
                self._forced_ok = False
        raise LabelTokensMissingError(
            f"neither label token is among the top {self.top_logprobs} next tokens "
            f"(top: {[t for t, _ in top[:5]]}) and the server at {self.server} supports neither echo "
            "scoring nor unbiased forced-token logprobs"
        )

    async def _echo(self, prompt: str, continuation: str) -> float | None:
        try:
            data = await self._request(
                prompt=prompt + continuation, max_tokens=1, logprobs=1, echo=True, temperature=0
            )
        except BackendRequestError as exc:
            if exc.status in (400, 422):  # the server refuses echo
                return None
            raise
        return self._read(R.echo_logprob, data, prompt, continuation)

    async def _forced(self, prompt: str, label: str, top: list[tuple[str, float]]) -> float | None:
        try:
            data = await self._request(
                prompt=prompt, max_tokens=1, logprobs=1, temperature=0, logit_bias={label: 100}
            )
        except BackendRequestError as exc:
            if exc.status in (400, 422):  # e.g. vLLM: logit_bias keys must be token ids
                return None
            raise
        return self._read(R.forced_logprob, data, label, top)

    # --- transport: limits, retries, error mapping --------------------------------------------

    def _read(self, reader: Callable[..., Any], data: Mapping[str, Any], *args: Any) -> Any:
        """``reader(data, *args)``; whatever is wrong with the answer becomes a `BackendResponseError`
        naming the server (a safety net under the readers' own checks)."""
        try:
            return reader(data, *args)
        except BackendResponseError as exc:
            raise self._unusable(exc.message) from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise self._unusable(f"{type(exc).__name__}: {str(exc)[:200]}") from None

    def _unusable(self, why: str) -> BackendResponseError:
        return BackendResponseError(f"the completions server at {self.server} answered with an unusable completion: {why}")

    async def _request(self, **params: Any) -> dict[str, Any]:
        policy = self.retry

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "retrying completion request (attempt %d) after %s",
                state.attempt_number,
                type(exc).__name__ if exc else "?",
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_retries + 1),
            wait=wait_retry_after(wait_random_exponential(multiplier=policy.initial, max=policy.max_wait),
                                  policy.max_retry_after),
            retry=retry_if_exception(is_retryable),
            sleep=lambda s: self._sleep(s),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            raw = await retrying(self._send, params)
        except openai.APIStatusError as exc:
            raise self._map_status_error(exc, params) from None
        except openai.APIConnectionError as exc:
            cause = _steerkit_cause(exc)
            if cause is not None:  # an older SDK wraps what the response guard raised
                raise cause from None
            kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "could not be reached"
            raise BackendUnavailableError(
                f"the completions server at {self.server} {kind} "
                f"({policy.max_retries} retries exhausted)"
            ) from None
        except _DeadlineExceeded:
            raise BackendUnavailableError(
                f"the completions server at {self.server} did not finish its answer within the "
                f"{self.deadline:g}s deadline ({policy.max_retries} retries exhausted)",
                hint="a server that answers this slowly is treated as down; raise deadline if it is only busy",
            ) from None
        data = self._read(R.parse_completion, raw.content, raw.headers.get("content-type"))
        prompt_tokens, cached = self._read(R.usage_of, data)
        self.stats.record(prompt_tokens, cached)
        return data

    async def _send(self, params: dict[str, Any]) -> httpx.Response:
        """One request, its answer read in full within ``deadline`` (raw: parsed by `_request`)."""
        if self._throttler is not None:
            await self._throttler.acquire()
        async with self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                async with asyncio.timeout(self.deadline):
                    raw = await self._client.completions.with_raw_response.create(model=self.model, **params)
                    response = raw.http_response
                    await response.aread()
                    return response
            except TimeoutError:
                raise _DeadlineExceeded() from None
            finally:
                self.in_flight -= 1

    def _map_status_error(self, exc: openai.APIStatusError, params: Mapping[str, Any]) -> BackendError:
        status = exc.status_code
        text = _error_text(exc)
        if 300 <= status < 400:
            return BackendResponseError(
                f"the server at {self.server} answered with a redirect (HTTP {status} to "
                f"{public_url(exc.response.headers.get('location', '') or '?')!r}); redirects are not followed",
                hint="set base_url to the address the server redirects to, if you trust it",
            )
        if status == 404:
            return ModelNotFoundError(
                f"the server at {self.server} answered 404 for model {self.model!r}: {text}",
                hint="check the model name against the server's /v1/models and that base_url ends in /v1",
            )
        if is_retryable(exc):
            return BackendUnavailableError(
                f"the completions server at {self.server} kept failing with HTTP {status} "
                f"({self.retry.max_retries} retries exhausted): {text}"
            )
        if R.is_context_overflow(text):
            return ContextOverflowError(f"the prompt does not fit the model's context window: {text}")
        if status in (401, 403):
            return BackendRequestError(
                f"the server at {self.server} refused the credentials (HTTP {status}): {text}",
                status=status,
                server_message=text,
                hint="check the API key (it is never shown in errors)",
            )
        return BackendRequestError(
            f"the server at {self.server} rejected the request (HTTP {status}): {text}",
            status=status,
            server_message=text,
        )

"""The OpenAI-compatible steering proxy, on Starlette.

Point any OpenAI-compatible client's ``base_url`` at it. Each ``POST /v1/chat/completions`` is
steered by the middleware (`Steerer.prepare`) and forwarded to the chat-model server; the answer
comes back unchanged in shape, with steering metadata in ``X-Steerkit-*`` response headers.

Routes:

- ``POST /v1/chat/completions``: non-streaming, and SSE streaming passed through chunk by chunk as
  the upstream sends it (nothing is buffered). Unknown request fields go to the upstream
  untouched; the ``steerkit`` field (per-request `SteerOptions`) is removed first (the wire layer,
  `steerkit._wire`, parses it, as it does for the in-process client wrapper). Upstream errors come
  back with the upstream's status and body.
- ``GET /v1/models``: the upstream's model list.
- ``GET /healthz``: health (no auth): 200 ``ok``; 503 ``upstream_unavailable`` (naming the upstream,
  without credentials) while the chat server does not answer; 503 ``draining`` on shutdown.
- ``GET /metrics``: Prometheus text format: the steerer's and the proxy's series, one registry;
  under ``steerkit serve --workers N``, every worker's (prometheus_client's multiprocess mode,
  `steerkit._metrics.render_all_processes`), whichever worker the scrape lands on.

Safety: `create_app` never binds anything (``steerkit serve`` binds 127.0.0.1 by default); optional
client API keys (``Authorization: Bearer``) compared in constant time with `hmac.compare_digest`;
request bodies over ``server.max_body_bytes`` get 413; upstream failures are mapped in one place
(`_UPSTREAM_ERRORS`: connect failures 502, timeouts 504, inside a stream that has started an
OpenAI-style ``error`` SSE event); on shutdown, requests in flight (streams included) finish before
the upstream client closes, and new requests get 503.

Streaming is pure ASGI (no ``BaseHTTPMiddleware``): the response races the relay against a
listener for the client's ``http.disconnect``, so a client that hangs up cancels the upstream
request at once, even while the upstream pauses between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol, Self

import anyio
import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from steerkit._config import Settings
from steerkit._metrics import (
    CONTENT_TYPE_LATEST,
    GAUGE_MODE,
    LATENCY_BUCKETS,
    Metrics,
    mark_process_dead,
    multiprocess_dir,
    render_all_processes,
)
from steerkit._redact import mask_credentials
from steerkit._upstream import UpstreamHealth, public_url
from steerkit._version import __version__
from steerkit._wire import WireError, parse_chat_body, steer_headers
from steerkit.errors import ConfigError, SteerkitError, UserError

__all__ = ["ProxyApp", "UpstreamClients", "create_app", "worker_app"]

#: Environment variable through which ``steerkit serve --workers N`` hands its settings to workers.
SETTINGS_ENV = "STEERKIT_SERVE_SETTINGS_JSON"

log = logging.getLogger("steerkit.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Upstream response headers relayed to the client (besides content-type).
_RELAYED = (
    b"x-request-id",
    b"openai-processing-ms",
    b"openai-model",
    b"retry-after",
    b"retry-after-ms",
    b"x-should-retry",
)
#: Client request headers relayed to the upstream (besides authorization, see `_upstream_headers`).
_FORWARDED = (b"x-request-id", b"openai-organization", b"openai-project", b"user-agent")
_ROUTES = ("/v1/chat/completions", "/v1/models", "/healthz", "/metrics")


class SteererLike(Protocol):
    """What the proxy needs from `steerkit._middleware.Steerer`."""

    async def prepare(self, messages: list[dict], options: Any = None) -> tuple[list[dict], Any]: ...


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


#: The one map of upstream failures: (phase, timed out) → (status, message, code); ``{name}`` is
#: the httpx exception's class name. ``phase``: ``connect`` (before the upstream answered),
#: ``read`` (reading a whole answer), ``stream`` (inside a relayed stream: sent as an SSE event).
_UPSTREAM_ERRORS: dict[tuple[str, bool], tuple[int, str, str]] = {
    ("connect", False): (502, "the upstream model server is unreachable ({name})", "upstream_unreachable"),
    ("read", False): (502, "the upstream connection failed ({name})", "upstream_failed"),
    ("stream", False): (502, "the upstream stream failed ({name})", "upstream_stream_failed"),
    ("connect", True): (504, "the upstream model server timed out", "upstream_timeout"),
    ("read", True): (504, "the upstream model server timed out", "upstream_timeout"),
    ("stream", True): (504, "the upstream model server timed out mid-stream", "upstream_timeout"),
}
_ERROR_KIND = {("connect", False): "connect", ("read", False): "read", ("stream", False): "stream",
               ("connect", True): "timeout", ("read", True): "timeout", ("stream", True): "stream_timeout"}


class _ProxyMetrics:
    """The proxy's series, registered in the steerer's registry (one registry per process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.requests = Counter("steerkit_requests", "HTTP requests served by the proxy, by route and status.",
                                ["route", "status"], registry=registry)
        self.in_flight = Gauge("steerkit_requests_in_flight", "Requests being served now (this scrape included).",
                               registry=registry, multiprocess_mode=GAUGE_MODE)
        self.streams = Gauge("steerkit_streams_in_flight", "SSE streams being relayed now.", registry=registry,
                             multiprocess_mode=GAUGE_MODE)
        # one series per live worker (label pid) under --workers: how the kernel spreads connections
        self.worker_requests = Gauge("steerkit_proxy_worker_requests",
                                     "HTTP requests served by this proxy process since it started (label pid per worker "
                                     "under --workers).", registry=registry, multiprocess_mode="liveall")
        self.upstream_errors = Counter("steerkit_upstream_errors", "Failed upstream exchanges, by kind.", ["kind"],
                                       registry=registry)
        self.steer = Counter("steerkit_proxy_steer_outcomes",
                             "Chat requests by steering cache outcome (hit, miss, computed, off, none, error).",
                             ["cache"], registry=registry)
        self.added = Histogram("steerkit_proxy_added_latency_seconds",
                               "Latency the proxy adds before the upstream call (parsing and steering).",
                               buckets=LATENCY_BUCKETS, registry=registry)
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (a lookup per request is a lock and a
        validation; the set of label values here is small and fixed)."""
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    @property
    def streams_in_flight(self) -> int:
        return int(self._registry.get_sample_value("steerkit_streams_in_flight") or 0)


_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _ProxyMetrics] = weakref.WeakKeyDictionary()


def _proxy_metrics(registry: CollectorRegistry) -> _ProxyMetrics:
    m = _metrics_by_registry.get(registry)
    if m is None:
        m = _metrics_by_registry[registry] = _ProxyMetrics(registry)
    return m


#: The stream a relayed response is left with once closed (see `ProxyApp._relay_stream`).
_CONSUMED = httpx.ByteStream(b"")


def _error_body(message: str, type_: str, code: str | int | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _error_response(e: _HTTPError) -> Response:
    headers = {"connection": "close"} if e.status == 408 else None  # the rest of a slow body is not read
    return Response(_error_body(e.message, e.type, e.code, e.param), e.status, headers=headers,
                    media_type="application/json")


def _sse_error(message: str, type_: str, code: str | int | None) -> bytes:
    return b"data: " + _error_body(message, type_, code) + b"\n\n"


class _HangupCancels:
    """While inside, the client's ``http.disconnect`` cancels the current task; that cancellation
    ends the block (suppressed) and sets ``hung_up``. One listener task per request, where a task
    group (or two tasks and a wait) cost measurably more under many clients. Only for code that
    lets a cancellation through (as the relay and the upstream call do).

    On the way out the guard lets go of both tasks: the cancelled listener keeps its
    ``CancelledError``, whose traceback holds the listener's frame and so this guard; a guard that
    still held the listener made a reference cycle of ~25 objects per request that only the cyclic
    collector could free, and its collections cost more per request the more requests are in
    flight (each rescans the objects of every live request)."""

    __slots__ = ("_listener", "_receive", "_task", "hung_up")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.hung_up = False
        self._task: asyncio.Task[Any] | None = None
        self._listener: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.current_task()
        assert self._task is not None
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        return self

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        task = self._task
        if task is not None:  # None: the block has ended
            self.hung_up = True
            task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        listener, task = self._listener, self._task
        self._listener = self._task = None  # no cycle through the listener's traceback (see above)
        if listener is not None:
            listener.cancel()
        if self.hung_up and task is not None and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            task.uncancel()
            return True  # ours: the client left; a cancellation from elsewhere (shutdown) goes on
        return False


class _RelayResponse(StreamingResponse):
    """`StreamingResponse` that always listens for the client's disconnect while relaying (Starlette
    does so only for servers older than ASGI spec 2.4), so a hang-up during an upstream pause
    cancels the relay, and with it the upstream request, at once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        async with _HangupCancels(receive):
            with contextlib.suppress(OSError):
                await self.stream_response(send)


class ProxyApp:
    """The ASGI callable: a Starlette app plus request accounting and graceful draining. Build it
    with `create_app`."""

    def __init__(
        self,
        settings: Settings,
        *,
        steerer: SteererLike | None = None,
        upstream_base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.steerer = steerer
        self._upstream_base_url = upstream_base_url or settings.chat_model.base_url
        self._transport = transport
        self._keys = [k.get_secret_value().encode() for k in settings.server.api_keys]
        upstream_key = settings.chat_model.api_key
        self._upstream_auth = f"Bearer {upstream_key.get_secret_value()}".encode() if upstream_key else None
        self.client: UpstreamClients | None = None
        self._runtime: Any = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._metrics: _ProxyMetrics | None = None
        self._registry: CollectorRegistry | None = None
        self.upstream: UpstreamHealth | None = None  # checked at start-up; down: 502 before steering
        if steerer is not None:
            self._bind_metrics(steerer)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
                Route("/metrics", self._metrics_route, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_exception, _HTTPError: self._proxy_error,
                                Exception: self._internal_error},
            lifespan=self._lifespan,
        )

    @property
    def metrics(self) -> _ProxyMetrics:
        if self._metrics is None:  # no steerer yet (it is built at startup): a registry of our own
            self._registry = CollectorRegistry()
            self._metrics = _proxy_metrics(self._registry)
        return self._metrics

    def _bind_metrics(self, steerer: Any) -> None:
        m = getattr(steerer, "metrics", None)
        registry = m.registry if isinstance(m, Metrics) else Metrics().registry
        self._registry = registry
        self._metrics = _proxy_metrics(registry)

    # --- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the upstream client and (unless a steerer was given) the steering runtime."""
        async with self._start_lock:
            if self._started:
                return
            if self.steerer is None:
                from steerkit._runtime import Runtime

                self._runtime = await Runtime.open(self.settings)
                self.steerer = self._runtime.steerer
                self._bind_metrics(self.steerer)
                if self._upstream_base_url is None:
                    self._upstream_base_url = self._runtime.chat_base_url
            if self._upstream_base_url is None:
                raise ConfigError("no upstream chat model: set chat_model.base_url")
            s = self.settings.server
            self.client = UpstreamClients(
                self._upstream_base_url,
                timeout=httpx.Timeout(s.upstream_timeout, connect=s.upstream_connect_timeout),
                max_connections=s.max_connections,
                transport=self._transport,
            )
            self._started = True
            self.upstream = UpstreamHealth(self._upstream_base_url)
            with self.client.pick() as http:
                if not await self.upstream.check(http, self._upstream_headers(None)):
                    log.warning("the upstream chat server %s is %s: chat requests get 502 (and start no search) until it "
                                "answers; /healthz reports it", self.upstream.public_url, self.upstream.error)
            _freeze_startup_heap()
            log.info("steerkit proxy ready; upstream %s", mask_credentials(self._upstream_base_url))

    async def shutdown(self) -> None:
        """Refuse new requests, let requests in flight finish (bounded), then close the upstream."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.settings.server.shutdown_timeout)
        except TimeoutError:
            log.warning("shutdown: %d request(s) still in flight after %.0fs", self._in_flight, self.settings.server.shutdown_timeout)
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None
        self._started = False
        if multiprocess_dir():  # a --workers worker: its live gauges leave the scrape with it
            mark_process_dead(os.getpid())

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.startup()
        except SteerkitError as e:
            raise RuntimeError(e.message) from None  # uvicorn reports it and exits
        try:
            yield
        finally:
            await self.shutdown()

    # --- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan (websockets are not routed)
            return
        path = scope["path"]
        route = path if path in _ROUTES else "other"
        status = [0]

        async def send_tracking(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        metrics = self.metrics
        metrics.in_flight.inc()
        self._in_flight += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send_tracking)
        finally:
            metrics.child(metrics.requests, route, str(status[0] or 499)).inc()  # 499: client closed request
            metrics.worker_requests.inc()
            metrics.in_flight.dec()
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allowed = exc.headers.get("Allow", "") if exc.headers else ""
            err = _HTTPError(405, f"method {request.method} not allowed here (use {allowed})", "invalid_request_error",
                             "method_not_allowed")
        elif exc.status_code == 404:
            err = _HTTPError(404, f"unknown route {request.method} {request.url.path}", "invalid_request_error", "not_found")
        else:
            err = _HTTPError(exc.status_code, str(exc.detail), "invalid_request_error")
        return _error_response(err)

    async def _proxy_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _HTTPError)
        return _error_response(exc)

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(_HTTPError(500, "internal proxy error (see the proxy's log)", "server_error"))

    def _authorize(self, request: Request) -> None:
        if not self._keys:
            return
        given = request.headers.get("authorization", "").encode("latin-1")
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        ok = False
        for key in self._keys:  # compare against every key: timing does not say which one matched
            ok |= hmac.compare_digest(token, key)
        if not ok:
            raise _HTTPError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_request_error", "invalid_api_key")

    async def _ready(self, request: Request) -> UpstreamClients:
        self._authorize(request)
        if self._draining:
            raise _HTTPError(503, "the proxy is shutting down; retry on another instance", "server_error", "shutting_down")
        if not self._started:
            await self.startup()
        assert self.client is not None
        return self.client

    # --- routes ----------------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        status = "draining" if self._draining else "ok"
        body: dict[str, Any] = {"status": status, "version": __version__}
        if self.upstream is not None and self.client is not None and not self._draining:
            if self.upstream.stale():
                with self.client.pick() as http:
                    await self.upstream.refresh(http, self._upstream_headers(None))
            body["upstream"] = self.upstream.as_dict()
            if self.upstream.ok is False:
                body["status"] = "upstream_unavailable"
        return Response(json.dumps(body), 200 if body["status"] == "ok" else 503, media_type="application/json")

    async def _metrics_route(self, request: Request) -> Response:
        self._authorize(request)
        return Response(self.render_metrics(), 200, headers={"content-type": CONTENT_TYPE_LATEST})

    def render_metrics(self) -> bytes:
        """The Prometheus text exposition of the one registry (the steerer's and the proxy's series),
        or, under ``--workers``, of every worker's."""
        self.metrics  # noqa: B018 - make sure a registry exists
        assert self._registry is not None
        return render_all_processes(self._registry)

    def _upstream_headers(self, request: Request | None) -> list[tuple[bytes, bytes]]:
        out = [(b"accept-encoding", b"identity")]
        auth: bytes | None = None
        for k, v in request.headers.raw if request is not None else ():
            if k in _FORWARDED:
                out.append((k, v))
            elif k == b"authorization":
                auth = v
        if self._upstream_auth:
            out.append((b"authorization", self._upstream_auth))
        elif not self._keys and auth is not None:
            out.append((b"authorization", auth))  # pass-through mode: the client's key is the upstream's
        return out

    def _upstream_error(self, e: httpx.HTTPError, phase: str) -> _HTTPError:
        """The one mapping of an upstream failure to a status, message and code (counted)."""
        timed_out = isinstance(e, httpx.TimeoutException)
        status, message, code = _UPSTREAM_ERRORS[(phase, timed_out)]
        self.metrics.upstream_errors.labels(_ERROR_KIND[(phase, timed_out)]).inc()
        url = public_url(self._upstream_base_url)  # which upstream, never its credentials
        if phase == "connect" and not timed_out and self.upstream is not None:
            self.upstream.mark_down(f"unreachable ({type(e).__name__})")
        return _HTTPError(status, message.format(name=type(e).__name__).replace("upstream model server", f"upstream model server {url}", 1),
                          "upstream_error", code)

    async def _models(self, request: Request) -> Response:
        client = await self._ready(request)
        with client.pick() as http:
            try:
                resp = await http.get("models", headers=self._upstream_headers(request))
            except httpx.HTTPError as e:
                raise self._upstream_error(e, "connect") from None
        return self._upstream_response(resp.content, resp, [])

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise _HTTPError(400, "invalid Content-Length header", "invalid_request_error", "invalid_body") from None
            if n > limit:
                raise _too_large(n, limit)
        chunks: list[bytes] = []
        size = 0
        timeout = self.settings.server.body_timeout
        try:
            async with asyncio.timeout(timeout):  # a client that sends its body slowly, or never, is cut off
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(size, limit)
                    chunks.append(chunk)
        except TimeoutError:
            raise _HTTPError(408, f"the request body did not arrive within {timeout:g}s (server.body_timeout)",
                             "invalid_request_error", "request_timeout") from None
        return b"".join(chunks)

    async def _steer(self, body: dict[str, Any], options: Any) -> dict[str, str]:
        """Steer ``body["messages"]`` in place; the response headers saying what was done."""
        metrics = self.metrics
        try:
            new_messages, info = await self.steerer.prepare(body["messages"], options)  # type: ignore[union-attr]
        except UserError as e:
            raise _HTTPError(400, e.message, "invalid_request_error", "steering_rejected") from None
        except SteerkitError as e:
            metrics.steer.labels("error").inc()
            detail = mask_credentials(str(e))  # the log gets details, the client a stable code
            if self.settings.server.on_steer_error == "fail":
                log.error("steering failed: %s: %s", type(e).__name__, detail)
                raise _HTTPError(502, "steering failed (see the proxy's log)", "upstream_error", "steering_failed") from None
            log.warning("steering failed, forwarding unsteered: %s: %s", type(e).__name__, detail)
            return {"X-Steerkit-Error": type(e).__name__, "X-Steerkit-Note": "steering_failed"}
        body["messages"] = new_messages
        metrics.child(metrics.steer, str(getattr(info, "cache", "unknown"))).inc()
        return steer_headers(info)

    async def _chat(self, request: Request) -> Response:
        client = await self._ready(request)
        t0 = time.perf_counter()
        try:
            raw = await self._read_body(request)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is listening; counted as 499
        return await _unless_disconnected(request, self._forward(request, client, raw, t0))

    async def _forward(self, request: Request, client: UpstreamClients, raw: bytes, t0: float) -> Response:
        """Parse and steer the request, call the upstream; the response (whole, or a relay)."""
        try:
            options, body = parse_chat_body(raw)
        except WireError as e:
            raise _HTTPError(400, e.message, "invalid_request_error", e.code, e.param) from None
        if self.upstream is not None and self.upstream.ok is False:  # down: 502 now, before steering can start a search
            with client.pick() as http:
                if not await self.upstream.usable(http, self._upstream_headers(request)):
                    self.metrics.upstream_errors.labels("connect").inc()
                    raise _HTTPError(502, f"the upstream model server {self.upstream.public_url} is {self.upstream.error}",
                                     "upstream_error", "upstream_unreachable")
        headers = await self._steer(body, options)
        added = time.perf_counter() - t0
        self.metrics.added.observe(added)
        headers["X-Steerkit-Added-Ms"] = f"{added * 1000:.1f}"
        # steer_headers' values are safe header values already (`header_value`); the rest are ours
        extra = [(k.lower().encode("ascii"), v.encode("ascii")) for k, v in headers.items()]

        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        up_headers = self._upstream_headers(request)
        up_headers.append((b"content-type", b"application/json"))
        http, release = client.acquire()
        try:
            req = http.build_request("POST", "chat/completions", content=payload, headers=up_headers)
            try:
                resp = await http.send(req, stream=True)
            except httpx.HTTPError as e:
                raise self._upstream_error(e, "connect") from None
        except BaseException:
            release()
            raise
        if resp.status_code < 400 and resp.headers.get("content-type", "").startswith("text/event-stream"):
            return self._relay_stream(resp, release, extra)  # releases when the stream ends
        try:
            if resp.status_code >= 400:
                self.metrics.upstream_errors.labels("status").inc()
            try:
                content = await resp.aread()
            except httpx.HTTPError as e:
                raise self._upstream_error(e, "read") from None
        finally:
            await resp.aclose()
            release()
        return self._upstream_response(content, resp, extra)

    def _upstream_response(self, content: bytes, resp: httpx.Response, extra: list[tuple[bytes, bytes]]) -> Response:
        """The upstream's answer as it came; an error without a body gets one saying which upstream
        answered what (an empty 404 would leave the client with no detail at all)."""
        headers = _relay_headers(resp) + extra
        if resp.status_code >= 400 and not content.strip():
            content = _error_body(f"the upstream model server {public_url(self._upstream_base_url)} answered "
                                  f"{resp.status_code} {resp.reason_phrase} with an empty body", "upstream_error", resp.status_code)
            headers = [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]
        return Response(content, resp.status_code, headers=_header_dict(headers))

    def _relay_stream(self, resp: httpx.Response, release: Callable[[], None], extra: list[tuple[bytes, bytes]]) -> Response:
        metrics = self.metrics

        async def relay() -> AsyncIterator[bytes]:
            metrics.streams.inc()
            try:
                try:
                    async for chunk in resp.aiter_raw():
                        if chunk:
                            yield chunk
                except httpx.HTTPError as e:
                    err = self._upstream_error(e, "stream")
                    log.warning("upstream stream failed: %s", err.message)
                    yield _sse_error(err.message, err.type, err.code)
            finally:
                with anyio.CancelScope(shield=True):  # a client that hung up cancels us: still close upstream
                    await resp.aclose()
                # httpx binds a streamed response's stream to the response (a cycle of ~17 objects,
                # for the cyclic collector); it swaps in a ByteStream itself after `aread`: so do we
                resp.stream = _CONSUMED
                release()
                metrics.streams.dec()

        headers = _relay_headers(resp) + [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")] + extra
        return _RelayResponse(relay(), resp.status_code, headers=_header_dict(headers))


class UpstreamClients:
    """Connections to the upstream: `httpx.AsyncClient` shards of two connections each.

    One httpx pool's bookkeeping grows with its number of connections and waiting requests: on
    every request and every response closed it checks each idle connection for a server hang-up
    (two system calls each), so at 128 concurrent requests a single pool spends most of its time
    there, and shards of 8 still made ~16 such checks per request under many clients. Shards of
    two, the least busy one picked per request, keep it at ~2-3 whatever the concurrency. Shards
    are opened on demand and share one TLS context.
    """

    PER_SHARD = 2

    def __init__(self, base_url: str, *, timeout: httpx.Timeout, max_connections: int, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.transport = transport
        self.max_shards = 1 if transport is not None else max(1, -(-max_connections // self.PER_SHARD))
        self.per_shard = max(1, -(-max_connections // self.max_shards))
        self._ssl: Any = None
        self.shards: list[httpx.AsyncClient] = []
        self.load: list[int] = []
        self._add_shard()

    def _add_shard(self) -> None:
        if self._ssl is None and self.transport is None:
            self._ssl = httpx.create_ssl_context()  # built once (tens of ms), shared by every shard
        self.shards.append(
            httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                limits=httpx.Limits(max_connections=self.per_shard, max_keepalive_connections=self.per_shard),
                transport=self.transport,
                verify=self._ssl if self._ssl is not None else True,
                follow_redirects=False,
                trust_env=False,
            )
        )
        self.load.append(0)

    def acquire(self) -> tuple[httpx.AsyncClient, Callable[[], None]]:
        """The least busy shard and the function that releases it (call it exactly once)."""
        i = min(range(len(self.load)), key=self.load.__getitem__)
        if self.load[i] >= self.per_shard and len(self.shards) < self.max_shards:
            self._add_shard()
            i = len(self.shards) - 1
        self.load[i] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.load[i] -= 1

        return self.shards[i], release

    @contextlib.contextmanager
    def pick(self) -> Iterator[httpx.AsyncClient]:
        http, release = self.acquire()
        try:
            yield http
        finally:
            release()

    async def aclose(self) -> None:
        for c in self.shards:
            await c.aclose()


def create_app(
    settings: Settings,
    *,
    steerer: SteererLike | None = None,
    upstream_base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ProxyApp:
    """Build the proxy's ASGI app.

    With no ``steerer`` the app builds the steering runtime (packs, cache, search backend) from
    ``settings`` at startup; the upstream is ``upstream_base_url`` or ``settings.chat_model.base_url``
    (or, with neither, the embedded model's own server). ``transport`` replaces the HTTP transport
    towards the upstream (tests).
    """
    return ProxyApp(settings, steerer=steerer, upstream_base_url=upstream_base_url, transport=transport)


# --- helpers ------------------------------------------------------------------------------------


async def _unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """Run ``work`` while listening for the client's ``http.disconnect``: a client that hangs up
    (while steering waits for a search, or the upstream has not answered yet) cancels it, and with
    it the upstream request (499). The request body must have been read."""
    async with _HangupCancels(request.receive):
        return await work
    log.info("client disconnected before the upstream answered; the upstream request was cancelled")
    return Response(status_code=499)


_heap_frozen = False

#: The cyclic collector's young-generation threshold in a proxy process (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def _freeze_startup_heap() -> None:
    """Once per process, after start-up: collect, then move every object alive (modules, packs,
    indexes, the runtime: they live as long as the process) out of the cyclic collector's scans
    (`gc.freeze`). Under many clients more request objects live long enough to reach the oldest
    generation, and each full collection then rescanned the whole start-up heap (a pause of tens
    to hundreds of ms that every request in flight waited out). Reference counting still frees
    frozen objects; only cycles among them stay.

    It also raises the young generation's threshold to `GC_YOUNG_THRESHOLD` (never lowers it).
    A request's path leaves no cyclic garbage (`_HangupCancels`, `ProxyApp._relay_stream`), yet at
    700 the collector still ran every few requests, and each run rescanned the objects of every
    request in flight and promoted them towards full collections: its CPU per request grew with
    the number of concurrent streams (0.07 ms at 16, 0.19 at 64, 0.40 at 256 SSE streams
    measured). At 10 000 it runs every few hundred requests (young objects are freed by reference
    counting in the meantime; what the collector holds back is bounded by the threshold)."""
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:  # 0: the collector is switched off; leave it so
        gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


def _too_large(size: int, limit: int) -> _HTTPError:
    return _HTTPError(
        413,
        f"request body of {size} bytes exceeds the limit of {limit} bytes (server.max_body_bytes)",
        "invalid_request_error",
        "request_too_large",
    )


def _relay_headers(resp: httpx.Response) -> list[tuple[bytes, bytes]]:
    out = [(b"content-type", resp.headers.get("content-type", "application/json").encode("latin-1"))]
    for k, v in resp.headers.raw:
        lk = k.lower()
        if lk in _RELAYED or lk.startswith(b"x-ratelimit-"):
            out.append((lk, v))
    return out


def _header_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}


def worker_app() -> ProxyApp:
    """The app of one ``steerkit serve --workers N`` worker process (a uvicorn factory): the
    settings the command resolved, from ``$STEERKIT_SERVE_SETTINGS_JSON``; the runtime opens at
    startup."""
    import os

    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise ConfigError(f"{SETTINGS_ENV} is not set", hint="start workers with `steerkit serve --workers N`")
    settings = Settings.model_validate_json(raw)
    from steerkit import _http_guard

    _http_guard.header_timeout = settings.server.header_timeout
    return create_app(settings)

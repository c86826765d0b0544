"""The OpenAI-compatible steering proxy, as a pure ASGI application.

Point any OpenAI-compatible client's ``base_url`` at it. Each ``POST /v1/chat/completions`` is
steered by the middleware (`Steerer.prepare`) and forwarded to the chat-model server; the answer
comes back unchanged in shape, with steering metadata in ``X-Steerkit-*`` response headers.

Routes:

- ``POST /v1/chat/completions``: non-streaming, and SSE streaming passed through chunk by chunk as
  the upstream sends it (nothing is buffered). Unknown request fields go to the upstream
  untouched; the ``steerkit`` field (per-request `SteerOptions`) is removed first. Upstream errors
  come back with the upstream's status and body.
- ``GET /v1/models``: the upstream's model list.
- ``GET /healthz``: liveness (no auth).
- ``GET /metrics``: Prometheus text format.

Safety: `create_app` never binds anything (``steerkit serve`` binds 127.0.0.1 by default); optional
client API keys (``Authorization: Bearer``) compared in constant time with `hmac.compare_digest`;
request bodies over ``server.max_body_bytes`` get 413; upstream connect failures 502, upstream
timeouts 504 (inside a stream that has started: an OpenAI-style ``error`` SSE event, then the end of
the stream); on shutdown, requests in flight (streams included) finish before the upstream client
closes, and new requests get 503.

This module is written directly against the ASGI spec (no Starlette ``BaseHTTPMiddleware``) so a
stream is relayed as it arrives and a client disconnect cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol

import httpx

from steerkit._version import __version__
from steerkit.config import Settings
from steerkit.errors import SteerkitError, UserError

__all__ = ["ProxyApp", "UpstreamClients", "create_app"]

log = logging.getLogger("steerkit.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Latency histogram buckets (seconds) for the steering overhead.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

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
_FORWARDED = ("x-request-id", "openai-organization", "openai-project", "user-agent")


class SteererLike(Protocol):
    """What the proxy needs from `steerkit.middleware.Steerer`."""

    async def prepare(self, messages: list[dict], options: Any = None) -> tuple[list[dict], Any]: ...


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class _Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.in_flight = 0
        self.streams_in_flight = 0
        self.upstream_errors: dict[str, int] = defaultdict(int)
        self.steer: dict[str, int] = defaultdict(int)
        self.hist_counts = [0] * (len(BUCKETS) + 1)
        self.hist_sum = 0.0
        self.hist_n = 0

    def observe(self, seconds: float) -> None:
        self.hist_sum += seconds
        self.hist_n += 1
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                self.hist_counts[i] += 1
                return
        self.hist_counts[-1] += 1


def _error_body(message: str, type_: str, code: str | int | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _sse_error(message: str, type_: str, code: str | int | None) -> bytes:
    return b"data: " + _error_body(message, type_, code) + b"\n\n"


class ProxyApp:
    """The ASGI callable. Build it with `create_app`."""

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
        self._upstream_key = upstream_key.get_secret_value() if upstream_key else None
        self.client: UpstreamClients | None = None
        self.metrics = _Metrics()
        self._runtime: Any = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._steer_options: Any = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the upstream client and (unless a steerer was given) the steering runtime."""
        async with self._start_lock:
            if self._started:
                return
            from steerkit.middleware import SteerOptions

            self._steer_options = SteerOptions
            if self.steerer is None:
                from steerkit._runtime import Runtime

                self._runtime = await Runtime.open(self.settings)
                self.steerer = self._runtime.steerer
                if self._upstream_base_url is None:
                    self._upstream_base_url = self._runtime.chat_base_url
            if self._upstream_base_url is None:
                from steerkit.errors import ConfigError

                raise ConfigError("no upstream chat model: set chat_model.base_url")
            s = self.settings.server
            self.client = UpstreamClients(
                self._upstream_base_url,
                timeout=httpx.Timeout(s.upstream_timeout, connect=s.upstream_connect_timeout),
                max_connections=s.max_connections,
                transport=self._transport,
            )
            self._started = True
            log.info("steerkit proxy ready; upstream %s", self._upstream_base_url)

    async def shutdown(self) -> None:
        """Refuse new requests, let requests in flight finish (bounded), then close the upstream."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.settings.server.shutdown_timeout)
        except asyncio.TimeoutError:
            log.warning("shutdown: %d request(s) still in flight after %.0fs", self.metrics.in_flight, self.settings.server.shutdown_timeout)
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None
        self._started = False

    # --- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        # websockets: not served (the server closes the connection)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:  # report and let the server exit
                    text = e.message if isinstance(e, SteerkitError) else f"{type(e).__name__}: {e}"
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        status_box = [0]

        async def send_tracking(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status_box[0] = msg["status"]
            await send(msg)

        route = path if path in ("/v1/chat/completions", "/v1/models", "/healthz", "/metrics") else "other"
        self.metrics.in_flight += 1
        self._idle.clear()
        try:
            await self._dispatch(scope, receive, send_tracking, path, method)
        except _HTTPError as e:
            if status_box[0] == 0:
                await self._send_error(send_tracking, e)
        except _ClientGone:
            status_box[0] = 499  # nginx's "client closed request", for the metrics only
        except Exception:
            log.exception("internal error on %s %s", method, path)
            if status_box[0] == 0:
                await self._send_error(send_tracking, _HTTPError(500, "internal proxy error (see the proxy's log)", "server_error"))
        finally:
            self.metrics.requests[(route, status_box[0])] += 1
            self.metrics.in_flight -= 1
            if self.metrics.in_flight == 0:
                self._idle.set()

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, path: str, method: str) -> None:
        if path == "/healthz":
            _allow(method, "GET", "HEAD")
            body = {"status": "draining" if self._draining else "ok", "version": __version__}
            await _send_json(send, 503 if self._draining else 200, body)
            return
        if path not in ("/v1/chat/completions", "/v1/models", "/metrics"):
            raise _HTTPError(404, f"unknown route {method} {path}", "invalid_request_error", "not_found")
        self._authorize(scope)
        if path == "/metrics":
            _allow(method, "GET")
            await _send(send, 200, self.render_metrics().encode(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
            return
        if self._draining:
            raise _HTTPError(503, "the proxy is shutting down; retry on another instance", "server_error", "shutting_down")
        if not self._started:
            await self.startup()
        if path == "/v1/models":
            _allow(method, "GET")
            await self._models(scope, send)
        else:
            _allow(method, "POST")
            await self._chat(scope, receive, send)

    def _authorize(self, scope: Scope) -> None:
        if not self._keys:
            return
        given = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                given = v
                break
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        ok = False
        for key in self._keys:  # compare against every key: timing does not say which one matched
            ok |= hmac.compare_digest(token, key)
        if not ok:
            raise _HTTPError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_request_error", "invalid_api_key")

    # --- routes ----------------------------------------------------------------------------------

    def _upstream_headers(self, scope: Scope) -> dict[str, str]:
        out = {"accept-encoding": "identity"}
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        for name in _FORWARDED:
            if name in hdrs:
                out[name] = hdrs[name]
        if self._upstream_key:
            out["authorization"] = f"Bearer {self._upstream_key}"
        elif not self._keys and "authorization" in hdrs:
            out["authorization"] = hdrs["authorization"]  # pass-through mode: the client's key is the upstream's
        return out

    @contextlib.contextmanager
    def _upstream_connect(self) -> Iterator[None]:
        """Map a failure to reach the upstream to 504 (timeout) or 502 (unreachable), counted."""
        try:
            yield
        except httpx.TimeoutException:
            self.metrics.upstream_errors["timeout"] += 1
            raise _HTTPError(504, "the upstream model server timed out", "upstream_error", "upstream_timeout") from None
        except httpx.HTTPError as e:
            self.metrics.upstream_errors["connect"] += 1
            raise _HTTPError(502, f"the upstream model server is unreachable ({type(e).__name__})", "upstream_error", "upstream_unreachable") from None

    async def _models(self, scope: Scope, send: Send) -> None:
        assert self.client is not None
        with self.client.pick() as http, self._upstream_connect():
            resp = await http.get("models", headers=self._upstream_headers(scope))
        await _send(send, resp.status_code, resp.content, _relay_headers(resp))

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.client is not None
        t0 = time.perf_counter()
        raw = await self._read_body(scope, receive)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _HTTPError(400, f"the request body is not valid JSON: {e}", "invalid_request_error", "invalid_json") from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object", "invalid_request_error", "invalid_body")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise _HTTPError(400, "'messages' must be a non-empty array of message objects with a 'role'", "invalid_request_error", "invalid_messages", "messages")
        try:
            options, body = self._steer_options.from_request(body)
        except UserError as e:
            raise _HTTPError(400, e.message, "invalid_request_error", "invalid_steerkit_options", "steerkit") from None
        steer_headers: dict[str, str] = {}
        try:
            new_messages, info = await self.steerer.prepare(body["messages"], options)  # type: ignore[union-attr]
            body["messages"] = new_messages
            steer_headers = dict(info.headers())
            note = getattr(info, "note", None)
            if note:
                steer_headers["X-Steerkit-Note"] = note.encode("ascii", "replace").decode()[:200]
            self.metrics.steer[str(getattr(info, "cache", "unknown"))] += 1
        except UserError as e:
            raise _HTTPError(400, e.message, "invalid_request_error", "steering_rejected") from None
        except SteerkitError as e:
            self.metrics.steer["error"] += 1
            if self.settings.server.on_steer_error == "fail":
                raise _HTTPError(502, f"steering failed: {e.message}", "upstream_error", "steering_failed") from None
            log.warning("steering failed, forwarding unsteered: %s", e.message)
            steer_headers = {"X-Steerkit-Error": type(e).__name__}
        added = time.perf_counter() - t0
        self.metrics.observe(added)
        steer_headers["X-Steerkit-Added-Ms"] = f"{added * 1000:.1f}"
        extra = [(k.lower().encode("latin-1"), str(v).encode("latin-1", "replace")) for k, v in steer_headers.items()]

        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = self._upstream_headers(scope)
        headers["content-type"] = "application/json"
        with self.client.pick() as http:
            req = http.build_request("POST", "chat/completions", content=payload, headers=headers)
            with self._upstream_connect():
                resp = await http.send(req, stream=True)
            try:
                ctype = resp.headers.get("content-type", "")
                if resp.status_code >= 400 or not ctype.startswith("text/event-stream"):
                    await self._relay_whole(resp, send, extra)
                else:
                    await self._relay_stream(resp, receive, send, extra)
            finally:
                await resp.aclose()

    async def _relay_whole(self, resp: httpx.Response, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        if resp.status_code >= 400:
            self.metrics.upstream_errors["status"] += 1
        try:
            content = await resp.aread()
        except httpx.TimeoutException:
            self.metrics.upstream_errors["timeout"] += 1
            raise _HTTPError(504, "the upstream model server timed out", "upstream_error", "upstream_timeout") from None
        except httpx.HTTPError as e:
            self.metrics.upstream_errors["read"] += 1
            raise _HTTPError(502, f"the upstream connection failed ({type(e).__name__})", "upstream_error", "upstream_failed") from None
        await _send(send, resp.status_code, content, _relay_headers(resp) + extra)

    async def _relay_stream(self, resp: httpx.Response, receive: Receive, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        headers = _relay_headers(resp) + [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")] + extra
        await send({"type": "http.response.start", "status": resp.status_code, "headers": headers})
        self.metrics.streams_in_flight += 1

        async def watch_disconnect() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return

        watch = asyncio.create_task(watch_disconnect())
        try:
            try:
                async for chunk in resp.aiter_raw():
                    if watch.done():  # the client went away: stop; `resp.aclose()` cancels the upstream request
                        log.info("client disconnected mid-stream; cancelling the upstream request")
                        return
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TimeoutException:
                self.metrics.upstream_errors["stream_timeout"] += 1
                log.warning("upstream stream timed out")
                await send({"type": "http.response.body", "body": _sse_error("the upstream model server timed out mid-stream", "upstream_error", "upstream_timeout"), "more_body": True})
            except httpx.HTTPError as e:
                self.metrics.upstream_errors["stream"] += 1
                log.warning("upstream stream failed: %s", type(e).__name__)
                await send({"type": "http.response.body", "body": _sse_error(f"the upstream stream failed ({type(e).__name__})", "upstream_error", "upstream_stream_failed"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            self.metrics.streams_in_flight -= 1

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.server.max_body_bytes
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise _HTTPError(400, "invalid Content-Length header", "invalid_request_error", "invalid_body") from None
                if declared > limit:
                    raise _too_large(declared, limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _ClientGone
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def _send_error(self, send: Send, e: _HTTPError) -> None:
        await _send(send, e.status, _error_body(e.message, e.type, e.code, e.param), [(b"content-type", b"application/json")])

    # --- metrics ---------------------------------------------------------------------------------

    def render_metrics(self) -> str:
        """The Prometheus text exposition of the proxy's and the steerer's counters."""
        m = self.metrics
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{labels} {_num(value)}")

        metric(
            "steerkit_requests_total",
            "counter",
            "HTTP requests served by the proxy, by route and status.",
            [(f'{{route="{r}",status="{s}"}}', n) for (r, s), n in sorted(m.requests.items())],
        )
        metric("steerkit_requests_in_flight", "gauge", "Requests being served now (this scrape included).", [("", m.in_flight)])
        metric("steerkit_streams_in_flight", "gauge", "SSE streams being relayed now.", [("", m.streams_in_flight)])
        metric(
            "steerkit_upstream_errors_total",
            "counter",
            "Failed upstream exchanges, by kind.",
            [(f'{{kind="{k}"}}', n) for k, n in sorted(m.upstream_errors.items())],
        )
        metric(
            "steerkit_steered_requests_total",
            "counter",
            "Chat requests by steering cache outcome (hit, miss, computed, off, none, error).",
            [(f'{{cache="{k}"}}', n) for k, n in sorted(m.steer.items())],
        )
        c = getattr(self.steerer, "counters", None)
        hits = _counter(c, "cache_hits", m.steer.get("hit", 0))
        misses = _counter(c, "cache_misses", m.steer.get("miss", 0) + m.steer.get("computed", 0))
        metric("steerkit_cache_hits_total", "counter", "Example-set cache hits.", [("", hits)])
        metric("steerkit_cache_misses_total", "counter", "Example-set cache misses.", [("", misses)])
        metric("steerkit_searches_running", "gauge", "Coherence searches running now.", [("", _counter(c, "searches_running", 0))])
        metric("steerkit_searches_started_total", "counter", "Coherence searches started.", [("", _counter(c, "searches_started", 0))])
        metric("steerkit_escalations_total", "counter", "Labels escalated to human review.", [("", _counter(c, "escalations", 0))])
        metric("steerkit_searches_failed_total", "counter", "Coherence searches that failed.", [("", _counter(c, "searches_failed", 0))])
        metric("steerkit_search_model_calls_total", "counter", "Scoring calls made by finished searches.", [("", _counter(c, "search_model_calls", 0))])
        metric("steerkit_search_prompt_tokens_total", "counter", "Prompt tokens sent by finished searches.", [("", _counter(c, "search_prompt_tokens", 0))])
        name = "steerkit_added_latency_seconds"
        out.append(f"# HELP {name} Latency the proxy adds before the upstream call (parsing and steering).")
        out.append(f"# TYPE {name} histogram")
        cum = 0
        for b, n in zip(BUCKETS, m.hist_counts):
            cum += n
            out.append(f'{name}_bucket{{le="{b}"}} {cum}')
        out.append(f'{name}_bucket{{le="+Inf"}} {m.hist_n}')
        out.append(f"{name}_sum {_num(m.hist_sum)}")
        out.append(f"{name}_count {m.hist_n}")
        return "\n".join(out) + "\n"


class UpstreamClients:
    """Connections to the upstream: `httpx.AsyncClient` shards of a few connections each.

    One httpx pool's bookkeeping grows with its number of connections and waiting requests (at
    128 concurrent requests a single pool spends most of its time there); small shards, the least
    busy one picked per request, keep the per-request cost flat. Shards are opened on demand and
    share one TLS context.
    """

    PER_SHARD = 8

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

    @contextlib.contextmanager
    def pick(self) -> Iterator[httpx.AsyncClient]:
        i = min(range(len(self.load)), key=self.load.__getitem__)
        if self.load[i] >= self.per_shard and len(self.shards) < self.max_shards:
            self._add_shard()
            i = len(self.shards) - 1
        self.load[i] += 1
        try:
            yield self.shards[i]
        finally:
            self.load[i] -= 1

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


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _HTTPError(405, f"method {method} not allowed here (use {', '.join(allowed)})", "invalid_request_error", "method_not_allowed")


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


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, status: int, obj: Any) -> None:
    await _send(send, status, json.dumps(obj).encode(), [(b"content-type", b"application/json")])


def _counter(counters: Any, name: str, default: float) -> float:
    if counters is None:
        return default
    v = counters.get(name) if isinstance(counters, dict) else getattr(counters, name, None)
    return default if v is None or not isinstance(v, (int, float)) else v


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))

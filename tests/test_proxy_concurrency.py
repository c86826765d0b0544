"""The proxy under many clients (issue 21 item 7): what the per-request savings must not change.

Behaviour only, nothing timed: many kept-alive clients all get answers and no connection is reset;
upstream requests in flight spread over shards of two connections; the header deadline arms a
timer only for a request whose headers a read left incomplete, and still cuts off a stalled later
request on a kept-alive connection; a client hang-up answers 499 without leaving the request's task
cancelled, and a cancellation from outside is not swallowed; a down upstream is re-checked by one
request at a time; the start-up heap is frozen once per process. A real proxy on loopback, configured as ``steerkit serve`` configures uvicorn, in front of
fake upstreams (tests/fake_upstream.py, and a holding one here).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream
from proxy_serving import serving, settings_for

from steerkit import _http_guard, _server
from steerkit._config import SteerConfig
from steerkit._middleware import Steerer
from steerkit._server import UpstreamClients, _unless_disconnected, create_app
from steerkit._store import MemoryStore
from steerkit._upstream import UpstreamHealth
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer

uvicorn = pytest.importorskip("uvicorn", reason="the server extra is not installed")

PLAIN = {"model": "fake-echo", "messages": [{"role": "user", "content": "Say hello."}]}


def request_bytes(body: dict[str, Any] = PLAIN) -> bytes:
    payload = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(payload), payload))


async def read_response(reader: asyncio.StreamReader) -> int:
    """One whole response (content-length); its status. Raises if the server closed or reset."""
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    i = low.find(b"content-length:")
    await reader.readexactly(int(low[i + 15 : low.find(b"\r\n", i)]))
    return int(head[9:12])


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


def app_for(tmp_path: Path, registry: PackRegistry, upstream: str, **server: Any) -> _server.ProxyApp:
    steerer = Steerer(registry, MemoryStore(), FakeScorer(lambda p: 0.7, model="fake-scorer"), SteerConfig(miss_policy="off"))
    return create_app(settings_for(tmp_path, **server), steerer=steerer, upstream_base_url=upstream)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    yield up
    await up.stop()


class FakeHoldingUpstream:
    """A fake chat server that holds every chat request until `release` (``GET /models`` answers at
    once), and records which connection each held request came on."""

    def __init__(self) -> None:
        self.held: list[int] = []  # the client port of each request held
        self.enough = asyncio.Event()
        self.want = 0
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, want: int) -> FakeHoldingUpstream:
        self.want = want
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def release(self) -> None:
        self._release.set()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}'
        answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                i = low.find(b"content-length:")
                if i >= 0:
                    await reader.readexactly(int(low[i + 15 : low.find(b"\r\n", i)]))
                if head.startswith(b"POST"):
                    self.held.append(writer.get_extra_info("peername")[1])
                    if len(self.held) >= self.want:
                        self.enough.set()
                    await self._release.wait()
                writer.write(answer)
                await writer.drain()
        writer.close()


# --- many clients -------------------------------------------------------------------------------


async def test_many_kept_alive_clients_all_get_answers(tmp_path: Path, registry: PackRegistry, upstream: FakeUpstream) -> None:
    """64 kept-alive connections, 5 requests each back to back: every one answered 200, no
    connection refused, reset or closed early, every request reached the upstream."""
    app = app_for(tmp_path, registry, upstream.base_url)
    conns, per_conn = 64, 5
    async with serving(app, app.settings.server) as port:

        async def client() -> list[int]:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            statuses = []
            for _ in range(per_conn):
                w.write(request_bytes())
                await w.drain()
                statuses.append(await read_response(r))
            w.close()
            return statuses

        results = await asyncio.wait_for(asyncio.gather(*(client() for _ in range(conns))), 300)
    assert [s for statuses in results for s in statuses] == [200] * (conns * per_conn)
    assert len(upstream.requests) == conns * per_conn


async def test_upstream_requests_in_flight_spread_over_shards_of_two(tmp_path: Path, registry: PackRegistry) -> None:
    """16 chat requests held by the upstream at once: 16 upstream connections, in 8 shards of two
    (one pool per shard, so each request and response checks at most two idle connections)."""
    up = await FakeHoldingUpstream().start(want=16)
    try:
        app = app_for(tmp_path, registry, up.base_url)
        async with serving(app, app.settings.server) as port, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=32), timeout=120) as h:
            calls = [asyncio.create_task(h.post("/v1/chat/completions", json=PLAIN)) for _ in range(16)]
            await asyncio.wait_for(up.enough.wait(), 120)
            assert app.client is not None
            assert UpstreamClients.PER_SHARD == 2
            assert len(set(up.held)) == 16  # one upstream connection per request in flight
            assert len(app.client.shards) == 8 and max(app.client.load) == 2
            up.release()
            answers = await asyncio.gather(*calls)
        assert [a.status_code for a in answers] == [200] * 16
    finally:
        up.release()
        await up.stop()


# --- the header deadline ------------------------------------------------------------------------


async def test_header_timer_is_armed_only_when_a_read_leaves_headers_incomplete(
        tmp_path: Path, registry: PackRegistry, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("httptools")
    armed: list[object] = []
    real_arm = _http_guard._arm

    def counting_arm(proto: Any) -> None:
        was = proto._header_deadline
        real_arm(proto)
        if was is None and proto._header_deadline is not None:
            armed.append(proto)

    monkeypatch.setattr(_http_guard, "_arm", counting_arm)
    app = app_for(tmp_path, registry, upstream.base_url, header_timeout=60)
    async with serving(app, app.settings.server, http="GuardedHttpTools") as port:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(10):  # whole requests, one write each
            w.write(request_bytes())
            await w.drain()
            assert await read_response(r) == 200
        assert len(armed) == 1  # only the connection's own deadline, at connect
        raw = request_bytes()
        cut = raw.index(b"content-type")
        w.write(raw[:cut])  # half the headers
        await w.drain()
        for _ in range(1000):
            if len(armed) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(armed) == 2  # this request's headers stopped mid-way: its deadline is armed
        w.write(raw[cut:])
        await w.drain()
        assert await read_response(r) == 200
        w.close()


@pytest.mark.parametrize("http", ["GuardedHttpTools", "GuardedH11"])
async def test_a_stalled_later_request_on_a_kept_alive_connection_is_closed(
        tmp_path: Path, registry: PackRegistry, upstream: FakeUpstream, http: str) -> None:
    if http == "GuardedHttpTools":
        pytest.importorskip("httptools")
    app = app_for(tmp_path, registry, upstream.base_url, header_timeout=0.5)
    async with serving(app, app.settings.server, http=http) as port:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            w.write(request_bytes())
            await w.drain()
            assert await read_response(r) == 200
        w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")  # then nothing more
        await w.drain()
        rest = b""
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(30):  # only a hang reaches this
                while chunk := await r.read(65536):
                    rest += chunk
        assert b"200 OK" not in rest  # closed, not answered
        w.close()


# --- hang-ups and cancellation ------------------------------------------------------------------


class FakeRequest:
    """A fake Starlette request: ``receive`` hands out what the test queues."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()


async def test_hangup_answers_499_and_leaves_the_task_usable() -> None:
    request = FakeRequest()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> Any:
        started.set()
        try:
            await asyncio.Event().wait()  # an upstream that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def handler() -> int:
        response = await _unless_disconnected(request, work())  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the request's task goes on (sends the 499) without a stray cancel
        return response.status_code

    task = asyncio.create_task(handler())
    await started.wait()
    request.messages.put_nowait({"type": "http.disconnect"})
    assert await asyncio.wait_for(task, 30) == 499
    assert cancelled.is_set()


async def test_a_cancellation_from_outside_is_not_a_hangup() -> None:
    request = FakeRequest()
    started = asyncio.Event()

    async def work() -> Any:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(_unless_disconnected(request, work()))  # type: ignore[arg-type]
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_answer_before_any_hangup_is_returned() -> None:
    request = FakeRequest()

    async def work() -> Any:
        return _server.Response(b"ok", 200)

    response = await _unless_disconnected(request, work())  # type: ignore[arg-type]
    assert response.status_code == 200 and response.body == b"ok"


# --- the upstream's health under many clients ---------------------------------------------------


class FakeModelsClient:
    """A fake upstream HTTP client: ``GET models`` waits until released, then answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.calls = 0
        self.status = status
        self.released = asyncio.Event()

    async def get(self, path: str, headers: Any = None, timeout: Any = None) -> httpx.Response:
        self.calls += 1
        await self.released.wait()
        return httpx.Response(self.status)


async def test_a_down_upstream_is_rechecked_once_for_many_waiting_requests() -> None:
    health = UpstreamHealth("http://127.0.0.1:9/v1", recheck_s=0.0)
    health.mark_down("unreachable (ConnectError)")
    http = FakeModelsClient(200)
    waiters = [asyncio.create_task(health.usable(http)) for _ in range(20)]
    for _ in range(1000):
        if http.calls:
            break
        await asyncio.sleep(0.01)
    waiters[0].cancel()  # a client that hangs up does not cancel the check the others wait for
    http.released.set()
    results = await asyncio.gather(*waiters[1:])
    assert http.calls == 1
    assert results == [True] * 19 and health.ok is True


# --- the start-up heap --------------------------------------------------------------------------


async def test_startup_freezes_the_heap_once_per_process(tmp_path: Path, registry: PackRegistry, upstream: FakeUpstream,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    freezes: list[int] = []
    monkeypatch.setattr(_server, "_heap_frozen", False)
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(1))
    for _ in range(2):
        app = app_for(tmp_path, registry, upstream.base_url)
        await app.startup()
        await app.shutdown()
    assert freezes == [1]

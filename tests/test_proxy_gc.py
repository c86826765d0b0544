"""The proxy leaves no work for the cyclic garbage collector (issue 21 item 7).

Under many concurrent SSE streams the collector's CPU per request grew with the number of streams
in flight (each collection rescans every live request's objects). A request's path must therefore
leave no reference cycles behind: the hang-up guard lets go of its tasks, and a relayed stream's
httpx response lets go of its stream. And the proxy process raises the collector's young
threshold once, at start-up. Behaviour only, nothing timed; the app is driven as ASGI directly
(no client-side httpx objects), in front of an ``httpx.MockTransport`` upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from steerkit import _server
from steerkit._config import Settings
from steerkit._runtime import make_registry, make_steerer, make_store
from steerkit._server import _unless_disconnected, create_app
from steerkit.testing import FakeScorer

CHUNKS = [b'data: {"choices":[{"delta":{"content":"tok%d"}}]}\n\n' % i for i in range(4)] + [b"data: [DONE]\n\n"]


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """What the block left for the cyclic collector (the collector paused meanwhile)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    found: list[object] = []
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.extend(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            if enabled:
                gc.enable()


def names(objects: list[object]) -> set[str]:
    return {type(o).__qualname__ for o in objects}


class FakeRequest:
    """A fake Starlette request: ``receive`` hands out what the test queues."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()


async def test_the_hangup_guard_leaves_no_cycle() -> None:
    async def answered() -> Any:
        await asyncio.sleep(0)
        return _server.Response(b"ok", 200)

    async def hung_up(request: FakeRequest) -> Any:
        request.messages.put_nowait({"type": "http.disconnect"})
        await asyncio.Event().wait()  # an upstream that never answers; the hang-up cancels it

    with cyclic_garbage() as garbage:
        for _ in range(20):
            assert (await _unless_disconnected(FakeRequest(), answered())).status_code == 200  # type: ignore[arg-type]
            request = FakeRequest()
            assert (await _unless_disconnected(request, hung_up(request))).status_code == 499  # type: ignore[arg-type]
        await asyncio.sleep(0.01)  # the cancelled listeners finish
    left = names(garbage)
    assert not left & {"_HangupCancels", "Task", "CancelledError"}, sorted(left)


def fake_upstream_transport() -> httpx.MockTransport:
    """An upstream (fake) that streams `CHUNKS` as SSE, and lists one model."""

    async def sse() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "fake", "object": "model"}]})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse())

    return httpx.MockTransport(handler)


async def relay_once(app: _server.ProxyApp) -> list[dict[str, Any]]:
    """One streamed chat request through the ASGI app; the messages it sent."""
    body = json.dumps({"model": "fake", "stream": True, "messages": [{"role": "user", "content": "Hi."}],
                       "steerkit": {"enabled": False}}).encode()
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "http.request", "body": body, "more_body": False})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "root_path": "",
             "query_string": b"", "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    await app(scope, incoming.get, send)
    return sent


async def test_a_relayed_stream_leaves_no_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_server, "_heap_frozen", True)  # this test process's collector stays as it is
    settings = Settings.load(env={}, overrides={"cache_dir": str(tmp_path / "cache"), "server": {"log_level": "warning"}})
    steerer = make_steerer(settings, make_registry(settings), make_store(settings), FakeScorer(lambda p: 0.7, model="fake"))
    app = create_app(settings, steerer=steerer, upstream_base_url="http://upstream.invalid/v1",
                     transport=fake_upstream_transport())
    await app.startup()
    try:
        await relay_once(app)  # warm: first-use objects (shards, caches) are not garbage
        with cyclic_garbage() as garbage:
            for _ in range(10):
                sent = await relay_once(app)
                assert sent[0]["status"] == 200
                assert b"".join(m.get("body", b"") for m in sent[1:]) == b"".join(CHUNKS)
            await asyncio.sleep(0.01)
    finally:
        await app.shutdown()
    left = names(garbage)
    assert not left & {"Response", "BoundAsyncStream", "_HangupCancels", "Task"}, sorted(left)
    assert app.metrics.streams_in_flight == 0


@pytest.mark.parametrize(("before", "after"), [((700, 10, 10), (10_000, 10, 10)), ((50_000, 5, 5), None), ((0, 10, 10), None)])
def test_startup_raises_the_young_threshold_never_lowers_it(monkeypatch: pytest.MonkeyPatch, before: tuple[int, int, int],
                                                             after: tuple[int, int, int] | None) -> None:
    set_to: list[tuple[int, ...]] = []
    monkeypatch.setattr(_server, "_heap_frozen", False)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "collect", lambda *a: 0)
    monkeypatch.setattr(gc, "get_threshold", lambda: before)
    monkeypatch.setattr(gc, "set_threshold", lambda *t: set_to.append(t))
    _server._freeze_startup_heap()
    _server._freeze_startup_heap()  # once per process
    assert set_to == ([after] if after else [])

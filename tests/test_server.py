"""The steering proxy, driven by the official `openai` client.

Upstreams: the real llama.cpp server (`llama_server_url`, from conftest) for the normal paths, and
a fake raw-socket upstream (tests/fake_upstream.py) for the failure paths it cannot produce: an
upstream that cuts a stream, times out, or answers 429. Steering is the real `Steerer` over the
shipped packs and a temporary disk cache, with the *fake* scorer as search backend (no model runs
in the search; the chat answers come from the real model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from fake_upstream import FakeUpstream
from steerkit._runtime import make_registry, make_steerer, make_store
from steerkit._config import Settings
from steerkit._server import ProxyApp, create_app
from steerkit.testing import FakeScorer

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the same loop as the (session-scoped) fixtures

QUERY = "As a Democrat, what do you think about raising the minimum wage?"
PLAIN = [{"role": "user", "content": "Say hello."}]
WAIT = {"steerkit": {"miss_policy": "wait"}}


def make_settings(tmp_path: Path, **server: Any) -> Settings:
    return Settings.load(
        env={},
        overrides={
            "cache_dir": str(tmp_path / "cache"),
            "search": {"max_iterations": 8, "patience": 4, "restarts": 1},
            "server": {"log_level": "warning", **server},
        },
    )


def make_app(tmp_path: Path, upstream: str, **server: Any) -> ProxyApp:
    settings = make_settings(tmp_path, **server)
    registry = make_registry(settings)
    steerer = make_steerer(settings, registry, make_store(settings), FakeScorer(lambda p: 0.7, model="fake-scorer"))
    return create_app(settings, steerer=steerer, upstream_base_url=upstream)


@contextlib.asynccontextmanager
async def serving(app: ProxyApp) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", timeout_graceful_shutdown=20)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the proxy did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus exposition → {'name{labels}': value}, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def client(base: str, key: str = "unused", **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120, **kw)


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream(slow_s=3.0, n_chunks=10, chunk_delay=0.1).start()
    yield up
    await up.stop()


# --- real llama.cpp upstream --------------------------------------------------------------------


@pytest.mark.llama
async def test_openai_client_through_proxy_to_llama(tmp_path: Path, llama_server_url: str) -> None:
    app = make_app(tmp_path, llama_server_url)
    async with serving(app) as (base, _):
        c = client(base)
        models = await c.models.list()
        model = models.data[0].id  # the upstream's model list, relayed

        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": QUERY}], max_tokens=8, temperature=0, extra_body=WAIT
        )
        assert raw.status_code == 200
        completion = raw.parse()
        assert completion.choices[0].message.content is not None
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert raw.headers["x-steerkit-persona"]  # a persona was found in the query
        assert raw.headers["x-steerkit-cache"] in ("computed", "miss", "hit")
        assert raw.headers["x-steerkit-version"]
        assert float(raw.headers["x-steerkit-added-ms"]) >= 0

        # the example set is cached now: the streamed request is a cache hit
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": QUERY}], max_tokens=8, temperature=0, stream=True
        )
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-steerkit-cache"] == "hit"
        stream = raw.parse()
        pieces, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        assert len(pieces) >= 2 and "".join(pieces)
        assert finish in ("stop", "length")

        # unsteered request with no persona passes through
        plain = await c.chat.completions.create(model=model, messages=PLAIN, max_tokens=4, temperature=0)
        assert plain.choices[0].message.content is not None

        async with httpx.AsyncClient() as h:
            m = (await h.get(base + "/metrics")).text
        samples = metric_samples(m)
        assert samples['steerkit_requests_total{route="/v1/chat/completions",status="200"}'] == 3
        assert samples["steerkit_cache_hits_total"] == 1  # the first request computed, the stream hit, PLAIN has no persona
        assert samples["steerkit_proxy_added_latency_seconds_count"] == 3


# --- fake upstream: request shape ---------------------------------------------------------------


async def test_unknown_fields_pass_through_and_steering_changes_messages(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        c = client(base, key="client-key")
        sent = [{"role": "user", "content": QUERY}]
        raw = await c.chat.completions.with_raw_response.create(
            model="fake-echo",
            messages=sent,
            extra_body={"steerkit": {"miss_policy": "wait"}, "my_vendor_field": {"x": [1, 2]}, "top_k": 3},
        )
        assert raw.parse().choices[0].message.content == "ok"
        got = fake_upstream.requests[-1]
        assert got["my_vendor_field"] == {"x": [1, 2]} and got["top_k"] == 3
        assert "steerkit" not in got
        assert got["messages"] != sent  # steered: persona and examples injected
        assert raw.headers["x-steerkit-persona"]
        # with no proxy keys configured, the client's key is the upstream's (pass-through)
        assert fake_upstream.headers[-1]["authorization"] == "Bearer client-key"

        await c.chat.completions.create(model="fake-echo", messages=sent, extra_body={"steerkit": {"enabled": False}})
        assert fake_upstream.requests[-1]["messages"] == sent  # steering off: untouched


async def test_malformed_requests_get_openai_style_400(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _), httpx.AsyncClient(base_url=base) as h:
        n_before = len(fake_upstream.requests)
        for body in (b"{not json", b"[1, 2]", b'{"model": "fake-echo"}', b'{"model": "x", "messages": "hi"}'):
            r = await h.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, body
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["message"]
        assert len(fake_upstream.requests) == n_before  # nothing malformed reached the upstream
        r = await h.post("/v1/chat/completions", json={"model": "x", "messages": PLAIN, "steerkit": {"k": "many"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "steerkit"
        c = client(base)
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="fake-echo", messages=[])
        assert (await h.get("/v1/nope")).status_code == 404
        assert (await h.get("/v1/chat/completions")).status_code == 405
        assert (await h.get("/healthz")).json()["status"] == "ok"


async def test_models_are_the_upstreams(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        models = await client(base).models.list()
    assert [m.id for m in models.data] == ["fake-echo"]


async def test_oversized_request_gets_413(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url, max_body_bytes=64 * 1024)
    async with serving(app) as (base, _):
        c = client(base)
        with pytest.raises(openai.APIStatusError) as ei:
            await c.chat.completions.create(model="fake-echo", messages=[{"role": "user", "content": "x" * 100_000}])
        assert ei.value.status_code == 413
        assert ei.value.body["code"] == "request_too_large"  # type: ignore[index]
        ok = await c.chat.completions.create(model="fake-echo", messages=PLAIN)  # the proxy is fine afterwards
        assert ok.choices[0].message.content == "ok"
        assert not fake_upstream.requests[:-1]


async def test_client_api_keys(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url, api_keys=["key-one", "key-two"])
    async with serving(app) as (base, _):
        with pytest.raises(openai.AuthenticationError) as ei:
            await client(base, key="wrong").chat.completions.create(model="fake-echo", messages=PLAIN)
        assert ei.value.status_code == 401 and ei.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        assert not fake_upstream.requests
        ok = await client(base, key="key-two").chat.completions.create(model="fake-echo", messages=PLAIN)
        assert ok.choices[0].message.content == "ok"
        assert "authorization" not in fake_upstream.headers[-1]  # the proxy's key is never forwarded
        async with httpx.AsyncClient(base_url=base) as h:
            assert (await h.get("/healthz")).status_code == 200
            assert (await h.get("/metrics")).status_code == 401
            assert (await h.get("/metrics", headers={"authorization": "Bearer key-one"})).status_code == 200
            assert (await h.get("/v1/models")).status_code == 401


class FailingFakeSteerer:
    """A fake steerer whose steering always fails with a backend error."""

    async def prepare(self, messages: list[dict], options: Any = None) -> Any:
        from steerkit.errors import BackendUnavailableError

        raise BackendUnavailableError("fake search backend down")


@pytest.mark.parametrize("policy", ["fail", "passthrough"])
async def test_on_steer_error(tmp_path: Path, fake_upstream: FakeUpstream, policy: str) -> None:
    settings = make_settings(tmp_path, on_steer_error=policy)
    app = create_app(settings, steerer=FailingFakeSteerer(), upstream_base_url=fake_upstream.base_url)
    sent = [{"role": "user", "content": QUERY}]
    async with serving(app) as (base, _), httpx.AsyncClient(base_url=base) as h:
        r = await h.post("/v1/chat/completions", json={"model": "fake-echo", "messages": sent})
        m = metric_samples((await h.get("/metrics")).text)
    assert m['steerkit_proxy_steer_outcomes_total{cache="error"}'] == 1
    if policy == "fail":
        assert r.status_code == 502 and r.json()["error"]["code"] == "steering_failed"
        assert fake_upstream.requests == []
    else:
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
        assert r.headers["x-steerkit-error"] == "BackendUnavailableError"
        assert fake_upstream.requests[-1]["messages"] == sent  # forwarded unsteered


# --- fake upstream: failures --------------------------------------------------------------------


async def test_upstream_error_status_and_body_pass_through(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        with pytest.raises(openai.RateLimitError) as ei:
            await client(base).chat.completions.create(model="fake-429", messages=PLAIN)
        assert ei.value.status_code == 429
        assert ei.value.body == {"message": "fake rate limit", "type": "rate_limit_error", "param": None, "code": "fake_429"}
        assert ei.value.response.headers["retry-after"] == "7"


async def test_upstream_failing_mid_stream(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        c = client(base)
        got: list[str] = []
        with pytest.raises(openai.APIError) as ei:
            stream = await c.chat.completions.create(model="fake-fail-midstream", messages=PLAIN, stream=True)
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
        assert got == ["part0 ", "part1 "]  # what arrived before the cut was relayed as it came
        assert "upstream" in ei.value.message
        # the proxy survived: health, a normal stream and the error counter
        async with httpx.AsyncClient(base_url=base) as h:
            assert (await h.get("/healthz")).status_code == 200
            stream = await c.chat.completions.create(model="fake-echo", messages=PLAIN, stream=True)
            assert "".join([ch.choices[0].delta.content or "" async for ch in stream]) == "ok"
            m = (await h.get("/metrics")).text
        samples = metric_samples(m)
        assert samples['steerkit_upstream_errors_total{kind="stream"}'] == 1
        assert samples["steerkit_streams_in_flight"] == 0


async def test_upstream_timeout_is_504_and_unreachable_is_502(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url, upstream_timeout=0.5)
    async with serving(app) as (base, _):
        with pytest.raises(openai.APIStatusError) as ei:
            await client(base).chat.completions.create(model="fake-slow-headers", messages=PLAIN)
        assert ei.value.status_code == 504 and ei.value.body["code"] == "upstream_timeout"  # type: ignore[index]

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    app = make_app(tmp_path, dead)
    async with serving(app) as (base, _):
        with pytest.raises(openai.APIStatusError) as ei:
            await client(base).chat.completions.create(model="x", messages=PLAIN)
        assert ei.value.status_code == 502 and ei.value.body["code"] == "upstream_unreachable"  # type: ignore[index]


async def test_client_disconnect_cancels_upstream_stream(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    fake_upstream.chunk_delay = 0.2
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        async with httpx.AsyncClient(base_url=base) as h:
            body = {"model": "fake-slow-stream", "messages": PLAIN, "stream": True}
            async with h.stream("POST", "/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_raw():
                    break  # first chunk, then hang up
        for _ in range(100):
            if fake_upstream.closed_early:
                break
            await asyncio.sleep(0.05)
        assert fake_upstream.closed_early == 1 and fake_upstream.streams_done == 0
        assert app.metrics.streams_in_flight == 0


@pytest.mark.parametrize("model", ["fake-pause-stream", "fake-pause-headers"])
async def test_client_hangup_during_an_upstream_pause_cancels_the_upstream_request(
    tmp_path: Path, fake_upstream: FakeUpstream, model: str
) -> None:
    """The upstream pauses (120 s) mid-stream, or before answering at all; the client hangs up
    meanwhile. The proxy must close the upstream request then, not when the pause ends."""
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        async with httpx.AsyncClient(base_url=base) as h:
            body = {"model": model, "messages": PLAIN, "stream": model == "fake-pause-stream"}
            if model == "fake-pause-stream":
                async with h.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_raw():
                        break  # the first chunk arrived; the upstream pauses now; hang up
            else:
                request = asyncio.create_task(h.post("/v1/chat/completions", json=body))
                while not fake_upstream.requests:  # the upstream has the request and pauses
                    await asyncio.sleep(0.01)
                request.cancel()  # hang up
                with contextlib.suppress(asyncio.CancelledError):
                    await request
        # well inside the upstream's pause: the proxy closed the upstream connection
        assert await asyncio.wait_for(fake_upstream.hangups.get(), timeout=30) == model
        for _ in range(100):
            if app.metrics.streams_in_flight == 0 and app.client is not None and sum(app.client.load) == 0:
                break
            await asyncio.sleep(0.05)
        assert app.metrics.streams_in_flight == 0 and sum(app.client.load) == 0  # type: ignore[union-attr]


async def test_shutdown_finishes_in_flight_streams(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, server):
        c = client(base)
        stream = await c.chat.completions.create(model="fake-slow-stream", messages=PLAIN, stream=True)
        first = await stream.__anext__()
        assert first.choices[0].delta.content == "c0 "
        server.should_exit = True  # like SIGTERM: stop accepting, finish what is in flight
        rest = [chunk async for chunk in stream]
        texts = [ch.choices[0].delta.content for ch in rest if ch.choices[0].delta.content]
        assert texts == [f"c{i} " for i in range(1, 10)]
        assert rest[-1].choices[0].finish_reason == "stop"
        for _ in range(200):
            if not server.started or app.client is None:
                break
            await asyncio.sleep(0.05)
    assert app.client is None  # upstream client closed after the stream ended
    assert fake_upstream.streams_done == 1


async def test_metrics_exposition(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    app = make_app(tmp_path, fake_upstream.base_url)
    async with serving(app) as (base, _):
        c = client(base)
        for _ in range(2):
            await c.chat.completions.create(model="fake-echo", messages=[{"role": "user", "content": QUERY}], extra_body=WAIT)
        async with httpx.AsyncClient(base_url=base) as h:
            r = await h.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    samples = metric_samples(text)
    assert samples['steerkit_requests_total{route="/v1/chat/completions",status="200"}'] == 2
    assert samples["steerkit_proxy_added_latency_seconds_count"] == 2
    assert samples['steerkit_proxy_added_latency_seconds_bucket{le="+Inf"}'] == 2
    assert samples["steerkit_added_latency_seconds_count"] == 2  # the steerer's own series, same registry
    for name in ("steerkit_cache_hits_total", "steerkit_cache_misses_total", "steerkit_searches_running", "steerkit_escalations_total"):
        assert f"# TYPE {name} " in text
    # first request: a miss, computed while it waited; second: a hit
    assert samples["steerkit_cache_hits_total"] == 1 and samples["steerkit_cache_misses_total"] == 1
    assert samples["steerkit_searches_started_total"] == 1
    assert samples['steerkit_proxy_steer_outcomes_total{cache="computed"}'] == 1
    assert samples['steerkit_proxy_steer_outcomes_total{cache="hit"}'] == 1

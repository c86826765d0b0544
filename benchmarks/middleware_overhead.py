"""What steering adds to a chat request, and how many searches a stampede starts. Prints JSON.

    python benchmarks/middleware_overhead.py [--n 300] [--n-embedded 30] [--skip-embedded]
    python benchmarks/middleware_overhead.py --quick   # seconds: 20 pairs, 20-item pool, no embedded model (CI)

1. ``stub_server``: the same chat call made directly and through `steer(client, steerer)` to a
   tiny local OpenAI-compatible stub server (separate process, answers instantly), on a cache
   hit with a persona stated. ``added_latency_ms`` = steered − direct percentiles (what an app
   sees: steerkit's work plus sending the longer steered prompt); ``steerkit_processing_ms`` =
   steered − a direct call carrying the same steered payload (extraction, DiskStore lookup,
   retrieval, injection, wrapper); ``steerkit_added_ms`` is what steerkit itself measures and
   reports on each response (``resp.steerkit.added_ms``).
2. ``embedded_server``: the same, against the embedded llama.cpp server (xllamacpp) with
   ``max_tokens=1``. Here the steered request is also *longer* (the injected examples), so the
   model's extra prompt processing shows up in the end-to-end difference; ``steerkit_added_ms``
   stays the middleware's own part.
3. ``single_flight``: 100 concurrent requests for one uncached persona (miss policies ``wait``
   and ``background``; the search runs on a fake scorer with a small delay) and the number of
   searches they started.

The direct, steered and same-payload calls are interleaved in a random order each round, so
load from other processes affects all three alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

_REPLY = json.dumps(
    {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()


def _stub_server(port: int, ready: Any) -> None:
    """A minimal HTTP/1.1 keep-alive server answering every POST with a fixed chat completion."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(_REPLY)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + _REPLY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


def _summary(xs: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(xs, 0.5), 3), "p99": round(_pct(xs, 0.99), 3), "mean": round(statistics.fmean(xs), 3)}


async def _warm_steerer(model: str, cache_dir: str, max_pool_items: int | None = None) -> Any:
    """A Steerer on a DiskStore whose cache already holds the persona's example set, computed
    beforehand (`Steerer.compute`): its requests, with miss policy ``off``, are all cache hits."""
    from steerkit._middleware import SteerConfig, Steerer
    from steerkit._store import DiskStore
    from steerkit.models import SearchConfig
    from steerkit.packs import PackRegistry
    from steerkit.testing import FakeScorer, last_claim

    fake = FakeScorer(lambda p: 0.8 if "'Favor" in last_claim(p) else 0.35)  # fake search backend
    steerer = Steerer(
        PackRegistry.default(), DiskStore(cache_dir), fake,
        SteerConfig(search=SearchConfig(max_iterations=20, num_seed=4), k=20, miss_policy="off", model=model,
                    max_pool_items=max_pool_items),
    )
    await steerer.compute("polparty/republican")  # the full pool (105 items) unless max_pool_items
    assert await steerer.example_set("polparty/republican") is not None, "the warm-up stored no example set"
    return steerer


MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "I'm a Republican. Should the federal minimum wage be raised to $15 an hour?"},
]


async def _compare(base_url: str, model: str, n: int, cache_dir: str, max_tokens: int,
                   max_pool_items: int | None = None) -> dict[str, Any]:
    import openai

    from steerkit.adapters import steer

    steerer = await _warm_steerer(model, cache_dir, max_pool_items)
    direct = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    steered = steer(openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0), steerer)
    steered_messages, _ = await steerer.prepare(MESSAGES)  # what the steered call sends upstream
    d_ms: list[float] = []
    s_ms: list[float] = []
    p_ms: list[float] = []
    reported: list[float] = []
    d_tok: list[int] = []
    s_tok: list[int] = []
    kw = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    last: dict[str, Any] = {}

    async def run_direct() -> float:
        t = time.perf_counter()
        r = await direct.chat.completions.create(messages=MESSAGES, **kw)
        last["direct"] = r
        return (time.perf_counter() - t) * 1000

    async def run_steered() -> float:
        t = time.perf_counter()
        r = await steered.chat.completions.create(messages=MESSAGES, **kw)
        ms = (time.perf_counter() - t) * 1000
        assert r.steerkit.cache == "hit" and r.steerkit.examples_used > 0, r.steerkit
        last["steered"] = r
        return ms

    async def run_payload() -> float:
        t = time.perf_counter()
        await direct.chat.completions.create(messages=steered_messages, **kw)
        return (time.perf_counter() - t) * 1000

    arms = {"direct": (run_direct, d_ms), "steered": (run_steered, s_ms), "payload": (run_payload, p_ms)}
    rng = random.Random(0)
    for i in range(n + 5):  # 5 warm-up rounds; the arms run in a random order each round
        order = list(arms)
        rng.shuffle(order)
        for name in order:
            fn, sink = arms[name]
            ms = await fn()
            if i >= 5:
                sink.append(ms)
        if i >= 5:
            reported.append(last["steered"].steerkit.added_ms)
            r, rs = last["direct"], last["steered"]
            d_tok.append(r.usage.prompt_tokens if r.usage else 0)
            s_tok.append(rs.usage.prompt_tokens if rs.usage else 0)
    await direct.close()
    await steered.close()
    d, s, p = _summary(d_ms), _summary(s_ms), _summary(p_ms)
    out = {
        "requests": n,
        "direct_ms": d,
        "steered_ms": s,
        "added_latency_ms": {"p50": round(s["p50"] - d["p50"], 3), "p99": round(s["p99"] - d["p99"], 3)},
        "direct_with_steered_payload_ms": p,
        "steerkit_processing_ms": {"p50": round(s["p50"] - p["p50"], 3), "p99": round(s["p99"] - p["p99"], 3)},
        "steerkit_added_ms": _summary(reported),
        "examples_injected": last["steered"].steerkit.examples_used,
        "cache": last["steered"].steerkit.cache,
        "store": "DiskStore",
    }
    if any(d_tok):
        out["prompt_tokens"] = {"direct": d_tok[0], "steered": s_tok[0]}
    await steerer.aclose()
    return out


async def _stub(n: int, max_pool_items: int | None = None) -> dict[str, Any]:
    port = _free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_stub_server, args=(port, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("stub server did not start")
        with tempfile.TemporaryDirectory() as d:
            return await _compare(f"http://127.0.0.1:{port}/v1", "stub", n, d, max_tokens=1,
                                  max_pool_items=max_pool_items)
    finally:
        proc.terminate()
        proc.join(5)


async def _embedded(n: int) -> dict[str, Any]:
    from steerkit.backends import EmbeddedBackend

    threads = int(os.environ.get("STEERKIT_BENCH_THREADS", "1"))
    async with EmbeddedBackend(n_ctx=4096, n_parallel=1, n_threads=threads) as backend:
        with tempfile.TemporaryDirectory() as d:
            out = await _compare(backend.base_url, backend.chat_model, n, d, max_tokens=1)
    out["model"] = backend.chat_model
    out["n_threads"] = threads
    return out


async def _single_flight(n: int = 100) -> dict[str, Any]:
    from steerkit._middleware import SteerConfig, Steerer
    from steerkit._store import DiskStore
    from steerkit.models import SearchConfig
    from steerkit.packs import PackRegistry
    from steerkit.testing import FakeScorer, last_claim

    out: dict[str, Any] = {"concurrent_requests": n, "persona": "country/brazil"}
    for policy in ("wait", "background"):
        with tempfile.TemporaryDirectory() as d:
            fake = FakeScorer(lambda p: 0.8 if "'Yes" in last_claim(p) else 0.4, delay=0.0005)  # fake search backend
            st = Steerer(PackRegistry.default(), DiskStore(d), fake,
                         SteerConfig(search=SearchConfig(max_iterations=10, num_seed=4), max_pool_items=20,
                                     miss_policy=policy))
            msgs = [{"role": "user", "content": "I'm from Brazil. Is the economy doing well?"}]
            t = time.perf_counter()
            results = await asyncio.gather(*(st.prepare(msgs) for _ in range(n)))
            answered = (time.perf_counter() - t) * 1000
            await st.drain()
            out[policy] = {
                "searches_started": st.counters.searches_started,
                "cache_statuses": sorted({info.cache for _, info in results}),
                "all_answered_ms": round(answered, 1),
                "versions_seen": len({info.example_set_version for _, info in results if info.example_set_version}),
            }
            _, after = await st.prepare(msgs)
            out[policy]["next_request_cache"] = after.cache
            await st.aclose()
    return out


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="request pairs against the stub server")
    ap.add_argument("--n-embedded", type=int, default=30, help="request pairs against the embedded server")
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--single-flight", type=int, default=100, help="concurrent requests for one uncached persona")
    ap.add_argument("--quick", action="store_true",
                    help="seconds (CI): 20 request pairs, a 20-item pool, 20 concurrent requests, no embedded model")
    args = ap.parse_args(argv)
    pool_items = None
    if args.quick:
        args.n, args.skip_embedded, args.single_flight, pool_items = 20, True, 20, 20
    result: dict[str, Any] = {
        "benchmark": "middleware_overhead",
        "quick": args.quick,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    result["stub_server"] = await _stub(args.n, pool_items)
    if not args.skip_embedded:
        result["embedded_server"] = await _embedded(args.n_embedded)
    result["single_flight"] = await _single_flight(args.single_flight)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))

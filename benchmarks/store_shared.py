"""The shared store: cache-hit latency of `DiskStore` vs `RedisStore`, and proxy throughput with
1, 2 and 4 ``steerkit serve`` workers sharing one Redis vs the same workers on the disk cache.

Starts, all on loopback: a ``redis-server`` (Debian package) in a temporary folder, a stub OpenAI
chat upstream (raw asyncio, a fixed answer), and the proxy as users start it (``steerkit serve
--workers N [--store redis://…]``, miss policy ``off``: every request is a cache hit, filled
beforehand by the *fake* scorer). Then

- **hit latency**: ``store.get`` of one cached example set, p50/p99 in µs, for `MemoryStore` (the
  floor), `DiskStore`, `RedisStore` (this process has parsed the version before: one round trip)
  and a `RedisStore` with no memory (a replica seeing the version first: two round trips + parse);
- **proxy req/s**: ``--concurrency`` keep-alive connections for ``--duration`` s against each
  worker count, disk cache and Redis.

Prints JSON, with ratios against the disk cache measured in the same run. Usage::

    python benchmarks/store_shared.py [--gets 3000] [--workers 1 2 4] [--duration 3] [--concurrency 16]
    python benchmarks/store_shared.py --quick   # seconds: 200 gets, 1 worker, 0.5 s at 4 clients, a 12-item pool (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _loadgen import chat_request, closed_loop, free_port, machine, read_response, stop

QUERY = "As a Democrat, what do you think about raising the minimum wage?"
MODEL = "fake-bench"


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


# --- stub upstream (run as ``--_stub PORT``) ------------------------------------------------------


async def _stub_main(port: int) -> None:
    body = json.dumps({"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
    resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                i = low.find(b"content-length:")
                if i >= 0:
                    await reader.readexactly(int(low[i + 15: low.find(b"\r\n", i)]))
                writer.write(resp)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- hit latency ----------------------------------------------------------------------------------


def _pcts(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {"p50_us": round(1e6 * lat[len(lat) // 2], 1), "p99_us": round(1e6 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "mean_us": round(1e6 * statistics.fmean(lat), 1)}


POOL_ITEMS: int | None = None
"""The persona's pool cut to this many items (``--pool-items``; None: the whole pool), here and in the proxy."""


async def _fill(store: object) -> None:
    """Compute the benchmark persona's example set with the fake scorer into ``store``."""
    from steerkit import PackRegistry, Settings, Steerer
    from steerkit.testing import FakeScorer

    settings = Settings.load(env={}, overrides={"steer": {"max_pool_items": POOL_ITEMS}})
    steerer = Steerer(PackRegistry.default(), store, FakeScorer(lambda p: 0.7, model=MODEL), settings.steer_config())
    for m in await steerer.extract([{"role": "user", "content": QUERY}]):
        await steerer.compute(m.persona_id)
    await steerer.example_sets.aclose()


async def _hit_latency(redis_url: str, cache_dir: Path, n: int) -> dict[str, dict[str, float]]:
    from steerkit import DiskStore, MemoryStore, PackRegistry, SteerConfig
    from steerkit._compute import ExampleSets
    from steerkit._redis_store import RedisStore

    sets = ExampleSets(PackRegistry.default(), MemoryStore(), None, SteerConfig(model=MODEL, max_pool_items=POOL_ITEMS))
    [persona] = [m.persona_id for m in await _extract()]
    key = sets.cache_key(persona)  # the key the fill's steerer used (same model id and search config)
    stores = {
        "memory": MemoryStore(),
        "disk": DiskStore(cache_dir / "hit-disk"),
        "redis": RedisStore.from_url(f"{redis_url}?prefix=hit"),
        "redis_no_memory": RedisStore.from_url(f"{redis_url}?prefix=hit", memory_items=0),
    }
    out = {}
    for name, store in stores.items():
        if name != "redis_no_memory":
            await _fill(store)
        assert await store.get(key) is not None, name
        for _ in range(50):  # warm-up
            await store.get(key)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            await store.get(key)
            lat.append(time.perf_counter() - t)
        out[name] = _pcts(lat)
    for store in stores.values():
        close = getattr(store, "close", None)
        if close is not None:
            r = close()
            if r is not None:
                await r
    return out


async def _extract() -> list:
    from steerkit import MemoryStore, PackRegistry, Steerer

    st = Steerer(PackRegistry.default(), MemoryStore(), None)
    return await st.extract([{"role": "user", "content": QUERY}])


# --- proxy load -------------------------------------------------------------------------------------


async def _load(port: int, concurrency: int, duration: float, max_requests: int) -> dict:
    request = chat_request({"model": "stub", "messages": [{"role": "user", "content": QUERY}]})
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    hits = 0
    for r, w in conns:  # warm-up, and check the proxy steers from the cache
        w.write(request)
        await w.drain()
        status, head = await read_response(r)
        if status != 200:
            raise RuntimeError(f"proxy answered {status}")
        hits += b"x-steerkit-cache: hit" in head
    if not hits:
        raise RuntimeError("the proxy did not steer from the cache (no X-Steerkit-Cache: hit)")
    return await closed_loop(conns, request, duration=duration, max_requests=max_requests)


def _serve(upstream: str, cache_dir: Path, workers: int, store_url: str | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(STEERKIT_CACHE_DIR=str(cache_dir), STEERKIT_SEARCH_MODEL__BASE_URL="http://127.0.0.1:9/v1",
               STEERKIT_SEARCH_MODEL__MODEL=MODEL, STEERKIT_STEER__MISS_POLICY="off", STEERKIT_SERVER__LOG_LEVEL="warning",
               XDG_CONFIG_HOME=str(cache_dir / "xdg"))
    if POOL_ITEMS:
        env["STEERKIT_STEER__MAX_POOL_ITEMS"] = str(POOL_ITEMS)
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--chat-base-url", upstream,
           "--workers", str(workers)]
    if store_url:
        cmd += ["--store", store_url]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        time.sleep(1.0 + 0.5 * workers)  # let every worker finish starting
    except BaseException:
        stop(proc)
        raise
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gets", type=int, default=3000, help="store.get calls per store (default 3000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per proxy measurement")
    ap.add_argument("--concurrency", type=int, default=16, help="keep-alive client connections")
    ap.add_argument("--max-requests", type=int, default=20000)
    ap.add_argument("--pool-items", type=int, default=None, help="cut the persona's pool to this many items")
    ap.add_argument("--quick", action="store_true", help="seconds (CI): 200 gets, 1 worker, 0.5 s at 4 clients, a 12-item pool")
    ap.add_argument("--_stub", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stub:
        asyncio.run(_stub_main(args._stub))
        return
    if args.quick:
        args.gets, args.workers, args.duration, args.concurrency, args.pool_items = 200, [1], 0.5, 4, 12
    global POOL_ITEMS
    POOL_ITEMS = args.pool_items
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steerkit-store-bench-") as tmp:
        t = Path(tmp)
        rport = free_port()
        redis = subprocess.Popen([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--dir", tmp], stdout=subprocess.DEVNULL)
        sport = free_port()
        stub = subprocess.Popen([sys.executable, __file__, "--_stub", str(sport)])
        try:
            _wait_port(rport, redis)
            _wait_port(sport, stub)
            redis_url = f"redis://127.0.0.1:{rport}/0"
            hit = asyncio.run(_hit_latency(redis_url, t, args.gets))

            from steerkit import DiskStore, Settings
            from steerkit._redis_store import RedisStore

            disk_cache = t / "proxy-disk"
            asyncio.run(_fill(DiskStore(Settings.load(env={}, overrides={"cache_dir": str(disk_cache)}).examples_dir)))

            async def fill_redis() -> None:
                s = RedisStore.from_url(f"{redis_url.rsplit('/', 1)[0]}/1")
                await _fill(s)
                await s.close()

            asyncio.run(fill_redis())
            proxy: dict[str, dict[str, dict]] = {"disk": {}, "redis": {}}
            for workers in args.workers:
                for kind in ("disk", "redis"):
                    store_url = f"{redis_url.rsplit('/', 1)[0]}/1" if kind == "redis" else None
                    cache = disk_cache if kind == "disk" else t / f"proxy-redis-{workers}"
                    proc, port = _serve(f"http://127.0.0.1:{sport}/v1", cache, workers, store_url)
                    try:
                        proxy[kind][str(workers)] = asyncio.run(_load(port, args.concurrency, args.duration, args.max_requests))
                    finally:
                        stop(proc)
        finally:
            stop(stub)
            stop(redis)
    disk = hit["disk"]
    out = {
        "benchmark": "store_shared",
        "machine": machine(),
        "settings": {"quick": args.quick, "pool_items": args.pool_items, "gets": args.gets, "workers": args.workers, "duration_s": args.duration, "concurrency": args.concurrency},
        "note": "hit latency is one store.get of a cached example set; proxy figures are cache hits through "
        "`steerkit serve --workers N` to a stub upstream; client, proxy, Redis and stub share this machine's cores",
        "hit_latency": hit,
        "hit_latency_vs_disk": {name: {"p50": round(v["p50_us"] / disk["p50_us"], 2), "p99": round(v["p99_us"] / disk["p99_us"], 2)}
                                for name, v in hit.items()},
        "proxy": proxy,
        "proxy_rps_redis_vs_disk": {w: round(proxy["redis"][w]["rps"] / proxy["disk"][w]["rps"], 2) for w in proxy["redis"]},
        "proxy_rps_vs_1_worker_disk": {f"{k}/{w}": round(v["rps"] / proxy["disk"][str(args.workers[0])]["rps"], 2)
                                       for k in proxy for w, v in proxy[k].items()},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

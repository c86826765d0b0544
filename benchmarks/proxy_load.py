"""Load benchmark of the steering proxy: throughput and added latency vs a direct upstream.

Starts, all on loopback:

- a fast stub OpenAI upstream (raw asyncio HTTP/1.1, keep-alive; a fixed completion, or an SSE
  stream of ``--chunks`` chunks) in its own process;
- a bare relay: the same upstream through a minimal httpx pass-through (pure ASGI, under
  uvicorn, ``--workers`` processes) — the floor any Python proxy pays. Its connections are spread
  over httpx pools of two, as the proxy's are: one pool checks each of its idle connections on
  every request and response, which at 64 clients costs a single pool ~20 ms of CPU per request
  (httpx's cost, neither the machine's nor the proxy's);
- the proxy, started as users start it (``steerkit serve [--workers N]``), in front of the stub,
  steering with the real `Steerer` over the shipped packs and a disk cache filled before measuring
  (by the fake scorer, in this process; the proxy's search backend is never called: miss policy
  ``off``) — and, for comparison, with steering switched off per request
  (``"steerkit": {"enabled": false}``);

then sends the same chat requests directly to the stub, through the bare relay and through the
proxy at 1, 16 and 128 concurrent clients, streaming and not, and prints JSON: requests/second,
latency p50/p99 (ms, to the last byte) and p99/p50, the latency each adds over the direct upstream
(p50, p99), the serving processes' CPU time per request and the time they waited, runnable, for a
CPU (from /proc, workers included: a busy machine shows there, not in the CPU per request), the
client's own CPU (a saturated client process is reported, and the run repeated over several), the
proxy's figures as ratios of the bare relay's (same run, same machine), and per arm how
requests/s and p99/p50 hold up as clients are added (``scaling``).

Every run is bounded in request count and time. Usage::

    python benchmarks/proxy_load.py [--duration 3] [--concurrency 1 16 128] [--chunks 16] [--workers 1] [--client-procs 1]
    python benchmarks/proxy_load.py --quick   # seconds: 0.5 s runs at 1 and 4 clients, a 12-item pool (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _loadgen import (
    chat_request,
    closed_loop,
    free_port,
    load_in_processes,
    machine,
    serving_share,
    stop,
    warm_up,
)

QUERY = "As a Democrat, what do you think about raising the minimum wage?"


# --- stub upstream ------------------------------------------------------------------------------


def _completion_body() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short stub answer."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    ).encode()


def _stream_body(chunks: int) -> bytes:
    out = []
    for i in range(chunks):
        obj = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "stub",
            "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
        }
        data = b"data: " + json.dumps(obj).encode() + b"\n\n"
        out.append(b"%x\r\n%s\r\n" % (len(data), data))
    tail = b"data: [DONE]\n\n"
    out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    return b"".join(out)


async def _stub_main(port_file: str, chunks: int) -> None:
    plain = _completion_body()
    plain_resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(plain), plain)
    stream_resp = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + _stream_body(chunks)
    models = b'{"object":"list","data":[{"id":"stub","object":"model"}]}'
    models_resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(models), models)

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                low = head.lower()
                i = low.find(b"content-length:")
                if i >= 0:
                    n = int(low[i + 15 : low.find(b"\r\n", i)])
                body = await reader.readexactly(n) if n else b""
                if head.startswith(b"GET"):
                    writer.write(models_resp)
                elif b'"stream":true' in body or b'"stream": true' in body:
                    writer.write(stream_resp)
                else:
                    writer.write(plain_resp)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", 0, backlog=1024)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


# --- bare relay and proxy processes -------------------------------------------------------------


def relay_app() -> object:
    """A minimal httpx pass-through (uvicorn factory): what a Python relay costs with no steering.
    Requests go to the least busy of several small httpx pools (a new one when all are full)."""
    import httpx

    upstream = os.environ["BENCH_UPSTREAM"].rstrip("/") + "/"
    per_pool = 2
    pools: list[httpx.AsyncClient] = []
    load: list[int] = []

    def pick() -> int:
        i = min(range(len(load)), key=load.__getitem__) if load else -1
        if i < 0 or load[i] >= per_pool:
            limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
            pools.append(httpx.AsyncClient(base_url=upstream, limits=limits, trust_env=False))
            load.append(0)
            i = len(pools) - 1
        load[i] += 1
        return i

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    for c in pools:
                        await c.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        i = pick()
        try:
            c = pools[i]
            req = c.build_request("POST", "chat/completions", content=body, headers={"content-type": "application/json"})
            resp = await c.send(req, stream=True)
            try:
                await send({"type": "http.response.start", "status": resp.status_code,
                            "headers": [(b"content-type", resp.headers["content-type"].encode())]})
                async for chunk in resp.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await resp.aclose()
        finally:
            load[i] -= 1

    return app


def _wait_healthy(proc: subprocess.Popen, port: int, path: str, timeout: float = 120) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"helper process on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1, trust_env=False).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"helper process on port {port} did not start")


def _relay_main(port: int, workers: int) -> None:
    """The bare relay's process: uvicorn (its process supervisor when ``workers`` > 1) on an
    explicit TCP listening socket, as ``steerkit serve`` does (TCP_NODELAY on accepted sockets)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    sys.path.insert(0, str(Path(__file__).parent))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.set_inheritable(True)
    config = uvicorn.Config("proxy_load:relay_app", factory=True, workers=workers, log_level="warning", access_log=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    if workers > 1:
        import inspect

        if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn versions differ here
            Multiprocess(config, target=server.run, sockets=[sock]).run()  # type: ignore[call-arg]
        else:
            Multiprocess(config, sockets=[sock]).run()
    else:
        server.run(sockets=[sock])


def _start_relay(upstream: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, BENCH_UPSTREAM=upstream, PYTHONPATH=str(Path(__file__).parent))
    cmd = [sys.executable, __file__, "--_relay", str(port), str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_healthy(proc, port, "/")
    except BaseException:
        proc.kill()
        raise
    return proc, port


async def _fill_cache(cache_dir: str, pool_items: int | None = None) -> None:
    """Compute the benchmark persona's example set with the fake scorer into the proxy's cache
    (``pool_items``: its pool cut to that many items, as the proxy's ``steer.max_pool_items``)."""
    from steerkit import DiskStore, PackRegistry, Settings, Steerer
    from steerkit.testing import FakeScorer

    settings = Settings.load(env={}, overrides={"cache_dir": cache_dir, "steer": {"max_pool_items": pool_items}})
    steerer = Steerer(PackRegistry.default(), DiskStore(settings.examples_dir), FakeScorer(lambda p: 0.7, model="fake-bench"),
                      settings.steer_config())
    async with steerer:
        for m in await steerer.extract([{"role": "user", "content": QUERY}]):
            await steerer.compute(m.persona_id)


def pool_env(pool_items: int | None) -> dict[str, str]:
    """The proxy's environment for a pool cut to ``pool_items`` (none: the whole pool)."""
    return {"STEERKIT_STEER__MAX_POOL_ITEMS": str(pool_items)} if pool_items else {}


def _start_proxy(upstream: str, cache_dir: str, workers: int, pool_items: int | None = None) -> tuple[subprocess.Popen, int]:
    asyncio.run(_fill_cache(cache_dir, pool_items))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(STEERKIT_CACHE_DIR=cache_dir, STEERKIT_SEARCH_MODEL__BASE_URL="http://127.0.0.1:9/v1",
               STEERKIT_SEARCH_MODEL__MODEL="fake-bench", STEERKIT_STEER__MISS_POLICY="off",
               STEERKIT_SERVER__LOG_LEVEL="warning", XDG_CONFIG_HOME=str(Path(cache_dir) / "xdg"), **pool_env(pool_items))
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--chat-base-url", upstream,
           "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(proc, port, "/healthz")
    except BaseException:
        proc.kill()
        raise
    return proc, port


# --- load client --------------------------------------------------------------------------------


def _spawn(args: list[str], port_file: Path, timeout: float = 60) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"helper process {args[0]} exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"helper process {args[0]} did not start")


def _server_reading(pid: int | None) -> tuple[float | None, tuple[float, float] | None, float]:
    return (_cpu_seconds(pid) if pid else None), (serving_share(pid) if pid else None), time.perf_counter()


def _server_figures(res: dict, before: tuple, after: tuple) -> None:
    """The serving process tree's CPU ms per request, the cores it used and the cores' worth it
    spent runnable but waiting for a CPU (the machine's load, not the server's: on a quiet
    machine it is near 0), between two `_server_reading`s around the measured loop."""
    (cpu0, sched0, t0), (cpu1, sched1, t1) = before, after
    if cpu0 is not None and cpu1 is not None and res["requests"]:
        res["server_cpu_ms_per_request"] = round(1000 * (cpu1 - cpu0) / res["requests"], 3)
    if sched0 is not None and sched1 is not None and t1 > t0:
        res["server_cpu_share"] = round((sched1[0] - sched0[0]) / 1e9 / (t1 - t0), 2)
        res["server_wait_share"] = round((sched1[1] - sched0[1]) / 1e9 / (t1 - t0), 2)


async def _load(port: int, body: dict, *, concurrency: int, duration: float, max_requests: int,
                pid: int | None = None, client_procs: int = 1) -> dict:
    """``concurrency`` keep-alive connections, each sending requests back to back for ``duration`` s
    after a warm-up request on every connection at once (so the server's upstream connections are
    open before the clock starts); over ``client_procs`` client processes when more than one.
    With ``pid``, the serving process tree's figures for the measured loop (`_server_figures`)."""
    request = chat_request(body)
    if client_procs > 1:
        res, before = load_in_processes(port, request, concurrency=concurrency, processes=client_procs,
                                        duration=duration, max_requests=max_requests, at_start=lambda: _server_reading(pid))
    else:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
        await warm_up(conns, request)
        before = _server_reading(pid)
        res = await closed_loop(conns, request, duration=duration, max_requests=max_requests)
    if pid:
        _server_figures(res, before, _server_reading(pid))
    return res


async def _measured(pid: int | None, port: int, body: dict, *, client_procs: int = 1, **kw: object) -> dict:
    """`_load`; a run whose client process was saturated is run again over more client processes
    (and says so: ``client_processes``, ``client_saturated_with_one``)."""
    res = await _load(port, body, pid=pid, client_procs=client_procs, **kw)  # type: ignore[arg-type]
    more = min(4, os.cpu_count() or 1)
    if res.get("client_saturated") and client_procs < more:
        res = await _load(port, body, pid=pid, client_procs=more, **kw)  # type: ignore[arg-type]
        res["client_saturated_with_one"] = True
    return res


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its children (workers), from /proc (None elsewhere)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        pids = [pid]
        for task in Path(f"/proc/{pid}/task").glob("*"):
            pids += [int(c) for c in (task / "children").read_text().split()]
        total = 0
        for p in pids:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


async def _bench(args: argparse.Namespace, upstream_port: int, relay_port: int, proxy_port: int,
                 relay_pid: int | None = None, proxy_pid: int | None = None) -> dict:
    proxied = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
    base = {"model": "stub", "messages": [{"role": "user", "content": QUERY}], "max_tokens": 32}
    import httpx

    async with httpx.AsyncClient(timeout=300, trust_env=False) as c:
        r = await c.post(proxied, json=base)
        r.raise_for_status()
        steer_headers = {k: v for k, v in r.headers.items() if k.startswith("x-steerkit")}
        if steer_headers.get("x-steerkit-cache") != "hit":
            raise RuntimeError(f"the proxy does not see the filled example-set cache: {steer_headers}")
    runs = []
    for stream in (False, True):
        for conc in args.concurrency:
            body = dict(base, stream=stream)
            row: dict = {"stream": stream, "concurrency": conc}
            kw = {"concurrency": conc, "duration": args.duration, "max_requests": args.max_requests,
                  "client_procs": args.client_procs}
            row["direct"] = await _measured(None, upstream_port, body, **kw)
            row["bare_relay"] = await _measured(relay_pid, relay_port, body, **kw)
            row["proxy_steered"] = await _measured(proxy_pid, proxy_port, body, **kw)
            row["proxy_unsteered"] = await _measured(proxy_pid, proxy_port, dict(body, steerkit={"enabled": False}), **kw)
            for k in ("bare_relay", "proxy_steered", "proxy_unsteered"):
                row[k]["added_p50_ms"] = round(row[k]["p50_ms"] - row["direct"]["p50_ms"], 3)
                row[k]["added_p99_ms"] = round(row[k]["p99_ms"] - row["direct"]["p99_ms"], 3)
            bare = row["bare_relay"]
            row["steered_vs_bare_relay"] = {
                "rps_ratio": round(row["proxy_steered"]["rps"] / bare["rps"], 3) if bare["rps"] else None,
                "added_p50_ratio": round(row["proxy_steered"]["added_p50_ms"] / bare["added_p50_ms"], 2) if bare["added_p50_ms"] > 0 else None,
            }
            runs.append(row)
            steered = row["proxy_steered"]
            print(
                f"stream={stream} c={conc}: direct {row['direct']['rps']} rps | bare relay {bare['rps']} rps "
                f"+{bare['added_p50_ms']}/{bare['added_p99_ms']} ms p99/p50 {bare.get('p99_over_p50')} | steered "
                f"{steered['rps']} rps +{steered['added_p50_ms']}/{steered['added_p99_ms']} ms p99/p50 "
                f"{steered.get('p99_over_p50')} | unsteered {row['proxy_unsteered']['rps']} rps "
                f"+{row['proxy_unsteered']['added_p50_ms']} ms | CPU/request relay {bare.get('server_cpu_ms_per_request')} "
                f"steered {steered.get('server_cpu_ms_per_request')} ms | waiting for a CPU: relay "
                f"{bare.get('server_wait_share')} steered {steered.get('server_wait_share')} cores",
                file=sys.stderr,
            )
    return {"warm_request_headers": steer_headers, "runs": runs, "scaling": _scaling(runs)}


ARMS = ("direct", "bare_relay", "proxy_steered", "proxy_unsteered")


def _scaling(runs: list[dict]) -> dict:
    """Per arm and mode, across the concurrency levels: requests/s and p99/p50, and each level's
    requests/s as a share of the best lower level's (1.0: no loss with more clients)."""
    out: dict = {}
    for stream in (False, True):
        rows = sorted((r for r in runs if r["stream"] == stream), key=lambda r: r["concurrency"])
        mode = out["stream" if stream else "plain"] = {"concurrency": [r["concurrency"] for r in rows]}
        for arm in ARMS:
            rps = [r[arm]["rps"] for r in rows]
            mode[arm] = {
                "rps": rps,
                "p99_over_p50": [r[arm].get("p99_over_p50") for r in rows],
                "rps_vs_best_lower": [None] + [round(rps[i] / max(rps[:i]), 3) if max(rps[:i]) else None
                                               for i in range(1, len(rps))],
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--max-requests", type=int, default=20000, help="request cap per measurement")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--chunks", type=int, default=16, help="SSE chunks per streamed answer")
    ap.add_argument("--workers", type=int, default=1, help="proxy and bare-relay worker processes (default 1)")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="load-client processes (default 1; a run that saturates one is repeated over more)")
    ap.add_argument("--pool-items", type=int, default=None, help="cut the persona's pool to this many items")
    ap.add_argument("--quick", action="store_true", help="seconds (CI): 0.5 s runs at 1 and 4 clients, 4 chunks, a 12-item pool")
    ap.add_argument("--_stub", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_relay", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.duration, args.concurrency, args.chunks, args.max_requests, args.pool_items = 0.5, [1, 4], 4, 500, 12
    if args._relay:
        _relay_main(*args._relay)
        return
    if args._stub:
        asyncio.run(_stub_main(args._stub[0], int(args._stub[1])))
        return

    with tempfile.TemporaryDirectory(prefix="steerkit-bench-") as tmp:
        t = Path(tmp)
        procs = []
        try:
            stub, up_port = _spawn(["--_stub", str(t / "stub.port"), str(args.chunks)], t / "stub.port")
            procs.append(stub)
            upstream = f"http://127.0.0.1:{up_port}/v1"
            relay, relay_port = _start_relay(upstream, args.workers)
            procs.append(relay)
            proxy, px_port = _start_proxy(upstream, str(t / "cache"), args.workers, args.pool_items)
            procs.append(proxy)
            t0 = time.perf_counter()
            result = asyncio.run(_bench(args, up_port, relay_port, px_port, relay.pid, proxy.pid))
        finally:
            stop(procs)
    out = {
        "benchmark": "proxy_load",
        "machine": machine(),
        "settings": {"quick": args.quick, "duration_s": args.duration, "concurrency": args.concurrency,
                     "sse_chunks": args.chunks, "workers": args.workers, "pool_items": args.pool_items},
        "note": "latency is to the last byte; added = relay/proxy minus direct at the same concurrency; "
        "client, proxy and stub share this machine's cores, so high-concurrency figures include CPU contention: "
        "server_wait_share is the cores' worth of time the server was ready to run but waited for a CPU (near 0 on "
        "a quiet machine), client_cpu_share the busiest client process's (client_saturated: the client, not the "
        "server, limited the run); scaling: requests/s and p99/p50 across the concurrency levels per arm",
        "wall_s": round(time.perf_counter() - t0, 1),
        **result,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Adversarial load on the steering proxy: its ``/healthz`` latency while it receives the worst
inputs of issue 10 at a fixed rate, beside its latency idle.

Starts, all on loopback (127.0.0.1 only, nothing else is ever contacted):

- the stub OpenAI upstream of ``proxy_load.py``, in its own process;
- the proxy as users start it (``steerkit serve``), its cache filled by the fake scorer, with
  short client deadlines (``--header-timeout``, ``--body-timeout``) so that the slow clients'
  fate is seen within the run;

then probes ``GET /healthz`` at a fixed rate, first idle, then while attackers send, at
``--rate`` per second round-robin: JSON nested 100,000 deep, a lone UTF-16 surrogate, a
persona statement buried in 1 MB of text, a forced persona asking to ``wait`` (the operator's
policy is ``off``), an oversized body, a connection that sends half its headers and stops, one that
sends its headers and a tenth of its body and stops. Prints JSON: the probe latency p50/p99/max
(ms) idle and under attack, the attack's responses by kind and status, and how many slow
connections the proxy closed.

Bounded: ``--duration`` seconds per phase, at most ``--max-attacks`` attack requests, slow
connections held at most ``--hold`` seconds. Usage::

    python benchmarks/adversarial_load.py [--duration 5] [--rate 40] [--probe-rate 20]
    python benchmarks/adversarial_load.py --quick   # seconds: 1 s phases, 14 attacks, 2 s holds (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _loadgen import free_port, machine, stop
from proxy_load import QUERY, _fill_cache, _spawn, _wait_healthy, pool_env

HOST = "127.0.0.1"
KINDS = ("deep_json", "lone_surrogate", "huge_text", "forced_persona_wait", "oversized", "half_headers", "half_body")


def _bodies() -> dict[str, bytes]:
    msg = [{"role": "user", "content": QUERY}]
    return {
        "deep_json": b'{"model":"stub","messages":' + json.dumps(msg).encode() + b',"tools":'
        + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "lone_surrogate": b'{"model":"stub","messages":[{"role":"user","content":"I\'m a Democrat \\ud800"}]}',
        "huge_text": json.dumps({"model": "stub", "messages": [
            {"role": "user", "content": ("I am from Japan and I'm a Democrat. " * 28_000)[:1_000_000]}]}).encode(),
        "forced_persona_wait": json.dumps({"model": "stub", "messages": msg, "steerkit": {
            "persona": "country/japan", "miss_policy": "wait"}}).encode(),
        "oversized": b'{"model":"stub","messages":[{"role":"user","content":"' + b"x" * (5 * 1024 * 1024) + b'"}]}',
    }


def _start_proxy(upstream: str, cache_dir: str, header_timeout: float, body_timeout: float,
                 pool_items: int | None = None) -> tuple[subprocess.Popen, int]:
    asyncio.run(_fill_cache(cache_dir, pool_items))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(STEERKIT_CACHE_DIR=cache_dir, STEERKIT_SEARCH_MODEL__BASE_URL="http://127.0.0.1:9/v1",
               STEERKIT_SEARCH_MODEL__MODEL="fake-bench", STEERKIT_STEER__MISS_POLICY="off",
               STEERKIT_SERVER__LOG_LEVEL="warning", STEERKIT_SERVER__HEADER_TIMEOUT=str(header_timeout),
               STEERKIT_SERVER__BODY_TIMEOUT=str(body_timeout), XDG_CONFIG_HOME=str(Path(cache_dir) / "xdg"),
               **pool_env(pool_items))
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--host", HOST, "--port", str(port), "--chat-base-url", upstream]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(proc, port, "/healthz")
    except BaseException:
        proc.kill()
        raise
    return proc, port


async def _request(port: int, raw: bytes, timeout: float) -> tuple[int | None, bool]:
    """Send raw bytes on a fresh connection and read until the proxy closes it (at most
    ``timeout`` seconds); (the status, if a response came, and whether the proxy closed it)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    data, closed = b"", False
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
            closed = True
    except TimeoutError:
        pass
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    finally:
        writer.close()
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
    return status, closed


def _http(body: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _probe(port: int, rate: float, duration: float) -> list[float]:
    """``GET /healthz`` at a fixed rate on one kept-alive connection; latencies in ms."""
    import httpx

    out: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as h:
        t_end = time.perf_counter() + duration
        next_at = time.perf_counter()
        while next_at < t_end:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            t0 = time.perf_counter()
            r = await h.get("/healthz")
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.status_code
            next_at += 1 / rate
    return out


async def _attack(port: int, rate: float, duration: float, max_attacks: int, hold: float,
                  kinds: tuple[str, ...] = KINDS) -> dict[str, dict[str, int]]:
    bodies = _bodies()
    results: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    tasks = []

    async def one(kind: str) -> None:
        if kind == "half_headers":
            raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Ty"
        elif kind == "half_body":
            raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1000\r\n\r\n" + b'{"model":"stub"')
        else:
            raw = _http(bodies[kind])
        status, closed = await _request(port, raw, hold)
        outcome = str(status) if status is not None else "no_response"
        results[kind][f"{outcome}, {'closed_by_proxy' if closed else 'still_open'}"] += 1

    t_end = time.perf_counter() + duration
    next_at = time.perf_counter()
    i = 0
    while next_at < t_end and i < max_attacks:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(one(kinds[i % len(kinds)])))
        i += 1
        next_at += 1 / rate
    await asyncio.gather(*tasks)
    return {k: dict(v) for k, v in results.items()}


def _stats(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) >= 2 else ms * 99
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(q[98], 2), "max_ms": round(max(ms), 2)}


async def _bench(args: argparse.Namespace, port: int) -> dict:
    idle = await _probe(port, args.probe_rate, args.duration)
    probe = asyncio.create_task(_probe(port, args.probe_rate, args.duration))
    attacks = await _attack(port, args.rate, args.duration, args.max_attacks, args.hold, tuple(args.kinds))
    busy = await probe
    return {"healthz_idle": _stats(idle), "healthz_under_attack": _stats(busy),
            "p99_ratio": round(_stats(busy)["p99_ms"] / max(_stats(idle)["p99_ms"], 1e-9), 2), "attacks": attacks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per phase (default 5)")
    ap.add_argument("--rate", type=float, default=40.0, help="attack requests per second (default 40)")
    ap.add_argument("--probe-rate", type=float, default=20.0, help="/healthz probes per second (default 20)")
    ap.add_argument("--max-attacks", type=int, default=2000, help="attack request cap (default 2000)")
    ap.add_argument("--hold", type=float, default=15.0, help="longest a slow connection is held, seconds (default 15)")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="attacks to send (default: all)")
    ap.add_argument("--header-timeout", type=float, default=2.0, help="the proxy's server.header_timeout (default 2)")
    ap.add_argument("--body-timeout", type=float, default=2.0, help="the proxy's server.body_timeout (default 2)")
    ap.add_argument("--pool-items", type=int, default=None, help="cut the persona's pool to this many items")
    ap.add_argument("--quick", action="store_true",
                    help="seconds (CI): 1 s phases, 14 attacks, slow clients held 2 s, 0.5 s deadlines, a 12-item pool")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rate, args.probe_rate, args.max_attacks, args.hold = 1.0, 14.0, 10.0, 14, 2.0
        args.header_timeout = args.body_timeout = 0.5
        args.pool_items = 12
    with tempfile.TemporaryDirectory(prefix="steerkit-adv-") as tmp:
        t = Path(tmp)
        procs = []
        try:
            stub, up_port = _spawn(["--_stub", str(t / "stub.port"), "4"], t / "stub.port")
            procs.append(stub)
            proxy, port = _start_proxy(f"http://{HOST}:{up_port}/v1", str(t / "cache"), args.header_timeout, args.body_timeout,
                                       args.pool_items)
            procs.append(proxy)
            t0 = time.perf_counter()
            result = asyncio.run(_bench(args, port))
        finally:
            stop(procs)
    out = {
        "benchmark": "adversarial_load",
        "machine": machine(),
        "settings": {"quick": args.quick, "duration_s": args.duration, "kinds": args.kinds, "attack_rate_per_s": args.rate, "probe_rate_per_s": args.probe_rate,
                     "header_timeout_s": args.header_timeout, "body_timeout_s": args.body_timeout},
        "note": "healthz latency on one kept-alive connection, idle and while the attacks run; attack outcomes by "
        "HTTP status, or closed_by_proxy / still_open for the slow clients; client, proxy and stub share this machine",
        "wall_s": round(time.perf_counter() - t0, 1),
        **result,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

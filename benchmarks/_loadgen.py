"""What the HTTP load benchmarks share: free ports, stopping helper processes, the machine's
description, and a closed-loop load client.

The client is raw HTTP/1.1 on kept-alive connections: a general-purpose client's own overhead at
128 connections would otherwise dominate what is measured. It reports its own CPU use
(``client_cpu_share``, cores) and how much of the run it was on a CPU or waiting for one
(``client_busy_share``): a client busy most of the run is the bottleneck, not the server
(``client_saturated``; on a loaded machine it can be starved of CPU without using much), and
`load_in_processes` then spreads the connections over several client processes. `serving_share` reads, from /proc, how much of a run a server's process tree spent on
a CPU and how long it was ready to run but waited for one (the machine's load, not the server's).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import queue
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: A client process on a CPU, or waiting for one, for more than this share of a run limits what it measures.
CLIENT_SATURATED = 0.8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs: subprocess.Popen | Iterable[subprocess.Popen]) -> None:
    """Terminate, then kill what has not exited after 10 s."""
    procs = [procs] if isinstance(procs, subprocess.Popen) else list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def chat_request(body: dict[str, Any]) -> bytes:
    """A raw ``POST /v1/chat/completions`` with ``body`` as JSON."""
    payload = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(payload), payload))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one whole response (content-length or chunked); its status and lower-cased head."""
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    i = low.find(b"content-length:")
    if i >= 0:
        await reader.readexactly(int(low[i + 15 : low.find(b"\r\n", i)]))
    elif b"transfer-encoding: chunked" in low:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return int(head[9:12]), low


async def warm_up(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], request: bytes) -> None:
    """One request on every connection, all at once: the server's own upstream connections reach
    the run's concurrency before the clock starts (one at a time, they would not)."""

    async def one(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(request)
        await w.drain()
        await read_response(r)

    await asyncio.gather(*(one(r, w) for r, w in conns))


async def _run(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], request: bytes, *, duration: float,
               max_requests: int) -> tuple[list[float], int, float, tuple[float, float]]:
    """The closed loop itself: (latencies of the 200s, errors, wall seconds, this process's
    (seconds on a CPU, seconds on a CPU or runnable and waiting for one))."""
    lat: list[float] = []
    errors = sent = 0
    stop_at = time.perf_counter() + duration

    async def worker(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal errors, sent
        while time.perf_counter() < stop_at and sent < max_requests:
            sent += 1
            t = time.perf_counter()
            w.write(request)
            await w.drain()
            status, _ = await read_response(r)
            if status == 200:
                lat.append(time.perf_counter() - t)
            else:
                errors += 1

    t0, c0, s0 = time.perf_counter(), time.process_time(), _schedstat([os.getpid()])
    await asyncio.gather(*(worker(r, w) for r, w in conns))
    wall, cpu, s1 = time.perf_counter() - t0, time.process_time() - c0, _schedstat([os.getpid()])
    for _, w in conns:
        w.close()
    busy = (sum(s1) - sum(s0)) / 1e9 if s0 is not None and s1 is not None else cpu
    return lat, errors, wall, (cpu, busy)


def _summary(lat: list[float], errors: int, wall: float, client: list[tuple[float, float]]) -> dict[str, Any]:
    lat = sorted(lat)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else float("nan")

    cpu = max(c for c, _ in client) / wall if wall > 0 else 0.0  # the busiest client process, in cores
    busy = max(b for _, b in client) / wall if wall > 0 else 0.0
    out = {"requests": len(lat), "errors": errors, "rps": round(len(lat) / wall, 1), "p50_ms": pct(0.50),
           "p99_ms": pct(0.99), "mean_ms": round(1000 * statistics.fmean(lat), 3) if lat else float("nan"),
           "client_cpu_share": round(cpu, 2), "client_busy_share": round(busy, 2),
           "client_saturated": busy >= CLIENT_SATURATED}
    if lat:
        out["p99_over_p50"] = round(out["p99_ms"] / out["p50_ms"], 2) if out["p50_ms"] > 0 else None
    return out


async def closed_loop(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], request: bytes, *,
                      duration: float, max_requests: int) -> dict[str, Any]:
    """Each connection sends ``request`` back to back for ``duration`` s (at most ``max_requests`` in
    all); latency is to the last byte of a 200. The connections are closed afterwards."""
    lat, errors, wall, cpu = await _run(conns, request, duration=duration, max_requests=max_requests)
    return _summary(lat, errors, wall, [cpu])


def _client_process(port: int, request: bytes, n_conns: int, duration: float, max_requests: int, start_at: float,
                    out: Any) -> None:
    """One client process of `load_in_processes`: connect, warm up, start at ``start_at`` (wall clock)."""

    async def main() -> tuple[list[float], int, float, float]:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n_conns)]
        await warm_up(conns, request)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await _run(conns, request, duration=duration, max_requests=max_requests)

    out.put(asyncio.run(main()))


def load_in_processes(port: int, request: bytes, *, concurrency: int, processes: int, duration: float,
                      max_requests: int, at_start: Callable[[], Any] | None = None) -> tuple[dict[str, Any], Any]:
    """`closed_loop` with the ``concurrency`` connections spread over ``processes`` client
    processes (started together; latencies merged), for when one client process is saturated.
    Returns the summary and what ``at_start`` returned when the processes started their loops."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0 + 0.5 * processes  # after every process has connected and warmed up
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=_client_process, args=(port, request, n, duration, max_requests // processes, start_at, out))
             for n in shares if n]
    for p in procs:
        p.start()
    try:
        time.sleep(max(0.0, start_at - time.time()))
        started = at_start() if at_start is not None else None
        results: list[Any] = []
        deadline = time.time() + duration + 120
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=0.5))
            except queue.Empty:
                failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if failed or time.time() > deadline:
                    raise RuntimeError(f"a load-client process failed (exit codes {failed}) or hung") from None
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    lat = [x for r in results for x in r[0]]
    summary = _summary(lat, sum(r[1] for r in results), max(r[2] for r in results), [r[3] for r in results])
    return {**summary, "client_processes": len(procs)}, started


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (a uvicorn supervisor's workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        pids += [int(c) for c in (task / "children").read_text().split()]
    return pids


def serving_share(pid: int) -> tuple[float, float] | None:
    """Nanoseconds that ``pid``'s process tree (every thread) has spent on a CPU, and waiting,
    runnable, for one (``/proc/<pid>/task/<tid>/schedstat``); None where /proc has no schedstat.
    Two readings around a run give the cores it used and the cores' worth it waited."""
    try:
        return _schedstat(_tree(pid))
    except OSError:
        return None


def _schedstat(pids: list[int]) -> tuple[float, float] | None:
    """Nanoseconds on a CPU and runnable-waiting, summed over the threads of ``pids``."""
    try:
        run = wait = 0
        for p in pids:
            for task in Path(f"/proc/{p}/task").glob("*"):
                on_cpu, waiting, _ = (task / "schedstat").read_text().split()
                run += int(on_cpu)
                wait += int(waiting)
        return run, wait
    except (OSError, ValueError):
        return None

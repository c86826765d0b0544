"""What the HTTP load benchmarks share: free ports, stopping helper processes, the machine's
description, and a closed-loop load client.

The client is raw HTTP/1.1 on kept-alive connections: a general-purpose client's own overhead at
128 connections would otherwise dominate what is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Iterable
from typing import Any


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


async def closed_loop(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], request: bytes, *,
                      duration: float, max_requests: int) -> dict[str, Any]:
    """Each connection sends ``request`` back to back for ``duration`` s (at most ``max_requests`` in
    all); latency is to the last byte of a 200. The connections are closed afterwards."""
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

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in conns))
    wall = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    lat.sort()

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else float("nan")

    return {"requests": len(lat), "errors": errors, "rps": round(len(lat) / wall, 1), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "mean_ms": round(1000 * statistics.fmean(lat), 3) if lat else float("nan")}

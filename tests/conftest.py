"""Shared fixtures: the real embedded model, loaded once per test session.

* ``gguf_path`` — the default GGUF (``steerkit.backends.default_model_path()``; ``STEERKIT_MODEL_PATH``
  overrides it);
* ``embedded_backend`` — one started `EmbeddedBackend` shared by the whole session;
* ``llama_server_url`` — ``http://127.0.0.1:PORT/v1``: llama.cpp's OpenAI-compatible HTTP server
  on a free loopback port. It is the embedded backend's own listener (same process, same model),
  so the session loads the model once; use ``embedded_backend.chat_model`` as the model id.

The backend holds no event-loop objects, so tests on any loop may share it. Threads: 1 by default
(``STEERKIT_TEST_THREADS`` overrides): on a 2-core machine shared with other work, llama.cpp with 2
threads ran 2–20x slower than with 1 (its threads spin-wait for each other when preempted).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from steerkit.backends import EmbeddedBackend, default_model_path

TEST_N_CTX = 8192
TEST_N_PARALLEL = 4


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected no test (or deselected them all) fails with exit code 5, always."""
    if session.testscollected == 0 and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
async def embedded_backend(gguf_path: Path) -> AsyncIterator[EmbeddedBackend]:
    threads = int(os.environ.get("STEERKIT_TEST_THREADS", "1"))
    backend = EmbeddedBackend(
        gguf_path, n_ctx=TEST_N_CTX, n_parallel=TEST_N_PARALLEL, n_threads=threads, port=None
    )
    await backend.start()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture(scope="session")
def llama_server_url(embedded_backend: EmbeddedBackend) -> str:
    return embedded_backend.base_url


@pytest.fixture(autouse=True)
def _signal_handlers_left_as_found(request: pytest.FixtureRequest):
    """A test must leave SIGINT/SIGTERM handled as it found them: an in-process uvicorn server (or
    anything else) that leaks its handler makes a later Ctrl-C do nothing, and the tests of
    interrupted commands then fail at random."""
    import signal

    sigs = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in sigs}
    yield
    # (no gc.collect(): a leaked server task would restore the handler only when collected, at random)
    after = {s: signal.getsignal(s) for s in sigs}
    assert after == before, f"{request.node.nodeid} left signal handlers {after} (found {before})"

"""Shared fixtures: the real embedded model, loaded once per test session.

* ``gguf_path`` — the default GGUF (``steerkit.backends.default_model_path()``; ``STEERKIT_MODEL_PATH``
  overrides it);
* ``embedded_backend`` — one started `EmbeddedBackend` shared by the whole session;
* ``llama_server_url`` — ``http://127.0.0.1:PORT/v1``: llama.cpp's OpenAI-compatible HTTP server
  on a free loopback port. It is the embedded backend's own listener (same process, same model),
  so the session loads the model once; use ``embedded_backend.chat_model`` as the model id;
* ``tiny_demo`` — one tiny ``steerkit demo --json`` run on the real embedded models (probe included),
  whose output and cache the demo tests of test_cli and test_first_hour check (mark them
  ``xdist_group("demo")`` so that, under pytest-xdist, they share one run).

The backend holds no event-loop objects, so tests on any loop may share it. Threads: 1 by default
(``STEERKIT_TEST_THREADS`` overrides): on a 2-core machine shared with other work, llama.cpp with 2
threads ran 2–20x slower than with 1 (its threads spin-wait for each other when preempted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import xdist_groups

from steerkit.backends import EmbeddedBackend, default_model_path

TEST_N_CTX = 8192
TEST_N_PARALLEL = 4


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected no test (or deselected them all) fails with exit code 5, always."""
    if session.testscollected == 0 and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup`` (scripts/test.sh): the tests of a module that use one
    of its module-scoped fixtures (a service it starts: Label Studio, LiteLLM, Ray, redis-server, the
    built site) go to one worker, so the service starts once; every other test goes to any worker.
    Tests that share a session-scoped run say so with their own ``xdist_group`` mark. The groups
    reach the scheduler through tests/xdist_groups.py (xdist's own way fails on pytest 9.2)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group") is not None:
            continue
        if any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))
    xdist_groups.record(items)


def pytest_configure(config: pytest.Config) -> None:
    xdist_groups.start(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    xdist_groups.stop(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return xdist_groups.make_scheduler(config, log)


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


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> dict[str, Any]:
    """``{"out": <the demo's JSON>, "env": <its environment>}`` of one tiny demo on the real model
    (4 items, 2 iterations, 24-token answers, the probe's verdict computed); its config and cache
    folders are in ``env``, so a test can run ``steerkit cache ls`` on what the demo left."""
    tmp = tmp_path_factory.mktemp("tiny-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(XDG_CONFIG_HOME=str(tmp / "xdg"), STEERKIT_CACHE_DIR=str(tmp / "c"),
               STEERKIT_SEARCH_MODEL__N_THREADS="1")  # polite on a shared 2-core machine
    argv = ["demo", "--items", "4", "--max-iterations", "2", "--max-tokens", "24", "--json", "--model-path", str(gguf_path)]
    res = subprocess.run([sys.executable, "-m", "steerkit.cli", *argv], env=env, capture_output=True, text=True,
                         timeout=1400, check=False)
    assert res.returncode == 0, f"steerkit demo exited {res.returncode}:\n{res.stderr[-3000:]}"
    return {"out": json.loads(res.stdout), "env": env}


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

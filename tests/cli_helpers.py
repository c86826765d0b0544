"""Shared set-up of the command-line tests: an isolated environment whose search backend is a fake
scorer, the fake chat upstream on its own thread (``main()`` runs its own ``asyncio.run``), and a
``--json`` command run."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream

import steerkit._runtime as runtime_mod
from steerkit.cli import main
from steerkit.testing import FakeScorer

SMALL_SEARCH = {"STEERKIT_SEARCH__MAX_ITERATIONS": "12", "STEERKIT_SEARCH__PATIENCE": "6", "STEERKIT_SEARCH__RESTARTS": "2"}
"""Small searches for the tests of the commands (`cli_env(..., **SMALL_SEARCH)`): 2 restarts, where
the default runs 16 on a whole pool; the README's own `precompute` runs the default search."""


def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """No ``STEERKIT_*`` from the caller, config and cache under ``tmp_path``, ``env`` on top; the
    search backend is ``state["factory"]()`` (a fake scorer unless a test swaps it), every backend
    made is in ``state["backends"]`` and the last settings in ``state["settings"]``."""
    for k in list(os.environ):
        if k.startswith("STEERKIT_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STEERKIT_CACHE_DIR", str(tmp_path / "cache"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    state: dict[str, Any] = {"backends": [], "factory": lambda: FakeScorer(lambda p: 0.7, model="fake-scorer"),
                             "cache": tmp_path / "cache"}

    def fake_make_backend(settings: Any) -> Any:
        state["settings"] = settings
        b = state["factory"]()
        state["backends"].append(b)
        return b

    monkeypatch.setattr(runtime_mod, "make_backend", fake_make_backend)
    return state


@contextmanager
def threaded_upstream() -> Iterator[FakeUpstream]:
    """The fake upstream served from its own event loop in a daemon thread."""
    loop = asyncio.new_event_loop()
    up = FakeUpstream()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(up.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield up
    finally:
        asyncio.run_coroutine_threadsafe(up.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    """``main(argv)`` must exit 0; its stdout parsed as JSON."""
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)

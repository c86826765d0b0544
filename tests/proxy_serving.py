"""The proxy for real on loopback, configured as ``steerkit serve`` configures uvicorn: `serving`
runs an app under uvicorn, `settings_for` the settings of a proxy whose cache is under a test's
folder. Shared by the proxy's adversarial and concurrency tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from steerkit._config import ServerSettings, Settings
from steerkit._http_guard import uvicorn_limits


def settings_for(tmp_path: Path, **server: Any) -> Settings:
    """Settings with the cache under ``tmp_path``, no environment, and these ``server`` settings."""
    return Settings.load(env={}, overrides={"cache_dir": str(tmp_path / "cache"), "server": {"log_level": "warning", **server}})


@contextlib.asynccontextmanager
async def serving(app: Any, server: ServerSettings, http: str | None = None) -> AsyncIterator[int]:
    """The app under uvicorn with the proxy's connection limits and guarded protocol (``http``:
    which one; default httptools where installed, as `steerkit serve` does); yields its port."""
    import uvicorn  # the server extra: a test module that needs it skips or fails on its own

    limits = uvicorn_limits(server)
    if http is not None:
        limits["http"] = f"steerkit._http_guard:{http}"
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning",
                                        timeout_graceful_shutdown=5, **limits))
    task = asyncio.create_task(srv.serve())
    for _ in range(1000):
        if srv.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert srv.started
    try:
        yield srv.servers[0].sockets[0].getsockname()[1]
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 30)

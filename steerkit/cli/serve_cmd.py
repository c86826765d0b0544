"""``steerkit serve``: the OpenAI-compatible steering proxy under uvicorn.

One process (``server.workers = 1``) opens the runtime first, so configuration and backend errors
exit 1/2 with one line, then serves until SIGINT/SIGTERM. ``--workers N`` runs uvicorn's process
supervisor; each worker builds its own runtime from the same settings, handed over in the
environment (never on a command line), and writes its metrics to a fresh
``$PROMETHEUS_MULTIPROC_DIR`` for this run, so ``/metrics`` on any worker shows them all (removed
when the supervisor exits). Either way uvicorn gets the same options: the proxy's connection limits
(`steerkit._http_guard`), no proxy headers, no server header.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steerkit.errors import BackendUnavailableError, ConfigError

__all__ = ["run", "server_install_hint"]


def run(args: argparse.Namespace) -> int:
    from steerkit.cli import load_settings

    settings = load_settings(args)
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("`steerkit serve` needs the server extra (starlette, uvicorn)", hint=server_install_hint()) from None
    _warn_if_exposed(settings.server)
    if settings.server.workers > 1:
        return _serve_workers(settings)
    import asyncio

    return asyncio.run(_serve_async(settings))


def server_install_hint() -> str:
    """How to install the server extra: the clone's form when steerkit runs from a source checkout
    (an editable install), else the PyPI form."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    if (root / "pyproject.toml").exists() and (root / "steerkit").is_dir():
        return f'in {root}: pip install -e ".[server]"'
    return "pip install 'steerkit[server]'"


def _warn_if_exposed(s: Any) -> None:
    if s.host not in ("127.0.0.1", "localhost", "::1") and not s.api_keys:
        print(f"steerkit: warning: binding {s.host} without server.api_keys: anyone who can reach it can use the proxy",
              file=sys.stderr)


def _uvicorn_config(app: Any, s: Any, **kw: Any) -> Any:
    """The `uvicorn.Config` both ways of serving use (``app``: an app, or an import string)."""
    import uvicorn

    from steerkit._http_guard import uvicorn_limits

    return uvicorn.Config(app, host=s.host, port=s.port, lifespan="on", log_level=s.log_level,
                          timeout_graceful_shutdown=int(s.shutdown_timeout) or None, proxy_headers=False,
                          server_header=False, **uvicorn_limits(s), **kw)


def _serve_workers(settings: Any) -> int:
    """``serve --workers N``: uvicorn's process supervisor over one listening socket."""
    import inspect
    import os
    import shutil
    import socket
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from steerkit._metrics import MULTIPROC_ENV
    from steerkit._server import SETTINGS_ENV

    s = settings.server
    if not settings.chat_model.base_url:
        raise ConfigError("--workers needs an upstream chat server: set chat_model.base_url",
                          hint="each worker would otherwise start its own embedded chat model")
    os.environ[SETTINGS_ENV] = settings.to_json()
    config = _uvicorn_config("steerkit._server:worker_app", s, factory=True, workers=s.workers)
    # The listening socket is made here as an explicit TCP socket: asyncio sets TCP_NODELAY on
    # accepted connections only when the listener's protocol is IPPROTO_TCP, and uvicorn's own
    # (protocol 0) would leave Nagle on: ~40 ms stalls per response at low concurrency.
    family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((s.host, s.port))
    except OSError as e:
        raise BackendUnavailableError(f"the proxy could not bind {s.host}:{s.port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    print(f"steerkit: proxy on http://{s.host}:{s.port}/v1 -> {settings.chat_model.base_url} ({s.workers} workers)",
          file=sys.stderr)
    # A fresh multiprocess directory per run (inside the user's $PROMETHEUS_MULTIPROC_DIR, if set):
    # files left by an earlier run would add its counts to this one's.
    users_dir = os.environ.get(MULTIPROC_ENV)
    metrics_dir = tempfile.mkdtemp(prefix="steerkit-metrics-", dir=users_dir or None)
    os.environ[MULTIPROC_ENV] = metrics_dir
    supervisor = _supervisor_class(Multiprocess, metrics_dir)
    try:
        if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn versions differ here
            supervisor(config, target=uvicorn.Server(config).run, sockets=[sock]).run()  # type: ignore[call-arg]
        else:
            supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if users_dir is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = users_dir
    from steerkit.cli import EXIT_OK

    return EXIT_OK


def _supervisor_class(multiprocess: Any, metrics_dir: str) -> Any:
    """uvicorn's supervisor, plus: a worker that died (and was replaced) leaves the metrics' live
    gauges at once; a worker that exits cleanly does so itself (`steerkit._server`)."""
    from steerkit._metrics import mark_process_dead

    class Supervisor(multiprocess):  # type: ignore[misc, valid-type]
        def keep_subprocess_alive(self) -> None:
            before = {p.pid for p in self.processes}
            super().keep_subprocess_alive()
            for pid in before - {p.pid for p in self.processes}:
                if pid is not None:
                    mark_process_dead(pid, metrics_dir)

    return Supervisor


async def _serve_async(settings: Any) -> int:
    """Open the runtime, then serve until SIGINT/SIGTERM; uvicorn lets in-flight requests finish
    (``server.shutdown_timeout``)."""
    import signal

    from steerkit._runtime import Runtime
    from steerkit._server import create_app
    from steerkit.cli import EXIT_INTERRUPTED, EXIT_OK

    s = settings.server
    async with await Runtime.open(settings) as rt:
        if not rt.chat_base_url:
            raise ConfigError("no upstream chat model: set chat_model.base_url (STEERKIT_CHAT_MODEL__BASE_URL or --chat-base-url)")
        app = create_app(settings, steerer=rt.steerer, upstream_base_url=rt.chat_base_url)
        server = _proxy_server_class()(_uvicorn_config(app, s))
        print(f"steerkit: proxy on http://{s.host}:{s.port}/v1 -> {rt.chat_base_url}", file=sys.stderr)
        await server.serve()
        if not server.started:
            raise BackendUnavailableError(f"the proxy could not start on {s.host}:{s.port} (see the log above)")
    if signal.SIGINT in server.signals:
        print("steerkit: interrupted; in-flight requests were finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK  # SIGTERM: a requested, clean shutdown


def _proxy_server_class() -> Any:
    import contextlib
    import signal
    import threading

    import uvicorn

    class ProxyServer(uvicorn.Server):
        """uvicorn's server, minus re-raising the stop signal after the graceful shutdown, so the
        command can return its documented exit code (0 after SIGTERM, 130 after Ctrl-C)."""

        signals: list[int]

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            self.signals = []
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handler(sig: int, frame: Any) -> None:
                self.signals.append(sig)
                self.handle_exit(sig, frame)

            original = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, h in original.items():
                    signal.signal(sig, h)

    return ProxyServer

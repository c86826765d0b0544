"""Slow clients cannot hold the proxy's connections: the uvicorn options that bound them, and the
one guard uvicorn lacks (a deadline for a request's headers).

uvicorn bounds open connections (``limit_concurrency``: beyond, 503) and idle kept-alive
connections (``timeout_keep_alive``), but a client that connects and sends its headers slowly, or
never, holds its connection for ever. `uvicorn_limits` names uvicorn's own HTTP protocol class
(httptools, else h11) with a header deadline: armed when a connection opens and when a request on
it starts, disarmed when the headers are complete; when it fires the connection is closed. The
body's deadline is the proxy's (``server.body_timeout``: 408, `steerkit._server`).

On httptools the deadline costs nothing per request in the usual case: a request whose headers
arrive whole in one read never arms a timer (arming is decided after the read is parsed, at the
moment the request started, so the deadline is the same). A timer armed and cancelled on every
kept-alive request was measurable under many clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["uvicorn_limits"]  # and, built on first use, GuardedHttpTools and GuardedH11

log = logging.getLogger("steerkit.server")


#: Seconds a request's headers may take (`uvicorn_limits` sets it from ``server.header_timeout``;
#: a ``--workers`` worker sets it in `steerkit._server.worker_app`).
header_timeout: float = 10.0


def uvicorn_limits(server: Any) -> dict[str, Any]:
    """The `uvicorn.Config` keyword arguments that bound client connections, from `ServerSettings`."""
    global header_timeout
    header_timeout = server.header_timeout
    try:
        import httptools  # noqa: F401

        http = "steerkit._http_guard:GuardedHttpTools"
    except ImportError:
        http = "steerkit._http_guard:GuardedH11"
    return {
        "http": http,  # an import string: worker processes import it themselves
        "limit_concurrency": server.max_client_connections,
        "timeout_keep_alive": max(1, min(int(server.header_timeout), 75)),
        "h11_max_incomplete_event_size": 64 * 1024,
    }


def __getattr__(name: str) -> Any:
    """The guarded protocol classes, built on first use (uvicorn is an optional dependency)."""
    if name == "GuardedHttpTools":
        cls = _guarded_httptools()
    elif name == "GuardedH11":
        cls = _guarded_h11()
    else:
        raise AttributeError(name)
    globals()[name] = cls
    return cls


def _guarded_httptools() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline for each request's headers (armed only
        when a read leaves a request's headers incomplete)."""

        _header_deadline: asyncio.TimerHandle | None = None
        _headers_pending = False  # a request has begun and its headers are not complete yet

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            _arm(self)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._headers_pending:  # this read ended inside a request's headers
                _arm(self)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._headers_pending = True

        def on_headers_complete(self) -> None:
            self._headers_pending = False
            _disarm(self)
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            _disarm(self)
            super().connection_lost(exc)

    GuardedHttpTools.__module__ = __name__
    return GuardedHttpTools


def _guarded_h11() -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request's headers."""

        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            _arm(self)

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # a new request starts
                _arm(self)
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # headers complete (SEND_BODY, DONE, …)
                _disarm(self)

        def connection_lost(self, exc: Exception | None) -> None:
            _disarm(self)
            super().connection_lost(exc)

    GuardedH11.__module__ = __name__
    return GuardedH11


def _arm(proto: Any) -> None:
    if proto._header_deadline is None:
        proto._header_deadline = proto.loop.call_later(header_timeout, _expire, proto, header_timeout)


def _disarm(proto: Any) -> None:
    if proto._header_deadline is not None:
        proto._header_deadline.cancel()
        proto._header_deadline = None


def _expire(proto: Any, timeout: float) -> None:
    proto._header_deadline = None
    transport = proto.transport
    if transport is not None and not transport.is_closing():
        log.info("closing a connection whose request headers did not arrive within %gs (server.header_timeout)", timeout)
        transport.close()

"""`LoopbackServer`: a raw HTTP/1.1 server on a free loopback port, for the tests' fake servers.

A subclass writes ``_serve(reader, writer)`` (one accepted connection); this class owns the rest:
``async with`` starts it (``base_url`` ends in ``/v1``) and stops it, cancelling the connections
still open; a client hanging up ends its connection quietly. `read_head` reads one request head.
"""

from __future__ import annotations

import asyncio
from typing import Self


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """One request's head: (its request line, its headers with lower-case names)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return lines[0], headers


class LoopbackServer:
    def __init__(self) -> None:
        self.base_url = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

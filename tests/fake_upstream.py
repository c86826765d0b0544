"""A fake OpenAI-compatible upstream on a raw asyncio socket, for the proxy's failure tests.

The request's ``model`` picks the behaviour, so one fake serves every case:

- ``fake-echo``: a normal completion (JSON, or SSE when ``stream`` is true) whose text is
  ``ok``; the request body is recorded in ``FakeUpstream.requests``.
- ``fake-cut``: an answer cut by the token limit (``finish_reason: length``) mid-sentence.
- ``fake-fail-midstream``: SSE headers and two chunks, then the connection is cut (no final
  chunk, no ``[DONE]``).
- ``fake-slow-headers``: waits ``slow_s`` seconds before answering (upstream timeout).
- ``fake-slow-stream``: a stream of ``n_chunks`` chunks ``chunk_delay`` seconds apart (shutdown
  and disconnect tests); ``FakeUpstream.closed_early`` counts streams the client cut short.
- ``fake-429``: status 429 with an OpenAI-style error body and ``retry-after: 7``.
- ``fake-pause-headers``: waits ``pause_s`` seconds before answering, watching the connection;
  ``fake-pause-stream``: SSE headers and one chunk, then the same pause. A client (the proxy) that
  closes the connection during the pause is recorded in ``FakeUpstream.hangups`` (an
  `asyncio.Queue` of the model names), at once.

It is written on raw sockets (not an ASGI framework) so it can misbehave at the HTTP level.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

ERROR_429 = {"error": {"message": "fake rate limit", "type": "rate_limit_error", "param": None, "code": "fake_429"}}


def _chunk(i: int, text: str, finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _completion(text: str = "ok", finish_reason: str = "stop") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


class FakeUpstream:
    def __init__(self, *, slow_s: float = 5.0, n_chunks: int = 10, chunk_delay: float = 0.1, pause_s: float = 120.0) -> None:
        self.slow_s = slow_s
        self.pause_s = pause_s
        self.hangups: asyncio.Queue[str] = asyncio.Queue()
        self.n_chunks = n_chunks
        self.chunk_delay = chunk_delay
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.closed_early = 0
        self.streams_done = 0
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
                n = int(hdrs.get("content-length", "0"))
                body = await reader.readexactly(n) if n else b""
                keep = await self._handle(method, path, hdrs, body, writer, reader)
                if not keep:
                    return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _pause(self, reader: asyncio.StreamReader, model: str) -> bool:
        """Wait ``pause_s``; True (recorded in ``hangups``) when the client closes the connection first."""
        try:
            data = await asyncio.wait_for(reader.read(1), self.pause_s)
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            data = b""
        if data:
            return False
        self.hangups.put_nowait(model)
        return True

    async def _handle(self, method: str, path: str, hdrs: dict[str, str], body: bytes, w: asyncio.StreamWriter,
                      reader: asyncio.StreamReader) -> bool:
        if method == "GET" and path.endswith("/models"):
            self._plain(w, 200, json.dumps({"object": "list", "data": [{"id": "fake-echo", "object": "model"}]}).encode())
            await w.drain()
            return True
        req = json.loads(body or b"{}")
        self.requests.append(req)
        self.headers.append(hdrs)
        model = req.get("model")
        stream = bool(req.get("stream"))
        if model == "fake-429":
            self._plain(w, 429, json.dumps(ERROR_429).encode(), extra=b"retry-after: 7\r\n")
            await w.drain()
            return True
        if model == "fake-cut":
            self._plain(w, 200, _completion("A whole sentence. Then one cut mi", "length"))
            await w.drain()
            return True
        if model == "fake-slow-headers":
            await asyncio.sleep(self.slow_s)
            self._plain(w, 200, _completion())
            await w.drain()
            return True
        if model == "fake-pause-headers":
            if await self._pause(reader, model):
                return False
            self._plain(w, 200, _completion())
            await w.drain()
            return True
        if model == "fake-pause-stream":
            self._stream_head(w)
            self._write_chunk(w, _chunk(0, "c0 "))
            await w.drain()
            if await self._pause(reader, model):
                return False
            self._write_chunk(w, _chunk(1, "", "stop") + b"data: [DONE]\n\n")
            w.write(b"0\r\n\r\n")
            await w.drain()
            return True
        if model == "fake-fail-midstream":
            self._stream_head(w)
            for i in range(2):
                self._write_chunk(w, _chunk(i, f"part{i} "))
            await w.drain()
            await asyncio.sleep(0.05)
            w.transport.abort()  # cut the connection mid-body
            return False
        if model == "fake-slow-stream":
            self._stream_head(w)
            try:
                for i in range(self.n_chunks):
                    self._write_chunk(w, _chunk(i, f"c{i} "))
                    await w.drain()
                    await asyncio.sleep(self.chunk_delay)
                self._write_chunk(w, _chunk(self.n_chunks, "", "stop") + b"data: [DONE]\n\n")
                w.write(b"0\r\n\r\n")
                await w.drain()
            except (ConnectionError, RuntimeError):
                self.closed_early += 1
                return False
            if w.transport.is_closing():
                self.closed_early += 1
                return False
            self.streams_done += 1
            return True
        # fake-echo and anything else
        if stream:
            self._stream_head(w)
            self._write_chunk(w, _chunk(0, "o") + _chunk(1, "k") + _chunk(2, "", "stop") + b"data: [DONE]\n\n")
            w.write(b"0\r\n\r\n")
        else:
            self._plain(w, 200, _completion())
        await w.drain()
        return True

    @staticmethod
    def _plain(w: asyncio.StreamWriter, status: int, body: bytes, extra: bytes = b"") -> None:
        reason = {200: b"OK", 429: b"Too Many Requests"}.get(status, b"X")
        w.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (status, reason, len(body), extra)
            + body
        )

    @staticmethod
    def _stream_head(w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

    @staticmethod
    def _write_chunk(w: asyncio.StreamWriter, data: bytes) -> None:
        w.write(b"%x\r\n%s\r\n" % (len(data), data))

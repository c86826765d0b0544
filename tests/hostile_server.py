"""`HostileServer`: a scripted misbehaving OpenAI-compatible server on loopback, for tests.

Raw HTTP/1.1 over ``asyncio.start_server`` (no framework, so it can break HTTP itself): each
connection reads one request and answers it with the chosen behaviour from `BEHAVIOURS`, a table of
what a broken, overloaded or malicious search server can do: stall, drip, hang up, answer HTML or
JSON of the wrong shape, impossible logprobs, absurd retry headers, redirects, a gzip bomb, an
endless body. ``healthy`` answers a valid completion (P(True) = 0.7, P(False) = 0.2).

Each behaviour names the error an `OpenAIBackend` must end with: ``unavailable``
(`BackendUnavailableError`: the server timed out, hung up or kept failing) or ``response``
(`BackendResponseError`: its answer is unusable).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loopback_server import LoopbackServer, read_head

P_TRUE, P_FALSE = 0.7, 0.2
#: Seconds between two bytes of a drip (well under the tests' read timeout, so only a deadline helps).
DRIP_INTERVAL = 0.05


def completion(top: Any = None, *, logprobs: Any = ..., usage: Any = ..., choices: Any = ...) -> dict[str, Any]:
    """A vLLM-shaped completion; each argument replaces one part (a hostile variant)."""
    if top is None:
        top = {" True": math.log(P_TRUE), " False": math.log(P_FALSE)}
    if logprobs is ...:
        first = next(iter(top)) if isinstance(top, dict) and top else " True"
        logprobs = {"tokens": [first], "token_logprobs": [-0.36], "top_logprobs": [top], "text_offset": [0]}
    if choices is ...:
        choices = [{"index": 0, "text": " True", "finish_reason": "length", "logprobs": logprobs}]
    if usage is ...:
        usage = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    return {"id": "cmpl-hostile", "object": "text_completion", "created": 0, "model": "hostile",
            "choices": choices, "usage": usage}


GOOD = json.dumps(completion()).encode()


@functools.cache
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that expands to exactly 1 GiB of zeros: one fully flushed deflate block of
    1 MiB of zeros, repeated (full flushes make each copy byte-identical and independent)."""
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * 1024 + c.flush() + struct.pack("<II", crc, (1 << 30) & 0xFFFFFFFF)


@dataclass
class Conn:
    """One accepted connection and the request read from it."""

    server: HostileServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, status: int, body: bytes = b"", *, headers: dict[str, str] | None = None,
                   content_type: str | None = "application/json", length: int | None = None) -> None:
        head = f"HTTP/1.1 {status} Hostile\r\nConnection: close\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        head += f"Content-Length: {len(body) if length is None else length}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(head.encode("latin-1") + b"\r\n" + body)
        await self.writer.drain()

    async def send_json(self, payload: Any, status: int = 200, **kw: Any) -> None:
        await self.send(status, json.dumps(payload).encode(), **kw)

    async def drip(self, data: bytes) -> None:
        for i in range(len(data)):
            self.writer.write(data[i : i + 1])
            await self.writer.drain()
            await asyncio.sleep(DRIP_INTERVAL)

    async def endless_chunks(self, status: int = 200, chunk: bytes = b" " * 65536) -> None:
        self.writer.write(f"HTTP/1.1 {status} Hostile\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n".encode())
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while True:  # until the client hangs up
            self.writer.write(frame)
            await self.writer.drain()

    async def stall(self) -> None:
        await asyncio.Event().wait()


Behaviour = Callable[[Conn], Awaitable[None]]


def _json(payload: Any, status: int = 200, **kw: Any) -> Behaviour:
    async def answer(c: Conn) -> None:
        await c.send_json(payload, status, **kw)
    return answer


def _raw(body: bytes, status: int = 200, **kw: Any) -> Behaviour:
    async def answer(c: Conn) -> None:
        await c.send(status, body, **kw)
    return answer


def _retry(status: int, header: str, value: str) -> Behaviour:
    return _json({"error": {"message": "hostile: slow down", "type": "rate_limit"}}, status, headers={header: value})


async def _stall_before_headers(c: Conn) -> None:
    await c.stall()


async def _drip_headers(c: Conn) -> None:
    await c.drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 4000 + b"\r\n")


async def _drip_body(c: Conn) -> None:
    body = GOOD[:-1] + b" " * 4000 + b"}"  # valid JSON, if one waited for it
    c.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    await c.drip(body)


async def _stall_mid_body(c: Conn) -> None:
    c.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(GOOD)
                   + GOOD[: len(GOOD) // 2])
    await c.writer.drain()
    await c.stall()


async def _close_before_headers(c: Conn) -> None:
    c.writer.close()


async def _close_mid_body(c: Conn) -> None:
    c.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(GOOD)
                   + GOOD[: len(GOOD) // 2])
    await c.writer.drain()
    c.writer.close()


async def _reset(c: Conn) -> None:
    c.writer.transport.abort()  # RST, not FIN


async def _not_http(c: Conn) -> None:
    c.writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await c.writer.drain()
    c.writer.close()


async def _gzip_bomb(c: Conn) -> None:
    await c.send(200, gzip_bomb(), headers={"Content-Encoding": "gzip"})


async def _endless_body(c: Conn) -> None:
    await c.endless_chunks(200)


async def _endless_error_body(c: Conn) -> None:
    await c.endless_chunks(500)


async def _huge_content_length(c: Conn) -> None:
    c.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n")
    await c.writer.drain()
    await c.stall()


async def _redirect_same_origin(c: Conn) -> None:
    await c.send(307, b"", headers={"Location": "/v1/completions?again=1"})


async def _redirect_cross_origin(c: Conn) -> None:
    await c.send(302, b"", headers={"Location": c.server.elsewhere + "/completions"})


async def _redirect_loop(c: Conn) -> None:
    await c.send(301, b"", headers={"Location": c.path})


def _literal(top_json: str) -> Behaviour:
    """A completion whose top logprobs are spliced in as raw JSON text (NaN, Infinity, 1e999)."""
    body = json.dumps(completion({"@": -1.0})).replace('{"@": -1.0}', top_json).encode()
    return _raw(body)


_UNAVAILABLE, _RESPONSE = "unavailable", "response"

#: name → (behaviour, the error an `OpenAIBackend` must end with).
BEHAVIOURS: dict[str, tuple[Behaviour, str]] = {
    # stalls, drips, hang-ups: the read timeout or the whole-request deadline
    "stall_before_headers": (_stall_before_headers, _UNAVAILABLE),
    "drip_headers": (_drip_headers, _UNAVAILABLE),
    "drip_body": (_drip_body, _UNAVAILABLE),
    "stall_mid_body": (_stall_mid_body, _UNAVAILABLE),
    "close_before_headers": (_close_before_headers, _UNAVAILABLE),
    "close_mid_body": (_close_mid_body, _UNAVAILABLE),
    "connection_reset": (_reset, _UNAVAILABLE),
    "not_http": (_not_http, _UNAVAILABLE),
    "status_500_forever": (_json({"error": {"message": "hostile: internal"}}, 500), _UNAVAILABLE),
    "status_502_html": (_raw(b"<html>bad gateway</html>", 502, content_type="text/html"), _UNAVAILABLE),
    # absurd retry headers on 429 / 503 (retried until the retries run out, every wait bounded)
    "retry_after_nan_429": (_retry(429, "Retry-After", "nan"), _UNAVAILABLE),
    "retry_after_inf_503": (_retry(503, "Retry-After", "inf"), _UNAVAILABLE),
    "retry_after_negative_429": (_retry(429, "Retry-After", "-1"), _UNAVAILABLE),
    "retry_after_huge_503": (_retry(503, "Retry-After", "1e308"), _UNAVAILABLE),
    "retry_after_overflow_429": (_retry(429, "Retry-After", "1e999"), _UNAVAILABLE),
    "retry_after_garbage_429": (_retry(429, "Retry-After", "soon, maybe"), _UNAVAILABLE),
    "retry_after_far_date_503": (_retry(503, "Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"), _UNAVAILABLE),
    "retry_after_ms_nan_429": (_retry(429, "retry-after-ms", "nan"), _UNAVAILABLE),
    "retry_after_ms_inf_503": (_retry(503, "retry-after-ms", "-inf"), _UNAVAILABLE),
    # 200 answers that are not a completion
    "html_200": (_raw(b"<!doctype html><title>Login</title>", content_type="text/html"), _RESPONSE),
    "json_array": (_json([completion()]), _RESPONSE),
    "json_string": (_json("ok"), _RESPONSE),
    "missing_choices": (_json({"id": "x", "object": "text_completion"}), _RESPONSE),
    "empty_choices": (_json(completion(choices=[])), _RESPONSE),
    "choices_not_a_list": (_json(completion(choices={"0": "x"})), _RESPONSE),
    "choice_not_an_object": (_json(completion(choices=["x"])), _RESPONSE),
    "wrong_content_type": (_raw(GOOD, content_type="text/plain"), _RESPONSE),
    "no_content_type": (_raw(GOOD, content_type=None), _RESPONSE),
    "truncated_json": (_raw(GOOD[: len(GOOD) // 2]), _RESPONSE),
    "empty_body_200": (_raw(b""), _RESPONSE),
    "not_utf8": (_raw(b'{"choices": "\xff\xfe"}'), _RESPONSE),
    "deep_nesting": (_raw(b"[" * 200_000 + b"]" * 200_000), _RESPONSE),
    # logprobs of the wrong type or shape
    "logprobs_a_string": (_json(completion(logprobs="abc")), _RESPONSE),
    "top_logprobs_not_a_list": (_json(completion(logprobs={"top_logprobs": {" True": -0.1}})), _RESPONSE),
    "top_logprobs_pairs": (_json(completion(logprobs={"top_logprobs": [[" True", -0.1]]})), _RESPONSE),
    "logprob_a_string": (_json(completion({" True": "-0.1", " False": "-2"})), _RESPONSE),
    "logprob_null": (_json(completion({" True": None, " False": -2.0})), _RESPONSE),
    "token_a_number": (_json(completion(logprobs={"content": [{"token": 7, "logprob": -0.1,
                                                                "top_logprobs": [{"token": 7, "logprob": -0.1}]}]})),
                       _RESPONSE),
    "usage_a_string": (_json(completion(usage="lots")), _RESPONSE),
    "usage_huge_int": (_raw(GOOD.replace(b'"prompt_tokens": 12', b'"prompt_tokens": ' + b"9" * 5000)), _RESPONSE),
    # impossible probabilities
    "logprob_nan": (_literal('{" True": NaN, " False": -1.6}'), _RESPONSE),
    "logprob_inf": (_literal('{" True": Infinity, " False": -1.6}'), _RESPONSE),
    "logprob_minus_inf_literal": (_literal('{" True": -Infinity, " False": -1.6}'), _RESPONSE),
    "logprob_positive": (_json(completion({" True": 2.0, " False": -1.6})), _RESPONSE),
    "logprob_huge": (_json(completion({" True": 1e308, " False": -1.6})), _RESPONSE),
    "logprob_overflow": (_literal('{" True": 1e999, " False": -1.6}'), _RESPONSE),
    "mass_above_one": (_json(completion({" True": -0.01, "True": -0.02, " False": -0.5})), _RESPONSE),
    # redirects (never followed) and size / compression
    "redirect_same_origin": (_redirect_same_origin, _RESPONSE),
    "redirect_cross_origin": (_redirect_cross_origin, _RESPONSE),
    "redirect_loop": (_redirect_loop, _RESPONSE),
    "gzip_bomb": (_gzip_bomb, _RESPONSE),
    "endless_body": (_endless_body, _RESPONSE),
    "endless_error_body": (_endless_error_body, _RESPONSE),
    "huge_content_length": (_huge_content_length, _RESPONSE),
}


async def _healthy(c: Conn) -> None:
    await c.send(200, GOOD)


class HostileServer(LoopbackServer):
    """One OpenAI-compatible server on a free loopback port behaving as ``behaviour`` (a name from
    `BEHAVIOURS`, or ``healthy``). ``base_url`` ends in ``/v1``; ``requests`` lists the paths asked
    for and ``headers`` their headers; ``elsewhere`` is where ``redirect_cross_origin`` points."""

    def __init__(self, behaviour: str = "healthy", *, elsewhere: str = "http://127.0.0.1:9/v1") -> None:
        super().__init__()
        self.name = behaviour
        self.behaviour: Behaviour = _healthy if behaviour == "healthy" else BEHAVIOURS[behaviour][0]
        self.elsewhere = elsewhere
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers = await read_head(reader)
        await reader.readexactly(int(headers.get("content-length", "0") or 0))
        conn = Conn(self, reader, writer, line.split(" ")[1], headers)
        self.requests.append(conn.path)
        self.headers.append(headers)
        await self.behaviour(conn)

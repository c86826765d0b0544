"""Malformed signature headers on the webhook callback are a 401, never a 500.

Raw ASGI requests reach the adapter's real app, so header bytes no HTTP client would send (non-ASCII,
thousands of digits, repeated headers) arrive exactly as a hostile sender would write them."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from escalation_helpers import hand_example_set, make_pool

from steerkit.adapters.webhook import (
    WebhookAdapter,
    sign,
    signature_headers,
    verify_signature,
)
from steerkit.errors import WebhookSignatureError
from steerkit.escalation import build_escalation

SECRET = "s3cr3t-for-header-tests"
BODY = b'{"answers": []}'


async def _call(app, headers: list[tuple[bytes, bytes]], body: bytes = BODY) -> tuple[int, dict]:
    """One POST /answers through the ASGI app; the response status and JSON body."""
    scope = {"type": "http", "method": "POST", "path": "/answers", "headers": headers}
    sent: list[dict] = []
    fed = False

    async def receive() -> dict:
        nonlocal fed
        if fed:
            return {"type": "http.disconnect"}
        fed = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def _now() -> str:
    return str(int(time.time()))


def _good_sig(ts: str, body: bytes = BODY) -> str:
    return sign(SECRET, ts, body)


def _cases() -> list[tuple[str, list[tuple[bytes, bytes]]]]:
    ts = _now()
    sig = _good_sig(ts).encode()
    T, S = b"x-steerkit-timestamp", b"x-steerkit-signature"
    return [
        ("signature non-ascii byte", [(T, ts.encode()), (S, b"sha256=\xe9" + b"0" * 63)]),
        ("signature all non-ascii", [(T, ts.encode()), (S, b"\xff" * 71)]),
        ("signature non-ascii after a valid one", [(T, ts.encode()), (S, sig + b"\xe9")]),
        ("signature nbsp padding", [(T, ts.encode()), (S, sig + b"\xa0")]),
        ("signature wrong scheme", [(T, ts.encode()), (S, b"sha1=" + sig[7:])]),
        ("signature short", [(T, ts.encode()), (S, sig[:-1])]),
        ("signature long", [(T, ts.encode()), (S, sig + b"0")]),
        ("signature not hex", [(T, ts.encode()), (S, b"sha256=" + b"z" * 64)]),
        ("signature bare hex", [(T, ts.encode()), (S, sig[7:])]),
        ("signature only spaces", [(T, ts.encode()), (S, b"   ")]),
        ("signature nul", [(T, ts.encode()), (S, b"sha256=\x00" + sig[8:])]),
        ("signature 64 KiB", [(T, ts.encode()), (S, b"sha256=" + b"a" * 65536)]),
        ("timestamp 5000 digits", [(T, b"9" * 5000), (S, sig)]),
        ("timestamp 4000 digits", [(T, b"1" * 4000), (S, sig)]),
        ("timestamp 400 digits", [(T, b"1" * 400), (S, sig)]),
        ("timestamp 100000 digits", [(T, b"7" * 100_000), (S, sig)]),
        ("timestamp non-ascii digits", [(T, "١٧٠٠٠٠٠٠٠٠".encode()), (S, sig)]),
        ("timestamp latin-1 byte", [(T, ts.encode() + b"\xe9"), (S, sig)]),
        ("timestamp underscores", [(T, b"1_700_000_000"), (S, sig)]),
        ("timestamp sign", [(T, b"+" + ts.encode()), (S, sig)]),
        ("timestamp negative", [(T, b"-" + ts.encode()), (S, sig)]),
        ("timestamp float", [(T, ts.encode() + b".5"), (S, sig)]),
        ("timestamp exponent", [(T, b"1.7e9"), (S, sig)]),
        ("timestamp nan", [(T, b"nan"), (S, sig)]),
        ("timestamp inf", [(T, b"inf"), (S, sig)]),
        ("timestamp hex", [(T, b"0x65"), (S, sig)]),
        ("timestamp empty", [(T, b""), (S, sig)]),
        ("timestamp missing", [(S, sig)]),
        ("signature missing", [(T, ts.encode())]),
        ("both missing", []),
        ("repeated signature", [(T, ts.encode()), (S, sig), (S, b"sha256=" + b"0" * 64)]),
        ("repeated timestamp", [(T, ts.encode()), (T, b"1"), (S, sig)]),
        ("repeated in another case", [(T, ts.encode()), (S, sig), (b"X-Steerkit-Signature", sig)]),
    ]


@pytest.mark.parametrize(("name", "headers"), _cases(), ids=[c[0] for c in _cases()])
async def test_a_malformed_signature_header_is_401(name: str, headers: list[tuple[bytes, bytes]]):
    ad = WebhookAdapter("http://127.0.0.1:9/unused", SECRET)
    status, doc = await _call(ad.asgi_app(), [(b"content-type", b"application/json"), *headers])
    assert status == 401, (name, doc)
    assert doc["error"] and SECRET not in doc["error"]
    await ad.aclose()


async def test_well_formed_headers_still_pass_with_optional_whitespace_and_upper_hex():
    ad = WebhookAdapter("http://127.0.0.1:9/unused", SECRET)
    es = hand_example_set(make_pool(1), {"q0": 0.4})
    e = build_escalation(es, "q0", policy="icm_confidence")
    await asyncio.to_thread(ad.queue.submit, [e])
    body = json.dumps({"escalation_id": e.id, "option": e.options[0].id, "version": e.version}).encode()
    app = ad.asgi_app()
    ts = _now()
    sig = _good_sig(ts, body)
    padded = [(b"x-steerkit-timestamp", f" {ts}\t".encode()), (b"x-steerkit-signature", f" {sig} ".encode())]
    status, doc = await _call(app, padded, body)
    assert status == 200 and len(doc["accepted"]) == 1, doc
    # the same signature in upper-case hex is the same signed request: a replay, not a new one
    upper = "sha256=" + sig[7:].upper()
    status, doc = await _call(app, [(b"x-steerkit-timestamp", ts.encode()), (b"x-steerkit-signature", upper.encode())], body)
    assert status == 409, doc
    await ad.aclose()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Steerkit-Timestamp": "9" * 5000, "X-Steerkit-Signature": "sha256=" + "0" * 64},
        {"X-Steerkit-Timestamp": _now(), "X-Steerkit-Signature": "sha256=é" + "0" * 63},
        {"X-Steerkit-Timestamp": "١٧٠٠٠٠٠٠٠٠", "X-Steerkit-Signature": "sha256=" + "0" * 64},
        {"X-Steerkit-Timestamp": _now().encode(), "X-Steerkit-Signature": b"sha256=" + b"0" * 64},  # bytes, not text
        {"X-Steerkit-Timestamp": int(time.time()), "X-Steerkit-Signature": "sha256=" + "0" * 64},  # not text
        {"X-Steerkit-Timestamp": _now(), "X-Steerkit-Signature": None},
    ],
)
async def test_handle_callback_and_verify_signature_answer_401_for_malformed_headers(headers):
    """The framework-agnostic entry points: a typed error / a 401, whatever the mapping holds."""
    with pytest.raises(WebhookSignatureError):
        verify_signature(SECRET, headers, BODY)
    ad = WebhookAdapter("http://127.0.0.1:9/unused", SECRET)
    res = await ad.handle_callback(BODY, headers)
    assert res.status == 401 and res.error
    await ad.aclose()


def test_signature_headers_we_send_are_the_shape_we_accept():
    h = signature_headers(SECRET, BODY)
    verify_signature(SECRET, h, BODY)

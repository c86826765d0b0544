"""The webhook adapter against real loopback HTTP: a fake annotation tool (http.server) receives the
signed escalations and serves answers for polling; the adapter's callback endpoint runs under
uvicorn and receives answers pushed by the tool."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_helpers import hand_example_set, make_pool
from steerkit.adapters.queue import AnnotationQueue
from steerkit.adapters.webhook import WebhookAdapter, sign, signature_headers, verify_signature
from steerkit.errors import FeedbackError, WebhookSignatureError
from steerkit.escalation import Answer, FeedbackAdapter, build_escalation

SECRET = "s3cr3t-for-tests"


class FakeAnnotationTool:
    """A fake annotation tool on a real loopback HTTP server: receives escalations (verifying the
    HMAC itself), serves answers at GET /answers?cursor=N, can fail the first N POSTs with 503."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret.encode()
        self.deliveries: list[dict] = []
        self.bad_signatures = 0
        self.fail_next = 0
        self.fail_status = 503
        self.fail_headers: dict[str, str] = {}
        self.answers: list[dict] = []
        self.polls: list[str | None] = []
        tool = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _reply(self, status, doc, headers=None):
                body = json.dumps(doc).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _signed(self, body: bytes) -> bool:
                ts = self.headers.get("X-Steerkit-Timestamp", "")
                sig = self.headers.get("X-Steerkit-Signature", "")
                want = "sha256=" + hmac.new(tool.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                return bool(ts) and hmac.compare_digest(want, sig) and abs(time.time() - int(ts)) < 300

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._signed(body):
                    tool.bad_signatures += 1
                    return self._reply(401, {"error": "bad signature"})
                if tool.fail_next > 0:
                    tool.fail_next -= 1
                    return self._reply(tool.fail_status, {"error": "busy"}, tool.fail_headers)
                doc = json.loads(body)
                doc["_headers"] = {k: v for k, v in self.headers.items() if k.lower().startswith("x-steerkit")}
                tool.deliveries.append(doc)
                self._reply(200, {"ok": True})

            def do_GET(self):
                if not self._signed(b""):
                    tool.bad_signatures += 1
                    return self._reply(401, {"error": "bad signature"})
                u = urlparse(self.path)
                cursor = parse_qs(u.query).get("cursor", [None])[0]
                tool.polls.append(cursor)
                start = int(cursor or 0)
                self._reply(200, {"answers": tool.answers[start:], "cursor": str(len(tool.answers))})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def unique_deliveries(self) -> dict[str, dict]:
        return {d["delivery_id"]: d for d in self.deliveries}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tool():
    t = FakeAnnotationTool()
    yield t
    t.close()


def _escs(n=3):
    es = hand_example_set(make_pool(n), {f"q{i}": 0.3 + i / 10 for i in range(n)})
    return es, [build_escalation(es, f"q{i}", policy="icm_confidence") for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(app):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return server, task, f"http://127.0.0.1:{port}"


def test_sign_and_verify():
    body = b'{"a":1}'
    h = signature_headers(SECRET, body, timestamp=1_700_000_000)
    assert h["X-Steerkit-Signature"] == sign(SECRET, 1_700_000_000, body)
    verify_signature(SECRET, h, body, now=1_700_000_010)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(SECRET, h, body + b" ", now=1_700_000_010)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature("other", h, body, now=1_700_000_010)
    with pytest.raises(WebhookSignatureError, match="away from now"):
        verify_signature(SECRET, h, body, now=1_700_009_999)
    with pytest.raises(WebhookSignatureError, match="missing"):
        verify_signature(SECRET, {}, body)


async def test_escalations_are_posted_signed_and_resubmits_are_idempotent(tool):
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, backoff_s=0.01)
    assert isinstance(ad, FeedbackAdapter)
    assert SECRET not in repr(ad)
    es, escs = _escs(3)
    res = await ad.submit(escs)
    assert len(res.created) == 3
    assert tool.bad_signatures == 0 and len(tool.deliveries) == 3
    d = tool.deliveries[0]
    assert d["type"] == "escalation.upsert" and d["_headers"]["X-Steerkit-Event"] == "escalation.upsert"
    assert d["_headers"]["X-Steerkit-Delivery"] == d["delivery_id"]
    sent = {x["data"]["id"]: x["data"] for x in tool.deliveries}
    assert set(sent) == {e.id for e in escs}
    assert sent[escs[0].id]["suggestion"]["confidence"] == pytest.approx(0.3)  # the suggestion travels
    # identical re-submit: nothing is posted again
    await ad.submit(escs)
    assert len(tool.deliveries) == 3
    # an update is posted once, under a new delivery id (same escalation id)
    await ad.submit([escs[0].model_copy(update={"score": 0.01})])
    assert len(tool.deliveries) == 4 and tool.deliveries[-1]["data"]["id"] == escs[0].id
    assert len(tool.unique_deliveries()) == 4
    await ad.aclose()


async def test_retries_and_outbox_when_the_receiver_is_down(tool, tmp_path):
    tool.fail_next = 2  # two 503s, then success: retried with backoff
    qpath = tmp_path / "wh.sqlite"
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, queue=qpath, backoff_s=0.01, max_retries=3)
    es, escs = _escs(1)
    await ad.submit(escs)
    assert len(tool.deliveries) == 1
    await ad.aclose()

    dead = f"http://127.0.0.1:{_free_port()}/escalations"
    ad = WebhookAdapter(dead, SECRET, queue=qpath, backoff_s=0.01, max_retries=1)
    es2, escs2 = _escs(2)
    new = escs2[1].model_copy(update={"version": "v2"})
    with pytest.raises(FeedbackError, match="could not be delivered"):
        await ad.submit([new])
    await ad.aclose()
    # the escalation is safe in the queue; a restarted adapter pointed at a live receiver delivers it
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, queue=qpath, backoff_s=0.01)
    assert await ad.redeliver() == [new.id]
    assert tool.deliveries[-1]["data"]["version"] == "v2"
    assert await ad.redeliver() == []
    await ad.aclose()


async def test_answers_on_the_callback_endpoint_under_uvicorn(tool):
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, backoff_s=0.01)
    pushed = []

    async def on_answer(a):
        pushed.append(a.answer_id)

    ad.on_answer.append(on_answer)
    es, escs = _escs(3)
    await ad.submit(escs)
    server, task, base = await _serve(ad.asgi_app("/steerkit/answers"))
    try:
        async with httpx.AsyncClient(base_url=base) as c:
            assert (await c.get("/healthz")).status_code == 200
            # the tool answers the first escalation, as the payload it received told it to
            e = tool.deliveries[0]["data"]
            doc = {"escalation_id": e["id"], "option": e["options"][1]["id"], "version": e["version"],
                   "annotator": "carol", "answer_id": "tool-resp-1"}
            body = json.dumps({"answers": [doc]}).encode()
            r = await c.post("/steerkit/answers", content=body, headers=signature_headers(SECRET, body))
            assert r.status_code == 200 and r.json() == {"accepted": ["tool-resp-1"], "duplicates": []}
            # at-least-once senders redeliver (signed again, later): idempotent
            later = signature_headers(SECRET, body, timestamp=int(time.time()) + 1)
            r = await c.post("/steerkit/answers", content=body, headers=later)
            assert r.status_code == 200 and r.json() == {"accepted": [], "duplicates": ["tool-resp-1"]}
            # the very same signed request again is a replay: rejected
            r = await c.post("/steerkit/answers", content=body, headers=later)
            assert r.status_code == 409 and "replay" in r.json()["error"]
            # bad signature, malformed body, invalid answer: rejected and nothing changes
            r = await c.post("/steerkit/answers", content=body, headers=signature_headers("wrong", body))
            assert r.status_code == 401
            junk = b"{not json"
            r = await c.post("/steerkit/answers", content=junk, headers=signature_headers(SECRET, junk))
            assert r.status_code == 400
            e2 = tool.deliveries[1]["data"]
            ok2 = {"escalation_id": e2["id"], "option": e2["options"][0]["id"], "version": e2["version"], "answer_id": "r2"}
            bad = {"escalation_id": e2["id"], "option": "Perhaps", "version": e2["version"], "answer_id": "r3"}
            both = json.dumps([ok2, bad]).encode()
            r = await c.post("/steerkit/answers", content=both, headers=signature_headers(SECRET, both))
            assert r.status_code == 422 and "no option" in r.json()["error"]
            stale = json.dumps({**ok2, "version": "old", "answer_id": "r4"}).encode()
            r = await c.post("/steerkit/answers", content=stale, headers=signature_headers(SECRET, stale))
            assert r.status_code == 422 and "stale" in r.json()["error"]
            assert (await c.get("/steerkit/answers")).status_code == 405
            assert (await c.post("/elsewhere", content=b"{}")).status_code == 404
    finally:
        server.should_exit = True
        await task
    got = await ad.answers()
    assert [(a.answer_id, a.annotator, a.adapter) for a in got] == [("tool-resp-1", "carol", "webhook")]
    assert pushed == ["tool-resp-1"]
    await ad.aclose()


async def test_answers_reconciled_by_polling(tool, tmp_path):
    qpath = tmp_path / "wh.sqlite"
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, poll_url=tool.url + "/answers", queue=qpath, backoff_s=0.01)
    es, escs = _escs(3)
    await ad.submit(escs)
    # the three escalations are delivered concurrently, so they reach the tool in any order: find
    # each by its id (taking deliveries[0] as escs[0] made this test fail about one run in eight)
    sent = {d["data"]["id"]: d["data"] for d in tool.deliveries}
    e0, e1 = sent[escs[0].id], sent[escs[1].id]
    # the webhook to our endpoint was lost; the tool still has the answers
    tool.answers.append({"escalation_id": e0["id"], "option": e0["options"][0]["id"], "version": e0["version"], "answer_id": "p1"})
    got = await ad.answers()
    assert [a.answer_id for a in got] == ["p1"]
    assert tool.polls == [None]
    tool.answers.append({"escalation_id": e1["id"], "option": "Nope", "version": e1["version"], "answer_id": "p2"})
    tool.answers.append({"escalation_id": e1["id"], "option": e1["options"][1]["id"], "version": e1["version"], "answer_id": "p3"})
    res = await ad.poll()
    assert tool.polls[-1] == "1"  # the stored cursor
    assert res.accepted == ["p3"] and len(res.errors) == 1 and "no option" in res.errors[0]
    await ad.aclose()
    # restart: the cursor survived; a tool that resends everything only produces duplicates
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, poll_url=tool.url + "/answers", queue=qpath)
    res = await ad.poll()
    assert tool.polls[-1] == "3" and res.accepted == [] and res.duplicates == []
    ad.queue.set_meta(ad._cursor_key(), "0")
    res = await ad.poll()
    assert res.accepted == [] and sorted(res.duplicates) == ["p1", "p3"]
    assert sorted(a.answer_id for a in await ad.answers()) == ["p1", "p3"]
    await ad.aclose()
    assert len(AnnotationQueue(qpath).history(escs[0].id)) == 1


async def test_a_failed_poll_still_returns_local_answers(tool):
    dead = f"http://127.0.0.1:{_free_port()}/answers"
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, poll_url=dead, backoff_s=0.01, max_retries=0)
    es, escs = _escs(1)
    await ad.submit(escs)
    e = escs[0]
    await ad.receive(Answer(escalation_id=e.id, option=e.options[0].id, version=e.version))
    got = await ad.answers()
    assert len(got) == 1 and ad.last_poll_error and "cannot reach" in ad.last_poll_error
    await ad.aclose()


def test_needs_a_secret():
    with pytest.raises(FeedbackError, match="secret"):
        WebhookAdapter("http://127.0.0.1:9/x", "")


# --- replays, hostile bodies, the retry policy ------------------------------------------------------


async def _callback_adapter():
    ad = WebhookAdapter("http://127.0.0.1:9/unused", SECRET)
    _, escs = _escs(2)
    await asyncio.to_thread(ad.queue.submit, escs)  # recorded, not delivered: only the callback is tested
    return ad, escs


async def test_answers_without_ids_are_idempotent_and_replays_rejected():
    ad, escs = await _callback_adapter()
    e = escs[0]
    first = {"escalation_id": e.id, "option": e.options[0].id, "version": e.version}  # no answer_id, no answered_at
    body = json.dumps(first).encode()
    t0 = int(time.time())
    r1 = await ad.handle_callback(body, signature_headers(SECRET, body, timestamp=t0))
    assert r1.status == 200 and len(r1.accepted) == 1
    # the same signed request again, inside the signature's window: a replay, rejected, nothing changes
    r2 = await ad.handle_callback(body, signature_headers(SECRET, body, timestamp=t0))
    assert r2.status == 409 and "replay" in r2.error and ad.replays_rejected == 1
    # the same answer re-signed later (an at-least-once sender): the same id, a duplicate
    r3 = await ad.handle_callback(body, signature_headers(SECRET, body, timestamp=t0 + 2))
    assert r3.status == 200 and r3.duplicates == r1.accepted
    # a correction, then the earlier answer again (re-signed): it cannot revert the correction
    fix = json.dumps({**first, "option": e.options[1].id}).encode()
    assert (await ad.handle_callback(fix, signature_headers(SECRET, fix, timestamp=t0 + 3))).status == 200
    r4 = await ad.handle_callback(body, signature_headers(SECRET, body, timestamp=t0 + 4))
    assert r4.status == 200 and r4.duplicates == r1.accepted
    assert [a.option for a in ad.queue.history(e.id)] == [e.options[0].id, e.options[1].id]
    assert [a.option for a in await ad.answers()] == [e.options[1].id]
    # no answered_at: dated by the signed timestamp, not by the time of receipt
    assert ad.queue.history(e.id)[0].answered_at.timestamp() == t0
    await ad.aclose()


def _nested(depth: int) -> bytes:
    return b'{"answers": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_nested(1_000), "nested deeper"),
        (_nested(100_000), "nested deeper"),
        (b'{"escalation_id": "\\ud800", "option": "a", "version": "v"}', "surrogate"),
        (b'{"answers": [{"escalation_id": "e", "option": "a", "version": "v", "annotator": "x\\udfff"}]}', "surrogate"),
        (b'{"\\ud83d": 1}', "surrogate"),
        (b"\xff\xfe not utf-8", "malformed"),
        (b'{"escalation_id": 1' + b"0" * 5000 + b"}", "malformed"),
    ],
)
async def test_pathological_json_is_a_clear_400(body: bytes, why: str):
    ad, _ = await _callback_adapter()
    res = await ad.handle_callback(body, signature_headers(SECRET, body))
    assert res.status == 400 and res.error and why in res.error
    assert ad.queue.answers() == []
    await ad.aclose()


async def test_pathological_json_under_uvicorn_is_400_not_500():
    ad, _ = await _callback_adapter()
    server, task, base = await _serve(ad.asgi_app())
    try:
        async with httpx.AsyncClient(base_url=base) as c:
            for body in (_nested(5_000), b'{"escalation_id": "\\ud800", "option": "a", "version": "v"}'):
                r = await c.post("/answers", content=body, headers=signature_headers(SECRET, body))
                assert r.status_code == 400 and "malformed answer payload" in r.json()["error"]
    finally:
        server.should_exit = True
        await task
    await ad.aclose()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(alphabet=st.characters(blacklist_categories=())),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["escalation_id", "option", "version", "answer_id", "answered_at", "annotator", "answers", "data", "x"]), kids, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=300), _json_values.map(lambda v: json.dumps(v).encode())))
async def test_any_signed_body_gets_a_clear_status(body: bytes):
    ad, _ = await _callback_adapter()
    res = await ad.handle_callback(body, signature_headers(SECRET, body))
    assert res.status in (200, 400, 422)
    assert (res.error is None) == (res.status == 200)
    await ad.aclose()


class _Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:  # no real sleeping
        self.waits.append(seconds)


@pytest.mark.parametrize(("headers", "at_least"), [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "2500"}, 2.5)])
async def test_deliveries_use_the_retry_policy_and_honour_retry_after(tool, headers, at_least):
    from steerkit.backends import RetryPolicy

    tool.fail_next, tool.fail_status, tool.fail_headers = 2, 429, headers
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, retry=RetryPolicy(max_retries=3, initial=0.01, max_wait=0.05))
    ad._sleep = rec = _Recorder()
    _, escs = _escs(1)
    await ad.submit(escs)
    assert len(tool.deliveries) == 1 and tool.fail_next == 0
    assert len(rec.waits) == 2 and all(w >= at_least for w in rec.waits)  # the server's wait, not the backoff
    await ad.aclose()


async def test_retries_are_bounded_by_the_policy(tool):
    from steerkit.backends import RetryPolicy

    tool.fail_next = 100
    ad = WebhookAdapter(tool.url + "/escalations", SECRET, retry=RetryPolicy(max_retries=2, initial=0.01, max_wait=0.05))
    ad._sleep = rec = _Recorder()
    _, escs = _escs(1)
    with pytest.raises(FeedbackError, match="HTTP 503"):
        await ad.submit(escs)
    assert len(rec.waits) == 2 and all(0 <= w <= 0.05 for w in rec.waits)  # full jitter, capped
    assert tool.fail_next == 100 - 3
    await ad.aclose()

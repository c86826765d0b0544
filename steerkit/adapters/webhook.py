"""Webhook adapter: escalations go out as signed HTTP POSTs; answers come back on a callback
endpoint and are also reconciled by polling.

Outbound (steerkit → your annotation tool)::

    POST <url>
    Content-Type: application/json
    X-Steerkit-Event: escalation.upsert
    X-Steerkit-Delivery: <delivery id>        # same escalation content ⇒ same id: dedupe on it
    X-Steerkit-Timestamp: <unix seconds>
    X-Steerkit-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

    {"type": "escalation.upsert", "delivery_id": ..., "timestamp": ..., "data": <Escalation>}

Escalations are recorded in the local queue *before* delivery (an outbox): a failed delivery is
retried under the project's one retry policy (`steerkit.backends.RetryPolicy`, tenacity: full-jitter
exponential backoff on connection errors, 429 and 5xx, waiting at least ``Retry-After`` /
``retry-after-ms``) and, if it still fails, stays undelivered and is sent again by the next
`submit` or `redeliver`. An identical re-submit is not re-posted.

Inbound (your tool → steerkit), signed the same way with the same secret::

    POST <callback endpoint>     body: an Answer, a list of Answers, {"answers": [...]},
                                       or {"type": ..., "data": <Answer>}

Answer fields: ``escalation_id``, ``option`` (an option id of the escalation), ``version`` (copy
``data.version`` of the escalation), optional ``annotator``, ``answered_at``, ``answer_id`` (your
response id: redeliveries with the same id are recognised as duplicates). Without ``answer_id``
the id is a digest of the answer's signed content, so a redelivered or replayed answer is a
duplicate (it never re-opens an applied escalation or reverts a later correction); send an
``answer_id`` or ``answered_at`` to record the same choice again as a new answer. Without
``answered_at`` the answer is dated by the signature's timestamp. A request is handled
all-or-nothing: 200 ``{"accepted": [...], "duplicates": [...]}``; 401 bad signature; 409 a replay
(this exact signed request was already received within the signature's time window: nothing
changed, re-sign to resend); 400 malformed body (not JSON, nested deeper than 32 levels, lone
UTF-16 surrogates, not answers); 422 an invalid answer (unknown escalation, option, stale
version), and then nothing changed.

Mount the endpoint with `WebhookAdapter.asgi_app` (any ASGI server), or call
`WebhookAdapter.handle_callback(body, headers)` from your own framework.

Polling: ``GET <poll_url>?cursor=<cursor>`` (signed over an empty body) returning
``{"answers": [...], "cursor": "..."}`` (or a bare list). `poll` records each answer (duplicates
are no-ops; invalid ones are reported, not fatal) and stores the cursor durably. `answers` polls
first when a ``poll_url`` is set, so webhooks that were lost (at-most-once senders) are reconciled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from steerkit.adapters.queue import AnnotationQueue, QueueAdapter
from steerkit.backends import RetryPolicy
from steerkit.backends.openai_compat import wait_retry_after
from steerkit.errors import FeedbackError, InvalidAnswerError, WebhookSignatureError
from steerkit.escalation import Answer, Escalation, SubmitResult
from steerkit.models import stable_hash

__all__ = [
    "CallbackResult",
    "PollResult",
    "WebhookAdapter",
    "sign",
    "signature_headers",
    "verify_signature",
]

log = logging.getLogger("steerkit.adapters.webhook")

TIMESTAMP_HEADER = "X-Steerkit-Timestamp"
SIGNATURE_HEADER = "X-Steerkit-Signature"
EVENT_HEADER = "X-Steerkit-Event"
DELIVERY_HEADER = "X-Steerkit-Delivery"
MAX_BODY = 1 << 20
MAX_JSON_DEPTH = 32
"""Answers are shallow; a body nested deeper than this is malformed (400), however it parses."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLAY_MEMORY = 65_536
"""Signatures remembered for replay detection (the oldest are forgotten first beyond this;
content-derived answer ids still make a forgotten replay a duplicate)."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, f"{timestamp}." + body)."""
    mac = hmac.new(_key(secret), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signature_headers(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)}


_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
"""Unix seconds as ASCII digits: no sign, no ``_``, no non-ASCII digits that `int` would accept, and
few enough digits to compare with the clock as a float (thousands of digits overflow it)."""
_SIGNATURE_RE = re.compile(r"sha256=[0-9a-fA-F]{64}")
_SIGNED_HEADERS = frozenset({TIMESTAMP_HEADER.lower(), SIGNATURE_HEADER.lower()})
_OWS = " \t"
"""HTTP's optional whitespace around a field value: only these are stripped (not NBSP or NEL)."""


def _signature_fields(headers: Mapping[str, Any]) -> tuple[str, str, int]:
    """(timestamp text, signature, timestamp) from the headers, or `WebhookSignatureError` for any
    header that is missing, not text, or not of the one shape we send: a malformed header is a 401,
    never an exception from parsing or comparing it."""
    h: dict[str, Any] = {}
    for k, v in headers.items():
        h[k.lower() if isinstance(k, str) else k] = v
    ts, sig = h.get(TIMESTAMP_HEADER.lower()), h.get(SIGNATURE_HEADER.lower())
    if not ts or not sig:
        raise WebhookSignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not isinstance(ts, str) or not _TIMESTAMP_RE.fullmatch(ts := ts.strip(_OWS)):
        raise WebhookSignatureError(f"malformed {TIMESTAMP_HEADER}: expected unix seconds (ASCII digits)")
    if not isinstance(sig, str) or not _SIGNATURE_RE.fullmatch(sig := sig.strip(_OWS)):
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER}: expected sha256=<64 hex digits>")
    return ts, sig.lower(), int(ts)


def verify_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> None:
    """Raise `WebhookSignatureError` unless ``headers`` carry a valid, fresh signature of ``body``."""
    _verified(secret, headers, body, tolerance_s=tolerance_s, now=now)


def _verified(
    secret: str | bytes, headers: Mapping[str, Any], body: bytes, *, tolerance_s: float, now: float | None = None
) -> tuple[str, int]:
    """`verify_signature`, returning the (normalised) signature and its timestamp."""
    ts, sig, t = _signature_fields(headers)
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        raise WebhookSignatureError(f"signature timestamp is more than {tolerance_s:.0f}s away from now (replay?)")
    if not hmac.compare_digest(sign(secret, ts, body).encode("ascii"), sig.encode("ascii")):
        raise WebhookSignatureError("signature does not match the body")
    return sig, t


@dataclass
class CallbackResult:
    status: int
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    error: str | None = None

    def body(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"accepted": self.accepted, "duplicates": self.duplicates}


@dataclass
class PollResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cursor: str | None = None


class WebhookAdapter(QueueAdapter):
    """`FeedbackAdapter` for an external annotation tool reachable over HTTP.

    ``secret`` signs outbound requests and verifies inbound ones (``inbound_secret`` if the tool
    signs with another key). State lives in ``queue`` (an `AnnotationQueue` or a path; in memory by
    default — pass a path to keep pending escalations and the poll cursor across restarts).
    ``client``: an ``httpx.AsyncClient`` to use (e.g. with a custom transport); one is created
    otherwise. ``retry``: how deliveries and polls are retried (default
    ``RetryPolicy(max_retries=max_retries, initial=backoff_s)``). The secret never appears in
    errors or logs.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        poll_url: str | None = None,
        inbound_secret: str | bytes | None = None,
        queue: AnnotationQueue | str | Path = ":memory:",
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        concurrency: int = 8,
        poll_on_answers: bool = True,
        tolerance_s: float = 300.0,
        name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not secret:
            raise FeedbackError("WebhookAdapter needs a non-empty secret", hint="pass secret= (shared with the receiver)")
        super().__init__(queue, name=name)
        self.url = url
        self.poll_url = poll_url
        self._secret = _key(secret)
        self._inbound = _key(inbound_secret) if inbound_secret else self._secret
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self.retry = retry or RetryPolicy(max_retries=max_retries, initial=backoff_s)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # a seam for tests
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> when it stops being valid
        self.replays_rejected = 0
        self.poll_on_answers = poll_on_answers
        self.tolerance_s = tolerance_s
        self._sem = asyncio.Semaphore(concurrency)
        self._poll_lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self.deliveries = 0
        self.last_poll_error: str | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookAdapter(url={self.url!r}, poll_url={self.poll_url!r})"

    # --- outbound ------------------------------------------------------------------------------

    async def submit(self, escalations: Sequence[Escalation]) -> SubmitResult:
        """Record escalations (upsert), then deliver every undelivered one. Raises `FeedbackError`
        if some could not be delivered; they stay queued and are retried on the next call."""
        res = await super().submit(escalations)
        await self.redeliver()
        return res

    async def redeliver(self) -> list[str]:
        """Deliver every escalation whose current content has not been delivered. Returns ids sent."""
        todo = await asyncio.to_thread(self.queue.undelivered)
        if not todo:
            return []
        results = await asyncio.gather(*(self._deliver(e) for e in todo), return_exceptions=True)
        ok = [e for e, r in zip(todo, results) if r is None]
        if ok:
            await asyncio.to_thread(self.queue.mark_delivered, ok)
        failed = [(e.id, r) for e, r in zip(todo, results) if isinstance(r, BaseException)]
        if failed:
            raise FeedbackError(
                f"{len(failed)} of {len(todo)} escalation(s) could not be delivered to {self.url}: {failed[0][1]}",
                hint="they stay queued; fix the receiver and call submit() or redeliver() again",
            )
        return [e.id for e in ok]

    @staticmethod
    def delivery_id(e: Escalation) -> str:
        return "dlv_" + stable_hash({"escalation": e.id, "content": e.content_hash()})

    def _payload(self, e: Escalation) -> bytes:
        doc = {
            "type": "escalation.upsert",
            "delivery_id": self.delivery_id(e),
            "timestamp": int(time.time()),
            "data": e.model_dump(mode="json"),
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    async def _deliver(self, e: Escalation) -> None:
        body = self._payload(e)
        async with self._sem:
            resp = await self._request(
                "POST",
                self.url,
                body,
                {"Content-Type": "application/json", EVENT_HEADER: "escalation.upsert", DELIVERY_HEADER: self.delivery_id(e)},
            )
        self.deliveries += 1
        if resp.status_code >= 300:
            raise FeedbackError(f"the receiver rejected escalation {e.id}: HTTP {resp.status_code} {resp.text[:200]!r}")

    async def _request(self, method: str, url: str, body: bytes, headers: dict[str, str], params: dict | None = None) -> httpx.Response:
        """One signed request under the retry policy: connection errors, 429 and 5xx are retried
        (waiting at least the server's ``Retry-After``/``retry-after-ms``); the last 429/5xx
        response is returned when the retries are spent."""
        policy = self.retry

        async def attempt() -> httpx.Response:
            h = {**headers, **signature_headers(self._secret, body)}  # re-signed: a fresh timestamp
            resp = await self._client.request(method, url, content=body or None, headers=h, params=params)
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _RetryableStatus(resp)
            return resp

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_retries + 1),
            wait=wait_retry_after(wait_random_exponential(multiplier=policy.initial, max=policy.max_wait),
                                  policy.max_retry_after),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
            sleep=lambda seconds: self._sleep(seconds),
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except _RetryableStatus as exc:
            return exc.response
        except httpx.TransportError as exc:
            raise FeedbackError(
                f"cannot reach {url}: {type(exc).__name__}: {exc} ({policy.max_retries} retries spent)",
                hint="check the URL and that the receiver is running",
            ) from None

    # --- inbound: callback endpoint ------------------------------------------------------------

    async def handle_callback(self, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        """Verify, parse and record answers POSTed by the annotation tool (framework-agnostic)."""
        try:
            signature, signed_at = _verified(self._inbound, headers, body, tolerance_s=self.tolerance_s)
        except WebhookSignatureError as e:
            return CallbackResult(401, error=e.message)
        if not self._first_sighting(signature, signed_at):
            self.replays_rejected += 1
            return CallbackResult(409, error="replayed request: this exact signed request was already received; "
                                             "nothing changed (to send it again, sign it again)")
        recorded = False
        try:
            res = await self._record_callback(body, signed_at)
            recorded = res.status == 200
            return res
        finally:
            if not recorded:
                self._seen.pop(signature, None)  # nothing recorded: the sender may retry the same request

    def _first_sighting(self, signature: str, signed_at: int) -> bool:
        """Remember a valid signature until it expires; False if it is already remembered.

        The memory is this process's; behind several processes a replay that reaches another one
        is still harmless, since answers without an ``answer_id`` get ids derived from their content."""
        now = time.time()
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) < _REPLAY_MEMORY:
                break
            del self._seen[oldest]
        if signature in self._seen:
            return False
        self._seen[signature] = signed_at + self.tolerance_s
        return True

    async def _record_callback(self, body: bytes, signed_at: int) -> CallbackResult:
        try:
            answers = _parse_answers(_load_json(body), datetime.fromtimestamp(signed_at, UTC))
        except (ValueError, ValidationError) as e:
            return CallbackResult(400, error=f"malformed answer payload: {str(e)[:300]}")
        try:
            flags = await asyncio.to_thread(self.queue.receive_many, answers, adapter=self.name)
        except InvalidAnswerError as e:
            return CallbackResult(422, error=str(e))
        res = CallbackResult(200)
        for a, new in zip(answers, flags):
            (res.accepted if new else res.duplicates).append(a.answer_id)
            if new:
                await self._notify(a)
        return res

    async def _notify(self, a: Answer) -> None:
        stored = a if a.adapter is not None else a.model_copy(update={"adapter": self.name})
        for fn in list(self.on_answer):
            await fn(stored)

    def asgi_app(self, path: str = "/answers") -> Callable[[dict, Callable, Callable], Awaitable[None]]:
        """A minimal ASGI app: ``POST {path}`` → `handle_callback`; ``GET /healthz`` → 200."""

        async def app(scope: dict, receive: Callable, send: Callable) -> None:
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    if msg["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif msg["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if scope["type"] != "http":
                return
            method, p = scope["method"], scope["path"]
            if p == "/healthz" and method == "GET":
                await _send_json(send, 200, {"ok": True})
                return
            if p != path:
                await _send_json(send, 404, {"error": f"not found: {p}"})
                return
            if method != "POST":
                await _send_json(send, 405, {"error": "use POST"})
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY:
                    await _send_json(send, 413, {"error": "body too large"})
                    return
                chunks.append(chunk)
                if not msg.get("more_body"):
                    break
            raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
            signed = [k for k, _ in raw if k in _SIGNED_HEADERS]
            if len(signed) != len(set(signed)):  # two signatures or timestamps: which one was meant?
                await _send_json(send, 401, {"error": f"repeated {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"})
                return
            res = await self.handle_callback(b"".join(chunks), dict(raw))
            await _send_json(send, res.status, res.body())

        return app

    # --- inbound: polling ----------------------------------------------------------------------

    def _cursor_key(self) -> str:
        return "webhook.cursor:" + stable_hash(self.poll_url)

    async def poll(self) -> PollResult:
        """Fetch answers from ``poll_url`` since the stored cursor and record them."""
        if not self.poll_url:
            raise FeedbackError("this WebhookAdapter has no poll_url", hint="pass poll_url= to reconcile by polling")
        async with self._poll_lock:
            cursor = await asyncio.to_thread(self.queue.get_meta, self._cursor_key())
            resp = await self._request("GET", self.poll_url, b"", {"Accept": "application/json"}, params={"cursor": cursor} if cursor else None)
            if resp.status_code != 200:
                raise FeedbackError(f"polling {self.poll_url} failed: HTTP {resp.status_code} {resp.text[:200]!r}")
            try:
                doc = _load_json(resp.content)
            except ValueError as e:
                raise FeedbackError(f"polling {self.poll_url}: the response is not usable JSON: {e}") from None
            raw = doc.get("answers", []) if isinstance(doc, dict) else doc
            out = PollResult(cursor=doc.get("cursor") if isinstance(doc, dict) else None)
            for item in raw if isinstance(raw, list) else []:
                try:
                    a = _answer_from(item, None)
                    new = await asyncio.to_thread(self.queue.receive, a, adapter=self.name)
                except (InvalidAnswerError, ValidationError, ValueError) as e:
                    out.errors.append(str(e)[:300])
                    continue
                (out.accepted if new else out.duplicates).append(a.answer_id)
                if new:
                    await self._notify(a)
            if out.cursor is not None:
                await asyncio.to_thread(self.queue.set_meta, self._cursor_key(), str(out.cursor))
            self.last_poll_error = None
            return out

    async def answers(self, *, persona_id: str | None = None) -> list[Answer]:
        """Reconcile by polling (when ``poll_url`` is set), then list unacknowledged answers. A
        failed poll is logged (``last_poll_error``) and the local answers are still returned."""
        if self.poll_url and self.poll_on_answers:
            try:
                await self.poll()
            except FeedbackError as e:
                self.last_poll_error = e.message
                log.warning("webhook poll failed: %s", e.message)
        return await super().answers(persona_id=persona_id)

    def start_polling(self, interval_s: float = 60.0) -> asyncio.Task[None]:
        """Poll every ``interval_s`` seconds in a background task (stopped by `aclose`)."""
        if self._poll_task is not None and not self._poll_task.done():
            return self._poll_task

        async def loop() -> None:
            while True:
                try:
                    await self.poll()
                except FeedbackError as e:
                    self.last_poll_error = e.message
                    log.warning("webhook poll failed: %s", e.message)
                await asyncio.sleep(interval_s)

        self._poll_task = asyncio.ensure_future(loop())
        return self._poll_task

    async def aclose(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            await asyncio.gather(self._poll_task, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()
        await super().aclose()


class _RetryableStatus(Exception):
    """A 429/5xx response, raised so the retry policy (and its ``Retry-After`` wait) sees it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _load_json(body: bytes) -> Any:
    """Parse a callback body; `ValueError` (a 400) for anything but shallow, valid JSON text:
    bad UTF-8, bad JSON, nesting deeper than `MAX_JSON_DEPTH`, lone UTF-16 surrogates."""
    try:
        doc = json.loads(body or b"null")
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    stack: list[tuple[Any, int]] = [(doc, 1)]  # iterative: no recursion on hostile input
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise ValueError("a string holds a lone UTF-16 surrogate (e.g. \\ud800): not valid Unicode text")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((k, depth) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        else:
            stack.extend((v, depth + 1) for v in node)
    return doc


def _parse_answers(doc: Any, signed_at: datetime | None = None) -> list[Answer]:
    """Answers from a callback document. An answer without ``answer_id`` gets one derived from its
    signed content (a digest of the answer object as sent), never from the time of receipt, so a
    redelivered or replayed answer is a duplicate; without ``answered_at`` it is dated
    ``signed_at`` (the signature's timestamp)."""
    if isinstance(doc, dict) and "answers" in doc:
        doc = doc["answers"]
    elif isinstance(doc, dict) and "data" in doc and "escalation_id" not in doc:
        doc = doc["data"]
    items = doc if isinstance(doc, list) else [doc]
    if not items or not all(isinstance(i, dict) for i in items):
        raise ValueError("expected an answer object, a list of them, or {'answers': [...]}")
    return [_answer_from(item, signed_at) for item in items]


def _answer_from(item: Any, signed_at: datetime | None) -> Answer:
    if not isinstance(item, dict):
        raise ValueError(f"expected an answer object, got {type(item).__name__}")  # noqa: TRY004 (a 400, as bad JSON is)
    fields = dict(item)
    if not fields.get("answer_id"):
        fields["answer_id"] = "ans_" + stable_hash({"webhook_answer": item})
    if fields.get("answered_at") is None and signed_at is not None:
        fields["answered_at"] = signed_at
    return Answer.model_validate(fields)


async def _send_json(send: Callable, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

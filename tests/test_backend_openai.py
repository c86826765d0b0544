"""OpenAIBackend for real: against llama.cpp's OpenAI-compatible server (the session's embedded
model on loopback), and against a fake raw-HTTP server for what llama.cpp cannot show (vLLM's
response shape, echo scoring, 5xx/429/Retry-After, top-k limits, 404)."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from loopback_server import LoopbackServer, read_head

from steerkit.backends import EmbeddedBackend, OpenAIBackend, RetryPolicy
from steerkit.errors import (
    BackendRequestError,
    BackendUnavailableError,
    ContextOverflowError,
    LabelTokensMissingError,
    ModelNotFoundError,
)

pytestmark = pytest.mark.llama

VLLM = json.loads((Path(__file__).parent / "fixtures" / "vllm_completions_handwritten.json").read_text())

Reply = tuple[int, dict[str, str], Any]
Handler = Callable[[dict[str, Any], int], "Reply | Awaitable[Reply]"]


class FakeCompletionsServer(LoopbackServer):
    """A fake OpenAI-compatible server: raw HTTP/1.1 on a free loopback port, replies scripted by
    ``handler(request_json, n)`` (n counts requests from 1). Records requests and peak concurrency."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.active = 0
        self.max_active = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, headers = await read_head(reader)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = json.loads(body) if body else {}
            self.requests.append(request)
            self.headers.append(headers)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            try:
                reply = self.handler(request, len(self.requests))
                if asyncio.iscoroutine(reply):
                    reply = await reply
            finally:
                self.active -= 1
            status, extra, payload = reply  # type: ignore[misc]
            data = json.dumps(payload).encode()
            head_out = f"HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            head_out += "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n"
            writer.write(head_out.encode() + data)
            await writer.drain()


def ok(name: str) -> Reply:
    return 200, {}, copy.deepcopy(VLLM[name]["response"])


def err(name: str, headers: dict[str, str] | None = None) -> Reply:
    return VLLM[name]["status"], headers or {}, VLLM[name]["response"]


def fake_sleep_recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # records the wait instead of sleeping
        waits.append(seconds)

    return waits, sleep


CLAIM = "Claim: The capital of France is Paris.\nI think this claim is"


# --- against llama.cpp's OpenAI-compatible server ---------------------------------------------


async def test_scores_usage_and_agreement_with_the_embedded_backend(
    llama_server_url: str, embedded_backend: EmbeddedBackend
):
    prompts = [CLAIM, "Claim: Fish live in trees.\nI think this claim is", "Claim: Ice is cold.\nI think this claim is"]
    async with OpenAIBackend(llama_server_url, embedded_backend.chat_model) as b:
        scores = await b.score(prompts)
    direct = await embedded_backend.score(prompts)
    # One request at a time, the HTTP path gives the in-process numbers up to the prompt cache's
    # rare rounding flips. Concurrent requests may be batched together by llama.cpp, which is not
    # batch-invariant (see EmbeddedBackend): close, not equal.
    async with OpenAIBackend(llama_server_url, embedded_backend.chat_model, max_concurrency=1) as serial:
        one_by_one = await serial.score(prompts)
    for s, d, c in zip(one_by_one, direct, scores):
        assert s.p_true == pytest.approx(d.p_true, abs=0.03) and s.p_false == pytest.approx(d.p_false, abs=0.03)
        assert c.p_true == pytest.approx(d.p_true, abs=0.1) and c.p_false == pytest.approx(d.p_false, abs=0.1)
    assert len(scores) == 3
    for s in scores:
        assert s.source == "top_logprobs"
        assert s.p_true is not None and s.p_false is not None
        assert 0 < s.label_mass <= 1
        assert s.prompt_tokens > 5 and s.cached_tokens is not None
    assert b.stats.calls == 3 and b.stats.retries == 0
    assert b.stats.prompt_tokens == sum(s.prompt_tokens for s in scores)
    assert b.stats.cached_known and b.stats.evaluated_tokens is not None


async def test_results_keep_prompt_order_under_a_concurrency_limit(
    llama_server_url: str, embedded_backend: EmbeddedBackend
):
    prompts = [("Claim:" + " very" * i + " small cats are animals.\nI think this claim is") for i in range(6)]
    async with OpenAIBackend(llama_server_url, embedded_backend.chat_model, max_concurrency=2) as b:
        scores = await b.score(prompts)
    lengths = [s.prompt_tokens for s in scores]
    assert lengths == sorted(lengths) and len(set(lengths)) == 6
    assert 1 <= b.max_in_flight <= 2


async def test_missing_labels_fall_back_to_forced_scoring_on_llama_cpp(
    llama_server_url: str, embedded_backend: EmbeddedBackend
):
    prompt = "The capital of France is"  # top-1 is a city or article, never a label
    async with OpenAIBackend(llama_server_url, embedded_backend.chat_model, top_logprobs=1) as b:
        [s] = await b.score([prompt])
        assert s.source == "forced"  # llama.cpp ignores echo; the forced-token logprobs are unbiased
        assert b._echo_ok is False and b._forced_ok is True
        assert s.p_true is not None and s.p_false is not None
        assert 0 < s.p_true < 0.5 and 0 < s.p_false < 0.5
        assert b.stats.fallbacks == 1
        calls = b.stats.calls
        await b.score([prompt])
        assert b.stats.calls == calls + 3  # echo is not tried again: top-k + two forced requests
    # cross-check: the embedded backend's own forced path gives the same probabilities
    old = embedded_backend.top_logprobs
    embedded_backend.top_logprobs = 1
    try:
        [d] = await embedded_backend.score([prompt])
    finally:
        embedded_backend.top_logprobs = old
    assert d.source == "forced"
    assert s.p_true == pytest.approx(d.p_true, rel=0.05)


async def test_missing_labels_without_fallback_raise(llama_server_url: str, embedded_backend: EmbeddedBackend):
    async with OpenAIBackend(llama_server_url, embedded_backend.chat_model, top_logprobs=1, echo_fallback=False) as b:
        with pytest.raises(LabelTokensMissingError, match="top 1"):
            await b.score(["The capital of France is"])


async def test_context_overflow_is_typed(llama_server_url: str, embedded_backend: EmbeddedBackend):
    async with OpenAIBackend(llama_server_url, embedded_backend.chat_model) as b:
        with pytest.raises(ContextOverflowError):
            await b.score(["hello " * 9000 + "\nI think this claim is"])
        assert b.stats.retries == 0


# --- vLLM's shape and policies, on a fake server ----------------------------------------------


async def test_vllm_legacy_shape_over_http():
    async with FakeCompletionsServer(lambda req, n: ok("topk")) as srv:
        async with OpenAIBackend(srv.base_url, "Qwen/Qwen2.5-0.5B", top_logprobs=5) as b:
            [s] = await b.score([CLAIM])
    assert s.p_true == pytest.approx(math.exp(-0.35667494393873245) + math.exp(-2.995732273553991))
    assert s.p_false == pytest.approx(math.exp(-1.6094379124341003))
    assert srv.requests[0]["logprobs"] == 5 and srv.requests[0]["max_tokens"] == 1
    assert srv.requests[0]["temperature"] == 0 and srv.requests[0]["model"] == "Qwen/Qwen2.5-0.5B"
    assert b.stats.cached_known is False  # the server did not report cached tokens


async def test_echo_fallback_on_a_vllm_like_server():
    def handler(req: dict[str, Any], n: int) -> Reply:
        if req.get("echo"):
            return ok("echo_true") if req["prompt"].endswith(" True") else ok("echo_false")
        return ok("missing")

    prompt = VLLM["missing"]["request"]["prompt"]
    async with FakeCompletionsServer(handler) as srv:
        async with OpenAIBackend(srv.base_url, "m", top_logprobs=5) as b:
            [s] = await b.score([prompt])
    assert s.source == "echo"
    assert s.p_true == pytest.approx(math.exp(-3.2188758248682006))
    assert s.p_false == pytest.approx(math.exp(-4.605170185988091))
    assert s.prompt_tokens == 11  # usage of the scoring request, not of the echo requests
    echo_reqs = [r for r in srv.requests if r.get("echo")]
    assert sorted(r["prompt"] for r in echo_reqs) == sorted([prompt + " False", prompt + " True"])
    assert all(r["logprobs"] == 1 for r in echo_reqs)
    assert not any("logit_bias" in r for r in srv.requests)


async def test_server_without_any_fallback_raises_typed_error_and_remembers():
    def handler(req: dict[str, Any], n: int) -> Reply:
        if "logit_bias" in req:  # vLLM: keys must be token ids
            return 400, {}, {"error": {"message": "logit_bias keys must be integers", "code": 400}}
        return ok("missing")  # echo silently ignored

    async with FakeCompletionsServer(handler) as srv:
        async with OpenAIBackend(srv.base_url, "m", top_logprobs=5) as b:
            with pytest.raises(LabelTokensMissingError, match="neither echo"):
                await b.score([VLLM["missing"]["request"]["prompt"]])
            n = len(srv.requests)
            assert n == 5  # top-k, 2 echo, 2 forced
            with pytest.raises(LabelTokensMissingError):
                await b.score([VLLM["missing"]["request"]["prompt"]])
            assert len(srv.requests) == n + 1  # no fallback is tried again
    assert b.stats.retries == 0


async def test_topk_lowered_once_to_the_servers_maximum():
    def handler(req: dict[str, Any], n: int) -> Reply:
        if req["logprobs"] > 20:
            return err("error_logprobs_too_many")
        return ok("topk")

    async with FakeCompletionsServer(handler) as srv:
        async with OpenAIBackend(srv.base_url, "m", top_logprobs=25) as b:
            await b.score([CLAIM])
            await b.score([CLAIM, CLAIM])
    assert [r["logprobs"] for r in srv.requests] == [25, 20, 20, 20]
    assert b.top_logprobs == 20 and b.stats.retries == 0


async def test_5xx_is_retried_with_backoff_then_succeeds():
    replies = iter([(500, {}, {"error": {"message": "boom"}}), (502, {}, {"error": {"message": "bad gateway"}})])

    def handler(req: dict[str, Any], n: int) -> Reply:
        return next(replies, None) or ok("topk")

    async with FakeCompletionsServer(handler) as srv:
        waits, sleep = fake_sleep_recorder()
        b = OpenAIBackend(srv.base_url, "m", retry=RetryPolicy(max_retries=3, initial=0.5, max_wait=4), sleep=sleep)
        async with b:
            [s] = await b.score([CLAIM])
    assert s.p_true is not None
    assert len(srv.requests) == 3 and b.stats.retries == 2 and b.stats.calls == 1
    assert len(waits) == 2 and all(0 <= w <= 4 for w in waits)


async def test_429_honours_retry_after():
    replies = iter([
        (429, {"Retry-After": "7"}, {"error": {"message": "slow down"}}),
        (429, {"retry-after-ms": "2500"}, {"error": {"message": "slow down"}}),
    ])

    def handler(req: dict[str, Any], n: int) -> Reply:
        return next(replies, None) or ok("topk")

    async with FakeCompletionsServer(handler) as srv:
        waits, sleep = fake_sleep_recorder()
        b = OpenAIBackend(srv.base_url, "m", retry=RetryPolicy(max_retries=3, initial=0.01, max_wait=0.05), sleep=sleep)
        async with b:
            await b.score([CLAIM])
    assert len(srv.requests) == 3
    assert waits[0] >= 7 and waits[1] >= 2.5  # the server's wait, longer than the tiny backoff


async def test_400_is_not_retried():
    async with FakeCompletionsServer(lambda req, n: (400, {}, {"error": {"message": "bad prompt"}})) as srv:
        waits, sleep = fake_sleep_recorder()
        b = OpenAIBackend(srv.base_url, "m", sleep=sleep)
        async with b:
            with pytest.raises(BackendRequestError, match="bad prompt") as info:
                await b.score([CLAIM])
    assert info.value.status == 400
    assert len(srv.requests) == 1 and waits == [] and b.stats.retries == 0


async def test_persistent_503_exhausts_retries():
    async with FakeCompletionsServer(lambda req, n: (503, {}, {"error": {"message": "overloaded"}})) as srv:
        waits, sleep = fake_sleep_recorder()
        b = OpenAIBackend(srv.base_url, "m", max_retries=2, sleep=sleep)
        async with b:
            with pytest.raises(BackendUnavailableError, match="503"):
                await b.score([CLAIM])
    assert len(srv.requests) == 3 and len(waits) == 2


async def test_unknown_model_is_model_not_found():
    async with FakeCompletionsServer(lambda req, n: err("error_model_not_found")) as srv:
        async with OpenAIBackend(srv.base_url, "no-such-model") as b:
            with pytest.raises(ModelNotFoundError, match="no-such-model"):
                await b.score([CLAIM])
    assert len(srv.requests) == 1


async def test_vllm_context_length_error_is_typed():
    async with FakeCompletionsServer(lambda req, n: err("error_context_length")) as srv:
        async with OpenAIBackend(srv.base_url, "m") as b:
            with pytest.raises(ContextOverflowError, match="maximum context length"):
                await b.score([CLAIM])


async def test_unreachable_server_is_unavailable_after_retries():
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits, sleep = fake_sleep_recorder()
    b = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, api_key="sk-secret-test-key", sleep=sleep)
    async with b:
        with pytest.raises(BackendUnavailableError, match="could not be reached") as info:
            await b.score([CLAIM])
    assert len(waits) == 2 and b.stats.retries == 2
    assert "sk-secret-test-key" not in str(info.value)


async def test_timeouts_are_retried_then_reported():
    async def slow(req: dict[str, Any], n: int) -> Reply:
        await asyncio.Event().wait()  # never answers: every attempt can only time out
        return ok("topk")

    async with FakeCompletionsServer(slow) as srv:
        waits, sleep = fake_sleep_recorder()
        b = OpenAIBackend(srv.base_url, "m", timeout=0.2, max_retries=1, sleep=sleep)
        async with b:
            with pytest.raises(BackendUnavailableError, match="timed out"):
                await b.score([CLAIM])
    assert len(srv.requests) == 2 and len(waits) == 1


async def test_concurrency_limit_seen_by_the_server():
    async def slow(req: dict[str, Any], n: int) -> Reply:
        await asyncio.sleep(0.05)
        return ok("topk")

    async with FakeCompletionsServer(slow) as srv:
        async with OpenAIBackend(srv.base_url, "m", max_concurrency=3) as b:
            await b.score([CLAIM] * 9)
    assert srv.max_active == 3 and len(srv.requests) == 9


class ThrottlerClock:
    """The clock of the backend's rate limiter (``asyncio_throttle``), made virtual: it moves only
    when the limiter waits, so the test reads the spacing the limiter enforces, not the machine's
    speed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from asyncio_throttle import throttler

        self.now = 0.0
        self.waits = 0
        monkeypatch.setattr(throttler, "time", self)  # the limiter reads time.monotonic()
        monkeypatch.setattr(throttler, "asyncio", self)  # ... and waits with asyncio.sleep()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.waits += 1
        await asyncio.sleep(0)


async def test_request_rate_limit_spaces_requests(monkeypatch: pytest.MonkeyPatch):
    clock = ThrottlerClock(monkeypatch)
    async with FakeCompletionsServer(lambda req, n: ok("topk")) as srv:
        async with OpenAIBackend(srv.base_url, "m", rate_limit=10) as b:
            await b.score([CLAIM] * 4)
        assert len(srv.requests) == 4
        assert clock.now > 0.3  # 4 requests at 10/s: 3 intervals of 0.1 s on the limiter's clock
        before = clock.waits
        async with OpenAIBackend(srv.base_url, "m") as unlimited:
            await unlimited.score([CLAIM] * 4)
        assert clock.waits == before and len(srv.requests) == 8  # no rate limit: no waiting


async def test_api_key_is_sent_but_never_shown():
    async with FakeCompletionsServer(lambda req, n: (401, {}, {"error": {"message": "invalid api key"}})) as srv:
        async with OpenAIBackend(srv.base_url, "m", api_key="sk-super-secret-123") as b:
            with pytest.raises(BackendRequestError) as info:
                await b.score([CLAIM])
    assert srv.headers[0]["authorization"] == "Bearer sk-super-secret-123"
    assert "sk-super-secret-123" not in str(info.value) and "sk-super-secret-123" not in repr(b)
    assert info.value.status == 401 and len(srv.requests) == 1

"""`OpenAIBackend`'s transport seam: `httpx.MockTransport` answers instead of a server (no
private patching), here with vLLM's response shapes as its documentation gives them (a fixture
written by hand, not recorded from a server)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import httpx
import openai
import pytest

from steerkit import OpenAIBackend, RetryPolicy

VLLM = json.loads((Path(__file__).parent / "fixtures" / "vllm_completions_handwritten.json").read_text())
CLAIM = "Claim: The capital of France is Paris.\nI think this claim is"


async def test_scores_through_a_mock_transport() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"url": str(request.url), "body": json.loads(request.content)})
        return httpx.Response(200, json=copy.deepcopy(VLLM["topk"]["response"]))

    async with OpenAIBackend("http://vllm.invalid/v1", "Qwen/Qwen2.5-0.5B", top_logprobs=5,
                             transport=httpx.MockTransport(handler)) as b:
        [s] = await b.score([CLAIM])
    assert s.p_true == pytest.approx(math.exp(-0.35667494393873245) + math.exp(-2.995732273553991))
    assert seen[0]["url"] == "http://vllm.invalid/v1/completions"
    assert seen[0]["body"]["prompt"] == CLAIM and seen[0]["body"]["logprobs"] == 5


async def test_retries_wait_through_the_sleep_seam() -> None:
    waits: list[float] = []
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        if n == 1:
            return httpx.Response(429, headers={"retry-after-ms": "1500"}, json={"error": {"message": "fake rate limit"}})
        return httpx.Response(200, json=copy.deepcopy(VLLM["topk"]["response"]))

    async def sleep(seconds: float) -> None:  # records the wait instead of sleeping
        waits.append(seconds)

    b = OpenAIBackend("http://vllm.invalid/v1", "m", top_logprobs=5, transport=httpx.MockTransport(handler),
                      retry=RetryPolicy(max_retries=2, initial=0.01, max_wait=10), sleep=sleep)
    async with b:
        await b.score([CLAIM])
    assert n == 2 and waits == [pytest.approx(1.5)]


async def test_a_given_sdk_client_is_used() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer from-the-app"
        return httpx.Response(200, json=copy.deepcopy(VLLM["topk"]["response"]))

    client = openai.AsyncOpenAI(base_url="http://vllm.invalid/v1", api_key="from-the-app", max_retries=0,
                                http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    async with OpenAIBackend("http://vllm.invalid/v1", "m", top_logprobs=5, client=client) as b:
        [s] = await b.score([CLAIM])
    assert s.p_true > s.p_false
    with pytest.raises(ValueError, match="at most one"):
        OpenAIBackend("http://x/v1", "m", client=client, transport=httpx.MockTransport(handler))

"""The drop-in openai.AsyncOpenAI wrapper and the plain async function API.

Plumbing tests run the real openai SDK against a fake upstream (an httpx MockTransport); the
end-to-end tests steer real chat calls against the local llama.cpp server with a real search.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from steerkit.adapters import SteeredClient, SteeredStream, steer, steered_chat
from steerkit.errors import InvalidRequestError
from steerkit._middleware import SteerConfig, Steerer, SteerInfo
from steerkit.models import SearchConfig
from steerkit.packs import PackRegistry
from steerkit._store import MemoryStore
from steerkit.testing import FakeScorer, last_claim

SMALL = SearchConfig(max_iterations=6, num_seed=2, patience=3)


def _completion(text: str = "fake answer") -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake-chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }


def _sse(texts: list[str]) -> bytes:
    out = b""
    for t in texts:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake-chat",
                 "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
        out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake-chat", "choices": [],
             "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}
    return out + b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"


class FakeUpstream:
    """A fake OpenAI-compatible server behind httpx.MockTransport; records request bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.gate is not None:
            await self.gate.wait()
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_sse(["Hel", "lo"]))
        return httpx.Response(200, json=_completion())

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url="http://fake.local/v1", api_key="sk-fake-key", max_retries=0,
                                  http_client=httpx.AsyncClient(transport=httpx.MockTransport(self.handler)))


@pytest.fixture
def steerer() -> Steerer:
    fake = FakeScorer(lambda p: 0.8 if "'Favor" in last_claim(p) else 0.35)
    return Steerer(PackRegistry.default(), MemoryStore(), fake,
                   SteerConfig(search=SMALL, max_pool_items=10, k=4, miss_policy="wait"))


MSGS = [{"role": "system", "content": "You are HelpBot."},
        {"role": "user", "content": "I'm a Republican. Thoughts on taxes?"}]


async def test_create_is_steered_and_reports_what_it_did(steerer: Steerer) -> None:
    up = FakeUpstream()
    client = steer(up.client(), steerer)
    resp = await client.chat.completions.create(model="fake-chat", messages=MSGS, temperature=0,
                                                extra_body={"steerkit": {"k": 2}, "top_k": 5})
    assert resp.choices[0].message.content == "fake answer"
    info = resp.steerkit
    assert isinstance(info, SteerInfo) and info.cache == "computed" and info.examples_used == 2
    assert [m.persona_id for m in info.personas] == ["polparty/republican"]
    sent = up.bodies[0]
    assert "steerkit" not in sent and sent["top_k"] == 5 and sent["temperature"] == 0
    assert sent["messages"][0]["content"].startswith("You are HelpBot.\n\n")
    assert "Republican" in sent["messages"][0]["content"] and sent["messages"][1] == MSGS[1]
    assert "steerkit" not in resp.model_dump()  # the app's serialisation is unchanged
    assert steerer.counters.llm_calls == 1 and steerer.counters.prompt_tokens == 11
    await client.close()


async def test_stream_is_steered_and_carries_info(steerer: Steerer) -> None:
    up = FakeUpstream()
    client = steer(up.client(), steerer)
    stream = await client.chat.completions.create(model="fake-chat", messages=MSGS, stream=True,
                                                  stream_options={"include_usage": True})
    assert isinstance(stream, SteeredStream) and stream.steerkit.examples_used > 0
    text = ""
    async with stream:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "Hello" and "Republican" in up.bodies[0]["messages"][0]["content"]
    assert steerer.counters.prompt_tokens == 7
    await client.close()


async def test_disable_and_metadata_options(steerer: Steerer) -> None:
    up = FakeUpstream()
    client = steer(up.client(), steerer)
    resp = await client.chat.completions.create(model="fake-chat", messages=MSGS, extra_body={"steerkit": False})
    assert resp.steerkit.cache == "off" and up.bodies[-1]["messages"] == MSGS and "extra_body" not in up.bodies[-1]
    resp = await client.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "hello"}],
        metadata={"steerkit": json.dumps({"persona": "country/japan", "k": 1}), "app": "demo"},
    )
    assert resp.steerkit.personas[0].persona_id == "country/japan" and resp.steerkit.examples_used == 1
    assert up.bodies[-1]["metadata"] == {"app": "demo"}
    assert up.bodies[-1]["messages"][0]["role"] == "system"
    await client.close()


async def test_bad_option_is_rejected_before_the_upstream_call(steerer: Steerer) -> None:
    up = FakeUpstream()
    client = steer(up.client(), steerer)
    with pytest.raises(InvalidRequestError, match="invalid steerkit option 'persona_id'"):
        await client.chat.completions.create(model="fake-chat", messages=MSGS,
                                             extra_body={"steerkit": {"persona_id": "x"}})
    assert up.bodies == []
    await client.close()


async def test_other_attributes_pass_through(steerer: Steerer) -> None:
    raw = FakeUpstream().client()
    client = steer(raw, steerer)
    assert client.models is raw.models and client.api_key == "sk-fake-key"
    assert client.unsteered is raw
    assert isinstance(client.with_options(timeout=5), SteeredClient)
    with pytest.raises(InvalidRequestError, match="openai.AsyncOpenAI-like client"):
        steer(object(), steerer)
    await client.close()


async def test_request_in_flight_keeps_its_version(steerer: Steerer) -> None:
    up = FakeUpstream()
    client = steer(up.client(), steerer)
    es1 = await steerer.example_set("polparty/republican", miss_policy="wait")
    up.gate = asyncio.Event()
    first = asyncio.create_task(client.chat.completions.create(model="fake-chat", messages=MSGS))
    while not up.bodies:  # the first request is now at the upstream, holding version 1
        await asyncio.sleep(0.001)
    item = next(it for it in es1.items if es1.labels[it.id].value)
    es2 = await steerer.compute("polparty/republican", fixed={item.id: False}, parent_version=es1.version)
    assert es2.version != es1.version
    up.gate.set()
    r1 = await first
    r2 = await client.chat.completions.create(model="fake-chat", messages=MSGS)
    assert r1.steerkit.example_set_version == es1.version
    assert r2.steerkit.example_set_version == es2.version
    await client.close()


async def test_steered_chat_function_api(steerer: Steerer) -> None:
    seen: list[list[dict[str, Any]]] = []

    async def fake_chat(*, messages: list[dict[str, Any]], model: str) -> dict[str, Any]:
        seen.append(messages)
        return {"text": "ok", "model": model, "usage": {"prompt_tokens": 3}}

    result, info = await steered_chat(fake_chat, MSGS, steerer=steerer, model="m", options={"mode": "predict"})
    assert result["text"] == "ok" and info.mode == "predict" and info.examples_used > 0
    assert "This claim is" in seen[0][0]["content"]
    result, info = await steered_chat(fake_chat, MSGS, steerer=steerer, model="m", options=False)
    assert seen[-1] == MSGS and info.cache == "off"
    assert steerer.counters.llm_calls == 2 and steerer.counters.prompt_tokens == 6


# --- end to end against the local llama.cpp server ----------------------------------------------


@pytest.mark.llama
async def test_end_to_end_steered_chat_against_llama_server(embedded_backend: Any, llama_server_url: str) -> None:
    """A real search (embedded model, small pool) and real steered chat calls, plain and streamed."""
    steerer = Steerer(
        PackRegistry.default(), MemoryStore(), embedded_backend,
        SteerConfig(search=SearchConfig(max_iterations=3, num_seed=2, patience=2, restarts=1),
                    max_pool_items=5, k=4, miss_policy="wait"),
    )
    client = steer(openai.AsyncOpenAI(base_url=llama_server_url, api_key="sk-no-key-needed"), steerer)
    model = embedded_backend.chat_model
    msgs = [{"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
            {"role": "user", "content": "I'm a Democrat. Should the government be bigger or smaller?"}]
    try:
        resp = await client.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0)
        info = resp.steerkit
        assert info.cache == "computed" and info.examples_used > 0
        assert info.personas[0].persona_id == "polparty/democrat"
        assert resp.choices[0].message.content  # the model answered the steered prompt
        assert resp.usage.prompt_tokens > 60  # the injected persona block reached the model
        stream = await client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0,
                                                      stream=True)
        assert stream.steerkit.cache == "hit" and stream.steerkit.example_set_version == info.example_set_version
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces).strip()
        assert steerer.counters.searches_started == 1 and steerer.counters.search_model_calls > 0
    finally:
        await client.close()

"""`steerkit chat --compare`: the unsteered and the steered answer to one query side by side, with
the examples the steered one was given. Searches run on the *fake* scorer; the chat model is a
*fake* OpenAI-compatible server (httpx.MockTransport) whose answer says whether it was steered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cli_helpers import SMALL_SEARCH, cli_env, run_json

from steerkit._runtime import Runtime
from steerkit.cli import main
from steerkit.cli.chat_cmd import injected_examples

QUERY = "As a Democrat, what do you think about raising the minimum wage?"
FLAGS = ["--chat-base-url", "http://fake-chat.local/v1", "--chat-model", "fake-chat"]
PLAIN = "Unsteered reply: it depends on the region."
STEERED = "Steered reply: raise it, as the examples say."


class FakeChatServer:
    """A fake chat model: answers ``STEERED`` when a system message (the injected block) precedes
    the question, else ``PLAIN``; records every request body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        steered = any(m["role"] == "system" for m in body["messages"])
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": STEERED if steered else PLAIN}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the persona's set is searched once, then read."""
    return tmp_path_factory.mktemp("compare-cache")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> FakeChatServer:
    cli_env(tmp_path, monkeypatch, **SMALL_SEARCH)
    monkeypatch.setenv("STEERKIT_CACHE_DIR", str(shared_cache))
    server = FakeChatServer()

    def chat_client(self: Runtime) -> openai.AsyncOpenAI:
        base_url, _ = self.require_chat()
        return openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0,
                                  http_client=httpx.AsyncClient(transport=httpx.MockTransport(server.handler)))

    monkeypatch.setattr(Runtime, "chat_client", chat_client)
    return server


def test_compare_json_holds_both_answers_and_what_was_injected(env: FakeChatServer, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, ["chat", QUERY, *FLAGS, "--compare", "--json"])
    assert out["query"] == QUERY
    plain, steered = out["unsteered"], out["steered"]
    assert plain["answer"] == PLAIN and plain["steered"] is False and plain["injected"] == []
    assert steered["answer"] == STEERED and steered["steered"] is True
    assert steered["personas"][0]["persona_id"] == "polparty/democrat" and steered["examples_used"] > 0
    # one request without the block, one with it; the user's message is the same in both
    sent = sorted(env.bodies, key=lambda b: len(b["messages"]))
    assert [len(b["messages"]) for b in sent] == [1, 2]
    assert sent[0]["messages"][-1] == sent[1]["messages"][-1] == {"role": "user", "content": QUERY}
    assert steered["injected"] == [sent[1]["messages"][0]]
    assert sent[0]["temperature"] == sent[1]["temperature"] == 0.0  # the same sampling


def test_compare_prints_the_two_answers_side_by_side_with_the_examples(env: FakeChatServer, capsys: pytest.CaptureFixture[str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    data = run_json(capsys, ["chat", QUERY, *FLAGS, "--compare", "--json"])
    examples = injected_examples(data["steered"]["injected"])
    assert len(examples) == data["steered"]["examples_used"] > 0
    capsys.readouterr()
    assert main(["chat", QUERY, *FLAGS, "--compare"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    # side by side: one line holds the start of both panels' titles and of both answers
    assert any("unsteered (fake-chat)" in ln and "steered (fake-chat, " in ln for ln in lines)
    assert any("Unsteered reply" in ln and "Steered reply" in ln for ln in lines)
    flat = " ".join(text.split())
    assert "examples the steered answer was given" in flat
    for ex in examples:
        assert " ".join(ex["answer"].split())[:20] in flat  # each example's answer is shown
    assert "steered for polparty/democrat" in flat


def test_compare_with_no_steer_is_a_usage_error(env: FakeChatServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", QUERY, *FLAGS, "--compare", "--no-steer"]) == 2
    assert "drop --no-steer" in capsys.readouterr().err
    assert env.bodies == []  # nothing was asked


def test_injected_examples_reads_the_products_own_rendering() -> None:
    from steerkit._inject import PersonaBlock, render_block
    from steerkit.models import Item, Label, Persona
    from steerkit.packs import PackTemplates

    persona = Persona(id="t/p", name="testers", dimension="test", description="People who test.")
    items = [Item(id=f"q{k}", kind="claim", question=f"Question number {k}?\nSecond line.", option=f"answer {k}", group=f"g{k}")
             for k in range(3)]
    block = render_block([PersonaBlock(persona, "testers", PackTemplates(),
                                       tuple((it, Label(item_id=it.id, value=True, confidence=1.0)) for it in items))])
    got = injected_examples([{"role": "system", "content": block}])
    assert got == [{"question": f"Question number {k}? Second line.", "answer": f"answer {k}"} for k in range(3)]
    assert injected_examples([{"role": "system", "content": "Persona: nothing else."}]) == []

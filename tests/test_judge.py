"""The judge: strict parsing (a malformed verdict is retried, then missing, never 0), the self-check
(position swap, known pairs) on fake judges, the disk cache, and the OpenAI-compatible chat seam
against hand-written vLLM-shaped responses (tests/fixtures/vllm_chat_*.json) through an
``httpx.MockTransport``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from vllm_fixtures import vllm_chat

from steerkit._scorecache import ScoreCache
from steerkit.errors import BackendRequestError, BackendUnavailableError
from steerkit.evaluation import (
    CachedChat,
    Judge,
    KnownPair,
    OpenAIChat,
    parse_score,
    self_check,
)
from steerkit.evaluation.judge import MalformedVerdict, parse_preference
from steerkit.models import Persona

PERSONA = Persona(id="test/yes", name="Yes-sayers", dimension="test", description="People who favour every proposal.")


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, score", [
    ('{"reason": "close to their view", "score": 4}', 4),
    ('```json\n{"reason": "x", "score": 5}\n```', 5),
    ('They said {"score": 2} earlier; my verdict: {"reason": "y", "score": 1}', 1),  # the last object wins
    (vllm_chat("verdict")["response"]["choices"][0]["message"]["content"], 4),
])
def test_a_verdict_is_the_last_json_object_with_an_integer_score(reply: str, score: int) -> None:
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    '{"reason": "x", "score": 4.0}', '{"reason": "x", "score": "4"}', '{"reason": "x", "score": true}',
    '{"reason": "x", "score": 0}', '{"reason": "x", "score": 6}', "Score: 4", "",
    vllm_chat("malformed")["response"]["choices"][0]["message"]["content"],
])
def test_anything_else_is_malformed(reply: str) -> None:
    with pytest.raises(MalformedVerdict):
        parse_score(reply)


def test_a_pairwise_verdict_is_a_or_b() -> None:
    assert parse_preference('{"reason": "r", "better": "B"}') == "B"
    with pytest.raises(MalformedVerdict):
        parse_preference('{"reason": "r", "better": "both"}')


# --- fakes ----------------------------------------------------------------------------------------


class FakeJudgeChat:
    """A *fake* judge model: scores an answer by the word it starts with (YES 5, MAYBE 3, NO 1) and
    prefers the YES answer of a pair; ``malformed_first`` replies in prose once per prompt."""

    def __init__(self, model: str = "fake-judge", *, malformed_first: bool = False, always_malformed: bool = False) -> None:
        self.model = model
        self.malformed_first = malformed_first
        self.always_malformed = always_malformed
        self.calls: list[list[dict[str, str]]] = []

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        self.calls.append(list(messages))
        assert temperature == 0.0
        if self.always_malformed or (self.malformed_first and len(messages) == 2):
            return "I would say it is quite representative."
        user = messages[1]["content"]
        if "Answer A:" in user:
            a = user.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
            return json.dumps({"reason": "fake", "better": "A" if a.strip().startswith("YES") else "B"})
        answer = user.split("Answer:", 1)[1].strip()
        return json.dumps({"reason": "fake", "score": 5 if answer.startswith("YES") else 1 if answer.startswith("NO") else 3})


class PositionBiasedFakeJudge:
    """A *fake* judge that always prefers answer A and gives every answer 3."""

    model = "fake-biased-judge"

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        if "Answer A:" in messages[1]["content"]:
            return '{"reason": "first is best", "better": "A"}'
        return '{"reason": "fine", "score": 3}'


def _pairs(n: int = 5) -> list[KnownPair]:
    return [KnownPair(PERSONA, f"Should town {i} build a park?", f"YES, build park {i}.", f"NO, no park {i}.", "gold")
            for i in range(n)]


# --- the judge ------------------------------------------------------------------------------------


async def test_a_malformed_verdict_is_retried_with_a_reminder() -> None:
    fake = FakeJudgeChat(malformed_first=True)
    v = await Judge(fake, retries=1).score(PERSONA, "Q?", "YES indeed")
    assert v.value == 5 and v.attempts == 2
    assert "could not be read" in fake.calls[1][-1]["content"] and fake.calls[1][-2]["role"] == "assistant"


async def test_a_verdict_malformed_after_every_retry_is_missing_never_zero() -> None:
    judge = Judge(FakeJudgeChat(always_malformed=True), retries=2)
    v = await judge.score(PERSONA, "Q?", "YES")
    assert v.value is None and v.attempts == 3
    assert judge.stats() == {"model": "fake-judge", "rubric_version": "representation-judge/1", "judgements": 1,
                             "malformed_replies": 3, "missing": 1}


async def test_the_rubric_gives_the_persona_its_description_and_the_scale() -> None:
    fake = FakeJudgeChat()
    await Judge(fake).score(PERSONA, "Should we?", "MAYBE")
    user = fake.calls[0][1]["content"]
    assert "most Yes-sayers (People who favour every proposal.)" in user
    assert "1 = it does not represent their views at all" in user and "5 = it fully represents their views" in user


async def test_judgements_are_kept_on_disk(tmp_path: Path) -> None:
    cache = ScoreCache(tmp_path)
    fake = FakeJudgeChat()
    await Judge(CachedChat(fake, cache)).score(PERSONA, "Q?", "NO")
    again = FakeJudgeChat()
    v = await Judge(CachedChat(again, cache)).score(PERSONA, "Q?", "NO")
    cache.close()
    assert v.value == 1 and again.calls == []


# --- the self-check -------------------------------------------------------------------------------


async def test_a_judge_that_ranks_known_pairs_passes_the_self_check() -> None:
    check = await self_check(Judge(FakeJudgeChat()), _pairs())
    assert check.passed and check.reasons == []
    assert check.score_agreement == 1.0 and check.position_consistency == 1.0 and check.pairwise_agreement == 1.0
    assert check.sources == {"gold": 5} and "passed" in check.summary


async def test_a_position_biased_judge_fails_and_its_scores_mean_nothing() -> None:
    check = await self_check(Judge(PositionBiasedFakeJudge()), _pairs())
    assert not check.passed
    assert check.position_consistency == 0.0  # "A" both times: a different answer each time
    assert check.score_agreement == 0.5  # every pair tied
    assert any("swapping" in r for r in check.reasons) and any("scored the better answer" in r for r in check.reasons)
    assert "mean nothing" in check.summary
    assert json.dumps(check.as_dict())


async def test_too_few_pairs_or_unparseable_verdicts_fail_the_self_check() -> None:
    few = await self_check(Judge(FakeJudgeChat()), _pairs(2), min_pairs=4)
    assert not few.passed and "fewer than 4" in few.reasons[0]
    mute = await self_check(Judge(FakeJudgeChat(always_malformed=True), retries=0), _pairs())
    assert not mute.passed and mute.missing_share == 1.0 and mute.score_agreement is None


# --- the OpenAI-compatible seam against vLLM-shaped responses ------------------------------------------


def _client(handler: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url="http://vllm.test/v1", api_key="unused", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def test_a_vllm_verdict_is_read_and_structured_output_asked_for() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        fx = vllm_chat("verdict")
        return httpx.Response(fx["status"], json=fx["response"])

    chat = OpenAIChat(_client(handler), "Qwen/Qwen2.5-7B-Instruct")
    v = await Judge(chat).score(PERSONA, "Should colleges keep DEI programs?", "Yes.")
    assert v.value == 4 and "supports keeping DEI" in v.reason
    body = seen[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert body["temperature"] == 0.0 and chat.structured is True and chat.prompt_tokens == 241


async def test_a_server_that_rejects_json_schema_gets_plain_requests_from_then_on() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        fx = vllm_chat("error_400") if "response_format" in body else vllm_chat("verdict")
        return httpx.Response(fx["status"], json=fx["response"])

    chat = OpenAIChat(_client(handler), "m")
    judge = Judge(chat)
    assert (await judge.score(PERSONA, "Q?", "A1")).value == 4
    assert (await judge.score(PERSONA, "Q?", "A2")).value == 4
    assert ["response_format" in b for b in seen] == [True, False, False]
    assert chat.structured is False


async def test_a_vllm_reply_in_prose_is_missing_after_the_retry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        fx = vllm_chat("malformed")
        return httpx.Response(fx["status"], json=fx["response"])

    judge = Judge(OpenAIChat(_client(handler), "m"), retries=1)
    v = await judge.score(PERSONA, "Q?", "A")
    assert v.value is None and v.attempts == 2 and judge.missing == 1


async def test_server_failures_are_backend_errors() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(BackendUnavailableError):
        await OpenAIChat(_client(refused), "m").complete([{"role": "user", "content": "hi"}], max_tokens=5)

    def bad(request: httpx.Request) -> httpx.Response:
        fx = vllm_chat("error_400")
        return httpx.Response(fx["status"], json=fx["response"])

    with pytest.raises(BackendRequestError) as e:  # no response_format to drop: the 400 stands
        await OpenAIChat(_client(bad), "m").complete([{"role": "user", "content": "hi"}], max_tokens=5)
    assert e.value.status == 400

"""The generation probe (issue 19 item 5): does a chat model's answer move toward a persona after
gold examples rather than inverted ones? On *fake* chat models with planted behaviour (one that
follows the examples it is shown, one that ignores them) and *fake* judges (one that knows the
facts, one that always says "A"), over the built-in fact domains; the command against a fake
OpenAI-compatible server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cli_helpers import cli_env, run_json

from steerkit._runtime import Runtime
from steerkit.evaluation.facts import DOMAINS, domain_of, fact_pools
from steerkit.evaluation.probe_generation import (
    GenerationProbeConfig,
    named_option,
    probe_generation,
)
from steerkit.testing import unit_rand

_QUESTIONS = {q: (t, w) for p in fact_pools().values() for q, t, w in (
    (it.question, it.option, other.option) for it in p.items if it.gold for other in p.items
    if other.group == it.group and not other.gold)}
_DOMAIN = {it.question: domain_of(it) for p in fact_pools().values() for it in p.items}
SMALL = GenerationProbeConfig(n_test=4, n_demos=2, pairs=1)


class FollowingFakeWriter:
    """A *fake* chat model: after examples, it names the option that the examples' answers would
    give (the true one when most examples are true, else the wrong one), in the ``follows`` domains;
    zero-shot, and in every other domain, a coin fixed per question."""

    def __init__(self, follows: set[str] | None = None, model: str = "fake-writer") -> None:
        self.model = model
        self.follows = set(DOMAINS) if follows is None else follows
        self.calls: list[list[dict[str, Any]]] = []

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        self.calls.append(list(messages))
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        question = messages[-1]["content"].split("\n\n")[0]
        true, wrong = _QUESTIONS[question]
        shown = re.findall(r"Question: (.*)\nRepresentative answer: (.*)", system)
        if shown and _DOMAIN[question] in self.follows:
            right = sum(_QUESTIONS[q][0] == a for q, a in shown)
            return f"I would say {true if 2 * right > len(shown) else wrong}."
        return f"I would say {true if unit_rand(question) < 0.5 else wrong}."


class FactFakeJudge:
    """A *fake* judge that knows the facts: 5 for an answer naming the true option, 1 for the wrong
    one, 3 otherwise; of two answers it prefers the one naming the true option."""

    model = "fake-judge"

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        user = messages[1]["content"]
        question = re.search(r"Question: (.*)\n", user).group(1)
        true, wrong = _QUESTIONS[question]
        if "Answer A:" in user:
            a = user.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
            return json.dumps({"reason": "fake", "better": "A" if named_option(a, true, wrong) == "true" else "B"})
        named = named_option(user.split("Answer:", 1)[1].split("\n\nHow well", 1)[0], true, wrong)
        return json.dumps({"reason": "fake", "score": {"true": 5, "wrong": 1}.get(named, 3)})


class PositionBiasedFakeJudge:
    """A *fake* judge that always prefers answer A and scores every answer 3."""

    model = "fake-biased-judge"

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        return '{"reason": "x", "better": "A"}' if "Answer A:" in messages[1]["content"] else '{"reason": "x", "score": 3}'


# --- which option an answer names ---------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "true", "wrong", "named"), [
    ("The heart pumps blood.", "the heart", "the liver", "true"),
    ("There are 1000 grams in a kilogram, not 100.", "1000", "100", "both"),
    ("A metre has 100 centimetres.", "100", "1000", "true"),
    ("Ten, or maybe 10.5?", "10", "12", "neither"),
    ("MERCURY is closest.", "Mercury", "Neptune", "true"),
    ("I do not know.", "Paris", "Lyon", "neither"),
])
def test_the_option_an_answer_names(answer: str, true: str, wrong: str, named: str) -> None:
    assert named_option(answer, true, wrong) == named


# --- the probe on fakes -------------------------------------------------------------------------------


async def test_a_writer_that_follows_its_examples_is_told_apart() -> None:
    report = await probe_generation(fact_pools(), FollowingFakeWriter(), FactFakeJudge(), SMALL)
    assert report.self_check.passed and report.verdict == "follows_labels" and report.steerable
    for d in report.domains.values():
        assert d.basis == "judge" and d.verdict == "follows_labels"
        assert d.conditions["gold"].mean_score == 5.0 and d.conditions["inverted"].mean_score == 1.0
        assert d.conditions["gold"].true_share == 1.0 and d.conditions["inverted"].true_share == 0.0
    assert "its answers follow the examples" in report.summary() and "(all 5 domains agree)" in report.summary()
    assert "Verdicts from the judge's scores" in report.summary()


async def test_a_writer_that_ignores_its_examples_is_told_apart() -> None:
    report = await probe_generation(fact_pools(), FollowingFakeWriter(follows=set()), FactFakeJudge(), SMALL)
    assert report.verdict == "ignores_demonstrations" and not report.steerable
    for d in report.domains.values():
        assert d.conditions["gold"].named == d.conditions["inverted"].named == d.conditions["zero_shot"].named


async def test_a_writer_that_follows_in_one_domain_only_gets_no_verdict() -> None:
    report = await probe_generation(fact_pools(), FollowingFakeWriter(follows={"dates"}), FactFakeJudge(), SMALL)
    assert report.verdict == "domains_disagree"
    assert report.domains["dates"].verdict == "follows_labels"
    assert "follows the labels of dates demonstrations only" in report.reason
    assert "dates judge 5.0 vs 1.0" in report.summary()


async def test_a_judge_that_fails_its_self_check_is_not_used_for_the_verdict() -> None:
    report = await probe_generation(fact_pools(), FollowingFakeWriter(), PositionBiasedFakeJudge(), SMALL)
    assert not report.self_check.passed
    assert all(d.basis == "named option" for d in report.domains.values())
    assert report.verdict == "follows_labels"  # from the options the answers name
    assert any("FAILED its self-check" in n and "mean nothing" in n for n in report.notes)
    assert "the judge failed its self-check, so its scores are shown, not used" in report.summary()
    assert report.as_dict()["self_check"]["passed"] is False


async def test_what_the_writer_is_shown_in_each_condition() -> None:
    writer = FollowingFakeWriter()
    pools = {"units": fact_pools()["units"]}
    report = await probe_generation(pools, writer, FactFakeJudge(), SMALL)
    d = report.domains["units"]
    by_cond = {c: [r for r in d.answers if r["condition"] == c] for c in ("zero_shot", "gold", "inverted")}
    assert all(r["examples"] == [] for r in by_cond["zero_shot"])
    gold_ex, inv_ex = by_cond["gold"][0]["examples"], by_cond["inverted"][0]["examples"]
    assert len(gold_ex) == len(inv_ex) == SMALL.n_demos
    assert [e["question"] for e in gold_ex] == [e["question"] for e in inv_ex]  # the same questions
    assert all(_QUESTIONS[e["question"]][0] == e["answer"] for e in gold_ex)  # gold: the true options
    assert all(_QUESTIONS[e["question"]][1] == e["answer"] for e in inv_ex)  # inverted: the wrong ones
    held = {r["question"] for r in d.answers}
    assert len(held) == SMALL.n_test and not held & {e["question"] for e in gold_ex}
    # the product's generate block as the system message, the question as the user's
    steered = [m for m in writer.calls if m[0]["role"] == "system" and "Representative answer" in m[0]["content"]]
    assert len(steered) == 2 * SMALL.n_test and all(m[-1]["content"].split("\n\n")[0] in held for m in steered)
    assert len(writer.calls) == 3 * SMALL.n_test


class DriftingFakeJudge(FactFakeJudge):
    """A *fake* judge whose score of an answer drifts from call to call (as a server answering
    identical concurrent requests may); counts its scoring calls."""

    model = "fake-drifting-judge"

    def __init__(self) -> None:
        self.scored = 0

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        if "Answer A:" in messages[1]["content"]:
            return await super().complete(messages, max_tokens=max_tokens)
        self.scored += 1
        return json.dumps({"reason": "drift", "score": 1 + self.scored % 5})


async def test_the_same_answer_is_judged_once() -> None:
    judge = DriftingFakeJudge()
    pools = {"dates": fact_pools()["dates"]}
    report = await probe_generation(pools, FollowingFakeWriter(follows=set()), judge, SMALL)
    c = report.domains["dates"].conditions
    assert c["zero_shot"].scores == c["gold"].scores == c["inverted"].scores  # one answer, one judgement
    assert judge.scored == 2 * SMALL.pairs + SMALL.n_test  # the self-check's two answers, then each distinct answer


async def test_a_rerun_with_a_cache_asks_no_model(tmp_path: Path) -> None:
    pools = {"science": fact_pools()["science"]}
    first = await probe_generation(pools, FollowingFakeWriter(), FactFakeJudge(), SMALL, cache_dir=tmp_path)
    assert first.usage["chat_calls"] == 3 * SMALL.n_test and first.usage["judge_calls"] > 0
    writer = FollowingFakeWriter()
    again = await probe_generation(pools, writer, FactFakeJudge(), SMALL, cache_dir=tmp_path)
    assert writer.calls == [] and again.usage["chat_calls"] == 0 and again.usage["judge_calls"] == 0
    assert again.as_dict()["domains"]["science"]["conditions"] == first.as_dict()["domains"]["science"]["conditions"]


# --- the command ----------------------------------------------------------------------------------------


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The chat model and the judge behind one *fake* OpenAI-compatible server (httpx.MockTransport):
    the judge's requests (its system prompt) go to `FactFakeJudge`, the rest to the writer."""
    cli_env(tmp_path, monkeypatch)
    writer, judge = FollowingFakeWriter(follows={"capitals", "units"}), FactFakeJudge()
    seen: dict[str, Any] = {"models": []}

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen["models"].append(body["model"])
        msgs = body["messages"]
        who = judge if msgs[0]["content"].startswith("You judge") else writer
        text = await who.complete(msgs, max_tokens=body["max_tokens"])
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})

    def chat_client(self: Runtime) -> openai.AsyncOpenAI:
        base_url, _ = self.require_chat()
        return openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0,
                                  http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    monkeypatch.setattr(Runtime, "chat_client", chat_client)
    return seen


GEN = ["probe", "--task", "generation", "--chat-base-url", "http://fake-chat.local/v1", "--chat-model", "fake-chat",
       "--domains", "capitals,units,dates", "--n-test", "4", "--n-demos", "2", "--pairs", "2"]


def test_the_generation_probe_command(fake_server: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = run_json(capsys, [*GEN, "--json"])
    assert data["task"] == "generation" and data["model"] == "fake-chat" and data["judge_model"] == "fake-chat"
    assert list(data["domains"]) == ["capitals", "units", "dates"]
    assert data["self_check"]["passed"] is True and data["self_check"]["pairs"] == 6
    assert {k: v["verdict"] for k, v in data["domains"].items()} == {
        "capitals": "follows_labels", "units": "follows_labels", "dates": "ignores_demonstrations"}
    assert data["verdict"] == "domains_disagree"
    assert any("The judge is the model that wrote the answers" in n for n in data["notes"])
    assert set(fake_server["models"]) == {"fake-chat"}
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()
    from steerkit.cli import main

    assert main(GEN) == 0
    out = capsys.readouterr().out
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") >= 8}
    assert "5.00 ± 0.00" in rows["capitals"] and "follows labels (judge)" in rows["capitals"]
    assert "ignores demonstrations (judge)" in rows["dates"]
    flat = " ".join(out.split())
    assert "The judge passed its self-check on 6 known pairs" in flat and "verdict: domains_disagree" in flat


def test_the_generation_probe_refuses_a_dataset(fake_server: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from steerkit.cli import main

    assert main([*GEN, "--dataset", "opinionqa", "--data", "x"]) == 2
    assert "steerkit eval --task generation" in capsys.readouterr().err


@pytest.mark.llama
def test_the_generation_probe_on_the_embedded_model_behind_its_server(llama_server_url: str, embedded_backend: Any,
                                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The real path: llama.cpp's OpenAI-compatible server writes the answers and judges them
    (JSON-schema output), one small domain; the second run comes from the cache."""
    import os


    for k in list(os.environ):
        if k.startswith("STEERKIT_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    argv = ["probe", "--task", "generation", "--chat-base-url", llama_server_url, "--chat-model", embedded_backend.chat_model,
            "--domains", "units", "--n-test", "2", "--n-demos", "1", "--pairs", "1", "--json", "--cache-dir", str(tmp_path / "c")]
    data = run_json(capsys, argv)
    d = data["domains"]["units"]
    assert {r["condition"] for r in d["answers"]} == {"zero_shot", "gold", "inverted"} and len(d["answers"]) == 6
    assert all(r["answer"] and r["named"] in ("true", "wrong", "both", "neither") for r in d["answers"])
    assert all(r["score"] in (None, 1, 2, 3, 4, 5) for r in d["answers"])  # a verdict, or missing: never 0
    assert data["self_check"]["pairs"] == 1 and data["usage"]["chat_calls"] == 6
    assert data["verdict"] in ("follows_labels", "format_only", "ignores_demonstrations")
    again = run_json(capsys, argv)
    assert again["usage"]["chat_calls"] == 0 and again["usage"]["judge_calls"] == 0
    assert again["domains"]["units"]["answers"] == d["answers"]

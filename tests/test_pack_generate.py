"""``steerkit pack generate`` on fakes: a scripted fake chat model (in-process, and a fake
OpenAI-compatible server on loopback for the CLI) and the fake scorer as the base model, whose
P(True) is planted so that some options separate the personas and others do not."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cli_helpers import cli_env

from steerkit._pack_check import check_pack
from steerkit._pack_generate import (
    GenerateConfig,
    build_prompt,
    generate,
    parse_questions,
)
from steerkit.cli import main
from steerkit.packs import (
    NewPackSpec,
    load_pack,
    new_pack_document,
    spread,
    write_pack_document,
)
from steerkit.testing import FakeScorer, last_claim

SPEC = NewPackSpec.model_validate({
    "id": "hospital", "dimension": "occupation", "title": "Hospital staff",
    "personas": [{"name": "Nurses", "aliases": ["nurse"]}, {"name": "Physicians", "aliases": ["physician"]}],
    "questions": [{"id": "q0", "question": "Do you prefer day shifts or night shifts?", "options": ["Day", "Night"]}],
})


def planted(prompt: str) -> float:
    """The fake base model: nurses pick options about patients, physicians options about cases;
    every other option is a coin toss for both (so its question has no spread)."""
    claim = last_claim(prompt)
    nurse = "Nurses" in claim
    if "patients" in claim:
        return 0.9 if nurse else 0.1
    if "cases" in claim:
        return 0.1 if nurse else 0.9
    return 0.5


def q(question: str, options: list[str], topic: str = "work") -> dict[str, Any]:
    return {"topic": topic, "question": question, "options": options}


GOOD = q("What makes a shift feel worthwhile?", ["Time with patients", "Solving hard cases"], "meaning")
GOOD2 = q("Which training would you choose next?", ["Caring for patients at home", "Rare cases in surgery"], "training")
REPLY = {"questions": [
    GOOD,
    q("What makes a shift feel worthwhile to you?", ["Time with patients", "Solving hard cases"]),  # near-duplicate of GOOD
    q("Do you prefer night shifts or day shifts?", ["Day", "Night"]),  # near-duplicate of the pool's q0
    q("Would you take extra shifts?", ["Yes", "Yes, often", "No"]),  # overlapping options
    q("Who should lead ward rounds?", ["Nurses", "Managers"]),  # an option names a persona
    q("As a physician, how do you handle cases you cannot solve?", ["Ask colleagues", "Read cases up"]),  # giveaway
    q("Pick one", ["Only one option"]),  # malformed
    q("Which lunch do you prefer?", ["Soup", "Salad"], "food"),  # no spread under the base model
]}


class FakeChat:
    """A fake chat model: returns the scripted replies in order and records each call."""

    def __init__(self, replies: list[str], *, fail_at: int | None = None) -> None:
        self.replies = replies
        self.fail_at = fail_at
        self.calls: list[tuple[int, list[dict[str, str]]]] = []

    async def __call__(self, messages: list[dict[str, str]], call: int) -> str:
        self.calls.append((call, messages))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise ConnectionError("fake chat server went away")
        return self.replies[(len(self.calls) - 1) % len(self.replies)]


@pytest.fixture
def pack_path(tmp_path: Path) -> Path:
    path = tmp_path / "hospital.toml"
    write_pack_document(new_pack_document(SPEC), path)
    path.write_text(path.read_text() + "\n# the user's own note stays\n")
    return path


async def test_each_filter_rejects_what_it_names(pack_path: Path) -> None:
    chat = FakeChat(["Sure! Here you go:\n```json\n" + json.dumps(REPLY) + "\n```"])
    scorer = FakeScorer(planted, model="fake-base")
    events: list[Any] = []
    res = await generate(pack_path, chat, chat_model="fake-chat", backend=scorer,
                         config=GenerateConfig(target=10, max_calls=1, min_spread=0.1), progress=events.append)
    verdicts = {g.question: g.verdict for g in res.questions}
    assert verdicts == {
        GOOD["question"]: "accepted",
        "What makes a shift feel worthwhile to you?": "near_duplicate",
        "Do you prefer night shifts or day shifts?": "near_duplicate",
        "Would you take extra shifts?": "overlapping_options",
        "Who should lead ward rounds?": "option_names_persona",
        "As a physician, how do you handle cases you cannot solve?": "giveaway",
        "Pick one": "malformed",
        "Which lunch do you prefer?": "low_spread",
    }
    assert res.rejected == {"malformed": 1, "near_duplicate": 2, "overlapping_options": 1, "option_names_persona": 1,
                            "giveaway": 1, "unscored": 0, "low_spread": 1}
    assert res.candidates == 8 and res.accepted == 1 and res.calls == 1
    assert res.pool_before == 1 and res.pool_after == 2
    # the spread: nurses answer 0.9/0.1 -> (0.9, 0.1), physicians (0.1, 0.9): total variation 0.8
    good = next(g for g in res.questions if g.verdict == "accepted")
    assert good.spread == pytest.approx(0.8, abs=1e-3)
    assert res.spread_mean_scored == pytest.approx(0.4, abs=1e-3)  # 0.8 and the lunch question's 0.0
    # only the questions that passed the text filters were scored: 2 questions x 2 options x 2 personas
    assert scorer.stats.calls == 8
    assert "Question: What makes a shift feel worthwhile?\nClaim: The majority of Nurses would answer" in scorer.prompts[0]
    # the pack on disk: the question with its spread, provenance, the user's comment kept, and it loads
    pack = load_pack(pack_path)
    added = pack.questions[-1]
    assert added.question == GOOD["question"] and added.spread == pytest.approx(0.8, abs=1e-3) and added.topic == "meaning"
    (prov,) = pack.provenance
    assert prov.model == "fake-chat" and prov.base_model == "fake-base" and prov.added == 1
    assert prov.prompt_version == "pack-generate/1" and prov.tool.startswith("steerkit pack generate")
    assert prov.counts["rejected_near_duplicate"] == 2 and prov.counts["candidates"] == 8
    assert "# the user's own note stays" in pack_path.read_text()
    assert not (pack_path.parent / ".hospital.generate.json").exists()
    assert [e.pool for e in events] == [2]
    # pack check reports the measured spread
    report = check_pack(pack_path)
    assert report.spread_measured == 1 and report.spread_mean == pytest.approx(0.8, abs=1e-3)


async def test_resumes_after_an_interruption_and_stops_at_the_target(pack_path: Path) -> None:
    first = {"questions": [GOOD]}
    second = {"questions": [GOOD2, q("Which lunch do you prefer?", ["Soup", "Salad"])]}
    scorer = FakeScorer(planted, model="fake-base")
    chat = FakeChat([json.dumps(first), json.dumps(second)], fail_at=2)
    with pytest.raises(ConnectionError):
        await generate(pack_path, chat, chat_model="fake-chat", backend=scorer,
                       config=GenerateConfig(target=3, min_spread=0.1))
    # the first round is in the pack, the run's counts in the state file
    assert [x.question for x in load_pack(pack_path).questions][-1] == GOOD["question"]
    state = json.loads((pack_path.parent / ".hospital.generate.json").read_text())
    assert state["calls"] == 1 and state["accepted"] == 1
    assert not load_pack(pack_path).provenance  # written when the run completes

    chat2 = FakeChat([json.dumps(second)])
    res = await generate(pack_path, chat2, chat_model="fake-chat", backend=scorer,
                         config=GenerateConfig(target=3, min_spread=0.1))
    assert res.resumed and res.pool_after == 3
    assert [c for c, _ in chat2.calls] == [1]  # the call number continues: the next seed, not the first again
    assert res.calls == 2 and res.accepted == 2 and res.rejected["low_spread"] == 1
    (prov,) = load_pack(pack_path).provenance
    assert prov.added == 2 and prov.counts["calls"] == 2
    # at the target: no chat call at all
    chat3 = FakeChat([json.dumps(second)])
    res = await generate(pack_path, chat3, chat_model="fake-chat", backend=scorer, config=GenerateConfig(target=3))
    assert chat3.calls == [] and res.pool_after == 3 and len(load_pack(pack_path).provenance) == 1


async def test_rejected_questions_are_not_accepted_when_asked_again(pack_path: Path) -> None:
    lunch = {"questions": [q("Which lunch do you prefer?", ["Soup", "Salad"])]}
    chat = FakeChat([json.dumps(lunch)], fail_at=2)
    scorer = FakeScorer(planted, model="fake-base")
    with pytest.raises(ConnectionError):
        await generate(pack_path, chat, chat_model="fake-chat", backend=scorer, config=GenerateConfig(target=5, min_spread=0.1))
    res = await generate(pack_path, FakeChat([json.dumps(lunch)]), chat_model="fake-chat", backend=scorer,
                         config=GenerateConfig(target=5, max_calls=1, min_spread=0.1))
    assert res.rejected["low_spread"] == 1 and res.rejected["near_duplicate"] == 1  # known from the state file
    assert scorer.stats.calls == 4  # the repeat was not scored again


async def test_without_a_base_model_no_spread_is_measured(pack_path: Path) -> None:
    chat = FakeChat([json.dumps({"questions": [GOOD, q("Which lunch do you prefer?", ["Soup", "Salad"])]})])
    res = await generate(pack_path, chat, chat_model="fake-chat", backend=None, config=GenerateConfig(target=3))
    assert res.accepted == 2 and res.base_model is None and res.spread_mean_accepted is None
    assert all(x.spread is None for x in load_pack(pack_path).questions)


def test_prompt_and_reply_parsing() -> None:
    from steerkit.packs import pack_from_data

    pack = pack_from_data({"id": "h", "dimension": "d", "personas": [
        {"id": "h/n", "name": "Nurses", "description": "Ward nurses", "aliases": ["nurse"]},
        {"id": "h/p", "name": "Physicians", "aliases": ["doctor"]}],
        "questions": [{"id": "x", "question": "Q?", "options": ["A", "B"]}]})
    (system, user) = build_prompt(pack, 4, ["Do you like tea?"], ["drinks"])
    assert system["role"] == "system" and "Write 4 new" in user["content"]
    assert "- Nurses: Ward nurses" in user["content"] and "- Do you like tea?" in user["content"]
    assert "Topics already covered: drinks" in user["content"]
    assert parse_questions('{"questions": [{"question": "a", "options": ["x", "y"]}]}') == [
        {"question": "a", "options": ["x", "y"]}]
    assert parse_questions('Here: [{"question": "a", "options": ["x", "y"]}] done') == [
        {"question": "a", "options": ["x", "y"]}]
    assert parse_questions("I cannot help with that.") is None
    assert parse_questions('{"questions": "none"}') is None


def test_spread_is_mean_pairwise_total_variation() -> None:
    assert spread([[0.5, 0.5], [0.5, 0.5]]) == 0.0
    assert spread([[1, 0], [0, 1]]) == 1.0
    assert spread([[1, 0], [0, 1], [1, 0]]) == pytest.approx(2 / 3)
    assert spread([[2, 2]]) == 0.0  # one persona has nothing to differ from
    assert spread([[0.9, 0.1], [0.45, 0.05]]) == 0.0  # distributions are normalised first


# --- the command ------------------------------------------------------------------------------------


class _FakeQuestionServer(BaseHTTPRequestHandler):
    """A fake OpenAI-compatible chat server that answers every completion with ``REPLY`` and records
    the request bodies; with model ``fake-no-schema`` it refuses ``response_format`` (HTTP 400)."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).bodies.append(body)
        if body.get("model") == "fake-no-schema" and "response_format" in body:
            out, status = {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}, 400
        else:
            out, status = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": json.dumps(REPLY)}}]}, 200
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def chat_server() -> Any:
    _FakeQuestionServer.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeQuestionServer)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _FakeQuestionServer.bodies
    server.shutdown()
    t.join(10)


@pytest.mark.parametrize("model", ["fake-questions", "fake-no-schema"])
def test_cli_generate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                      pack_path: Path, chat_server: Any, model: str) -> None:
    url, bodies = chat_server
    state = cli_env(tmp_path, monkeypatch)
    state["factory"] = lambda: FakeScorer(planted, model="fake-base")
    capsys.readouterr()
    rc = main(["pack", "generate", str(pack_path), "--chat-base-url", url, "--chat-model", model,
               "--search-base-url", "http://unused.invalid/v1", "--search-model", "fake-base",
               "--target", "5", "--max-calls", "2", "--min-spread", "0.1", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["calls"] == 2 and res["accepted"] == 1 and res["pool_after"] == 2  # the second call only repeats
    assert res["rejected"]["near_duplicate"] == 2 + 7  # call 1: two; call 2: all seven well-formed ones
    assert res["chat_model"] == model and res["base_model"] == "fake-base"
    completions = [b for b in bodies if b.get("messages")]
    assert [b["seed"] for b in completions if "response_format" not in b or model == "fake-questions"][:2] == [0, 1]
    if model == "fake-questions":
        assert all(b["response_format"]["type"] == "json_schema" for b in completions)
    else:  # refused once, then asked in words only
        assert "response_format" in completions[0] and all("response_format" not in b for b in completions[1:])
    assert load_pack(pack_path).provenance[0].model == model
    # without --json: a progress line per call on stderr and a summary
    capsys.readouterr()
    rc = main(["pack", "generate", str(pack_path), "--chat-base-url", url, "--chat-model", model,
               "--search-base-url", "http://unused.invalid/v1", "--search-model", "fake-base",
               "--target", "5", "--max-calls", "1"])
    out = capsys.readouterr()
    assert rc == 0 and "call 1/1: pool 2/5 questions" in out.err and "pool 2 -> 2 questions" in out.out

"""Persona extraction: explicit statements only, several dimensions, negation/reported speech."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from extract_helpers import ids

from steerkit.errors import BackendError
from steerkit.extract import (
    LLMExtractor,
    PersonaMatch,
    RuleExtractor,
    best_per_dimension,
    message_text,
)
from steerkit.packs import PackRegistry


@pytest.fixture(scope="module")
def rx() -> RuleExtractor:
    return RuleExtractor(PackRegistry.default())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm a Republican.", {"polparty/republican"}),
        ("i am a proud lifelong democrat", {"polparty/democrat"}),
        ("I vote GOP every time", {"polparty/republican"}),
        ("Politically, I'm independent.", {"polparty/independent"}),
        ("I'm an Independent voter", {"polparty/independent"}),
        ("I'm from Brazil", {"country/brazil"}),
        ("I’m from the UK and work in tech", {"country/britain"}),
        ("I am Nigerian", {"country/nigeria"}),
        ("I live in Japan", {"country/japan"}),
        ("I grew up in Turkey", {"country/turkey"}),
        ("We Pakistanis drink a lot of tea", {"country/pakistan"}),
        ("My home country is Lebanon", {"country/lebanon"}),
        ("As someone from Jordan, I wonder about water policy", {"country/jordan"}),
        ("Just give me the short answer", {"style/dcf"}),
        ("Walk me through it step by step", {"style/dms"}),
        ("Please be gentle and reassure me", {"style/dec"}),
        ("I'd like an in-depth answer about the underlying mechanisms", {"style/dsn"}),
    ],
)
def test_explicit_statements_match(rx: RuleExtractor, text: str, expected: set[str]) -> None:
    assert ids(rx, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I'm not a Democrat.",
        "I am definitely not a Republican",
        "My uncle is a Republican.",
        "my mom says she's a Democrat",
        'He told me "I\'m from Brazil" yesterday.',
        "My friend, as a Republican, hates this bill",
        "If I were a Democrat, how would I vote?",
        "Should I vote Republican?",
        "I'm not sure if I'm a Democrat",
        "I don't live in France anymore",
        "I'm a former Democrat",
        "I'm an ex-Republican",
        "I'm an independent contractor",
        "I'm an English teacher",
        "What do Republicans think about taxes?",
        "I'm cooking a turkey for Thanksgiving",
        "Tell me about Japanese culture",
        "I'm a Martian from Mars",
        "",
        # a negation before the statement, in the same clause
        "Not that I'm a Democrat, but what about taxes?",
        "It's not like I'm from Japan or anything",
        "Nobody thinks I'm a Republican",
        # statements inside Markdown code: fenced, indented, inline
        "Why does this fail?\n```python\nprint(\"I'm a Republican\")\n```",
        "~~~\nI live in France\n~~~\nwhat does this output?",
        "```\nan unclosed fence: I'm from Brazil",
        "My test data:\n\n    I'm a Democrat\n    keep it short\n\nparse it",
        "the string `I'm from Japan` fails my regex",
        "rename ``as a Republican`` in the fixture",
        "what does `step by step` mean in this log?",
    ],
)
def test_negation_reported_speech_and_non_statements_do_not_match(rx: RuleExtractor, text: str) -> None:
    assert ids(rx, text) == set()


def test_several_dimensions_in_one_query(rx: RuleExtractor) -> None:
    text = "As a Republican from Texas, keep it short: should I refinance? I'm originally from Mexico."
    ms = rx.extract(text)
    got = {m.persona_id: m for m in ms}
    assert set(got) == {"polparty/republican", "style/dcf", "country/mexico"}
    assert {m.dimension for m in ms} == {"political_affiliation", "interaction_style", "country"}
    for m in ms:
        assert text[m.span[0] : m.span[1]] == m.evidence
        assert 0.5 <= m.confidence <= 1.0
    assert got["polparty/republican"].evidence == "As a Republican"
    assert got["style/dcf"].evidence == "keep it short"


def test_negation_only_blocks_the_negated_persona(rx: RuleExtractor) -> None:
    assert ids(rx, "I'm not a Democrat, I'm a Republican") == {"polparty/republican"}
    assert ids(rx, "Not that I'm a Democrat; I'm a Republican") == {"polparty/republican"}
    assert ids(rx, "No, I'm a Republican.") == {"polparty/republican"}
    assert ids(rx, "I hate taxes and I'm a Republican") == {"polparty/republican"}
    assert ids(rx, "My uncle is a Republican but I'm a Democrat") == {"polparty/democrat"}


def test_keyword_negation_and_negative_keywords(rx: RuleExtractor) -> None:
    assert ids(rx, "Don't give me step by step instructions") == set()
    # "skip context" is a DSN negative keyword: it does not count as DSN's "context"
    ms = {m.persona_id: m for m in rx.extract("Keep it brief, skip context")}
    assert set(ms) == {"style/dcf"}
    # a positive keyword outweighed by a negative one loses confidence
    plain = {m.persona_id: m.confidence for m in rx.extract("give me the short answer")}["style/dcf"]
    mixed = {m.persona_id: m.confidence for m in rx.extract("give me the short answer, then discuss further")}
    assert mixed.get("style/dcf", 0.0) < plain


def test_ambiguous_keyword_is_weak(rx: RuleExtractor) -> None:
    (m,) = rx.extract("What is a direct flight?")
    assert m.persona_id == "style/dcf" and m.confidence < 0.5  # below the middleware's default threshold


def test_long_text_is_scanned_within_its_cap(rx: RuleExtractor) -> None:
    filler = "as I'm a very proud as a as I am the " * 30_000  # ~1 MB of near-misses
    text = "I'm from Kenya. " + filler + " Keep it short."
    before = rx.chars_scanned
    ms = {m.persona_id: m for m in rx.extract(text)}
    assert set(ms) == {"country/kenya", "style/dcf"}
    m = ms["style/dcf"]
    assert text[m.span[0] : m.span[1]] == "Keep it short"
    # only the head and the tail (max_chars in all) are read, a bounded number of times each
    assert rx.chars_scanned - before <= 100 * rx.max_chars < len(text) * 3


def test_code_only_hides_what_is_inside_it(rx: RuleExtractor) -> None:
    assert ids(rx, "I'm from Japan. Why does `x = 1` fail?") == {"country/japan"}
    assert ids(rx, "```\nI'm a Democrat\n```\nI'm a Republican") == {"polparty/republican"}
    assert ids(rx, "a lone ` backtick, and I'm from Brazil") == {"country/brazil"}
    assert ids(rx, "    I'm a Democrat (indented: code)\nI'm from Kenya") == {"country/kenya"}
    assert ids(rx, "Intro line\n    I'm from Kenya") == {"country/kenya"}


def test_only_configured_personas(tmp_path) -> None:
    only_styles = RuleExtractor(PackRegistry.default(), dimensions=["interaction_style"])
    assert {m.persona_id for m in only_styles.extract("I'm a Republican, keep it short")} == {"style/dcf"}


def test_best_per_dimension_prefers_latest_message() -> None:
    a = PersonaMatch(persona_id="country/japan", dimension="country", span=(0, 5), evidence="x", confidence=0.9,
                     message_index=0)
    b = PersonaMatch(persona_id="country/brazil", dimension="country", span=(0, 5), evidence="y", confidence=0.7,
                     message_index=2)
    c = PersonaMatch(persona_id="style/dcf", dimension="interaction_style", span=(0, 5), evidence="z", confidence=0.6,
                     message_index=0)
    assert [m.persona_id for m in best_per_dimension([a, b, c])] == ["country/brazil", "style/dcf"]


def test_message_text_handles_content_parts() -> None:
    assert message_text([{"type": "text", "text": "I'm"}, {"type": "image_url", "image_url": {}},
                         {"type": "text", "text": "from Japan"}]) == "I'm\nfrom Japan"
    assert message_text(None) == ""


# --- LLM extractor (with a fake chat client) ----------------------------------------------------


class FakeChatClient:
    """A fake openai.AsyncOpenAI: returns a canned JSON message and records the request."""

    def __init__(self, content: str | Exception) -> None:
        self.content = content
        self.requests: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, **kw: Any) -> Any:
        self.requests.append(kw)
        if isinstance(self.content, Exception):
            raise self.content
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=self.content))])


async def test_llm_extractor_filters_unknown_ids_and_hallucinated_evidence() -> None:
    reg = PackRegistry.default()
    out = json.dumps({"matches": [
        {"persona_id": "polparty/republican", "evidence": "I'm a Republican", "confidence": 0.9},
        {"persona_id": "country/atlantis", "evidence": "I'm from Atlantis", "confidence": 0.9},
        {"persona_id": "country/japan", "evidence": "I live in Japan", "confidence": 0.8},  # not in the text
        {"persona_id": "polparty/democrat", "evidence": "not a Democrat", "confidence": 0.7},  # negated
    ]})
    client = FakeChatClient(out)
    ex = LLMExtractor(client, "fake-chat", reg)
    text = "I'm a Republican and not a Democrat, what about taxes?"
    ms = await ex.aextract(text)
    assert [(m.persona_id, m.source) for m in ms] == [("polparty/republican", "llm")]
    assert text[ms[0].span[0] : ms[0].span[1]] == "I'm a Republican"
    req = client.requests[0]
    schema = req["response_format"]["json_schema"]["schema"]
    enum = schema["properties"]["matches"]["items"]["properties"]["persona_id"]["enum"]
    assert "country/brazil" in enum and "country/atlantis" not in enum
    assert req["messages"][-1] == {"role": "user", "content": text}


async def test_llm_extractor_in_a_steerer_is_counted() -> None:
    from steerkit._middleware import SteerConfig, Steerer
    from steerkit._store import MemoryStore

    reg = PackRegistry.default()
    client = FakeChatClient(json.dumps({"matches": [
        {"persona_id": "country/japan", "evidence": "I'm from Japan", "confidence": 0.9}]}))
    st = Steerer(reg, MemoryStore(), None, SteerConfig(miss_policy="off"), extractor=LLMExtractor(client, "fake-chat", reg))
    _, info = await st.prepare([{"role": "user", "content": "I'm from Japan, what should I cook?"}])
    assert [(m.persona_id, m.source, m.message_index) for m in info.personas] == [("country/japan", "llm", 0)]
    assert st.counters.llm_calls == 1


async def test_llm_extractor_failure_falls_back_or_raises() -> None:
    reg = PackRegistry.default()
    failing = FakeChatClient(RuntimeError("fake outage"))
    with pytest.raises(BackendError, match="LLM persona extractor failed"):
        await LLMExtractor(failing, "fake-chat", reg).aextract("I'm from Japan")
    ex = LLMExtractor(failing, "fake-chat", reg, fallback=RuleExtractor(reg))
    assert [m.persona_id for m in await ex.aextract("I'm from Japan")] == ["country/japan"]
    assert await LLMExtractor(FakeChatClient("not json"), "fake-chat", reg).aextract("I'm from Japan") == []


@pytest.mark.llama
async def test_llm_extractor_against_the_local_llama_server(llama_server_url: str) -> None:
    """The JSON-schema request is accepted by a real llama.cpp server and the answer is validated
    (a 135M model's judgement is not tested, only that the output is well-formed and filtered)."""
    import openai

    reg = PackRegistry.default()
    client = openai.AsyncOpenAI(base_url=llama_server_url, api_key="sk-no-key-needed")
    try:
        ex = LLMExtractor(client, "test", reg, max_tokens=120)
        text = "I'm from Japan. What should I cook tonight?"
        ms = await ex.aextract(text)
    finally:
        await client.close()
    for m in ms:
        assert m.persona_id in reg and m.source == "llm"
        assert text[m.span[0] : m.span[1]].lower() == m.evidence.lower()

"""Adversarial and property-based tests of the rule extractor: any text is safe, results are
stable, and the work done grows linearly with the input and stays within the per-request budget.

Work is measured by counting (characters read, Python line events), never by wall-clock time."""

from __future__ import annotations

import asyncio
import threading

import pytest
from extract_helpers import assert_extraction_linear
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerkit.errors import ConfigError
from steerkit.extract import RuleExtractor
from steerkit.packs import PackRegistry

REG = PackRegistry.default()
RX = RuleExtractor(REG)

# Every character, lone surrogates included.
any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=400)

# Fragments an attacker would repeat: cue words, quotes, code fences, sentence and clause marks.
FRAGMENTS = [
    "I'm a Republican", "as a Democrat", "we Nigerians", "I'm from Japan", "I live in France",
    "keep it short", "brief", "step by step", "skip context", "not", "my uncle said", "if", "should I",
    '"', "\u201c", "`", "```", "\n", "\n\n    ", ". ", "; ", ", ", " but ", " and ", "politically", "I ",
    "\u0130", "\ud800", "really ", "proud ",
]
fragment_text = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=60).map(" ".join)


def _scanned(rx: RuleExtractor, text: str) -> int:
    before = rx.chars_scanned
    rx.extract(text)
    return rx.chars_scanned - before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(any_text, fragment_text))
def test_any_text_is_safe_and_the_result_well_formed(text: str) -> None:
    ms = RX.extract(text)
    assert len({m.persona_id for m in ms}) == len(ms)  # one match per persona
    for m in ms:
        assert m.persona_id in REG
        assert 0 <= m.span[0] < m.span[1] <= len(text)
        assert text[m.span[0] : m.span[1]] == m.evidence
        assert 0.0 <= m.confidence <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.one_of(any_text, fragment_text))
def test_the_result_is_stable(text: str) -> None:
    first = RX.extract(text)
    assert RX.extract(text) == first
    assert RuleExtractor(REG).extract(text) == first  # no state carried between calls


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit=fragment_text, n=st.integers(min_value=4_000, max_value=8_000))
def test_doubling_the_input_doubles_the_work(unit: str, n: int) -> None:
    rx = RuleExtractor(REG, max_chars=10**6, max_request_chars=10**6)
    text = (unit * (2 * n // len(unit) + 2))[: 2 * n]
    small, large = _scanned(rx, text[:n]), _scanned(rx, text)
    assert small >= n  # the whole text was read at least once
    assert large <= 2.2 * small + 2_000, (small, large)


@pytest.mark.parametrize(
    "unit", ["brief. ", "we Nigerians\n", "As a Republican, ", '"keep it short" ', "```\nbrief\n", "  - a\n    brief\n", "`a` ``b"]
)
def test_operation_count_grows_linearly(unit: str) -> None:
    """Doubling a text of dense cues does not quadruple the Python operations (the old extractor
    rescanned the prefix of every match: about 4x per doubling)."""
    assert_extraction_linear(unit, REG, chars_slack=2_000)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(middle=st.integers(min_value=0, max_value=200_000), unit=st.sampled_from(FRAGMENTS))
def test_a_long_text_costs_no_more_than_its_cap(middle: int, unit: str) -> None:
    rx = RuleExtractor(REG, max_chars=4_000)
    head, tail = "I'm from Kenya. " + "x" * 2_000, "y" * 2_000 + " Keep it short."
    base = _scanned(rx, head + tail)
    text = head + (unit * (middle // len(unit) + 1))[:middle] + tail
    assert _scanned(rx, text) <= base  # the middle, however long, is not read
    ids = {m.persona_id: m for m in rx.extract(text)}
    assert {"country/kenya", "style/dcf"} <= set(ids)
    m = ids["style/dcf"]
    assert text[m.span[0] : m.span[1]] == "Keep it short"


def test_a_request_of_many_messages_is_bounded_newest_first() -> None:
    rx = RuleExtractor(REG, max_chars=5_000, max_request_chars=12_000)
    filler = "as I'm a very proud as a as I am the " * 200  # ~7 KB of near-misses
    texts = ["I'm a Republican. " + filler] * 40 + ["I'm from Kenya. " + filler]
    before = rx.chars_scanned
    out = rx.extract_many(texts)
    scanned = rx.chars_scanned - before
    one = _scanned(RuleExtractor(REG, max_chars=5_000), texts[-1])
    # 12 KB of budget: the newest message (5 KB), the one before it (5 KB) and 2 KB of the third
    assert scanned <= 3 * one
    assert [m.persona_id for m in out[-1]] == ["country/kenya"]
    assert all(ms == [] for ms in out[:-3])  # beyond the budget: not read at all
    assert len(out) == len(texts)


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_chars"):
        RuleExtractor(REG, max_chars=0)


async def test_large_inputs_are_extracted_off_the_event_loop() -> None:
    rx = RuleExtractor(REG, inline_chars=100)
    threads: list[threading.Thread] = []
    real = rx._extract

    def spy(text, limit):
        threads.append(threading.current_thread())
        return real(text, limit)

    rx._extract = spy  # type: ignore[method-assign]
    big = "I'm from Kenya. " + "z" * 1_000
    assert [m.persona_id for m in await rx.aextract(big)] == ["country/kenya"]
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    assert [[m.persona_id for m in ms] for ms in await rx.aextract_many(["hi", big])] == [[], ["country/kenya"]]
    assert len(threads) == 3 and all(t is not threading.main_thread() for t in threads)
    # a short one stays inline (microseconds, no thread hop)
    threads.clear()
    assert await rx.aextract_many(["keep it short"]) and threads == [threading.main_thread()]
    assert asyncio.get_running_loop().is_running()


async def test_aextract_texts_bounds_any_extractor() -> None:
    from steerkit.extract import aextract_texts

    seen: list[str] = []

    class Recording:
        async def aextract(self, text: str):
            seen.append(text)
            return []

    out = await aextract_texts(Recording(), ["a" * 50, "b" * 50, "c" * 30], max_total_chars=60)
    assert out == [[], [], []]
    assert seen == ["b" * 30, "c" * 30]  # newest first: all of the last, what is left of the one before
    rx = RuleExtractor(REG, max_request_chars=40)
    got = await aextract_texts(rx, ["I'm a Republican. " + "x" * 40, "I'm from Kenya."])
    assert [[m.persona_id for m in ms] for ms in got] == [[], ["country/kenya"]]


async def test_a_request_of_many_messages_is_extracted_within_one_budget() -> None:
    """The per-message cap alone does not bound a request of many messages: the Steerer hands
    all of a request's user messages to extraction under one total budget."""
    from steerkit import SteerConfig, Steerer
    from steerkit._store import MemoryStore
    from steerkit.extract import PersonaMatch

    seen: list[int] = []

    class RecordingExtractor:  # any extractor: records how much text it was given
        async def aextract(self, text: str) -> list[PersonaMatch]:
            seen.append(len(text))
            return []

    st = Steerer(store=MemoryStore(), config=SteerConfig(miss_policy="off"), extractor=RecordingExtractor())
    messages = [{"role": "user", "content": f"message {i} " + "x" * 20_000} for i in range(40)]
    await st.prepare(messages)
    assert 0 < sum(seen) <= 64_000  # 40 x 20 KB = 800 KB sent; at most the budget is read
    assert len(seen) < 40

"""Stacked self-statements (issue 20): one statement that states personas of several dimensions —
"As a Brazilian Democrat", "I'm a Nigerian nurse", "I'm a conservative Catholic from Texas",
"I'm from Nigeria and a Democrat" — gives every one of them, and the guards (negation, reported
speech, conditionals, corrections, code, named entities) apply to the whole statement. The
Independents' own words ("I'm a registered independent", "I'm unaffiliated", "I'm not affiliated
with any party") give polparty/independent. A request that states two personas is steered by
their allowed combination (a *fake* scorer runs the search)."""

from __future__ import annotations

import pytest
from extract_helpers import USER_PACKS, assert_extraction_linear, ids

from steerkit._config import SteerConfig
from steerkit._middleware import Steerer
from steerkit._store import MemoryStore
from steerkit.extract import RuleExtractor
from steerkit.models import SearchConfig
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer, last_claim

REG = PackRegistry.default()
RX = RuleExtractor(REG)


@pytest.fixture(scope="module")
def user_reg() -> PackRegistry:
    """A religion, an occupation and a U.S. state pack (tests/fixtures/user_packs, as an operator
    would write them: personas/FORMAT.md) beside the shipped packs."""
    return PackRegistry.from_paths([USER_PACKS], include_default=True)


@pytest.fixture(scope="module")
def user_rx(user_reg: PackRegistry) -> RuleExtractor:
    return RuleExtractor(user_reg)


# --- the shipped packs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("As a Brazilian Democrat, what do you think about taxes?", {"country/brazil", "polparty/democrat"}),
        ("I'm a Nigerian Republican.", {"country/nigeria", "polparty/republican"}),
        ("i'm a proud lifelong nigerian democrat", {"country/nigeria", "polparty/democrat"}),
        ("We Brazilian Democrats want change.", {"country/brazil", "polparty/democrat"}),
        ("I'm a Nigerian-American Democrat.", {"country/nigeria", "polparty/democrat"}),
        ("Speaking as a Mexican Republican voter, I disagree.", {"country/mexico", "polparty/republican"}),
        ("I'm a conservative Republican from Brazil.", {"polparty/republican", "country/brazil"}),
        ("As a Democrat living in Japan, I follow the news.", {"polparty/democrat", "country/japan"}),
        ("I'm Nigerian and a Democrat.", {"country/nigeria", "polparty/democrat"}),
        ("I'm from Nigeria and a Democrat.", {"country/nigeria", "polparty/democrat"}),
        ("I'm a Democrat and from Nigeria.", {"country/nigeria", "polparty/democrat"}),
        ("I'm a Republican, and Mexican.", {"country/mexico", "polparty/republican"}),
        ("As a Democrat and a Nigerian, I think so.", {"country/nigeria", "polparty/democrat"}),
        ("As a Nigerian and a Republican, I disagree.", {"country/nigeria", "polparty/republican"}),
        ("I'm a registered independent from Nigeria.", {"country/nigeria", "polparty/independent"}),
        ("I'm an independent from Nigeria.", {"country/nigeria", "polparty/independent"}),
        ("I'm a registered independent living in Japan.", {"country/japan", "polparty/independent"}),
        # the guards and corrections still read the whole statement
        ("People think I'm a Nigerian Democrat, but I'm a Kenyan Republican.", {"country/kenya", "polparty/republican"}),
        ("I'm a Brazilian Democrat? No, a Republican.", {"country/brazil", "polparty/republican"}),
        ("I'm a Democrat, I mean a Brazilian Republican.", {"polparty/republican"}),
        ("I'm a Democrat from Jordan Street.", {"polparty/democrat"}),  # a street, not Jordan
        ("As a Republican from the Jordan Valley, I farm.", {"polparty/republican"}),
    ],
)
def test_a_stacked_statement_gives_each_persona(text: str, expected: set[str]) -> None:
    assert ids(RX, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I'm not a Brazilian Democrat.",
        "Not that I'm a Nigerian Republican.",
        "my uncle is a Nigerian Republican",
        "He's a Brazilian Democrat.",
        "She said she is a Mexican Republican.",
        "My friend said I'm a Brazilian Democrat.",
        "If I were a Brazilian Democrat, what would I think?",
        "if I'm a Brazilian Democrat, then what?",
        "Should I vote for a Brazilian Democrat?",
        "`I'm a Nigerian Democrat`",
        "I'm a Brazilian Democrat senator's aide.",  # a senator: the statement is about the job
        "I'm not Nigerian and a Democrat.",
        "He spoke as a Democrat and a Nigerian.",
        "If I spoke as a Democrat and a Nigerian, what would I say?",
        "I'm a Nigerian conservative.",  # "conservative" alone is no persona's noun
    ],
)
def test_no_persona_when_the_whole_statement_is_not_a_statement(text: str) -> None:
    assert ids(RX, text) == set()


def test_the_evidence_spans_the_statement() -> None:
    ms = {m.persona_id: m for m in RX.extract("Hi. As a Brazilian Democrat, what do you think?")}
    assert ms["country/brazil"].evidence == "As a Brazilian"
    assert ms["polparty/democrat"].evidence == "As a Brazilian Democrat"
    assert ms["country/brazil"].span[0] == ms["polparty/democrat"].span[0] == 4


# --- user packs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("As a Catholic Republican, I think schools should pray.", {"religion/catholic", "polparty/republican"}),
        ("I'm a Nigerian nurse.", {"country/nigeria", "work/nurse"}),
        ("I'm a Nigerian registered nurse.", {"country/nigeria", "work/nurse"}),
        ("as a Brazilian Democrat", {"country/brazil", "polparty/democrat"}),
        ("I'm a conservative Catholic from Texas.", {"religion/catholic", "state/texas"}),
        ("I'm a Texan Catholic nurse.", {"state/texas", "religion/catholic", "work/nurse"}),
        ("I'm a Catholic and a Republican.", {"religion/catholic", "polparty/republican"}),
        ("We Nigerian nurses work long shifts.", {"country/nigeria", "work/nurse"}),
        ("I'm an Evangelical Republican from Ohio.", {"religion/protestant", "polparty/republican", "state/ohio"}),
        ("I'm an English teacher.", {"work/teacher"}),  # a subject, not Britain
        ("I'm a French teacher from Ohio.", {"work/teacher", "state/ohio"}),
    ],
)
def test_stacked_statements_across_user_packs(user_rx: RuleExtractor, text: str, expected: set[str]) -> None:
    assert ids(user_rx, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I'm not a Catholic Republican.",
        "my uncle is a Nigerian nurse",
        "My sister, a Nigerian nurse, is visiting.",
        "Not that I'm a Nigerian nurse.",
        "If I were a Catholic Republican, I'd vote early.",
        "He said he's a conservative Catholic from Texas.",
        "I'm a Nigerian nurse practitioner's son.",
    ],
)
def test_user_pack_stacks_keep_the_guards(user_rx: RuleExtractor, text: str) -> None:
    assert ids(user_rx, text) == set()


def test_modifiers_come_from_every_pack_even_when_one_dimension_is_extracted(user_reg: PackRegistry) -> None:
    rx = RuleExtractor(user_reg, dimensions=["occupation"])
    assert ids(rx, "I'm a Nigerian nurse.") == {"work/nurse"}
    assert ids(rx, "I'm a Catholic Republican.") == set()


# --- Independents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I'm a registered independent.",
        "I'm unaffiliated.",
        "Politically, I'm unaffiliated.",
        "I'm not affiliated with any party.",
        "I'm unaffiliated with either party.",
        "I'm not a member of any political party.",
        "I'm registered as unaffiliated.",
        "I'm nonpartisan.",
        "I'm neither a Democrat nor a Republican.",
        "I'm independent of both parties.",
        "I'm an independent.",
        "As an Independent, I split my ticket.",
        "I'm a Nigerian independent.",
    ],
)
def test_what_an_independent_says_gives_independent(text: str) -> None:
    assert "polparty/independent" in ids(RX, text)


@pytest.mark.parametrize(
    "text",
    [
        "I read an independent study on this.",
        "I'm independent of my parents now.",
        "I'm independent from my parents now.",
        "I'm an independent contractor from Nigeria.",
        "I'm independent.",  # everyday meaning: no political frame, no noun
        "I'm an independent contractor.",
        "As an independent, I run my own bookshop.",
        "If I were a registered as an independent, what would I think?",
        "I'm unaffiliated with the university.",
        "I'm not unaffiliated with any party.",
        "My uncle is not affiliated with any party.",
        "He said I'm unaffiliated.",
        "My boss, as a Democrat and an independent thinker, disagrees.",
        "If I were unaffiliated, could I vote in the primary?",
    ],
)
def test_everyday_independence_is_no_party(text: str) -> None:
    assert "polparty/independent" not in ids(RX, text)


def test_a_later_party_replaces_no_party() -> None:
    assert ids(RX, "I'm not affiliated with any party, but now I vote Republican.") == {"polparty/republican"}


# --- cost -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["As a Brazilian Democrat, ", "I'm from Nigeria and a Democrat. ",
                                  "I'm a Nigerian Nigerian Nigerian ", "I'm a Democrat from Jordan Street. "])
def test_stacked_statements_keep_the_work_linear(unit: str) -> None:
    """Doubling a text of dense stacked statements doubles the work (Python operations and
    characters read; counted, not timed)."""
    assert_extraction_linear(unit)


def test_a_run_of_modifiers_is_read_at_most_eight_words_deep() -> None:
    assert ids(RX, "I'm a " + "Brazilian " * 8 + "Democrat.") == {"polparty/democrat"}
    assert "polparty/democrat" not in ids(RX, "I'm a " + "Brazilian " * 200 + "Democrat.")


# --- through the steerer ------------------------------------------------------------------------


def _fake_scorer() -> FakeScorer:
    """A fake backend: P(True) from the target claim's text only (first options favoured)."""
    return FakeScorer(lambda p: 0.8 if "'Yes" in last_claim(p) or "'A bigger" in last_claim(p) else 0.35)


def _steerer(registry: PackRegistry, allow: list[str]) -> Steerer:
    config = SteerConfig(search=SearchConfig(max_iterations=6, num_seed=2, patience=3), max_pool_items=10, k=6,
                         miss_policy="wait", combined_personas="allow-list", combined_allow=allow)
    return Steerer(registry, MemoryStore(), _fake_scorer(), config)


async def test_a_stacked_statement_is_steered_by_the_allowed_combination() -> None:
    combo = "country/brazil+polparty/democrat"
    st = _steerer(REG, [combo])
    out, info = await st.prepare([{"role": "user", "content": "As a Brazilian Democrat, should taxes go up?"}])
    assert {m.persona_id for m in info.personas} == {"country/brazil", "polparty/democrat"}
    assert info.combined == [combo] and info.reason is None and set(info.versions) == {combo}
    assert info.examples_used > 0
    assert "Democrats from Brazil" in out[0]["content"]


async def test_a_catholic_republican_is_steered_by_the_combination(user_reg: PackRegistry) -> None:
    combo = "polparty/republican+religion/catholic"
    st = _steerer(user_reg, [combo])
    out, info = await st.prepare([{"role": "user", "content": "As a Catholic Republican, should schools pray?"}])
    assert {m.persona_id for m in info.personas} == {"religion/catholic", "polparty/republican"}
    assert info.combined == [combo] and set(info.versions) == {combo} and info.examples_used > 0
    assert "Catholic" in out[0]["content"] and "Republican" in out[0]["content"]
    # a negated stack steers nothing
    _, none = await st.prepare([{"role": "user", "content": "I'm not a Catholic Republican. Should schools pray?"}])
    assert none.personas == [] and none.combined == []


def test_user_packs_are_files() -> None:
    """The packs above are valid pack files on their own (what `steerkit pack check` reads)."""
    from steerkit.packs import load_pack

    files = sorted(USER_PACKS.glob("*.toml"))
    assert [f.stem for f in files] == ["religion", "states", "work"]
    for f in files:
        assert load_pack(f).personas

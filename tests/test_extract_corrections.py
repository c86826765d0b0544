"""Corrections and named entities in rule extraction: the statement that stands is the corrected
one, and a place that is part of a name ("Jordan Peterson", "Jordan Street", "Turkey sandwich",
"Chad from accounting") is no country. The work stays linear in the text (counted, not timed)."""

from __future__ import annotations

import pytest
from extract_helpers import NAME_PACKS, assert_extraction_linear, ids

from steerkit.extract import RuleExtractor
from steerkit.packs import PackRegistry

RX = RuleExtractor(PackRegistry.default())


@pytest.fixture(scope="module")
def names_rx() -> RuleExtractor:
    """Chad and Georgia, countries whose names are also people's names (tests/fixtures/name_packs)."""
    return RuleExtractor(PackRegistry.from_paths([NAME_PACKS]))


# --- the two texts ------------------------------------------------------------------------


def test_a_corrected_belief_of_others_gives_the_stated_country() -> None:
    assert ids(RX, "People think I'm from Japan, but I'm from Brazil.") == {"country/brazil"}


def test_a_possessive_name_is_no_country() -> None:
    assert ids(RX, "I'm from Jordan Peterson's fan club.") == set()


# --- corrections ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # not X but Y
        ("I'm not from Japan but from Brazil.", "country/brazil"),
        ("I'm not from Japan, but Brazil.", "country/brazil"),
        ("I'm not from Japan but rather from Brazil.", "country/brazil"),
        ("I'm not a Democrat but a Republican.", "polparty/republican"),
        ("I'm not a Democrat, but a Republican", "polparty/republican"),
        ("I don't live in Japan but in Brazil.", "country/brazil"),
        ("I'm not in Japan but in Brazil right now.", "country/brazil"),
        ("I'm not from Japan but I'm from Brazil.", "country/brazil"),
        # people think X, but I'm Y (the report reaches only to the contrast)
        ("People think I'm from Japan, but I'm from Brazil.", "country/brazil"),
        ("Everyone assumes I'm a Democrat, but I'm a Republican.", "polparty/republican"),
        ("My uncle says I'm a Democrat but I'm a Republican", "polparty/republican"),
        ("He said he's from Japan, but actually I'm from Brazil.", "country/brazil"),
        ("They call me Japanese; however, I'm Brazilian.", "country/brazil"),
        # I used to be X, now I'm Y
        ("I used to be a Democrat, now I'm a Republican.", "polparty/republican"),
        ("I used to live in Japan, now I live in Brazil.", "country/brazil"),
        ("I lived in Japan for years, but now I live in Brazil.", "country/brazil"),
        ("I'm a Democrat... well, I was; now I'm a Republican.", "polparty/republican"),
        ("I was a Democrat until 2016, now I'm a Republican.", "polparty/republican"),
        # X? No, Y
        ("Japan? No, I'm from Brazil.", "country/brazil"),
        ("I'm from Japan? No, Brazil.", "country/brazil"),
        ("I'm from Japan? Nope, from Brazil!", "country/brazil"),
        ("I'm from Japan, I mean Brazil.", "country/brazil"),
        ("I'm from Japan - sorry, Brazil.", "country/brazil"),
        ("I'm a Democrat, no wait, a Republican.", "polparty/republican"),
        ("I'm Japanese? No, Brazilian.", "country/brazil"),
    ],
)
def test_the_corrected_statement_stands(text: str, expected: str) -> None:
    ms = RX.extract(text)
    assert [m.persona_id for m in ms] == [expected], (text, ms)
    m = ms[0]
    assert text[m.span[0] : m.span[1]] == m.evidence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm from Japan, not Brazil.", {"country/japan"}),  # "X, not Y" keeps X
        ("I'm from Japan but I live in Brazil.", {"country/japan", "country/brazil"}),  # origin and residence
        ("I was born in Japan, and I'm from Japan.", {"country/japan"}),
        ("I'm from Japan. No idea about Brazil.", {"country/japan"}),
        ("I'm from Japan; Brazil is next on my list.", {"country/japan"}),
    ],
)
def test_what_is_not_a_correction_keeps_the_statement(text: str, expected: set[str]) -> None:
    assert ids(RX, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I'm not from Japan but I love it.",
        "I'm not a Democrat but a Republican senator convinced me.",  # Y is an adjective
        "He said I'm not from Japan but from Brazil.",  # all of it reported
        "If I'm not from Japan but from Brazil, what changes?",
        '"I\'m from Japan? No, Brazil" is a line from the film.',
        "Would you say I'm not from Japan but from Brazil?",
        "Not that I'm from Japan, I mean Brazil.",
    ],
)
def test_a_correction_inside_a_non_statement_gives_nothing(text: str) -> None:
    assert ids(RX, text) == set()


def test_a_later_message_still_wins_across_messages() -> None:
    out = RX.extract_many(["I'm from Japan.", "Sorry, I'm from Brazil."])
    assert [[m.persona_id for m in ms] for ms in out] == [["country/japan"], ["country/brazil"]]


# --- named entities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I'm from Jordan Peterson's fan club.",
        "I'm from Jordan's fan club.",
        "I live in Jordan Street.",
        "I live on Jordan Street, flat 3.",
        "I'm from the Jordan Valley.",
        "I'm in Turkey sandwich heaven.",
        "I'm in turkey sandwich heaven",
        "I'm from Turkey Hill Dairy.",
        "I'm in China Town for lunch.",
        "I'm from India Pale Ale country",
        "I'm in Kenya Airways' lounge",
        "I'm from Japan Airlines customer service.",
    ],
)
def test_a_place_inside_a_name_is_no_country(text: str) -> None:
    assert ids(RX, text) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm from Japan's north.", "country/japan"),
        ("I'm from Mexico's largest city.", "country/mexico"),
        ("I'm from Mexico City.", "country/mexico"),
        ("I'm from Jordan, near Amman.", "country/jordan"),
        ("I'm from Turkey.", "country/turkey"),
        ("I'm from Japan. I like tea.", "country/japan"),
        ("I'm From Japan And I Love Sushi", "country/japan"),  # Title Case: function words are no names
        ("I'M FROM JAPAN AND I LOVE IT", "country/japan"),  # all capitals
        ("I live in Brazil with my family", "country/brazil"),
    ],
)
def test_geography_and_ordinary_continuations_still_match(text: str, expected: str) -> None:
    assert ids(RX, text) == {expected}


@pytest.mark.parametrize(
    "text",
    [
        "I'm Chad from accounting.",
        "I'm Chad.",
        "Hi, I'm Chad, what's the weather?",
        "I'm in Chad from accounting's office.",
        "I'm from Georgia O'Keeffe's hometown.",
        "I'm a Georgia O'Keeffe fan.",
        "I live on Georgia Avenue.",
    ],
)
def test_people_and_things_named_like_countries_are_no_country(names_rx: RuleExtractor, text: str) -> None:
    assert ids(names_rx, text) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm from Chad.", "country/chad"),
        ("I'm Chadian.", "country/chad"),
        ("I'm from Georgia.", "country/georgia"),
        ("I live in Georgia, near Tbilisi.", "country/georgia"),
        ("This is Chad from accounting; I'm from Georgia.", "country/georgia"),
        ("I'm not from Chad but from Georgia.", "country/georgia"),
    ],
)
def test_the_countries_themselves_still_match(names_rx: RuleExtractor, text: str, expected: str) -> None:
    assert ids(names_rx, text) == {expected}


# --- linear in the text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        "I'm not from Japan but from Brazil. ",
        "I'm from Japan? No, Brazil. ",
        "People think I'm from Japan, but I'm from Brazil. ",
        "I lived in Japan, but now I live in Brazil; ",
        "I'm a Democrat, now I'm a Republican, ",
        "I'm from Jordan Peterson's fan club. ",
        "I'm from Japan's north ",
        "I'm not a Democrat but ",
        "but but now no, ",
    ],
)
def test_corrections_and_names_keep_the_work_linear(unit: str) -> None:
    assert_extraction_linear(unit, chars_slack=2_000)


def test_the_shipped_packs_still_load() -> None:
    """The name rules read the packs' places: every shipped place still matches in a plain statement."""
    reg = PackRegistry.default()
    for pack in reg.packs:
        if pack.extraction != "identity":
            continue
        for spec in pack.specs:
            for place in spec.places:
                if place.lower().startswith("the "):
                    continue
                assert spec.id in ids(RX, f"I'm from {place}."), place

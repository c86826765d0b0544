"""The steerability probe's own fact questions, in several domains.

A probe that rests on one domain measures that domain: Gemma 3 270M followed the labels of
capital-city demonstrations (gold 0.80 against inverted 0.37) and not those of another fact set
(0.40 against 0.43). So the probe asks in several domains where the truth is not in doubt
(capitals, units, science, arithmetic, dates), one persona per domain, and reports each.

Every question has two options, the true one and a plausible wrong one, in a seeded order (the
true option first about half the time). The capitals domain keeps the probe's original questions
(and so its cached scores); the others are fixed lists written for the probe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from steerkit.errors import UserError
from steerkit.models import Item, Persona, Pool

__all__ = ["DOMAINS", "FACTS_PERSONA", "FactDomain", "domain_of", "fact_pools", "facts_pool"]


@dataclass(frozen=True)
class FactDomain:
    """One domain: its persona and its (question, true answer, wrong answer) triples."""

    name: str
    persona: Persona
    facts: tuple[tuple[str, str, str], ...]


def _persona(domain: str, name: str, description: str) -> Persona:
    return Persona(id=f"probe/{domain}", name=name, dimension="probe", description=description)


FACTS_PERSONA = _persona("geography", "people who know world geography",
                         "Answers to plain geography questions; the truth is not in doubt.")
"""The capitals domain's persona (the probe's original one)."""

_CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("the United Kingdom", "London"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Peru", "Lima"), ("Greece", "Athens"), ("Norway", "Oslo"),
    ("Australia", "Canberra"), ("Ireland", "Dublin"), ("Portugal", "Lisbon"), ("Austria", "Vienna"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("the Czech Republic", "Prague"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"), ("India", "New Delhi"), ("Argentina", "Buenos Aires"), ("Chile", "Santiago"),
    ("Colombia", "Bogota"), ("Mexico", "Mexico City"), ("Cuba", "Havana"), ("Morocco", "Rabat"),
    ("Ethiopia", "Addis Ababa"), ("Nigeria", "Abuja"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"),
    ("Switzerland", "Bern"), ("Ukraine", "Kyiv"),
]

_UNITS = (
    ("How many centimetres are in a metre?", "100", "1000"),
    ("How many minutes are in an hour?", "60", "100"),
    ("How many days are in a week?", "7", "10"),
    ("How many grams are in a kilogram?", "1000", "100"),
    ("How many hours are in a day?", "24", "12"),
    ("How many seconds are in a minute?", "60", "30"),
    ("How many months are in a year?", "12", "10"),
    ("How many millimetres are in a centimetre?", "10", "100"),
    ("How many metres are in a kilometre?", "1000", "100"),
    ("How many inches are in a foot?", "12", "10"),
    ("How many feet are in a yard?", "3", "5"),
    ("How many ounces are in a pound?", "16", "12"),
    ("How many millilitres are in a litre?", "1000", "10"),
    ("How many weeks are in a year?", "52", "40"),
    ("How many years are in a century?", "100", "1000"),
    ("How many years are in a decade?", "10", "12"),
)

_SCIENCE = (
    ("Which planet is closest to the Sun?", "Mercury", "Neptune"),
    ("What is the chemical formula of water?", "H2O", "CO2"),
    ("Which gas do plants take from the air to make sugar?", "carbon dioxide", "helium"),
    ("At what temperature in Celsius does water boil at sea level?", "100", "50"),
    ("Which is the largest planet in the solar system?", "Jupiter", "Mars"),
    ("What is the chemical symbol for gold?", "Au", "Ag"),
    ("Which organ pumps blood through the body?", "the heart", "the liver"),
    ("At what temperature in Celsius does water freeze?", "0", "10"),
    ("Which force keeps the planets in orbit around the Sun?", "gravity", "magnetism"),
    ("How many legs does an insect have?", "six", "eight"),
    ("Which planet is known as the Red Planet?", "Mars", "Venus"),
    ("What do bees make from nectar?", "honey", "silk"),
    ("Which gas makes up most of the air we breathe?", "nitrogen", "oxygen"),
    ("What is the centre of an atom called?", "the nucleus", "the electron"),
    ("Which part of the plant takes in water from the soil?", "the roots", "the flowers"),
    ("What is the largest organ of the human body?", "the skin", "the brain"),
)

_DATES = (
    ("In which year did the Second World War end?", "1945", "1939"),
    ("In which year did people first land on the Moon?", "1969", "1975"),
    ("In which year did the Berlin Wall fall?", "1989", "1979"),
    ("In which year did the First World War begin?", "1914", "1924"),
    ("In which year did Columbus first reach the Americas?", "1492", "1592"),
    ("In which year was the United States Declaration of Independence signed?", "1776", "1812"),
    ("In which year did the Titanic sink?", "1912", "1922"),
    ("In which year did the French Revolution begin?", "1789", "1689"),
    ("In which year did the Soviet Union break up?", "1991", "1981"),
    ("In which year did euro coins and banknotes enter circulation?", "2002", "1995"),
    ("In which year did the Wright brothers make their first powered flight?", "1903", "1923"),
    ("In which year was the Battle of Waterloo fought?", "1815", "1805"),
    ("In which year did Nelson Mandela become President of South Africa?", "1994", "1984"),
    ("In which year did the September 11 attacks on the United States take place?", "2001", "2005"),
    ("In which year did the Russian Revolution take place?", "1917", "1927"),
    ("In which year did the Great Fire of London take place?", "1666", "1766"),
)


def _arithmetic() -> tuple[tuple[str, str, str], ...]:
    """Sixteen fixed sums, differences and products (a fixed seed: the questions never change);
    the wrong answer is off by 1 to 10."""
    rng = random.Random("steerkit-probe-arithmetic")
    out = []
    for k in range(16):
        op = "+-×"[k % 3]
        a, b = rng.randint(11, 49), rng.randint(2, 9) if op == "×" else rng.randint(11, 49)
        if op == "-" and b > a:
            a, b = b, a
        true = a + b if op == "+" else a - b if op == "-" else a * b
        wrong = true + rng.choice([-1, 1]) * rng.randint(1, 10)
        out.append((f"What is {a} {op} {b}?", str(true), str(wrong)))
    return tuple(out)


DOMAINS: dict[str, FactDomain] = {
    d.name: d
    for d in (
        FactDomain("capitals", FACTS_PERSONA, ()),  # built per seed (the distractor is another country's capital)
        FactDomain("units", _persona("units", "people who know units of measurement",
                                     "Answers to plain questions about units of measurement; the truth is not in doubt."), _UNITS),
        FactDomain("science", _persona("science", "people who know basic science",
                                       "Answers to plain school-science questions; the truth is not in doubt."), _SCIENCE),
        FactDomain("arithmetic", _persona("arithmetic", "people who can do arithmetic",
                                          "Answers to plain sums; the truth is not in doubt."), _arithmetic()),
        FactDomain("dates", _persona("dates", "people who know historical dates",
                                     "Answers to plain questions about when famous events happened; the truth is not in doubt."), _DATES),
    )
}
"""The probe's domains, in the order it reports them."""


def facts_pool(seed: int = 0, domain: str = "capitals") -> Pool:
    """Two-option fact questions of one domain with gold labels, the true option first about half
    the time (a seeded order). ``capitals``: "What is the capital of X?" with the true capital and
    another country's (seeded), the probe's original questions."""
    if domain not in DOMAINS:
        raise UserError(f"no probe domain {domain!r}", hint=f"one of {', '.join(DOMAINS)}")
    if domain == "capitals":
        return _capitals_pool(seed)
    d = DOMAINS[domain]
    n = len(d.facts)
    true_first = [k < (n + 1) // 2 for k in range(n)]  # half the questions, in a seeded order
    random.Random(f"{seed}/{domain}").shuffle(true_first)
    items: list[Item] = []
    for k, ((question, true, wrong), first) in enumerate(zip(d.facts, true_first)):
        opts = [(true, True), (wrong, False)] if first else [(wrong, False), (true, True)]
        items += _items(f"probe/{domain}/{k}", question, opts)
    return Pool.from_items(d.persona, items)


def _items(gid: str, question: str, opts: list[tuple[str, bool]]) -> list[Item]:
    return [Item(id=f"{gid}/o{j}", kind="claim", question=question, option=opt, group=gid, gold=gold)
            for j, (opt, gold) in enumerate(opts)]


def _capitals_pool(seed: int) -> Pool:
    """The probe's original draw (one distractor, then one shuffle per question on one generator):
    the same questions as before, so cached scores stay valid."""
    rng = random.Random(seed)
    n = len(_CAPITALS)
    items: list[Item] = []
    for k, (country, city) in enumerate(_CAPITALS):
        other = _CAPITALS[(k + 1 + rng.randrange(n - 1)) % n][1]
        opts = [(city, True), (other, False)]
        rng.shuffle(opts)
        items += _items(f"probe/capital/{k}", f"What is the capital of {country}?", opts)
    return Pool.from_items(FACTS_PERSONA, items)


def fact_pools(seed: int = 0, domains: Sequence[str] | None = None) -> dict[str, Pool]:
    """One pool per domain (default: every domain in `DOMAINS`), keyed by the domain's name."""
    names = list(domains) if domains else list(DOMAINS)
    return {name: facts_pool(seed, name) for name in names}


def domain_of(item: Item) -> str | None:
    """The probe domain a built-in fact item belongs to (None for any other item)."""
    parts = (item.group or "").split("/")
    if len(parts) < 2 or parts[0] != "probe":
        return None
    return "capitals" if parts[1] == "capital" else parts[1] if parts[1] in DOMAINS else None

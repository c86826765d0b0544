"""Prompt rendering, fixed demonstration order, consistent assignments, and the objective's memo.

Uses only fakes (FakeScorer); no model runs here.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from steerkit.backends.base import LabelScore
from steerkit.errors import LabelTokensMissingError
from steerkit.icm import Objective, consistent_assignments, fixed_order, render_demonstration, render_prompt
from steerkit.icm.consistency import units_of
from steerkit.models import Item, Persona, Pool, SearchConfig
from steerkit.testing import FakeScorer

PERSONA = Persona(id="polparty/democrat", name="Democrats", dimension="political_affiliation")


def claim(i: str, opt: str, group: str | None = "q1", q: str = "Should taxes rise?") -> Item:
    return Item(id=i, kind="claim", question=q, option=opt, group=group)


def test_claim_prompt_ends_so_the_label_is_the_next_token() -> None:
    p = render_prompt(PERSONA, claim("a", "Yes"))
    assert p == (
        "Question: Should taxes rise?\n"
        "Claim: The majority of Democrats would answer this question as: 'Yes'\n"
        "I think this claim is"
    )
    assert not p.endswith(" ")
    assert render_demonstration(PERSONA, claim("a", "Yes"), True) == p + " True\n\n"
    assert render_demonstration(PERSONA, claim("a", "Yes"), False) == p + " False\n\n"


def test_reference_template_keeps_the_trailing_space() -> None:
    cfg = SearchConfig(template="reference")
    p = render_prompt(PERSONA, claim("a", "Yes"), cfg)
    assert p.endswith("I think this claim is ")
    assert render_demonstration(PERSONA, claim("a", "Yes"), False, cfg) == p + "False\n\n"


def test_preference_and_answer_prompts() -> None:
    pref = Item(id="p", kind="preference", question="Which policy?", choice_1="More police", choice_2="Fewer police")
    assert render_prompt(PERSONA, pref) == (
        "Question: Which policy?\nChoice 1: More police\nChoice 2: Fewer police\n"
        "Claim: Choice 1 > Choice 2 for Democrats\nI think this claim is"
    )
    ans = Item(id="x", kind="answer", question="How to fix\nhealthcare?", option="Single payer.\n\nNow.")
    p = render_prompt(PERSONA, ans)
    assert p.startswith("Question: How to fix healthcare?\nAnswer: Single payer. Now.\n")
    assert "represents the views of Democrats" in p and p.endswith("is")
    assert "\n\n" not in p  # a field cannot break the demonstration separator


def test_fixed_order_keeps_group_members_contiguous() -> None:
    items = [claim("a1", "x", "A"), claim("b1", "x", "B"), Item(id="solo", kind="claim", question="q", option="o"),
             claim("a2", "y", "A"), claim("b2", "y", "B")]
    pool = Pool.from_items(PERSONA, items)
    assert fixed_order(pool) == ["a1", "a2", "b1", "b2", "solo"]


def test_consistent_assignments_of_each_constraint_kind() -> None:
    items = [
        claim("e1", "a", "E"), claim("e2", "b", "E"), claim("e3", "c", "E"),
        Item(id="p1", kind="preference", question="q", choice_1="A", choice_2="B", group="P"),
        Item(id="p2", kind="preference", question="q", choice_1="B", choice_2="A", group="P"),
        Item(id="k1", kind="answer", question="q", option="4", group="K", key="4"),
        Item(id="k2", kind="answer", question="q", option="four", group="K", key="4"),
        Item(id="k3", kind="answer", question="q", option="5", group="K", key="5"),
        Item(id="lone", kind="claim", question="q", option="o"),
    ]
    pool = Pool.from_items(PERSONA, items)
    units, by_item = units_of(pool, fixed_order(pool))
    e, p, k, lone = by_item["e1"], by_item["p1"], by_item["k1"], by_item["lone"]
    assert consistent_assignments(e) == [
        {"e1": True, "e2": False, "e3": False},
        {"e1": False, "e2": True, "e3": False},
        {"e1": False, "e2": False, "e3": True},
    ]
    assert consistent_assignments(p) == [{"p1": True, "p2": False}, {"p1": False, "p2": True}]
    assert consistent_assignments(k) == [
        {"k1": True, "k2": True, "k3": False},
        {"k1": False, "k2": False, "k3": True},
        {"k1": False, "k2": False, "k3": False},
    ]
    assert consistent_assignments(lone) == [{"lone": True}, {"lone": False}]
    # every enumerated assignment satisfies the pool's constraints
    for u in units:
        for a in consistent_assignments(u):
            assert pool.violations(a) == 0
    # fixed labels filter the options
    assert consistent_assignments(e, {"e2": False}) == [
        {"e1": True, "e2": False, "e3": False},
        {"e1": False, "e2": False, "e3": True},
    ]
    assert consistent_assignments(e, {"e1": True, "e2": True}) == []


def _pool3() -> Pool:
    return Pool.from_items(PERSONA, [claim("a", "Yes"), claim("b", "No"), claim("c", "Maybe", group=None, q="Other?")])


async def test_objective_scores_one_pass_in_one_backend_call_and_memoises() -> None:
    calls: list[int] = []

    class CountingFake(FakeScorer):
        async def score(self, prompts):  # type: ignore[override]
            calls.append(len(prompts))
            return await super().score(prompts)

    fake = CountingFake(lambda p: 0.8 if p.endswith("'Yes'\nI think this claim is") else 0.3)
    obj = Objective(_pool3(), fake, SearchConfig())
    labels = {"a": True, "b": False, "c": True}
    e1 = await obj.evaluate(labels)
    assert calls == [3]
    # exact leave-one-out: each prompt holds the two other items as demonstrations, in fixed order
    pa = e1.prompts["a"]
    assert pa.count(" True\n\n") + pa.count(" False\n\n") == 2 and "'No'\nI think this claim is False\n\n" in pa
    assert pa.index("'No'") < pa.index("Other?") and pa.endswith("'Yes'\nI think this claim is")
    e2 = await obj.evaluate(dict(labels))
    assert calls == [3] and obj.counters.memo_hits == 3 and e2.u == e1.u
    assert obj.counters.model_calls == 3 == len(set(fake.prompts))


async def test_objective_values_for_both_objectives() -> None:
    fake = FakeScorer(lambda p: 0.8)
    labels = {"a": True, "b": False, "c": True}
    lo = math.log(0.8 * 0.9 + 1e-5) - math.log(0.2 * 0.9 + 1e-5)
    mean = await Objective(_pool3(), fake, SearchConfig(alpha=50)).evaluate(labels)
    # signed log-odds: +lo, -lo, +lo; no violation (a True, b False)
    assert mean.u == pytest.approx(50 * (lo - lo + lo) / 3)
    s = await Objective(_pool3(), fake, SearchConfig(alpha=2, objective="sum_logprob")).evaluate(labels)
    ls = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    assert s.u == pytest.approx(2 * (2 * ls(lo) + ls(-lo)))
    bad = await Objective(_pool3(), fake, SearchConfig()).evaluate({"a": True, "b": True, "c": True})
    assert bad.inconsistency == 1 and bad.u == pytest.approx(50 * lo - 1)


async def test_concurrent_passes_never_send_a_prompt_twice() -> None:
    fake = FakeScorer(lambda p: 0.6, delay=0.001)
    obj = Objective(_pool3(), fake, SearchConfig())
    labels = {"a": True, "b": False, "c": False}
    await asyncio.gather(obj.evaluate(labels), obj.evaluate(labels), obj.evaluate(labels))
    assert len(fake.prompts) == 3 == len(set(fake.prompts))
    assert obj.counters.memo_hits == 6


async def test_a_score_without_label_tokens_is_an_error_not_a_zero() -> None:
    class NoLabelsFake(FakeScorer):
        async def score(self, prompts):  # type: ignore[override]
            return [LabelScore(p_true=None, p_false=None, prompt_tokens=1) for _ in prompts]

    obj = Objective(_pool3(), NoLabelsFake(lambda p: 0.5), SearchConfig())
    with pytest.raises(LabelTokensMissingError):
        await obj.evaluate({"a": True, "b": False})

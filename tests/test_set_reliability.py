"""How reliable a set is, told to the user: `ExampleSet.least_certain` / `reliability_warning`, the
lines `precompute` and `cache show` print, and the probe's seed-to-seed agreement (fake scorers:
no model runs here)."""

from __future__ import annotations

import math

import pytest
from icm_fakes import planted_fake

from steerkit._compute import reliability
from steerkit.cli._reliability import reliability_lines
from steerkit.evaluation.probe import ProbeConfig, facts_pool, probe
from steerkit.icm import search
from steerkit.models import (
    DECIDED_ANSWERS,
    ConsistencyGroup,
    ExampleSet,
    Item,
    Label,
    Persona,
    Provenance,
    SearchConfig,
)
from steerkit.testing import FakeScorer, weak_planted_claims


async def test_a_settled_set_whose_restarts_agree_has_no_warning() -> None:
    pool, fake = planted_fake(8)
    es = await search(pool, fake, SearchConfig(seed=1))
    assert es.stats.restart_agreement == 1.0 and es.reliability_warning() is None
    lines = reliability_lines(reliability(es))
    conf = es.answer_confidence()
    assert conf is not None and conf > 0.9  # the planted fake is sure of its answers
    assert lines[0].strip() == f"search ended: fixed_point; restarts agreed on 100% of the answers; answer confidence {conf:.0%}"
    assert not any("warning" in line or "least certain" in line for line in lines)


async def test_disagreeing_restarts_show_the_least_certain_questions_and_a_warning() -> None:
    pool, fake = weak_planted_claims(12)
    es = await search(pool, fake, SearchConfig(seed=3))
    agree = {g.id: 1.0 for g in pool.groups} | {"q4": 0.5, "q7": 0.625, "q9": 0.5}
    es = es.model_copy(update={"stats": es.stats.model_copy(update={"unit_agreement": agree, "restart_agreement": 0.7})})
    worst = es.least_certain(3)
    assert [q.id for q in worst][:2] in (["q4", "q9"], ["q9", "q4"]) and worst[2].id == "q7"
    assert worst[0].question == pool.item(f"{worst[0].id}.0").question
    warning = es.reliability_warning()
    assert warning is not None and "70%" in warning and "steerkit review" in warning
    text = "\n".join(reliability_lines(reliability(es)))
    assert "restarts agreed on 70%" in text and "(50% of restarts)" in text and "warning:" in text


async def test_a_search_stopped_by_its_budget_is_reported_as_not_settled() -> None:
    pool, fake = weak_planted_claims(12)
    es = await search(pool, fake, SearchConfig(seed=3, restarts=1, max_iterations=13))
    assert es.stats.ended == "max_iterations"
    assert "before settling" in (es.reliability_warning() or "")


async def test_the_probe_reports_the_searchs_seed_to_seed_agreement() -> None:
    fake = FakeScorer(lambda p: 0.7 if p.rsplit("Claim:", 1)[-1].count("a") % 2 else 0.3)  # a fake that ignores demos
    report = await probe(facts_pool(), fake, ProbeConfig(agreement_questions=4))
    a = report.seed_agreement
    assert a is not None and a["questions"] == 4 and a["restarts"] == SearchConfig().restarts == 16
    assert 0.0 < a["restart_agreement"] <= 1.0 and a["ended"] in ("fixed_point", "converged")
    assert "Seed to seed" in report.summary() and report.as_dict()["seed_agreement"] == a
    none = await probe(facts_pool(), fake, ProbeConfig())
    assert none.seed_agreement is None and "Seed to seed" not in none.summary()


def _set(items: list[Item], groups: list[ConsistencyGroup], labels: dict[str, tuple[bool, float, str]]) -> ExampleSet:
    """An ExampleSet with given (value, final log-odds, source) per item."""
    return ExampleSet(
        persona=Persona(id="t/p", name="people", dimension="t"), items=tuple(items), groups=tuple(groups),
        labels={i: Label(item_id=i, value=v, confidence=0.5, logodds=lo, source=src) for i, (v, lo, src) in labels.items()},  # type: ignore[arg-type]
        score=0.0, provenance=Provenance(model="m", backend="fake", config=SearchConfig(), pool_hash="h", seed=0))


def test_answer_margins_compare_the_chosen_answer_with_the_best_other_and_cancel_a_leaning() -> None:
    claim = lambda i, g, key=None: Item(id=i, kind="claim", question=f"question {g}", option=i, group=g, key=key)  # noqa: E731
    items = [claim("a0", "a"), claim("a1", "a"), claim("b0", "b"), claim("b1", "b"), claim("b2", "b"),
             claim("c0", "c", "x"), claim("c1", "c", "x"), claim("c2", "c", "y"), Item(id="lone", kind="claim", question="q", option="o"),
             claim("h0", "h"), claim("h1", "h")]
    groups = [ConsistencyGroup(id="a", kind="exactly_one", item_ids=("a0", "a1")),
              ConsistencyGroup(id="b", kind="exactly_one", item_ids=("b0", "b1", "b2")),
              ConsistencyGroup(id="c", kind="keyed", item_ids=("c0", "c1", "c2")),
              ConsistencyGroup(id="h", kind="exactly_one", item_ids=("h0", "h1"))]
    es = _set(items, groups, {
        # a model that leans to "False" everywhere: the chosen option is still preferred by 0.5
        "a0": (True, -1.0, "icm"), "a1": (False, -1.5, "icm"),
        # three options: the chosen one against the best other
        "b0": (False, 2.0, "icm"), "b1": (True, 1.2, "icm"), "b2": (False, -3.0, "icm"),
        # keyed: x's members True together, against "nothing True" and "y True"
        "c0": (True, 1.0, "icm"), "c1": (True, 0.5, "icm"), "c2": (False, -0.2, "icm"),
        "lone": (False, -0.7, "icm"),
        "h0": (True, -4.0, "human"), "h1": (False, 4.0, "icm"),  # a person answered: not the model's choice
    })
    m = es.answer_margins()
    assert set(m) == {"a", "b", "c", "lone"}
    assert m["a"] == pytest.approx(0.5) and m["b"] == pytest.approx(1.2 - 2.0) and m["lone"] == pytest.approx(0.7)

    def ls(x: float) -> float:
        return -math.log1p(math.exp(-x))
    chosen = ls(1.0) + ls(0.5) + ls(0.2)
    nothing, y_true = ls(-1.0) + ls(-0.5) + ls(0.2), ls(-1.0) + ls(-0.5) + ls(-0.2)
    assert m["c"] == pytest.approx(chosen - max(nothing, y_true))
    expected = sum(1 / (1 + math.exp(-v)) for v in m.values()) / 4
    assert es.answer_confidence() == pytest.approx(expected)
    assert _set(items[:2], groups[:1], {"a0": (True, 1.0, "human"), "a1": (False, 0.0, "fixed")}).answer_confidence() is None


async def test_a_set_of_near_ties_is_flagged_though_its_restarts_agree() -> None:
    """What SmolLM2 does on an easy fact pool: restarts that agree on answers the model barely prefers."""
    pool, _ = planted_fake(8)
    faint = FakeScorer(lambda p: 0.51 if p.rsplit("Claim:", 1)[-1].count("e") % 2 else 0.49)  # a fake of near-ties
    es = await search(pool, faint, SearchConfig(seed=1))
    conf = es.answer_confidence()
    assert es.stats.restart_agreement == 1.0 and conf is not None and conf < DECIDED_ANSWERS
    warning = es.reliability_warning()
    assert warning is not None and "near-ties" in warning and "steerkit probe" in warning
    text = "\n".join(reliability_lines(reliability(es), "t/p"))
    assert f"answer confidence {conf:.0%}" in text and "warning: its answers rest on near-ties" in text
    assert "next: check the search model with `steerkit probe`" in text and "--persona t/p" in text


async def test_the_probe_says_when_agreeing_restarts_rest_on_near_ties() -> None:
    faint = FakeScorer(lambda p: 0.51 if p.rsplit("Claim:", 1)[-1].count("a") % 2 else 0.49)
    report = await probe(facts_pool(), faint, ProbeConfig(agreement_questions=4))
    a = report.seed_agreement
    assert a is not None and a["restart_agreement"] == 1.0 and a["answer_confidence"] < DECIDED_ANSWERS
    assert "rest on near-ties" in report.summary() and "hardly depend on the seed." not in report.summary()


def test_keyed_members_without_a_key_are_one_answer_as_the_constraint_counts_them() -> None:
    """`ConsistencyGroup.violations` counts members with no key as one class; so do the answers
    whose margins are taken (both come from `ConsistencyGroup.assignments`)."""
    items = [Item(id=i, kind="claim", question="q", option=i, group="k", key=key) for i, key in (("n0", None), ("n1", None), ("y", "y"))]
    group = ConsistencyGroup(id="k", kind="keyed", item_ids=("n0", "n1", "y"))
    assert group.assignments({it.id: it.key for it in items}) == [
        {"n0": True, "n1": True, "y": False}, {"n0": False, "n1": False, "y": True}, {"n0": False, "n1": False, "y": False}]
    es = _set(items, [group], {"n0": (True, 2.0, "icm"), "n1": (True, 1.0, "icm"), "y": (False, -0.5, "icm")})

    def ls(x: float) -> float:
        return -math.log1p(math.exp(-x))
    chosen = ls(2.0) + ls(1.0) + ls(0.5)
    others = (ls(-2.0) + ls(-1.0) + ls(-0.5), ls(-2.0) + ls(-1.0) + ls(0.5))  # y True; nothing True
    assert es.answer_margins() == {"k": pytest.approx(chosen - max(others))}

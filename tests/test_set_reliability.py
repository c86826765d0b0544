"""How reliable a set is, told to the user: `ExampleSet.least_certain` / `reliability_warning`, the
lines `precompute` and `cache show` print, and the probe's seed-to-seed agreement (fake scorers:
no model runs here)."""

from __future__ import annotations

from icm_fakes import planted_fake

from steerkit._compute import reliability
from steerkit.cli._reliability import reliability_lines
from steerkit.evaluation.probe import ProbeConfig, facts_pool, probe
from steerkit.icm import search
from steerkit.models import SearchConfig
from steerkit.testing import FakeScorer, weak_planted_claims


async def test_a_settled_set_whose_restarts_agree_has_no_warning() -> None:
    pool, fake = planted_fake(8)
    es = await search(pool, fake, SearchConfig(seed=1))
    assert es.stats.restart_agreement == 1.0 and es.reliability_warning() is None
    lines = reliability_lines(reliability(es))
    assert lines[0].strip() == "search ended: fixed_point; restarts agreed on 100% of the answers"
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

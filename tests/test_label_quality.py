"""Labels right from every seed: the polarity move, the convergence stop and the restarts'
consensus, on planted fake scorers (FakeScorer: no model runs here; the models are measured by
benchmarks/label_quality.py)."""

from __future__ import annotations

import statistics

import pytest
from icm_fakes import accuracy, planted_fake

from steerkit.icm import search
from steerkit.icm.consistency import units_of
from steerkit.icm.objective import fixed_order
from steerkit.icm.search import agreement_of, consensus_labels
from steerkit.models import SearchConfig
from steerkit.testing import weak_planted_claims

ONE = {"restarts": 1, "restart_choice": "u"}


def question_accuracy(pool, labels) -> float:  # type: ignore[no-untyped-def]
    ok: dict[str, bool] = {}
    for it in pool.items:
        ok[it.group] = ok.get(it.group, True) and labels[it.id] == it.gold
    return sum(ok.values()) / len(ok)


async def test_an_inverted_start_is_recovered_by_the_polarity_move() -> None:
    pool, fake = planted_fake(16)
    inverted = {it.id: not it.gold for it in pool.items}
    stuck = await search(pool, fake, SearchConfig(seed=1, polarity_move=False, **ONE), warm_start=inverted)
    # every context is wholly inverted, so every label is predicted as it is: a fixed point ...
    assert accuracy(pool, stuck.label_values()) == 0.0
    assert stuck.stats.ended == "fixed_point"
    fixed = await search(pool, fake, SearchConfig(seed=1, **ONE), warm_start=inverted)
    # ... which only a move of the whole labelling leaves: its mirror scores higher (the prior)
    assert accuracy(pool, fixed.label_values()) == 1.0
    assert fixed.score > stuck.score
    assert fixed.stats.ended == "fixed_point"


async def test_the_sparse_search_stops_at_a_fixed_point_long_before_its_budget() -> None:
    pool, fake = planted_fake(32)
    for seed in (1, 2, 3):
        es = await search(pool, fake, SearchConfig(seed=seed))
        assert es.stats.ended == "fixed_point"
        assert set(es.stats.restarts_ended) <= {"fixed_point", "converged"}
        assert es.stats.iterations < SearchConfig().max_iterations
        assert accuracy(pool, es.label_values()) == 1.0
        assert es.stats.restart_agreement == 1.0


async def test_the_exact_search_stops_at_a_fixed_point() -> None:
    pool, fake = planted_fake(6)
    es = await search(pool, fake, SearchConfig(mode="exact", seed=1, max_iterations=500, patience=400))
    assert es.stats.ended == "fixed_point"
    assert es.stats.iterations < 500


async def test_the_weak_fakes_search_settles_by_itself() -> None:
    pool, fake = weak_planted_claims(30)
    es = await search(pool, fake, SearchConfig(seed=1))
    assert es.stats.ended in ("fixed_point", "converged")
    assert es.stats.iterations < es.provenance.config.max_iterations * es.provenance.config.restarts


def test_consensus_takes_each_units_most_frequent_assignment() -> None:
    pool, _ = planted_fake(3)
    units, _ = units_of(pool, fixed_order(pool))
    a = {"q0.0": True, "q0.1": False, "q1.0": True, "q1.1": False, "q2.0": True, "q2.1": False}
    b = {**a, "q1.0": False, "q1.1": True}
    c = {**a, "q2.0": False, "q2.1": True}
    d = {**c, "q1.0": False, "q1.1": True}
    out = consensus_labels(units, [a, b, c, d], [0.0, 0.2, 0.9, 0.1])
    assert out["q0.0"] is True  # 4 of 4
    assert out["q1.0"] is True  # 2-2 tie: a + c weigh 0.9, b + d 0.3
    assert out["q2.0"] is False  # 2-2 tie: c + d weigh 1.0, a + b 0.2
    agree = agreement_of(units, [a, b, c, d], out)
    assert agree == {"q0": 1.0, "q1": 0.5, "q2": 0.5}


async def test_the_right_labelling_is_chosen_among_restarts_that_disagree() -> None:
    """On the weak fake, single restarts land anywhere from half wrong to right; the consensus
    of four lands near the best of them from every seed."""
    pool, _ = weak_planted_claims(10)
    singles, settled = [], []
    for seed in range(1, 9):
        _, fake = weak_planted_claims(10)
        one = await search(pool, fake, SearchConfig(seed=seed, schedule="paper", polarity_move=False, max_iterations=200, patience=40, **ONE))
        singles.append(question_accuracy(pool, one.label_values()))
        _, fake = weak_planted_claims(10)
        es = await search(pool, fake, SearchConfig(seed=seed))
        settled.append(question_accuracy(pool, es.label_values()))
        assert es.stats.restart_agreement is not None and 0 < es.stats.restart_agreement <= 1
        assert set(es.stats.unit_agreement) == {g.id for g in pool.groups}
    assert max(singles) - min(singles) >= 0.3  # the restarts disagree ...
    assert max(settled) - min(settled) <= 0.1  # ... the consensus does not depend on the seed
    assert statistics.fmean(settled) >= max(singles) - 0.05


async def test_a_restart_of_higher_u_than_the_settled_vote_is_kept() -> None:
    """On four-option questions the vote can split between two labellings of nearly equal
    frequency and settle below the better one; the search then keeps the restart of higher U, so
    the result's U is never below any restart's (on this pool the vote alone settles at U 10.2,
    below a restart's 12.1, from every seed)."""
    results = []
    for seed in (1, 2, 3):
        pool, fake = weak_planted_claims(8, options=4)
        es = await search(pool, fake, SearchConfig(seed=seed))
        assert es.score >= max(es.stats.restarts_u) - 1e-9
        assert es.stats.restart_agreement is not None and es.stats.ended in ("fixed_point", "converged")
        results.append((round(es.score, 6), accuracy(pool, es.label_values())))
    assert len(set(results)) == 1  # the same labelling from every seed
    assert results[0][0] > 12


async def test_a_finished_consensus_search_resumes_from_its_checkpoint_without_model_calls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool, fake = weak_planted_claims(10)
    ck = tmp_path / "ck.json"
    first = await search(pool, fake, SearchConfig(seed=2), checkpoint=ck)
    _, again = weak_planted_claims(10)
    second = await search(pool, again, SearchConfig(seed=2), checkpoint=ck)
    assert again.stats.calls == 0
    assert second.label_values() == first.label_values()
    assert second.stats.ended == first.stats.ended and second.stats.restarts_ended == first.stats.restarts_ended
    assert second.stats.restart_agreement == first.stats.restart_agreement


# --- proposals="answer" ---------------------------------------------------------------------------


async def test_answer_proposals_ignore_a_leaning_that_label_proposals_chase() -> None:
    """A fake that leans hard towards "True" (planted_fn's bias): every False-labelled claim is
    'contradicted' claim by claim, but no question's context prefers another answer."""
    pool, fake = planted_fake(16, bias=3.0)
    label = await search(pool, fake, SearchConfig(seed=1, **ONE))
    pool, fake = planted_fake(16, bias=3.0)
    answer = await search(pool, fake, SearchConfig(seed=1, proposals="answer", **ONE))
    assert accuracy(pool, answer.label_values()) == 1.0 == accuracy(pool, label.label_values())
    assert answer.stats.ended == "fixed_point" and label.stats.ended != "fixed_point"
    assert answer.stats.iterations < label.stats.iterations
    assert answer.stats.model_calls <= label.stats.model_calls


async def test_answer_proposals_recover_a_planted_labelling_from_an_inverted_start() -> None:
    pool, fake = planted_fake(16)
    inverted = {it.id: not it.gold for it in pool.items}
    es = await search(pool, fake, SearchConfig(seed=2, proposals="answer", **ONE), warm_start=inverted)
    assert accuracy(pool, es.label_values()) == 1.0 and es.stats.ended == "fixed_point"


async def test_answer_proposals_settle_three_option_questions_by_consensus() -> None:
    """Single restarts can settle in a coherent wrong labelling of three-option questions (as label
    proposals can: 3 seeds of 6 reach 0.33 either way); the restarts' consensus does not."""
    pool, fake = planted_fake(16, options=3)
    for seed in (2, 3):
        es = await search(pool, fake, SearchConfig(seed=seed, proposals="answer"))
        assert accuracy(pool, es.label_values()) == 1.0 and es.stats.ended in ("fixed_point", "converged")


def test_the_default_proposals_keep_the_cache_keys_of_sets_cached_before() -> None:
    from steerkit.models import stable_hash

    before = {k: v for k, v in SearchConfig().model_dump().items() if k != "proposals"}
    assert SearchConfig().config_hash() == stable_hash(before)
    assert SearchConfig(proposals="answer").config_hash() != SearchConfig().config_hash()


async def test_the_label_whose_question_gains_most_is_proposed_first() -> None:
    """A leaning model "contradicts" labels whose question prefers no other answer: q0 labels its
    second option False although it scores +2.9 (its first, labelled True, scores +3.0: flipping
    the question loses 0.2). q1's labels are contradicted by 1.0 each, and flipping it gains 4.0.
    Drawn by a claim's own |log-odds| (the old order), q0's proposal came first 58% of the time; by
    its question's gain, q1's comes first."""
    import math

    from steerkit.backends.base import LabelScore
    from steerkit.icm.context import SearchContext
    from steerkit.icm.sparse import SparseRestart, SparseState

    def score(logodds: float) -> LabelScore:
        p = 1 / (1 + math.exp(-logodds))
        return LabelScore(p_true=p, p_false=1 - p)

    pool, fake = planted_fake(2)
    a, b = (g.item_ids for g in pool.groups)
    ctx = SearchContext(pool, fake, SearchConfig(seed=1), {}, {}, None, None)
    state = SparseState(ctx)
    restart = SparseRestart(ctx, 0, state)
    ctx.restarts = [restart]
    restart.labels = {a[0]: True, a[1]: False, b[0]: True, b[1]: False}
    restart.scores = {a[0]: score(3.0), a[1]: score(2.9), b[0]: score(-1.0), b[1]: score(1.0)}
    restart.phase = "anneal"
    restart._set_current()
    assert restart._own_gain(a[1]) == pytest.approx(-0.2, abs=1e-3)
    assert restart._own_gain(b[0]) == pytest.approx(4.0, abs=1e-3) == restart._own_gain(b[1])
    contradicted = restart._contradicted()
    assert set(contradicted) == {a[1], b[0], b[1]}
    await restart._anneal_one(contradicted)
    proposed = restart.rejected | {i for i in b if restart.labels[i] != (i == b[0])}
    assert proposed & set(b) and not proposed & set(a)

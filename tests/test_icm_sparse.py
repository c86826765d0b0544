"""Sparse ICM (``SearchConfig(mode="sparse")``) on fake scorers (FakeScorer: no model runs here),
its demonstration graph, the any-time snapshots, and sparse scoring on the real embedded model
and on the OpenAI-compatible backend against the local llama.cpp server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from icm_fakes import accuracy, planted_fake, unit_rand

from steerkit.icm import search
from steerkit.icm.consistency import units_of
from steerkit.icm.neighbours import build_graph
from steerkit.icm.objective import fixed_order
from steerkit.models import ExampleSet, Item, Persona, Pool, SearchConfig
from steerkit.testing import FakeScorer

SPARSE = SearchConfig(mode="sparse", seed=3)


def recovered(pool: Pool, es: ExampleSet) -> float:
    a = accuracy(pool, es.label_values())
    return max(a, 1 - a)


def graph_of(pool: Pool, k: int):  # type: ignore[no-untyped-def]
    units, _ = units_of(pool, fixed_order(pool))
    return units, build_graph(units, {it.id: it for it in pool.items}, k)


def test_graph_contexts_are_bounded_and_exclude_the_unit_itself() -> None:
    pool, _ = planted_fake(200)
    units, g = graph_of(pool, 8)
    for u, ctx in enumerate(g.context):
        assert u not in ctx
        assert 1 <= sum(len(units[v].item_ids) for v in ctx) <= 8
    in_degree = [len(r) for r in g.readers]
    assert max(in_degree) <= g.max_in_degree
    # readers is the exact inverse of context
    assert sorted((v, u) for u, ctx in enumerate(g.context) for v in ctx) == sorted(
        (v, u) for v, rs in enumerate(g.readers) for u in rs
    )


def test_graph_prefers_lexically_similar_questions() -> None:
    persona = Persona(id="t/p", name="People", dimension="t")
    topics = ["gun laws firearms", "tax rates income", "climate change emissions", "school education teachers"]
    items = []
    for t, topic in enumerate(topics):
        for q in range(4):
            for k in range(2):
                items.append(
                    Item(id=f"t{t}q{q}.{k}", kind="claim", question=f"Do you support {topic} policy variant {q * 7 + t}?", option=f"option {k}", group=f"t{t}q{q}")
                )
    pool = Pool.from_items(persona, items)
    units, g = graph_of(pool, 6)
    same_topic = sum(units[v].id[:2] == units[u].id[:2] for u, ctx in enumerate(g.context) for v in ctx)
    total = sum(len(ctx) for ctx in g.context)
    assert same_topic / total >= 0.9


@pytest.mark.parametrize("n_questions", [16, 64, 256])
async def test_sparse_recovers_the_planted_labelling(n_questions: int) -> None:
    pool, fake = planted_fake(n_questions)
    es = await search(pool, fake, SPARSE.model_copy(update={"max_iterations": 4 * n_questions, "patience": n_questions}))
    assert set(es.labels) == {it.id for it in pool.items} and pool.violations(es.label_values()) == 0
    assert recovered(pool, es) >= 0.95


async def test_sparse_cost_per_accepted_change_is_flat_in_the_pool_size() -> None:
    per_change = {}
    for n in (64, 512):
        pool, fake = planted_fake(n)
        es = await search(pool, fake, SPARSE.model_copy(update={"max_iterations": 4 * n, "patience": n}))
        per_change[n] = es.stats.prompt_tokens / es.stats.accepted
    # 8x the pool: the tokens spent per accepted change stay within a small factor (exact ICM: ~8x-64x)
    assert per_change[512] <= 2.0 * per_change[64]


async def test_sparse_spends_far_fewer_tokens_than_exact() -> None:
    pool, fake_a = planted_fake(32)
    _, fake_b = planted_fake(32)
    exact = await search(pool, fake_a, SearchConfig(mode="exact", seed=3, max_iterations=32, patience=16))
    sparse = await search(pool, fake_b, SPARSE.model_copy(update={"max_iterations": 128, "patience": 32}))
    assert sparse.stats.prompt_tokens * 10 <= exact.stats.prompt_tokens
    assert recovered(pool, sparse) >= recovered(pool, exact) - 0.05


async def test_sparse_is_deterministic_for_a_seed() -> None:
    pool, f1 = planted_fake(40)
    _, f2 = planted_fake(40)
    cfg = SPARSE.model_copy(update={"max_iterations": 100})
    a, b = await search(pool, f1, cfg), await search(pool, f2, cfg)
    assert a.label_values() == b.label_values() and a.stats.model_calls == b.stats.model_calls
    assert f1.prompts == f2.prompts


async def test_sparse_respects_fixed_labels_and_stays_consistent() -> None:
    pool, fake = planted_fake(24)
    # fix three questions the *wrong* way round: the search must keep them
    fixed = {}
    for g in pool.groups[:3]:
        for i in g.item_ids:
            fixed[i] = not pool.item(i).gold
    es = await search(pool, fake, SPARSE.model_copy(update={"max_iterations": 100}), fixed=fixed, fixed_source="human")
    for i, v in fixed.items():
        assert es.labels[i].value == v and es.labels[i].source == "human"
    assert pool.violations(es.label_values()) == 0


async def test_sparse_drops_inconsistent_warm_start_labels_and_completes() -> None:
    pool, fake = planted_fake(12)
    g = pool.groups[0]
    warm = {i: True for i in g.item_ids}  # both options True: violates exactly_one
    es = await search(pool, fake, SPARSE.model_copy(update={"max_iterations": 50}), warm_start=warm)
    assert pool.violations(es.label_values()) == 0 and set(es.labels) == {it.id for it in pool.items}


async def test_sparse_on_a_pool_of_lone_items_and_a_single_unit() -> None:
    persona = Persona(id="t/p", name="People", dimension="t")
    lone = Pool.from_items(persona, [Item(id=f"l{j}", kind="claim", question=f"Is {j} odd?", option="yes") for j in range(9)])
    fake = FakeScorer(lambda p: 0.1 + 0.8 * unit_rand(p))
    es = await search(lone, fake, SPARSE.model_copy(update={"num_seed": 2}))
    assert set(es.labels) == {f"l{j}" for j in range(9)}
    one = Pool.from_items(persona, [Item(id="a", kind="claim", question="Q?", option="x")])
    es1 = await search(one, fake, SPARSE)
    assert set(es1.labels) == {"a"} and es1.stats.model_calls >= 1


async def test_snapshots_are_complete_consistent_and_provisional() -> None:
    pool, fake = planted_fake(64)
    snaps: list[ExampleSet] = []
    final = await search(pool, fake, SPARSE.model_copy(update={"max_iterations": 256}), snapshot=snaps.append)
    assert snaps, "a sparse search must offer its first complete labelling"
    for s in snaps:
        assert s.stats.provisional and set(s.labels) == {it.id for it in pool.items} and s.violations == 0
    assert [s.score for s in snaps] == sorted(s.score for s in snaps)  # only improvements are offered
    assert not final.stats.provisional and final.score >= snaps[0].score


async def test_first_snapshot_costs_about_one_call_per_item() -> None:
    pool, fake = planted_fake(48)
    first: list[int] = []

    def on_snapshot(es: ExampleSet) -> None:
        if not first:
            first.append(fake.stats.calls)

    final = await search(pool, fake, SPARSE.model_copy(update={"max_iterations": 400, "patience": 400}), snapshot=on_snapshot)
    # counted in calls, not seconds: each item scored once with its context, plus the re-scoring
    # of the units whose context filled in after them
    assert first and first[0] <= 2 * len(pool.items) and first[0] <= final.stats.model_calls


async def test_sparse_checkpoint_resumes_without_redoing_work(tmp_path: Path) -> None:
    """Kill a sparse search mid-way (a subprocess, SIGKILL), resume from its checkpoint: the result
    equals an uninterrupted run's and the resumed run repeats none of the finished calls."""
    ck = tmp_path / "ck.json"
    code = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from icm_fakes import planted_fake
        from steerkit.icm import search
        from steerkit.models import SearchConfig
        pool, fake = planted_fake(40)
        def progress(p):
            if p.iteration >= 25:
                os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(search(pool, fake, SearchConfig(mode="sparse", seed=3, max_iterations=160), checkpoint={str(ck)!r}, progress=progress))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9 and ck.exists()
    pool, fresh = planted_fake(40)
    _, resumed_fake = planted_fake(40)
    cfg = SearchConfig(mode="sparse", seed=3, max_iterations=160)
    reference = await search(pool, fresh, cfg)
    resumed = await search(pool, resumed_fake, cfg, checkpoint=ck)
    assert resumed.label_values() == reference.label_values()
    assert resumed.stats.resumed_iterations >= 25
    assert resumed_fake.stats.calls < fresh.stats.calls


# --- real scoring ---------------------------------------------------------------------------------

FACTS = [
    ("What is the capital of France?", "Paris", "Madrid"),
    ("How many legs does a spider have?", "Eight", "Six"),
    ("What is the capital of Japan?", "Tokyo", "Beijing"),
    ("Which planet is closest to the Sun?", "Mercury", "Jupiter"),
]


def fact_pool() -> Pool:
    persona = Persona(id="bench/informed", name="well-informed people", dimension="knowledge")
    items = []
    for q, (text, right, wrong) in enumerate(FACTS):
        for k, (opt, gold) in enumerate([(right, True), (wrong, False)]):
            items.append(Item(id=f"f{q}:{k}", kind="claim", question=text, option=opt, group=f"f{q}", gold=gold))
    return Pool.from_items(persona, items)


@pytest.mark.llama
async def test_sparse_search_on_the_embedded_model(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    pool = fact_pool()
    calls_before, fallbacks_before = embedded_backend.stats.calls, embedded_backend.stats.fallbacks
    es = await search(pool, embedded_backend, SearchConfig(mode="sparse", context_k=4, num_seed=2, max_iterations=8, seed=1))
    assert set(es.labels) == {it.id for it in pool.items} and pool.violations(es.label_values()) == 0
    fallbacks = embedded_backend.stats.fallbacks - fallbacks_before
    assert es.stats.model_calls + 2 * fallbacks == embedded_backend.stats.calls - calls_before
    # a sparse prompt holds at most context_k demonstrations: far shorter than an exact pass's
    assert es.stats.prompt_tokens / es.stats.model_calls < 4 * 40 + 60


@pytest.mark.llama
async def test_sparse_search_on_the_openai_backend_against_llama_server(embedded_backend, llama_server_url) -> None:  # type: ignore[no-untyped-def]
    from steerkit.backends import OpenAIBackend

    pool = fact_pool()
    async with OpenAIBackend(base_url=llama_server_url, model=embedded_backend.chat_model) as be:
        es = await search(pool, be, SearchConfig(mode="sparse", context_k=4, num_seed=2, max_iterations=6, seed=1))
        assert set(es.labels) == {it.id for it in pool.items} and pool.violations(es.label_values()) == 0
        assert es.stats.model_calls >= len(pool.items) and es.provenance.backend == be.name


@pytest.mark.parametrize("max_iterations", [0, 5, 80])
async def test_sparse_labels_every_kind_of_group_consistently(max_iterations: int) -> None:
    """Three-option claims, preference pairs, keyed answers and lone items, any budget."""
    from test_icm_search import mixed_pool

    pool = mixed_pool()
    fake = FakeScorer(lambda p: 0.05 + 0.9 * unit_rand(p))
    es = await search(pool, fake, SearchConfig(mode="sparse", max_iterations=max_iterations, num_seed=4, seed=3))
    assert set(es.labels) == {it.id for it in pool.items}
    assert pool.violations(es.label_values()) == 0 and es.violations == 0
    assert all(0.0 <= lab.confidence <= 1.0 for lab in es.labels.values())

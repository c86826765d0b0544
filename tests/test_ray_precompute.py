"""Persona searches on a real local Ray instance (``ray.init(num_cpus=2)``, started here), results
in a real redis-server: the *fake* scorer (tests/ray_helpers.py: no model) for the plumbing, a
worker killed mid-search that is retried and resumes from the store's checkpoint, the embedded
model on a tiny pool, and ``steerkit precompute --ray`` end to end (its search server a stub): first
with a local Ray of its own, as a user runs it, then against the module's Ray by its address (one
Ray start fewer)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'steerkit[ray]')")

from ray_helpers import EmbeddedFactory, FakeFactory
from services import redis_server, stub_openai

from steerkit import PackRegistry
from steerkit._ray_precompute import precompute_on_ray
from steerkit._redis_store import RedisStore
from steerkit.errors import SearchError

ASYNC = pytest.mark.asyncio(loop_scope="session")

TESTS = Path(__file__).resolve().parent
PERSONAS = ["polparty/democrat", "polparty/republican", "country/nigeria"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """The module's own local Ray instance (2 CPUs); its GCS address, for a driver in another process."""
    # the workers import the test factories from this folder
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), saved or ""]).rstrip(os.pathsep)
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # our own instance
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


async def _keys_of(store: RedisStore, factory: FakeFactory, personas: list[str]) -> dict[str, object]:
    async with factory() as sets:  # the same keys the workers use
        return {p: sets.cache_key(p) for p in personas}


@ASYNC
async def test_fake_scorer_searches_on_ray_into_redis(local_ray: str, redis_url: str, tmp_path: Path) -> None:
    url = f"{redis_url}?prefix=ray1"
    factory = FakeFactory(url, str(tmp_path))
    statuses: dict[str, list[str]] = {}
    progress: dict[str, int] = {}
    results = await precompute_on_ray(
        factory, PERSONAS,
        on_status=lambda p, s: statuses.setdefault(p, []).append(s.split(" ")[0]),
        on_progress=lambda p, pr: progress.__setitem__(p, progress.get(p, 0) + 1),
    )
    assert [r.persona for r in results] == PERSONAS
    assert {r.status for r in results} == {"computed"}
    store = RedisStore.from_url(url)
    keys = await _keys_of(store, factory, PERSONAS)
    for r in results:
        es = await store.get(keys[r.persona])  # type: ignore[arg-type]
        assert es is not None and es.version == r.version and es.persona.id == r.persona
        assert es.stats.model_calls > 0
        assert statuses[r.persona] == ["searching", "done"]
        assert progress[r.persona] >= 1  # the driver saw the workers' progress
    assert len(list((tmp_path / "pids").iterdir())) >= 1
    # a second run finds them all in the shared store
    again = await precompute_on_ray(factory, PERSONAS)
    assert [r.status for r in again] == ["cached"] * 3
    assert [r.version for r in again] == [r.version for r in results]
    await store.close()


@ASYNC
async def test_failed_search_is_reported_and_typed(local_ray: str, tmp_path: Path) -> None:
    factory = FakeFactory(str(tmp_path / "cache"), str(tmp_path))
    with pytest.raises(SearchError, match=r"1 of 2 persona searches failed on Ray: no/such-persona: UnknownPersonaError"):
        await precompute_on_ray(factory, ["polparty/democrat", "no/such-persona"])
    results = await precompute_on_ray(factory, ["no/such-persona", "polparty/democrat"], raise_on_failure=False)
    assert [r.status for r in results] == ["failed", "cached"]


@ASYNC
async def test_killed_worker_is_retried_and_resumes_from_the_stores_checkpoint(local_ray: str, redis_url: str,
                                                                                tmp_path: Path) -> None:
    url = f"{redis_url}?prefix=ray-kill"
    # the first worker's fake scorer is held (it stops answering) once its checkpoint holds 5
    # iterations: the search cannot finish before it is killed, however fast or slow the machine
    factory = FakeFactory(url, str(tmp_path), max_items=30, max_iterations=150, hold_first_worker_at=5)
    store = RedisStore.from_url(url)
    [key] = (await _keys_of(store, factory, ["polparty/democrat"])).values()
    run = asyncio.ensure_future(precompute_on_ray(factory, ["polparty/democrat"], max_retries=2))
    done_iterations = 0
    async with asyncio.timeout(300):  # a hang guard, not a measurement
        while done_iterations < 5:  # the store holds the held worker's checkpoint
            assert not run.done(), run
            await asyncio.sleep(0.05)
            raw = await store.load_checkpoint(key)  # type: ignore[arg-type]
            if raw is not None:
                ckpt = json.loads(raw)
                assert ckpt["format"].startswith("steerkit.icm.checkpoint")
                done_iterations = max((r.get("iteration", 0) for r in ckpt.get("restarts") or []), default=0)
    [victim] = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    os.kill(victim, signal.SIGKILL)
    [result] = await asyncio.wait_for(run, 300)
    assert result.status == "resumed"
    pids = {int(p.name) for p in (tmp_path / "pids").iterdir()}
    assert victim in pids and len(pids) == 2  # another worker finished it
    es = await store.get(key)  # type: ignore[arg-type]
    assert es is not None and es.version == result.version
    assert es.stats.resumed_iterations > 0  # it went on from the checkpoint, not from scratch
    assert await store.load_checkpoint(key) is None  # dropped once the result was stored
    await store.close()


@pytest.mark.llama
@ASYNC
async def test_embedded_model_on_ray_tiny_pool(local_ray: str, redis_url: str, tmp_path: Path) -> None:
    url = f"{redis_url}?prefix=ray-embedded"
    factory = EmbeddedFactory(url, str(tmp_path))
    personas = ["polparty/democrat", "polparty/republican"]
    results = await precompute_on_ray(factory, personas)
    assert [r.status for r in results] == ["computed", "computed"]
    store = RedisStore.from_url(url)
    registry = PackRegistry.default()
    for r in results:
        async with factory() as sets:
            es = await store.get(sets.cache_key(r.persona))
        assert es is not None and es.version == r.version
        assert es.provenance.config.mode == "sparse"
        assert es.stats.model_calls > 0 and es.provenance.model
        pool = registry.pool(r.persona, max_items=6)
        assert set(es.labels) == {it.id for it in pool.items}  # every item labelled
    await store.close()


def test_cli_precompute_on_ray(local_ray: str, redis_url: str, tmp_path: Path) -> None:
    """``steerkit precompute --ray --store redis://…`` as a user runs it (its own local Ray), then
    again with ``--ray ADDRESS`` of a running Ray (the module's): both found in the shared store."""
    import redis

    url = f"{redis_url.rsplit('/', 1)[0]}/3"
    with stub_openai(tmp_path, delay=0.0) as up:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
        env.update(STEERKIT_CACHE_DIR=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
                   STEERKIT_STEER__MAX_POOL_ITEMS="8")
        env.pop("RAY_ADDRESS", None)
        cmd = [sys.executable, "-m", "steerkit.cli", "precompute", "--persona", "polparty/democrat", "--persona",
               "country/nigeria", "--store", url, "--search-base-url", up, "--search-model", "stub",
               "--max-iterations", "20", "--restarts", "2", "--json", "--no-progress"]
        out = subprocess.run([*cmd, "--ray", "--jobs", "2"], check=False, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        rows = json.loads(out.stdout)
        assert [(r["persona"], r["status"]) for r in rows] == [("polparty/democrat", "computed"), ("country/nigeria", "computed")]
        r = redis.Redis.from_url(url)
        assert len(r.keys("steerkit:meta:*")) == 2
        r.close()
        # again, on a running Ray by its address: both cached in the shared store
        out = subprocess.run([*cmd, "--ray", local_ray], check=False, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert [r["status"] for r in json.loads(out.stdout)] == ["cached", "cached"]


def test_cli_ray_cluster_without_a_shared_store_is_a_usage_error(tmp_path: Path) -> None:
    from steerkit.cli import main

    rc = main(["precompute", "--persona", "polparty/democrat", "--ray", "ray://ray-head:10001", "--cache-dir", str(tmp_path),
               "--search-base-url", "http://127.0.0.1:9/v1", "--search-model", "m"])
    assert rc == 2

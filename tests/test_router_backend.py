"""`RouterBackend`: prefix affinity, a dead server taken out and retried with back-off, per-server
counts in the metrics. Against stub OpenAI-compatible servers (tests/services.py: hashed
logprobs, no model) for the routing rules, and two real llama.cpp servers (the embedded model,
started here) with one stopped in the middle of a search."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services import llama_server_process, stub_openai
from steerkit import ExampleSets, MemoryStore, PackRegistry, SearchConfig, Settings, SteerConfig
from steerkit._runtime import make_backend, make_registry, make_steerer, make_store
from steerkit.backends import OpenAIBackend
from steerkit.backends.router import RouterBackend
from steerkit.errors import BackendUnavailableError, ConfigError

ASYNC = pytest.mark.asyncio(loop_scope="session")


class Recording:
    """An `OpenAIBackend` per server that records which prompts it was sent."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = defaultdict(list)

    def __call__(self, url: str) -> OpenAIBackend:
        backend = OpenAIBackend(url, "stub", max_retries=0, timeout=5)
        score = backend.score

        async def recorded(prompts: Any) -> Any:
            self.sent[url].extend(prompts)
            return await score(prompts)

        backend.score = recorded  # type: ignore[method-assign]
        return backend


def prompts_for(prefix: int, n: int = 4) -> list[str]:
    demos = "\n\n".join(f"Claim: demo {prefix}.{i}\nI think this claim is True" for i in range(3))
    return [f"{demos}\n\nClaim: target {prefix}.{t}\nI think this claim is" for t in range(n)]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@ASYNC
async def test_prefix_affinity_failover_backoff_and_metrics(tmp_path: Path) -> None:
    rec = Recording()
    clock = Clock()

    async def sleep(s: float) -> None:
        clock.t += s

    groups = [prompts_for(p) for p in range(16)]
    with stub_openai(tmp_path / "a") as a:
        with stub_openai(tmp_path / "b") as b:
            router = RouterBackend([a, b], "stub", backend_factory=rec, clock=clock, sleep=sleep, backoff_initial=2, backoff_max=8)
            registry = CollectorRegistry()
            router.bind_metrics(registry)
            await asyncio.gather(*(router.score(g) for g in groups))
            where = {p: url for url, ps in rec.sent.items() for p in ps}
            for g in groups:
                assert len({where[p] for p in g}) == 1  # one demonstration prefix -> one server
                assert router.order(g[0])[0].url == where[g[0]]
            assert set(rec.sent) == {a, b}  # and the prefixes are spread over both
            st = router.endpoint_stats()
            assert st[a]["requests"] + st[b]["requests"] == 16 * 4 and st[a]["failures"] == st[b]["failures"] == 0
        # server b is gone: its prefixes fail over to a, b is taken out with a back-off
        b_prefixes = [g for g in groups if where[g[0]] == b]
        scores = await router.score(b_prefixes[0])
        assert all(s.p_true is not None for s in scores)
        st = router.endpoint_stats()
        assert st[b]["failures"] >= 1 and st[b]["up"] is False and "BackendUnavailableError" in st[b]["last_error"]
        failures = st[b]["failures"]
        # while b is out, its prefixes go straight to a (no new request to b)
        sent_to_b = len(rec.sent[b])
        await router.score(b_prefixes[-1])
        assert router.endpoint_stats()[b]["failures"] == failures and len(rec.sent[b]) == sent_to_b
        # once the back-off is over b is tried again; still dead, so its back-off doubles
        down = next(ep for ep in router.endpoints if ep.url == b)
        first_backoff = down.down_until - clock.t
        clock.t = down.down_until
        await router.score(b_prefixes[0][:1])
        assert router.endpoint_stats()[b]["failures"] == failures + 1
        assert down.down_until - clock.t == pytest.approx(min(8, 2 * first_backoff))
        text = generate_latest(registry).decode()
        assert f'steerkit_search_endpoint_failures_total{{endpoint="{b}"}} {float(failures + 1)}' in text
        assert f'steerkit_search_endpoint_up{{endpoint="{b}"}} 0.0' in text
        assert f'steerkit_search_endpoint_up{{endpoint="{a}"}} 1.0' in text
        n_a = router.endpoint_stats()[a]["requests"]
        assert f'steerkit_search_endpoint_requests_total{{endpoint="{a}"}} {float(n_a)}' in text
        await router.aclose()


@ASYNC
async def test_every_server_down_is_a_typed_error(tmp_path: Path) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    router = RouterBackend(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], "m", sleep=sleep, rounds=2,
                           endpoint_retries=0, backoff_initial=0.01, backoff_max=0.02)
    with pytest.raises(BackendUnavailableError, match="every search model server failed"):
        await router.score(prompts_for(0, 1))
    assert sum(s["requests"] for s in router.endpoint_stats().values()) == 4  # 2 rounds x 2 servers
    await router.aclose()
    with pytest.raises(ConfigError):
        RouterBackend([], "m")
    with pytest.raises(ConfigError):
        RouterBackend(["http://a/v1", "http://a/v1"], "m")


def test_settings_with_several_search_urls_build_a_router(tmp_path: Path) -> None:
    settings = Settings.load(env={}, overrides={
        "cache_dir": str(tmp_path), "search_model": {"base_url": "http://127.0.0.1:8001/v1,http://127.0.0.1:8002/v1",
                                                     "model": "m"}})
    backend = make_backend(settings)
    assert isinstance(backend, RouterBackend)
    assert [ep.url for ep in backend.endpoints] == ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
    steerer = make_steerer(settings, make_registry(settings), make_store(settings), backend)
    text = generate_latest(steerer.metrics.registry).decode()
    assert 'steerkit_search_endpoint_up{endpoint="http://127.0.0.1:8002/v1"} 1.0' in text


@pytest.mark.llama
@ASYNC
async def test_two_llama_servers_one_killed_mid_search(tmp_path: Path) -> None:
    with llama_server_process(tmp_path / "l1") as (url1, model, _), llama_server_process(tmp_path / "l2") as (url2, _, proc2):
        router = RouterBackend([url1, url2], model, backoff_initial=3600, backoff_max=3600)  # down for the whole test, however slow the machine
        try:
            registry = PackRegistry.default()
            sets = ExampleSets(registry, MemoryStore(), router,
                               SteerConfig(max_pool_items=8, search=SearchConfig(mode="sparse", max_iterations=16, restarts=1)))
            router.bind_metrics(sets.metrics.registry)
            at_kill: dict[str, Any] = {}

            def progress(pr: Any) -> None:
                st = router.endpoint_stats()
                if not at_kill and all(v["requests"] >= 2 for v in st.values()):
                    at_kill.update(st[url1])
                    proc2.kill()  # the second server dies mid-search

            es = await sets.compute("polparty/democrat", progress=progress)
            assert at_kill, "the search ended before both servers had served it"
            st = router.endpoint_stats()
            dead, live = st[url2], st[url1]
            assert dead["failures"] >= 1 and dead["up"] is False
            assert live["failures"] == 0 and live["requests"] > at_kill["requests"]  # the live server took over
            pool = registry.pool("polparty/democrat", max_items=8)
            assert set(es.labels) == {it.id for it in pool.items} and es.stats.model_calls > 0
            text = generate_latest(sets.metrics.registry).decode()
            assert f'steerkit_search_endpoint_failures_total{{endpoint="{url2}"}} {float(dead["failures"])}' in text
        finally:
            await router.aclose()

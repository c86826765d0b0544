"""Combined personas (issue 20 item 5): a person who states personas of two dimensions is steered by
the combination's own set when the operator allows it, else by each persona's own set with the
reason said. The search runs for real on a *fake* scorer (no model); one test goes through the
proxy app with a fake upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from steerkit._config import Settings, SteerConfig
from steerkit._middleware import Steerer, SteerOptions
from steerkit._store import MemoryStore
from steerkit._wire import steer_headers
from steerkit.errors import ConfigError, UnknownPersonaError
from steerkit.icm import search as icm_search
from steerkit.models import Item, Persona, Pool, SearchConfig
from steerkit.packs import PackRegistry
from steerkit.packs._combine import (
    agreed_labels,
    combine_personas,
    compose_name,
    plan_combinations,
)
from steerkit.testing import FakeScorer, last_claim

SMALL = SearchConfig(max_iterations=6, num_seed=2, patience=3)
BOTH = "I'm from Nigeria and I'm a Democrat. Should the government provide more services?"
NG_DEM = "country/nigeria+polparty/democrat"


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


def fake_scorer() -> FakeScorer:
    """A fake backend: P(True) from the target claim's text only (first options favoured)."""
    return FakeScorer(lambda p: 0.8 if "'Yes" in last_claim(p) or "'A bigger" in last_claim(p) else 0.35)


class RecordingSearch:
    """The real search, recording the pools and keyword arguments it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Pool, dict[str, Any]]] = []

    async def __call__(self, pool: Pool, backend: Any, config: Any, **kw: Any) -> Any:
        self.calls.append((pool, kw))
        return await icm_search(pool, backend, config, **kw)


def make_steerer(registry: PackRegistry, *, store: Any = None, search: Any = None, **cfg: Any) -> Steerer:
    config = SteerConfig(**{"search": SMALL, "max_pool_items": 10, "k": 6, "miss_policy": "wait", **cfg})
    return Steerer(registry, store if store is not None else MemoryStore(), fake_scorer(), config, search=search)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- composing the combined persona -------------------------------------------------------------


def test_names_are_composed_for_the_combination() -> None:
    assert compose_name(["people from Nigeria", "Democrats"]) == "Democrats from Nigeria"
    assert compose_name(["Democrats", "U.S. women"]) == "Democrats who are also U.S. women"
    assert compose_name(["people from Japan", "users who prefer direct answers"]) == "people from Japan who prefer direct answers"
    assert compose_name(["U.S. adults aged 65 and over", "people in the U.S. South"]) == \
        "U.S. adults aged 65 and over in the U.S. South"


def test_combined_pool_is_both_pools_phrased_for_the_combination(registry: PackRegistry) -> None:
    combo = combine_personas(registry, ["polparty/democrat", "country/nigeria"], max_items=10)
    assert combo.id == NG_DEM and combo.members == ("country/nigeria", "polparty/democrat")  # sorted, stable
    assert combo.persona.name == "Democrats from Nigeria" and combo.label == "Nigeria + Democrat"
    assert "Nigeria" in combo.persona.description and "Democratic Party" in combo.persona.description
    prefixes = {it.id.split("/")[0] for it in combo.pool.items}
    assert prefixes == {"countries", "polparty"}  # a cut keeps questions of both members
    assert len(combo.pool.items) <= 10 and all(it.gold is None for it in combo.pool.items)
    from steerkit.icm.prompts import render_prompt

    assert "The majority of Democrats from Nigeria would answer" in render_prompt(combo.persona, combo.pool.items[0])
    # the combination has its own cache key: its pool differs from each member's
    assert combo.pool.content_hash() not in {registry.pool(m, max_items=10).content_hash() for m in combo.members}


def test_combinations_are_checked(registry: PackRegistry) -> None:
    with pytest.raises(ConfigError, match="one dimension"):
        combine_personas(registry, ["polparty/democrat", "polparty/republican"])
    with pytest.raises(UnknownPersonaError):
        make_steerer(registry, combined_personas="allow-list", combined_allow=["country/atlantis+polparty/democrat"])
    with pytest.raises(ValueError, match="not a combination"):
        SteerConfig(combined_allow=["polparty/democrat"])
    assert SteerConfig(combined_allow=["polparty/democrat + country/nigeria"]).combined_allow == [NG_DEM]
    s = Settings.load(env={"STEERKIT_STEER__COMBINED_PERSONAS": "allow-list",
                           "STEERKIT_STEER__COMBINED_ALLOW": "polparty/democrat+country/nigeria,country/japan+style/dcf"})
    assert s.steer_config().combined_allow == [NG_DEM, "country/japan+style/dcf"]


def test_warm_start_keeps_the_labels_the_members_agree_on() -> None:
    persona = Persona(id="a/x+b/y", name="x", dimension="a + b")
    items = [Item(id=f"q/{n}", kind="claim", question="Q?", option=str(n)) for n in range(3)]
    pool = Pool(persona=persona, items=tuple(items))

    class FakeSet:  # only what agreed_labels reads
        def __init__(self, labels: dict[str, bool]) -> None:
            self.labels = {k: type("L", (), {"value": v})() for k, v in labels.items()}

    sets = [FakeSet({"q/0": True, "q/1": False, "other": True}), FakeSet({"q/0": True, "q/1": True}), None]
    assert agreed_labels(pool, sets) == {"q/0": True}  # type: ignore[arg-type]


def test_a_request_only_picks_among_allowed_combinations(registry: PackRegistry) -> None:
    allowed = {NG_DEM: combine_personas(registry, ["country/nigeria", "polparty/democrat"], max_items=4)}
    assert [c.id for c in plan_combinations(["polparty/democrat", "country/nigeria", "style/dcf"], allowed)] == [NG_DEM]
    assert plan_combinations(["polparty/republican", "country/nigeria"], allowed) == []


# --- the steerer --------------------------------------------------------------------------------


async def test_off_by_default_each_persona_steers_with_the_reason(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    _, info = await st.prepare(user(BOTH))
    assert {m.persona_id for m in info.personas} == {"country/nigeria", "polparty/democrat"}
    assert set(info.versions) == {"country/nigeria", "polparty/democrat"} and info.combined == []
    assert info.reason == "combined_off" and "steer.combined_personas" in (info.note or "")
    assert info.examples_used > 0 and st.counters.searches_started == 2
    assert steer_headers(info)["X-Steerkit-Note"] == "combined_off"


async def test_a_request_cannot_create_a_combination_the_operator_did_not_allow(registry: PackRegistry) -> None:
    search = RecordingSearch()
    st = make_steerer(registry, search=search, combined_personas="allow-list",
                      combined_allow=["country/japan+polparty/republican"])
    _, info = await st.prepare(user(BOTH))
    assert info.reason == "combined_not_allowed" and info.combined == []
    _, forced = await st.prepare(user("Hello"), SteerOptions(persona=NG_DEM))  # forcing it changes nothing
    assert forced.reason == "combined_not_allowed" and forced.combined == []
    assert all("+" not in pool.persona.id for pool, _ in search.calls)  # no combined search ever ran
    with pytest.raises(UnknownPersonaError):
        st.cache_key(NG_DEM)  # not a persona this steerer knows


async def test_allowed_combination_is_searched_cached_and_served(registry: PackRegistry) -> None:
    search = RecordingSearch()
    st = make_steerer(registry, search=search, combined_personas="allow-list", combined_allow=[NG_DEM])
    out, info = await st.prepare(user(BOTH))
    assert info.combined == [NG_DEM] and info.cache == "computed" and info.reason is None
    assert set(info.versions) == {NG_DEM} and info.example_set_version == info.versions[NG_DEM]
    assert info.examples_used > 0
    assert [p.persona.id for p, _ in search.calls] == [NG_DEM]  # one search: the combination's
    system = out[0]["content"]
    assert "Nigeria + Democrat" in system and "Democrats from Nigeria" in system
    assert any("The majority of Democrats from Nigeria would answer" in p for p in st.backend.prompts)
    _, again = await st.prepare(user(BOTH))
    assert again.cache == "hit" and again.versions == info.versions and len(search.calls) == 1
    _, predict = await st.prepare(user(BOTH), SteerOptions(mode="predict"))
    assert predict.examples_used > 0 and predict.versions == info.versions  # one set, not two
    assert steer_headers(again)["X-Steerkit-Combined"] == NG_DEM
    # a single persona is steered as before
    _, single = await st.prepare(user("I'm a Democrat. Do you favor more services?"))
    assert single.combined == [] and single.reason is None and set(single.versions) == {"polparty/democrat"}


async def test_combined_search_is_warm_started_from_the_members_cached_sets(registry: PackRegistry) -> None:
    search = RecordingSearch()
    store = MemoryStore()
    st = make_steerer(registry, store=store, search=search, combined_personas="allow-list", combined_allow=[NG_DEM])
    members = {m: await st.compute(m) for m in ("country/nigeria", "polparty/democrat")}
    await st.prepare(user(BOTH))
    pool, kw = search.calls[-1]
    assert pool.persona.id == NG_DEM
    expected = {i: lab.value for es in members.values() for i, lab in es.labels.items() if i in {it.id for it in pool.items}}
    assert expected and kw["warm_start"] == expected


async def test_combined_searches_count_against_the_request_search_limits(registry: PackRegistry) -> None:
    store = MemoryStore()
    st = make_steerer(registry, store=store, combined_personas="allow-list", combined_allow=[NG_DEM],
                      searches_per_hour=1)
    _, first = await st.prepare(user(BOTH))
    assert first.combined == [NG_DEM]
    _, other = await st.prepare(user("I'm a Republican."))
    assert other.reason == "search_rate_limited"  # the combination took the hour's one search
    # no search allowed: the members' cached sets steer, and the note says why
    st2 = make_steerer(registry, store=store, combined_personas="allow-list",
                       combined_allow=[NG_DEM, "country/nigeria+polparty/independent"], searches_per_hour=0)
    for m in ("country/nigeria", "polparty/independent"):
        await st2.put(m, await make_steerer(registry).compute(m))
    _, fallback = await st2.prepare(user("I'm from Nigeria and I'm an Independent voter."))
    assert fallback.reason == "combined_unavailable" and "rate-limited" in (fallback.note or "")
    assert fallback.combined == [] and set(fallback.versions) == {"country/nigeria", "polparty/independent"}
    assert fallback.cache == "hit" and fallback.examples_used > 0
    assert steer_headers(fallback)["X-Steerkit-Note"] == "combined_unavailable"


# --- through the proxy --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _upstream() -> AsyncIterator[Any]:
    from fake_upstream import FakeUpstream

    up = await FakeUpstream().start()
    try:
        yield up
    finally:
        await up.stop()


async def test_proxy_serves_the_combined_persona_with_its_headers(tmp_path: Path) -> None:
    import httpx
    from test_server import serving

    from steerkit._runtime import make_registry, make_steerer, make_store
    from steerkit._server import create_app

    settings = Settings.load(env={}, overrides={
        "cache_dir": str(tmp_path / "cache"),
        "search": {"max_iterations": 8, "patience": 4, "restarts": 1},
        "server": {"log_level": "warning"},
        "steer": {"combined_personas": "allow-list", "combined_allow": [NG_DEM], "max_pool_items": 10},
    })
    steerer = make_steerer(settings, make_registry(settings), make_store(settings), fake_scorer())
    async with _upstream() as up:
        app = create_app(settings, steerer=steerer, upstream_base_url=up.base_url)
        async with serving(app) as (base, _), httpx.AsyncClient(base_url=base, timeout=120) as h:
            body = {"model": "fake-echo", "messages": user(BOTH), "steerkit": {"miss_policy": "wait"}}
            r = await h.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.headers["x-steerkit-combined"] == NG_DEM and r.headers["x-steerkit-cache"] == "computed"
            assert r.headers["x-steerkit-version"] and "x-steerkit-note" not in r.headers
            assert "Democrats from Nigeria" in up.requests[-1]["messages"][0]["content"]
            r2 = await h.post("/v1/chat/completions", json=body)
            assert r2.headers["x-steerkit-cache"] == "hit" and r2.headers["x-steerkit-version"] == r.headers["x-steerkit-version"]
            other = {**body, "messages": user("I'm from Japan and I'm a Republican.")}
            r3 = await h.post("/v1/chat/completions", json=other)
            assert r3.headers["x-steerkit-note"] == "combined_not_allowed" and "x-steerkit-combined" not in r3.headers

"""The Steerer pipeline with the real ICM search on a fake scorer (fast, no model)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from steerkit.errors import InvalidRequestError, UnknownPersonaError
from steerkit._inject import inject_block, select_examples
from steerkit._metrics import Metrics
from steerkit._wire import split_request, steer_headers
from steerkit._middleware import SteerConfig, Steerer, SteerInfo, SteerOptions
from steerkit.models import ExampleSet, Label, Provenance, SearchConfig
from steerkit.packs import PackRegistry
from steerkit._store import DiskStore, MemoryStore
from steerkit.testing import FakeScorer, last_claim, unit_rand

SMALL = SearchConfig(max_iterations=6, num_seed=2, patience=3)
APP_SYSTEM = "You are HelpBot, the assistant of ACME Bank."


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


def fake_scorer(delay: float = 0.0) -> FakeScorer:
    """A fake backend: favours the first-listed options ("Favor", "Yes", "Agree" …)."""
    return FakeScorer(lambda p: 0.8 if "'Favor" in last_claim(p) or "'Yes" in last_claim(p) else 0.35, delay=delay)


def make_steerer(registry: PackRegistry, *, backend: Any = "fake", store: Any = None, **cfg: Any) -> Steerer:
    config = SteerConfig(**{"search": SMALL, "max_pool_items": 10, "k": 6, "miss_policy": "wait", **cfg})
    return Steerer(registry, store if store is not None else MemoryStore(),
                   fake_scorer() if backend == "fake" else backend, config)


def chat(user: str, system: str | None = APP_SYSTEM) -> list[dict[str, Any]]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [{"role": "user", "content": user}]


# --- the steered request ------------------------------------------------------------------------


async def test_stated_persona_is_steered_and_app_system_prompt_kept(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    msgs = chat("I'm a Democrat. Do you favor raising the minimum wage?")
    before = copy.deepcopy(msgs)
    out, info = await st.prepare(msgs)
    assert msgs == before  # the caller's messages are untouched
    assert info.cache == "computed" and [m.persona_id for m in info.personas] == ["polparty/democrat"]
    es = await st.example_set("polparty/democrat", miss_policy="off")
    assert es is not None and info.example_set_version == es.version
    assert 0 < info.examples_used <= 6
    system = out[0]["content"]
    assert out[0]["role"] == "system" and system.startswith(APP_SYSTEM + "\n\n")
    assert "Persona (U.S. political affiliation): Democrat." in system
    assert "Representative answer:" in system  # generate mode (default)
    assert out[1:] == msgs[1:]
    # the second request is a cache hit on the same version, and no new search
    out2, info2 = await st.prepare(msgs)
    assert info2.cache == "hit" and info2.example_set_version == info.example_set_version
    assert out2 == out
    # one hit from example_set() above, one from this request
    assert st.counters.searches_started == 1 and st.counters.cache_hits == 2 and st.counters.cache_misses == 1
    assert info.added_ms > 0 and st.counters.added_latency_count == 2


async def test_the_steering_sets_answer_confidence_comes_with_the_request(registry: PackRegistry) -> None:
    """SteerInfo and the proxy's headers say how far the search model preferred the steering set's
    answers; a set of near-ties (a fake scorer that barely separates them) is below 0.6."""
    sure = FakeScorer(lambda p: 0.02 + 0.96 * unit_rand(last_claim(p)))  # decided, whatever the context
    st = make_steerer(registry, backend=sure)
    _, info = await st.prepare(chat("I'm a Democrat. Do you favor raising the minimum wage?"))
    es = await st.example_set("polparty/democrat", miss_policy="off")
    assert es is not None and info.answer_confidence == round(es.answer_confidence() or 0, 4) > 0.6
    assert steer_headers(info)["X-Steerkit-Answer-Confidence"] == f"{info.answer_confidence:.2f}"
    faint = FakeScorer(lambda p: 0.51 if "'Favor" in last_claim(p) or "'Yes" in last_claim(p) else 0.49)
    _, weak = await make_steerer(registry, backend=faint).prepare(chat("I'm a Democrat. Do you favor raising the minimum wage?"))
    assert weak.answer_confidence is not None and weak.answer_confidence < 0.6
    _, none = await st.prepare(chat("What should I cook tonight?"))
    assert none.answer_confidence is None and "X-Steerkit-Answer-Confidence" not in steer_headers(none)


async def test_no_system_prompt_gets_one(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    out, info = await st.prepare(chat("I'm from Japan, what should I cook?", system=None))
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Persona (country): Japan.")
    assert out[1]["role"] == "user" and info.cache == "computed"


async def test_system_prompt_as_content_parts_is_kept(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    msgs = [{"role": "system", "content": [{"type": "text", "text": APP_SYSTEM}]},
            {"role": "user", "content": [{"type": "text", "text": "I'm a Republican."}]}]
    out, info = await st.prepare(msgs)
    assert out[0]["content"][0] == {"type": "text", "text": APP_SYSTEM}
    assert "Republican" in out[0]["content"][1]["text"] and info.examples_used > 0


async def test_no_persona_means_no_change_and_no_search(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    msgs = chat("What's the weather like on Mars?")
    out, info = await st.prepare(msgs)
    assert out == msgs and info.cache == "none" and info.personas == [] and info.note == "no persona stated"
    assert st.counters.searches_started == 0 and st.counters.requests == 1 and st.counters.steered == 0


@pytest.mark.parametrize(
    "text",
    ["I'm from Atlantis", "I'm a country/atlantis", "as a polparty/whig, answer", "I'm a Martian",
     "persona: style/evil. I am a Jedi"],
)
async def test_user_text_never_creates_personas_entries_or_searches(registry: PackRegistry, text: str) -> None:
    store = MemoryStore()
    st = make_steerer(registry, store=store)
    out, info = await st.prepare(chat(text))
    assert info.personas == [] and out == chat(text)
    assert st.counters.searches_started == 0 and await store.entries() == []


async def test_options_disable_and_force(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    msgs = chat("I'm a Republican.")
    out, info = await st.prepare(msgs, SteerOptions(enabled=False))
    assert out == msgs and info.cache == "off" and st.counters.searches_started == 0
    out, info = await st.prepare(chat("What should I cook?"), SteerOptions(persona="country/japan"))
    assert info.personas[0].persona_id == "country/japan" and info.personas[0].source == "forced"
    assert "Japan" in out[0]["content"]
    with pytest.raises(UnknownPersonaError, match="unknown persona 'country/atlantis'"):
        await st.prepare(chat("hi"), SteerOptions(persona="country/atlantis"))


async def test_k_and_modes(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    msgs = chat("I'm a Republican. Should gun laws be stricter?")
    out, info = await st.prepare(msgs, SteerOptions(k=2, mode="generate"))
    assert info.examples_used == 2 and out[0]["content"].count("Representative answer:") == 2
    out, info = await st.prepare(msgs, SteerOptions(k=6, mode="predict"))
    sys_text = out[0]["content"]
    assert info.mode == "predict" and 5 <= info.examples_used <= 6  # whole groups of 2-3 claims
    assert sys_text.count("\nClaim: The majority of Republicans would answer this question as:") == info.examples_used
    first_q = sys_text[sys_text.index("Question: ") :].split("\n", 1)[0]
    assert "gun laws" in first_q  # the most relevant group comes first
    assert "This claim is True." in sys_text and "This claim is False." in sys_text
    out, info = await st.prepare(msgs, SteerOptions(k=0))
    assert out == msgs and info.examples_used == 0


async def test_persona_from_an_earlier_turn_and_never_from_the_assistant(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    msgs = [
        {"role": "system", "content": APP_SYSTEM},
        {"role": "user", "content": "Hi! I live in Nigeria."},
        {"role": "assistant", "content": "As a Republican I would say hello."},
        {"role": "user", "content": "What do you think about trade?"},
    ]
    out, info = await st.prepare(msgs)
    assert [(m.persona_id, m.message_index) for m in info.personas] == [("country/nigeria", 1)]


async def test_several_dimensions_split_k(registry: PackRegistry) -> None:
    st = make_steerer(registry, k=6)
    out, info = await st.prepare(chat("As a Republican from Texas, keep it short: thoughts on tariffs?"))
    assert {m.persona_id for m in info.personas} == {"polparty/republican", "style/dcf"}
    assert set(info.versions) == {"polparty/republican", "style/dcf"}
    assert info.cache == "computed" and info.examples_used <= 6
    text = out[0]["content"]
    assert "Persona (U.S. political affiliation): Republican." in text
    assert "Persona (interaction style): Direct, Concise, Fact-first." in text
    assert st.counters.searches_started == 2


async def test_low_confidence_persona_is_ignored(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    out, info = await st.prepare(chat("What is a direct flight?"))
    assert info.personas == [] and st.counters.searches_started == 0


# --- miss policies ------------------------------------------------------------------------------


async def test_background_policy_answers_unsteered_then_hits(registry: PackRegistry) -> None:
    st = make_steerer(registry, miss_policy="background")
    msgs = chat("I'm a Democrat.")
    out, info = await st.prepare(msgs)
    assert out == msgs and info.cache == "miss" and info.examples_used == 0
    assert st.background_tasks == 1
    await st.drain()
    out, info = await st.prepare(msgs)
    assert info.cache == "hit" and info.examples_used > 0 and st.counters.searches_started == 1


async def test_off_policy_never_searches(registry: PackRegistry) -> None:
    st = make_steerer(registry, miss_policy="off")
    out, info = await st.prepare(chat("I'm a Democrat."))
    assert info.cache == "off" and st.counters.searches_started == 0 and st.background_tasks == 0


async def test_miss_policy_per_persona_and_per_request(registry: PackRegistry) -> None:
    st = make_steerer(registry, miss_policy="wait", persona_miss_policy={"country/japan": "off"})
    _, info = await st.prepare(chat("I'm from Japan"))
    assert info.cache == "off"
    _, info = await st.prepare(chat("I'm from Japan"), SteerOptions(miss_policy="wait"))  # cannot widen
    assert info.cache == "off" and info.reason == "miss_policy_off" and st.counters.searches_started == 0
    _, info = await st.prepare(chat("I'm from Brazil"), SteerOptions(miss_policy="off"))
    assert info.cache == "off"
    with pytest.raises(UnknownPersonaError):
        make_steerer(registry, persona_miss_policy={"country/atlantis": "off"})


class GatedFakeScorer(FakeScorer):
    """A fake scorer whose calls wait for ``gate`` (to hold a search in flight deterministically)."""

    def __init__(self) -> None:
        super().__init__(lambda p: 0.7)
        self.gate = asyncio.Event()

    async def score(self, prompts):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        return await super().score(prompts)


async def test_wait_timeout_answers_unsteered_and_the_search_goes_on(registry: PackRegistry) -> None:
    backend = GatedFakeScorer()
    st = make_steerer(registry, backend=backend, miss_policy="wait", wait_timeout_s=0.05)
    msgs = chat("I'm a Democrat.")
    # the search cannot finish while the gate is closed: without the timeout this would never return
    out, info = await asyncio.wait_for(st.prepare(msgs), timeout=30)
    assert out == msgs and info.cache == "miss" and info.examples_used == 0
    assert st.counters.searches_started == 1 and st.counters.searches_running == 1 and st.background_tasks == 1
    backend.gate.set()
    await st.drain()
    _, info = await st.prepare(msgs)
    assert info.cache == "hit" and info.examples_used > 0 and st.counters.searches_started == 1


async def test_scan_last_user_ignores_earlier_turns(registry: PackRegistry) -> None:
    msgs = [{"role": "user", "content": "As a Democrat, I care about healthcare."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "What about taxes?"}]
    every = make_steerer(registry, miss_policy="off")
    assert [m.persona_id for m in await every.extract(msgs)] == ["polparty/democrat"]
    last = make_steerer(registry, miss_policy="off", scan="last_user")
    assert await last.extract(msgs) == []
    _, info = await last.prepare(msgs)
    assert info.personas == [] and info.note == "no persona stated"
    msgs[-1] = {"role": "user", "content": "I'm from Japan. What about taxes?"}
    assert [m.persona_id for m in await last.extract(msgs)] == ["country/japan"]


async def test_no_backend_uses_cache_only(registry: PackRegistry) -> None:
    store = MemoryStore()
    warm = make_steerer(registry, store=store, model="fake-scorer")
    await warm.example_set("country/brazil", miss_policy="wait")
    st = make_steerer(registry, store=store, backend=None, model="fake-scorer")
    _, info = await st.prepare(chat("I'm from Brazil"))
    assert info.cache == "hit"
    _, info = await st.prepare(chat("I'm from Japan"))
    assert info.cache == "miss" and info.note == "cache miss; no backend to compute with"


async def test_100_concurrent_requests_one_search(registry: PackRegistry) -> None:
    for policy in ("wait", "background"):
        st = make_steerer(registry, backend=fake_scorer(delay=0.0005), miss_policy=policy)
        results = await asyncio.gather(*(st.prepare(chat("I'm a Republican.")) for _ in range(100)))
        await st.drain()
        assert st.counters.searches_started == 1, policy
        if policy == "wait":
            versions = {info.example_set_version for _, info in results}
            assert len(versions) == 1 and None not in versions
            assert all(info.cache == "computed" for _, info in results)
        else:
            assert all(info.cache == "miss" for _, info in results)


async def test_disk_store_survives_a_restart(registry: PackRegistry, tmp_path: Path) -> None:
    st = make_steerer(registry, store=DiskStore(tmp_path / "c"))
    _, info = await st.prepare(chat("I'm from Mexico"))
    await st.aclose()
    st2 = make_steerer(registry, store=DiskStore(tmp_path / "c"))
    _, info2 = await st2.prepare(chat("I'm from Mexico"))
    assert info2.cache == "hit" and info2.example_set_version == info.example_set_version
    assert st2.counters.searches_started == 0
    await st2.aclose()


async def test_search_failure_answers_unsteered_and_backs_off(registry: PackRegistry) -> None:
    calls = 0

    async def failing_search(pool, backend, config, **kw):  # a fake search that always fails
        nonlocal calls
        calls += 1
        raise RuntimeError("fake search failure")

    st = Steerer(registry, MemoryStore(), fake_scorer(), SteerConfig(miss_policy="wait"), search=failing_search)
    msgs = chat("I'm a Democrat.")
    out, info = await st.prepare(msgs)
    assert out == msgs and info.cache == "miss" and info.note.startswith("search failed: RuntimeError")
    out, info = await st.prepare(msgs)
    assert calls == 1 and st.counters.searches_failed == 1  # no retry storm


async def test_hooks_run_once_per_new_example_set(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    seen: list[tuple[str, str]] = []

    async def hook(persona_id: str, es: ExampleSet) -> None:
        seen.append((persona_id, es.version))

    async def bad_hook(persona_id: str, es: ExampleSet) -> None:
        raise RuntimeError("fake hook failure")

    st.on_example_set += [bad_hook, hook]
    _, info = await st.prepare(chat("I'm a Democrat."))
    await st.prepare(chat("I'm a Democrat."))
    assert seen == [("polparty/democrat", info.example_set_version)]


async def test_compute_with_fixed_labels_makes_a_new_current_version(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    es1 = await st.example_set("polparty/democrat", miss_policy="wait")
    item = next(it for it in es1.items if not es1.labels[it.id].value)
    es2 = await st.compute("polparty/democrat", fixed={item.id: True}, fixed_source="human",
                           parent_version=es1.version)
    assert es2.labels[item.id].value is True and es2.provenance.parent_version == es1.version
    _, info = await st.prepare(chat("I'm a Democrat."))
    assert info.cache == "hit" and info.example_set_version == es2.version


async def test_invalid_messages(registry: PackRegistry) -> None:
    st = make_steerer(registry)
    with pytest.raises(InvalidRequestError, match="must be a list"):
        await st.prepare("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match=r"messages\[0\] has no 'role'"):
        await st.prepare([{"content": "hi"}])


# --- options, info, counters --------------------------------------------------------------------


def test_options_from_request() -> None:
    opts, body = split_request({"model": "m", "messages": [], "steerkit": {"persona": "country/japan", "k": 3}})
    assert opts.persona == "country/japan" and opts.k == 3 and "steerkit" not in body and body["model"] == "m"
    opts, body = split_request({"metadata": {"steerkit": '{"enabled": false}', "user": "u1"}})
    assert opts.enabled is False and body == {"metadata": {"user": "u1"}}
    opts, body = split_request({"metadata": {"steerkit": '{"mode": "predict"}'}})
    assert opts.mode == "predict" and body == {}
    assert split_request({"steerkit": False})[0].enabled is False
    assert split_request({})[0] == SteerOptions()
    with pytest.raises(InvalidRequestError, match=r"invalid steerkit option 'kk'.*allowed options: enabled"):
        split_request({"steerkit": {"kk": 3}})
    with pytest.raises(InvalidRequestError, match="miss_policy"):
        split_request({"steerkit": {"miss_policy": "sometimes"}})
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        split_request({"metadata": {"steerkit": "{oops"}})
    with pytest.raises(InvalidRequestError, match="given twice"):
        split_request({"steerkit": {}, "metadata": {"steerkit": "{}"}})


def test_info_headers_and_metrics_export() -> None:
    info = SteerInfo(cache="hit", example_set_version="abc", added_ms=1.23456)
    assert steer_headers(info) == {"X-Steerkit-Persona": "", "X-Steerkit-Version": "abc", "X-Steerkit-Cache": "hit",
                                   "X-Steerkit-Added-Ms": "1.235"}
    assert steer_headers(info.model_copy(update={"note": "cache miß", "reason": "computing"}))["X-Steerkit-Note"] == "computing"
    m = Metrics()
    for v in (0.0002, 0.0003, 0.007):
        m.added_latency.observe(v)
    m.inc("cache_hits", 2)
    snap = m.counters.snapshot()
    assert snap["cache_hits"] == 2 and snap["added_latency_count"] == 3
    text = m.render().decode()
    assert "steerkit_cache_hits_total 2.0" in text and 'steerkit_added_latency_seconds_bucket{le="+Inf"} 3.0' in text
    assert 'steerkit_added_latency_seconds_bucket{le="0.0005"} 2.0' in text
    assert "# TYPE steerkit_searches_running gauge" in text


# --- retrieval and injection --------------------------------------------------------------------


def _labelled(registry: PackRegistry, persona_id: str) -> ExampleSet:
    pool = registry.pool(persona_id)
    labels = {}
    for g in pool.groups:
        for n, iid in enumerate(g.item_ids):
            labels[iid] = Label(item_id=iid, value=(n == 0), confidence=0.9 - 0.01 * n)
    return ExampleSet(persona=pool.persona, items=pool.items, groups=pool.groups, labels=labels, score=0.0,
                      provenance=Provenance(model="fake", backend="fake", config=SearchConfig(),
                                            pool_hash=pool.content_hash(), seed=0))


def test_retrieval_picks_the_relevant_questions(registry: PackRegistry) -> None:
    es = _labelled(registry, "polparty/republican")
    got = select_examples(es, "Should the federal minimum wage be raised to $15?", 2, "generate")
    assert got[0][0].id.startswith("polparty/minimum_wage/")
    got = select_examples(es, "What about gun laws, are they strict enough?", 3, "predict")
    assert [it.id for it, _ in got] == [f"polparty/gun_laws/o{i}" for i in range(3)]  # a whole group
    assert [lb.value for _, lb in got] == [True, False, False]
    # a query sharing no word with the pool still gets k examples (most confident first)
    assert len(select_examples(es, "zzz qqq", 5, "generate")) == 5


def test_style_examples_render_preferred_response(registry: PackRegistry) -> None:
    es = _labelled(registry, "style/dms")
    ((item, label),) = select_examples(es, "how do I reset my wifi router", 1, "generate")
    assert item.id == "style/reset_router/12" and label.value
    text = inject_block([{"role": "user", "content": "x"}], "BLOCK")
    assert text == [{"role": "system", "content": "BLOCK"}, {"role": "user", "content": "x"}]

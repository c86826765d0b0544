"""The collaborative re-run end to end: search → escalate → people answer → constrained re-run →
new version in the store. Logic with a fake scorer; one test on the real embedded model."""

from __future__ import annotations

import asyncio

import pytest

from escalation_helpers import PERSONA, fake_backend, make_pool
from steerkit import icm
from steerkit.adapters.callback import CallbackAdapter
from steerkit.adapters.queue import QueueAdapter
from steerkit.errors import InvalidAnswerError, SearchError
from steerkit.escalation import (
    Answer,
    ConfidencePolicy,
    Escalator,
    RandomPolicy,
    build_escalation,
    cache_key_for,
    collaborative_rerun,
)
from steerkit.evaluation import ClaimPredictor, coherence, label_accuracy, mutual_predictability, test_accuracy
from steerkit.models import SearchConfig
from steerkit._store import DiskStore

CFG = SearchConfig(max_iterations=40, seed=3)


def gold_option(e):
    """A simulated annotator: the option whose true items are the gold ones."""
    return next(o.id for o in e.options if o.true_items and all(_gold[i] for i in o.true_items))


_gold: dict[str, bool] = {}


async def _initial(n=6, uncertain=(2, 4), wrong=(1,)):
    pool = make_pool(n)
    _gold.update({it.id: bool(it.gold) for it in pool.items})
    backend = fake_backend(pool, uncertain=uncertain, wrong=wrong)
    es = await icm.search(pool, backend, CFG)
    return pool, backend, es


async def test_end_to_end_escalate_answer_rerun_store(tmp_path):
    pool, backend, es0 = await _initial()
    store = DiskStore(tmp_path / "store")
    key = cache_key_for(es0)
    v0 = await store.put(key, es0)
    assert (await store.get(key)).version == es0.version

    async def annotator(e):  # a person who knows the persona's real answers
        return gold_option(e)

    adapter = CallbackAdapter(annotator, annotator="sim", queue=tmp_path / "q.sqlite")
    esc = Escalator(adapter, ConfidencePolicy(), k=2, budget=4, backend=backend, store=store)
    asked = await esc.escalate(es0)
    assert {e.question_id for e in asked} == {"q2", "q4"}  # the least certain questions
    await adapter.join()
    assert len(await adapter.answers(persona_id=PERSONA.id)) == 2

    held = await store.get(key)  # a request in flight holds this version
    res = await esc.apply(es0)
    assert res is not None
    es1 = res.example_set
    assert res.parent_version == es0.version and es1.provenance.parent_version == es0.version
    assert res.version == es1.version != es0.version and res.stored
    # the human labels are fixed, marked and right
    for q in ("q2", "q4"):
        for o in ("o0", "o1"):
            lab = es1.labels[f"{q}-{o}"]
            assert lab.source == "human" and lab.value == _gold[f"{q}-{o}"]
            assert lab.annotator == "callback:sim" and lab.labelled_at is not None
    assert label_accuracy(es1) > label_accuracy(es0)
    assert es1.violations == 0 and pool.violations(es1.label_values()) == 0
    # audit trail: which labels came from people, when, which adapter
    audit = [a for a in es1.provenance.audit if a["event"] == "human_label"]
    assert {a["item_id"] for a in audit} == {"q2-o0", "q2-o1", "q4-o0", "q4-o1"}
    assert all(a["adapter"] == "callback" and a["annotator"] == "sim" and a["answered_at"] and a["applied_at"] for a in audit)
    # atomic switch: the store now serves the new version, the old one is still there for readers
    assert (await store.get(key)).version == es1.version
    assert held.version == es0.version and held.labels == es0.labels
    assert (await store.get_version(key, v0)).version == es0.version
    # answers are acknowledged: nothing left to apply, escalations applied
    assert await adapter.answers() == [] and await esc.apply(es1) is None
    assert {e.question_id for e in await adapter.escalations(status="applied")} == {"q2", "q4"}

    # round two on the new version: human questions are not asked again; human labels carry over
    asked2 = await esc.escalate(es1)
    assert len(asked2) == 2 and not {e.question_id for e in asked2} & {"q2", "q4"}
    await adapter.join()
    res2 = await esc.apply(es1)
    es2 = res2.example_set
    humans = {i for i, lab in es2.labels.items() if lab.source == "human"}
    assert len(humans) == 8 and {"q2-o0", "q4-o1"} <= humans
    assert es2.provenance.parent_version == es1.version
    assert len([a for a in es2.provenance.audit if a["event"] == "human_label"]) == 8  # trail accumulates
    assert (await store.get(key)).version == es2.version
    # budget 4 per persona is spent
    assert await esc.escalate(es2) == []
    await adapter.aclose()


async def test_a_human_answer_overrides_a_confident_wrong_label(tmp_path):
    pool, backend, es0 = await _initial(uncertain=(), wrong=(1,))
    assert es0.labels["q1-o0"].value is True and not _gold["q1-o0"]  # the model is wrong and sure
    e = build_escalation(es0, "q1")
    ans = Answer(escalation_id=e.id, option="q1-o1", version=e.version, annotator="dana", adapter="queue")
    res = await collaborative_rerun(es0, [ans], backend)
    assert res.example_set.labels["q1-o1"].value is True and res.example_set.labels["q1-o0"].value is False
    assert res.human_labels == {"q1-o0": False, "q1-o1": True}
    assert not res.stored and res.applied == [ans.answer_id]
    # other labels are warm-started and stay as they were
    for i, lab in es0.labels.items():
        if not i.startswith("q1-"):
            assert res.example_set.labels[i].value == lab.value


async def test_latest_answer_wins_and_bad_answers_change_nothing(tmp_path):
    pool, backend, es0 = await _initial()
    store = DiskStore(tmp_path / "store")
    key = cache_key_for(es0)
    await store.put(key, es0)
    e = build_escalation(es0, "q2")
    first = Answer(escalation_id=e.id, option="q2-o1", version=e.version, answered_at="2026-01-01T00:00:00Z")
    later = Answer(escalation_id=e.id, option="q2-o0", version=e.version, answered_at="2026-01-02T00:00:00Z")
    res = await collaborative_rerun(es0, [later, first], backend, store=store)
    assert res.example_set.labels["q2-o0"].value is True
    assert res.applied == [later.answer_id]
    # an answer raised from another pool: a clear error, the store keeps its version
    other_pool = make_pool(7)
    other = build_escalation(await icm.search(other_pool, fake_backend(other_pool), CFG), "q0")
    stray = Answer(escalation_id=other.id, option="q0-o0", version=other.version)
    with pytest.raises(InvalidAnswerError, match="not raised from"):
        await collaborative_rerun(res.example_set, [stray], backend, store=store)
    with pytest.raises(InvalidAnswerError, match="no option"):
        await collaborative_rerun(es0, [Answer(escalation_id=e.id, option="q1-o0", version=e.version)], backend, store=store)
    with pytest.raises(InvalidAnswerError, match="no answers"):
        await collaborative_rerun(es0, [], backend, store=store)
    assert (await store.get(key)).version == res.version


async def test_contradicting_fixed_labels_are_refused():
    pool, backend, es0 = await _initial()
    labels = dict(es0.labels)
    # a previous version claims a human said q3-o0 True, and a new answer says q3-o1
    labels["q3-o0"] = labels["q3-o0"].model_copy(update={"source": "human", "value": True})
    labels["q3-o1"] = labels["q3-o1"].model_copy(update={"source": "human", "value": True})
    broken = es0.model_copy(update={"labels": labels})
    e = build_escalation(broken, "q2")
    with pytest.raises(SearchError, match="violate"):
        await collaborative_rerun(broken, [Answer(escalation_id=e.id, option="q2-o0", version=e.version)], backend)


async def test_live_hook_with_auto_apply_switches_the_store(tmp_path):
    pool, backend, es0 = await _initial()
    store = DiskStore(tmp_path / "store")
    key = cache_key_for(es0)
    await store.put(key, es0)
    adapter = QueueAdapter(tmp_path / "q.sqlite")
    esc = Escalator(adapter, RandomPolicy(seed=5), k=1, budget=None, backend=backend, store=store, auto_apply=True)

    class FakeSteerer:  # a fake stand-in for steerkit._middleware.Steerer: the hook list only
        on_example_set: list = []

    steerer = FakeSteerer()
    hook = esc.register(steerer)
    await hook(PERSONA.id, es0)
    await esc.join()
    [e] = await adapter.escalations()
    # a person answers in the queue (e.g. `steerkit review`); the next request's hook applies it
    await adapter.receive(Answer(escalation_id=e.id, option=gold_option(e), version=e.version, annotator="eve"))
    await hook(PERSONA.id, await store.get(key))  # same version: deduplicated, nothing happens
    await esc.join()
    assert (await store.get(key)).version == es0.version
    esc._seen_versions.clear()  # a later request sees the same version again after a restart
    await hook(PERSONA.id, await store.get(key))
    await esc.join()
    assert esc.errors == []
    cur = await store.get(key)
    assert cur.version != es0.version and cur.provenance.parent_version == es0.version
    assert all(cur.labels[i].source == "human" for i in e.labels_for(gold_option(e)))
    assert len(await adapter.escalations()) == 2  # and the new version escalated one more question


async def test_evaluation_test_and_label_accuracy():
    pool, backend, es0 = await _initial(n=6, uncertain=(2,), wrong=())
    assert label_accuracy(es0) == pytest.approx(10 / 12)  # q2 is a coin flip the search lost
    assert label_accuracy(es0, per="question") == pytest.approx(5 / 6)
    test_pool = make_pool(4)  # the fake scores by claim text: test q2 is as uncertain as train q2
    pred = ClaimPredictor(backend, CFG)
    rep = await test_accuracy(es0, test_pool, pred)
    assert rep.n == 4 and rep.accuracy == pytest.approx(0.75)
    assert [q.question_id for q in rep.questions if not q.correct] == ["q2"]
    assert rep.questions[0].probs["q0-o0"] == pytest.approx(0.92, abs=1e-3) and rep.questions[0].predicted == ["q0-o0"]
    # the demonstrations are the example set's labels, rendered before the target claim
    prompt = pred.prompt(PERSONA, [(it, es0.labels[it.id].value) for it in es0.items], test_pool.items[0])
    assert prompt.count("I think this claim is") == 13 and prompt.endswith("I think this claim is")
    zero = await test_accuracy(None, test_pool, pred)
    assert zero.n == 4
    # coherence of any labelling by the search's own pass: gold beats its mirror image, and the
    # search's own labels score what the search reported
    gold = {it.id: bool(it.gold) for it in pool.items}
    flipped = {i: not v for i, v in gold.items()}
    assert await mutual_predictability(pool, gold, backend, CFG) > await mutual_predictability(pool, flipped, backend, CFG)
    assert await mutual_predictability(pool, es0.label_values(), backend, CFG) == pytest.approx(coherence(es0), rel=1e-6)


async def test_escalator_registered_on_a_real_steerer(tmp_path):
    from steerkit._middleware import SteerConfig, Steerer
    from steerkit.packs import PackRegistry
    from steerkit._store import MemoryStore
    from steerkit.testing import FakeScorer, last_claim

    backend = FakeScorer(lambda p: 0.2 + (len(last_claim(p)) % 7) / 10)  # a fake: deterministic, uneven
    steerer = Steerer(
        PackRegistry.default(),
        MemoryStore(),
        backend,
        SteerConfig(search=SearchConfig(max_iterations=6, seed=1), max_pool_items=12),
    )
    adapter = QueueAdapter(tmp_path / "q.sqlite")
    esc = Escalator(adapter, ConfidencePolicy(), k=2, budget=None)
    esc.register(steerer)
    pid = "polparty/democrat"
    es0 = await steerer.compute(pid)  # a precompute / a miss: stores v0 and runs the hooks
    await esc.join()
    asked = await adapter.escalations(persona_id=pid)
    assert len(asked) == 2 and steerer.counters.escalations == 2
    for e in asked:
        await adapter.receive(Answer(escalation_id=e.id, option=e.options[-1].id, version=e.version, annotator="fay"))
    res = await esc.apply(es0)  # through steerer.put: the Steerer's key, its hooks
    key = steerer.cache_key(pid)
    cur = await steerer.store.get(key)
    assert cur.version == res.version != es0.version and res.stored
    assert (await steerer.store.get_version(key, es0.version)).version == es0.version
    for e in asked:
        for i, v in e.labels_for(e.options[-1].id).items():
            assert cur.labels[i].value == v and cur.labels[i].source == "human"
    await esc.join()  # the put ran our hook: the next round was chosen from the new version
    assert len(await adapter.escalations(persona_id=pid)) == 4
    assert steerer.counters.escalations == 4
    assert await adapter.answers() == [] and esc.errors == []


async def test_human_reruns_are_counted_and_share_the_search_limit(tmp_path):
    """A human re-run goes through the Steerer's compute service: counted like any search, and it
    waits for a free search slot (``max_concurrent_searches``)."""
    from steerkit._middleware import SteerConfig, Steerer
    from steerkit.packs import PackRegistry
    from steerkit._store import MemoryStore
    from steerkit.testing import FakeScorer, last_claim

    class GatedFakeScorer(FakeScorer):  # a fake whose calls wait for a gate
        def __init__(self):
            super().__init__(lambda p: 0.2 + (len(last_claim(p)) % 7) / 10)
            self.gate = asyncio.Event()

        async def score(self, prompts):
            await self.gate.wait()
            return await super().score(prompts)

    backend = GatedFakeScorer()
    backend.gate.set()
    steerer = Steerer(PackRegistry.default(), MemoryStore(), backend,
                      SteerConfig(search=SearchConfig(max_iterations=6, seed=1), max_pool_items=12, max_concurrent_searches=1))
    adapter = QueueAdapter(tmp_path / "q.sqlite")
    esc = Escalator(adapter, ConfidencePolicy(), k=2, budget=None)
    esc.register(steerer)
    pid = "polparty/democrat"
    es0 = await steerer.compute(pid)
    await esc.join()
    for e in await adapter.escalations(persona_id=pid):
        await adapter.receive(Answer(escalation_id=e.id, option=e.options[-1].id, version=e.version, annotator="fay"))
    assert steerer.counters.searches_started == 1
    calls_before = steerer.counters.search_model_calls

    backend.gate.clear()
    blocker = asyncio.create_task(steerer.compute("polparty/republican"))  # holds the only search slot
    while steerer.counters.searches_running == 0:
        await asyncio.sleep(0.01)
    rerun = asyncio.create_task(esc.apply(es0))
    await asyncio.sleep(0.2)
    assert not rerun.done() and steerer.counters.searches_started == 2  # the re-run waits for the slot
    backend.gate.set()
    res = await asyncio.wait_for(rerun, 60)
    await blocker
    assert res is not None and res.stored
    assert steerer.counters.searches_started == 3 and steerer.counters.searches_running == 0
    assert steerer.counters.search_model_calls > calls_before
    assert (await steerer.store.get(steerer.cache_key(pid))).version == res.version


@pytest.mark.llama
async def test_collaborative_loop_on_the_embedded_model(embedded_backend, tmp_path):
    from steerkit.models import Item, Persona, Pool

    persona = Persona(id="polparty/republican", name="Republicans", dimension="political_affiliation")
    qs = [
        ("Should the federal government raise taxes on large corporations?", "Yes", "No", 1),
        ("Do you approve of stricter gun laws?", "Approve", "Disapprove", 1),
        ("Should the US build a wall on the southern border?", "Yes", "No", 0),
    ]
    items = []
    for qi, (q, a, b, gold) in enumerate(qs):
        for oi, opt in enumerate((a, b)):
            items.append(Item(id=f"r{qi}-{oi}", kind="claim", question=q, option=opt, group=f"r{qi}", gold=oi == gold))
    pool = Pool.from_items(persona, items)
    cfg = SearchConfig(max_iterations=6, patience=3, num_seed=2, seed=7)
    es0 = await icm.search(pool, embedded_backend, cfg)
    store = DiskStore(tmp_path / "store")
    key = cache_key_for(es0)
    await store.put(key, es0)

    async def annotator(e):
        return next(o.id for o in e.options if o.true_items and pool.item(o.true_items[0]).gold)

    adapter = CallbackAdapter(annotator, annotator="sim", wait=True)
    esc = Escalator(adapter, ConfidencePolicy(), k=1, budget=1, backend=embedded_backend, store=store, config=cfg)
    [asked] = await esc.escalate(es0)
    assert asked.suggestion.model == embedded_backend.model
    least = min(es0.group_confidence, key=lambda g: (es0.group_confidence[g], g))
    assert asked.question_id == least
    res = await esc.apply(es0)
    es1 = res.example_set
    for i, v in asked.labels_for(await annotator(asked)).items():
        assert es1.labels[i].value == v and es1.labels[i].source == "human"
    assert es1.provenance.parent_version == es0.version and es1.violations == 0
    assert (await store.get(key)).version == es1.version
    assert any(a["event"] == "human_label" for a in es1.provenance.audit)
    acc = await test_accuracy(es1, pool, ClaimPredictor(embedded_backend, cfg))
    assert acc.n == 3
    await asyncio.sleep(0)


@pytest.mark.llama
async def test_chat_predictor_on_the_embedded_chat_model(embedded_backend):
    import openai

    from steerkit.evaluation import ChatPredictor, prediction_confidence

    pool = make_pool(3)
    client = openai.AsyncOpenAI(base_url=embedded_backend.base_url, api_key="unused")
    pred = ChatPredictor(client, embedded_backend.chat_model)
    demos = [(it, bool(it.gold)) for it in pool.items[:4]]
    probs = await pred.predict(PERSONA, demos, pool.items[4:6])
    assert set(probs) == {"q2-o0", "q2-o1"}
    assert sum(probs.values()) == pytest.approx(1.0) and all(0.0 <= p <= 1.0 for p in probs.values())
    assert 0.5 <= prediction_confidence(probs, 2) <= 1.0
    assert pred.calls == 1

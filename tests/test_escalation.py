"""Escalations, answers, selection policies, the Escalator and its middleware hook (no model)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from escalation_helpers import PERSONA, hand_example_set, make_pool
from steerkit._metrics import Metrics
from steerkit.adapters.queue import QueueAdapter
from steerkit.errors import InvalidAnswerError
from steerkit.escalation import (
    ActiveLearningPolicy,
    Answer,
    AnswerMarginPolicy,
    ConfidencePolicy,
    Escalation,
    Escalator,
    RandomPolicy,
    answer_labels,
    build_escalation,
    escalation_id,
    questions,
    select_questions,
    validate_answer,
)
from steerkit.models import ExampleSet, Item, Label, Persona, Pool


def test_escalation_ids_are_deterministic_and_distinct():
    a = escalation_id("p/x", "pool1", "q1")
    assert a == escalation_id("p/x", "pool1", "q1")
    assert len({a, escalation_id("p/y", "pool1", "q1"), escalation_id("p/x", "pool2", "q1"), escalation_id("p/x", "pool1", "q2")}) == 4
    pool = make_pool(3)
    es1 = hand_example_set(pool, {"q1": 0.3})
    es2 = hand_example_set(pool, {"q1": 0.7}, values={"q1-o0": True, "q1-o1": False})
    e1, e2 = build_escalation(es1, "q1"), build_escalation(es2, "q1")
    assert e1.id == e2.id  # same question of the same pool: same id, whatever the labels
    assert e1.version != e2.version and e1.content_hash() != e2.content_hash()


def test_build_escalation_carries_the_suggestion():
    pool = make_pool(3, n_options=3)
    es = hand_example_set(pool, {"q1": 0.41})
    e = build_escalation(es, "q1", policy="icm_confidence")
    assert e.kind == "exactly_one"
    assert [o.id for o in e.options] == ["q1-o0", "q1-o1", "q1-o2"]
    assert "Democrats" in e.question and "policy 1" in e.question
    assert e.suggestion.option == "q1-o1"  # gold of odd questions is option 1, the labels are gold
    assert e.suggestion.confidence == pytest.approx(0.41)
    assert e.suggestion.model == "hand"
    assert e.version == es.version and e.pool_hash == pool.content_hash()
    assert e.labels_for("q1-o2") == {"q1-o0": False, "q1-o1": False, "q1-o2": True}
    with pytest.raises(InvalidAnswerError, match="no question"):
        build_escalation(es, "q99")


def test_other_question_kinds():
    p = Persona(id="style/dcf", name="direct users", dimension="style")
    items = [
        Item(id="pa", kind="preference", question="Explain tides", choice_1="short", choice_2="long", group="g1"),
        Item(id="pb", kind="preference", question="Explain tides", choice_1="long", choice_2="short", group="g1"),
        Item(id="k1", kind="answer", question="DEI?", option="keep it", key="keep", group="g2"),
        Item(id="k2", kind="answer", question="DEI?", option="keep them", key="keep", group="g2"),
        Item(id="k3", kind="answer", question="DEI?", option="drop it", key="drop", group="g2"),
        Item(id="solo", kind="claim", question="Tax the rich?", option="Yes"),
    ]
    pool = Pool.from_items(p, items)
    es = hand_example_set(pool, {}, values={"pa": True, "pb": False, "k1": False, "k2": False, "k3": True, "solo": True})
    assert [q for q, _ in questions(es)] == ["g1", "g2", "solo"]
    pref = build_escalation(es, "g1")
    assert pref.kind == "asymmetric" and "Response 1" in pref.context
    assert pref.suggestion.option == "pa"
    keyed = build_escalation(es, "g2")
    assert keyed.kind == "keyed" and [o.id for o in keyed.options] == ["keep", "drop", "none"]
    assert keyed.labels_for("keep") == {"k1": True, "k2": True, "k3": False}
    assert keyed.labels_for("none") == {"k1": False, "k2": False, "k3": False}
    assert keyed.suggestion.option == "drop"
    solo = build_escalation(es, "solo")
    assert solo.kind == "single" and solo.suggestion.option == "true"
    assert solo.labels_for("false") == {"solo": False}
    for e in (pref, keyed, solo):  # every option gives labels satisfying the pool's constraints
        for o in e.options:
            assert pool.violations({**es.label_values(), **e.labels_for(o.id)}) == 0


def test_validate_answer():
    pool = make_pool(2)
    es = hand_example_set(pool, {})
    e = build_escalation(es, "q0")
    ok = Answer(escalation_id=e.id, option="q0-o1", version=e.version)
    assert validate_answer(ok, e).id == "q0-o1"
    with pytest.raises(InvalidAnswerError, match="unknown escalation"):
        validate_answer(ok, None)
    with pytest.raises(InvalidAnswerError, match="no option"):
        validate_answer(ok.model_copy(update={"option": "Favor"}), e)
    with pytest.raises(InvalidAnswerError, match="stale"):
        validate_answer(ok.model_copy(update={"version": "older"}), e)


def test_answer_ids_are_idempotency_keys():
    a = Answer(escalation_id="esc_1", option="x", version="v", annotator="n")
    b = Answer.model_validate_json(a.model_dump_json())
    assert a.answer_id == b.answer_id and a.answer_id.startswith("ans_")
    later = a.answered_at + timedelta(microseconds=1)
    c = Answer(escalation_id="esc_1", option="x", version="v", annotator="n", answered_at=later)  # a new answer
    assert c.answer_id != a.answer_id
    same = Answer(escalation_id="esc_1", option="x", version="v", annotator="n", answered_at=a.answered_at)
    assert same.answer_id == a.answer_id  # the same answer given twice is one answer
    assert Answer(escalation_id="e", option="x", version="v", answer_id="tool-42").answer_id == "tool-42"
    naive = Answer(escalation_id="e", option="x", version="v", answered_at="2026-01-01T00:00:00")
    assert naive.answered_at.tzinfo is not None and naive.answered_at < a.answered_at


def test_answer_labels_rejects_answers_of_another_pool():
    pool = make_pool(3)
    es = hand_example_set(pool, {})
    e = build_escalation(es, "q2")
    q, labels, esc = answer_labels(es, Answer(escalation_id=e.id, option="q2-o1", version=e.version))
    assert q == "q2" and labels == {"q2-o0": False, "q2-o1": True} and esc.id == e.id
    other = hand_example_set(make_pool(4), {})
    with pytest.raises(InvalidAnswerError, match="not raised from"):
        answer_labels(other, Answer(escalation_id=e.id, option="q2-o1", version=e.version))


# --- policies -----------------------------------------------------------------------------------


async def test_confidence_policy_picks_the_least_certain_questions():
    pool = make_pool(6)
    es = hand_example_set(pool, {"q0": 0.9, "q1": 0.55, "q2": 0.95, "q3": 0.51, "q4": 0.7, "q5": 0.6})
    picks = await select_questions(es, ConfidencePolicy(), 3)
    assert [q for q, _ in picks] == ["q3", "q1", "q5"]
    assert [s for _, s in picks] == pytest.approx([0.51, 0.55, 0.6])
    assert [q for q, _ in await select_questions(es, ConfidencePolicy(), 2, exclude=["q3"])] == ["q1", "q5"]
    assert await select_questions(es, ConfidencePolicy(), 0) == []


def _leaning_set(logodds: dict[str, tuple[float, float]]) -> ExampleSet:
    """A set whose model leans to "True": per question the (chosen, other) option's log-odds."""
    import math

    pool = make_pool(len(logodds))
    es = hand_example_set(pool, {})
    labels, conf = {}, {}
    for q, (chosen, other) in logodds.items():
        gold = next(it for it in pool.items if it.group == q and it.gold)
        for it in pool.items:
            if it.group != q:
                continue
            lo, value = (chosen, True) if it.id == gold.id else (other, False)
            c = 1 / (1 + math.exp(-lo if value else lo))
            labels[it.id] = Label(item_id=it.id, value=value, confidence=c, logodds=lo)
            conf[q] = min(conf.get(q, 1.0), c)
    return es.model_copy(update={"labels": labels, "group_confidence": conf})


async def test_the_answer_margin_policy_asks_first_where_the_answers_nearly_tie():
    """A model leaning to "True" looks unsure of every claim it labels False, however clearly it
    prefers the question's answer: ICM confidence asks q1 first (it preferred its answer by 2
    log-odds), the answer margin asks q0 (0.1: a near-tie)."""
    es = _leaning_set({"q0": (2.0, 1.9), "q1": (5.0, 3.0), "q2": (0.3, -0.3)})
    by_confidence = [q for q, _ in await select_questions(es, ConfidencePolicy(), 3)]
    assert by_confidence == ["q1", "q0", "q2"]
    picks = await select_questions(es, AnswerMarginPolicy(), 3)
    assert [q for q, _ in picks] == ["q0", "q2", "q1"]
    assert [s for _, s in picks] == pytest.approx([0.525, 0.646, 0.881], abs=1e-3)
    # a question people answered has no margin of the model's: it is not asked again
    labels = dict(es.labels)
    labels["q0-o0"] = labels["q0-o0"].model_copy(update={"source": "human"})
    fixed = es.model_copy(update={"labels": labels})
    assert [q for q, _ in await select_questions(fixed, AnswerMarginPolicy(), 2)] == ["q2", "q1"]


async def test_questions_fixed_by_people_are_not_asked_again():
    pool = make_pool(4)
    es = hand_example_set(pool, {"q0": 0.5, "q1": 0.6, "q2": 0.9, "q3": 0.9})
    labels = dict(es.labels)
    labels["q0-o0"] = labels["q0-o0"].model_copy(update={"source": "human"})
    es = es.model_copy(update={"labels": labels})
    assert [q for q, _ in await select_questions(es, ConfidencePolicy(), 2)] == ["q1", "q2"]


async def test_random_policy_is_seeded():
    pool = make_pool(10)
    es = hand_example_set(pool, {})
    a = [q for q, _ in await select_questions(es, RandomPolicy(seed=1), 4)]
    assert a == [q for q, _ in await select_questions(es, RandomPolicy(seed=1), 4)]
    others = {tuple(q for q, _ in await select_questions(es, RandomPolicy(seed=s), 4)) for s in range(2, 8)}
    assert len(others | {tuple(a)}) > 1
    assert len(set(a)) == 4


class FakePredictor:
    """A fake predictor: fixed per-question probabilities; records the demonstrations it saw."""

    def __init__(self, probs: dict[str, float]) -> None:
        self.probs = probs
        self.seen: list[tuple[str, list[str]]] = []

    async def predict(self, persona, demos, question):
        q = question[0].group
        self.seen.append((q, [d.id for d, _ in demos]))
        p = self.probs[q]
        return {question[0].id: p, **{it.id: (1 - p) / (len(question) - 1) for it in question[1:]}}


async def test_active_learning_policy_uses_the_predictors_confidence():
    pool = make_pool(4)
    es = hand_example_set(pool, {"q0": 0.1, "q1": 0.99, "q2": 0.99, "q3": 0.99})
    fp = FakePredictor({"q0": 0.99, "q1": 0.5, "q2": 0.8, "q3": 0.4})
    picks = await select_questions(es, ActiveLearningPolicy(fp), 2)
    # confidence = top option probability: q1 → 0.5, q3 → 0.6 (the other option), q2 → 0.8, q0 → 0.99
    assert [q for q, _ in picks] == ["q1", "q3"]
    # leave-the-question-out demonstrations
    for q, demo_ids in fp.seen:
        assert not any(d.startswith(q + "-") for d in demo_ids) and len(demo_ids) == 6


# --- the escalator ------------------------------------------------------------------------------


async def test_escalator_rounds_budget_and_refresh(tmp_path):
    ad = QueueAdapter(tmp_path / "q.sqlite")
    pool = make_pool(8)
    conf = {f"q{i}": 0.5 + i / 20 for i in range(8)}
    es = hand_example_set(pool, conf)
    esc = Escalator(ad, ConfidencePolicy(), k=3, budget=5)
    first = await esc.escalate(es)
    assert [e.question_id for e in first] == ["q0", "q1", "q2"]
    assert all(e.policy == "icm_confidence" and e.version == es.version for e in first)
    # same version again: nothing new below budget is re-asked, only new picks
    second = await esc.escalate(es)
    assert [e.question_id for e in second] == ["q3", "q4"]  # budget 5 reached
    assert await esc.escalate(es) == []
    assert len(await ad.escalations(persona_id=PERSONA.id)) == 5
    # a new version refreshes the still-pending escalations (same ids, new version)
    e0 = first[0]
    await ad.receive(Answer(escalation_id=e0.id, option=e0.options[0].id, version=e0.version))
    es2 = hand_example_set(pool, {**conf, "q1": 0.3}, values={"q7-o0": True, "q7-o1": False})
    assert es2.version != es.version
    refreshed = await esc.escalate(es2)
    assert {e.question_id for e in refreshed} == {"q1", "q2", "q3", "q4"}
    assert all(e.version == es2.version for e in refreshed)
    stored = {e.id: e for e in await ad.escalations()}
    assert stored[e0.id].version == es.version  # the answered one was left alone
    assert len(stored) == 5
    # an answer to the old version of a refreshed escalation is now stale
    e1 = first[1]
    with pytest.raises(InvalidAnswerError, match="stale"):
        await ad.receive(Answer(escalation_id=e1.id, option=e1.options[0].id, version=es.version))


class FakeSteerer:
    """A fake stand-in for steerkit._middleware.Steerer: only the hook list and metrics."""

    def __init__(self) -> None:
        self.on_example_set = []
        self.metrics = Metrics()


class BlockingFakeAdapter(QueueAdapter):
    """A fake adapter whose submit waits for a gate (to prove the hook never blocks)."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.gate = asyncio.Event()

    async def submit(self, escalations):
        await self.gate.wait()
        return await super().submit(escalations)


async def test_live_hook_never_blocks_the_request_and_escalates_in_background():
    ad = BlockingFakeAdapter()
    pool = make_pool(5)
    es = hand_example_set(pool, {"q2": 0.2, "q4": 0.3})
    esc = Escalator(ad, k=2, budget=None)
    steerer = FakeSteerer()
    hook = esc.register(steerer)
    assert steerer.on_example_set == [hook]
    # the gate is closed: if the hook waited for the adapter this would never return
    await asyncio.wait_for(hook(PERSONA.id, es), timeout=30)
    await asyncio.wait_for(hook(PERSONA.id, es), timeout=30)  # same version: deduplicated
    assert await ad.escalations() == []
    ad.gate.set()
    await esc.join()
    assert {e.question_id for e in await ad.escalations()} == {"q2", "q4"}
    assert steerer.metrics.value("escalations") == 2
    assert esc.errors == []


async def test_hook_errors_are_kept_not_raised():
    class BrokenFakeAdapter(QueueAdapter):
        async def escalations(self, **kw):
            raise RuntimeError("annotation tool down")

    esc = Escalator(BrokenFakeAdapter(":memory:"), k=1)
    await esc.hook()(PERSONA.id, hand_example_set(make_pool(2), {}))
    await esc.join()
    assert len(esc.errors) == 1 and "annotation tool down" in str(esc.errors[0])


def test_escalation_round_trips_as_json():
    es = hand_example_set(make_pool(2), {"q0": 0.33})
    e = build_escalation(es, "q0", policy="random", score=0.25)
    assert Escalation.model_validate_json(e.model_dump_json()) == e
    assert isinstance(es, ExampleSet) and isinstance(es.labels["q0-o0"], Label)

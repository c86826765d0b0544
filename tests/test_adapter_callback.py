"""The callback adapter: any coroutine answers escalations."""

from __future__ import annotations

import asyncio

import pytest

from escalation_helpers import hand_example_set, make_pool
from steerkit.adapters.callback import CallbackAdapter
from steerkit.adapters.queue import AnnotationQueue
from steerkit.errors import FeedbackError, InvalidAnswerError
from steerkit.escalation import Answer, Escalation, FeedbackAdapter, build_escalation


def _escs(n=4):
    es = hand_example_set(make_pool(n), {f"q{i}": 0.5 for i in range(n)})
    return es, [build_escalation(es, f"q{i}") for i in range(n)]


async def test_coroutine_answers_are_validated_recorded_and_pushed():
    seen: list[str] = []

    async def ask(e: Escalation):
        seen.append(e.question_id)
        await asyncio.sleep(0)
        if e.question_id == "q0":
            return e.options[1].id  # an option id
        if e.question_id == "q1":
            return Answer(escalation_id=e.id, option=e.options[0].id, version=e.version, annotator="bot", answer_id="r-1")
        if e.question_id == "q2":
            return None  # no answer (yet)
        return "Maybe"  # not an option

    ad = CallbackAdapter(ask, annotator="team")
    assert isinstance(ad, FeedbackAdapter)
    pushed = []

    async def on_answer(a):
        pushed.append(a.answer_id)

    ad.on_answer.append(on_answer)
    es, escs = _escs(4)
    res = await ad.submit(escs)
    assert len(res.created) == 4
    await ad.join()
    assert sorted(seen) == ["q0", "q1", "q2", "q3"]
    got = {a.escalation_id: a for a in await ad.answers()}
    assert set(got) == {escs[0].id, escs[1].id}
    assert got[escs[0].id].option == escs[0].options[1].id and got[escs[0].id].annotator == "team"
    assert got[escs[0].id].adapter == "callback"
    assert got[escs[1].id].answer_id == "r-1" and got[escs[1].id].annotator == "bot"
    assert sorted(pushed) == sorted(a.answer_id for a in got.values())
    assert {e.question_id for e in await ad.escalations(status="pending")} == {"q2", "q3"}
    assert len(ad.errors) == 1 and isinstance(ad.errors[0][1], InvalidAnswerError)
    assert ad.errors[0][0] == escs[3].id
    await ad.aclose()


async def test_resubmits_call_again_only_when_the_escalation_changed():
    calls: list[str] = []

    async def ask(e):
        calls.append(e.version)
        return None

    ad = CallbackAdapter(ask, wait=True)
    es, escs = _escs(1)
    await ad.submit(escs)
    await ad.submit(escs)  # identical: no second question to people
    assert calls == [escs[0].version]
    changed = escs[0].model_copy(update={"version": "v2"})
    await ad.submit([changed])
    assert calls == [escs[0].version, "v2"]


async def test_errors_keep_the_escalation_pending_and_concurrency_is_bounded():
    running = 0
    peak = 0

    async def ask(e):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        if e.question_id == "q0":
            raise RuntimeError("chat bot offline")
        return e.options[0].id

    ad = CallbackAdapter(ask, concurrency=2)
    es, escs = _escs(6)
    await ad.submit(escs)
    await ad.join()
    assert peak <= 2
    assert ad.calls == 6
    assert [eid for eid, _ in ad.errors] == [escs[0].id]
    assert {e.id for e in await ad.escalations(status="pending")} == {escs[0].id}
    assert len(await ad.answers()) == 5


async def test_durable_state_with_a_queue_path(tmp_path):
    async def ask(e):
        return e.options[0].id

    path = tmp_path / "cb.sqlite"
    ad = CallbackAdapter(ask, queue=path, wait=True)
    es, escs = _escs(2)
    await ad.submit(escs)
    await ad.aclose()
    q = AnnotationQueue(path)
    assert len(q.answers()) == 2 and all(a.adapter == "callback" for a in q.answers())


def test_needs_a_callable():
    with pytest.raises(FeedbackError):
        CallbackAdapter("not a function")  # type: ignore[arg-type]

"""The on-disk annotation queue: upserts, validation, durability, two processes, SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from escalation_helpers import hand_example_set, make_pool
from steerkit.adapters.queue import AnnotationQueue, QueueAdapter
from steerkit.errors import FeedbackError, InvalidAnswerError
from steerkit.escalation import Answer, FeedbackAdapter, build_escalation

TESTS = Path(__file__).resolve().parent


def _escalations(n: int = 3, conf: float = 0.5):
    pool = make_pool(n)
    es = hand_example_set(pool, {f"q{i}": conf + i / 100 for i in range(n)})
    return es, [build_escalation(es, f"q{i}", policy="icm_confidence") for i in range(n)]


def _state(q: AnnotationQueue):
    return (
        q.counts(),
        [(e.escalation.model_dump_json(), e.status) for e in q.entries()],
        [a.model_dump_json() for a in q.answers(include_acknowledged=True)],
    )


def test_submit_is_an_upsert_and_identical_resubmit_is_a_noop(tmp_path):
    q = AnnotationQueue(tmp_path / "q.sqlite")
    es, escs = _escalations(3)
    r1 = q.submit(escs)
    assert sorted(r1.created) == sorted(e.id for e in escs) and not r1.updated
    r2 = q.submit(escs)
    assert sorted(r2.unchanged) == sorted(e.id for e in escs) and not r2.created and not r2.updated
    changed = escs[0].model_copy(update={"version": "v2", "score": 0.01})
    r3 = q.submit([changed])
    assert r3.updated == [changed.id]
    assert q.counts().total == 3
    assert q.get(changed.id).version == "v2"
    # least confident first
    assert q.entries()[0].escalation.id == changed.id
    assert q.entries()[0].submit_count == 3


def test_receive_validates_and_invalid_answers_change_nothing(tmp_path):
    q = AnnotationQueue(tmp_path / "q.sqlite")
    es, escs = _escalations(2)
    q.submit(escs)
    e = escs[0]
    before = _state(q)
    bad = [
        Answer(escalation_id="esc_nope", option=e.options[0].id, version=e.version),
        Answer(escalation_id=e.id, option="not-an-option", version=e.version),
        Answer(escalation_id=e.id, option=e.options[0].id, version="old-version"),
    ]
    msgs = []
    for a in bad:
        with pytest.raises(InvalidAnswerError) as ei:
            q.receive(a)
        msgs.append(str(ei.value))
    assert "unknown escalation" in msgs[0]
    assert "no option" in msgs[1]
    assert "stale" in msgs[2]
    assert _state(q) == before
    # a batch with one invalid answer records none of them
    good = Answer(escalation_id=e.id, option=e.options[1].id, version=e.version, annotator="ann")
    with pytest.raises(InvalidAnswerError):
        q.receive_many([good, bad[1]])
    assert _state(q) == before


def test_answers_duplicates_acknowledge_and_corrections(tmp_path):
    q = AnnotationQueue(tmp_path / "q.sqlite")
    es, escs = _escalations(2)
    q.submit(escs)
    e = escs[0]
    a = Answer(escalation_id=e.id, option=e.options[0].id, version=e.version, annotator="alice")
    assert q.receive(a, adapter="queue") is True
    assert q.receive(a, adapter="queue") is False  # duplicate: no-op
    assert len(q.history(e.id)) == 1
    got = q.answers()
    assert [x.answer_id for x in got] == [a.answer_id]
    assert got[0].adapter == "queue"
    assert q.counts().answered == 1 and q.counts().pending == 1
    # re-submitting an answered escalation keeps its answer and status
    q.submit([e.model_copy(update={"score": 0.0})])
    assert q.counts().answered == 1
    q.acknowledge([a.answer_id])
    assert q.answers() == [] and q.counts().applied == 1
    q.acknowledge([a.answer_id, "ans_unknown"])  # twice / unknown: harmless
    # a correction after it was applied reopens it as answered; the latest answer wins
    b = Answer(escalation_id=e.id, option=e.options[1].id, version=e.version, annotator="alice")
    assert q.receive(b) is True
    assert [x.option for x in q.answers()] == [e.options[1].id]
    assert q.counts().answered == 1
    assert [x.option for x in q.history(e.id)] == [e.options[0].id, e.options[1].id]


def test_queue_survives_reopen(tmp_path):
    path = tmp_path / "q.sqlite"
    q = AnnotationQueue(path)
    es, escs = _escalations(3)
    q.submit(escs)
    a = Answer(escalation_id=escs[1].id, option=escs[1].options[0].id, version=escs[1].version)
    q.receive(a)
    q.set_meta("cursor", "42")
    before = _state(q)
    q.close()
    q2 = AnnotationQueue(path)
    assert _state(q2) == before
    assert q2.get_meta("cursor") == "42"
    assert q2.integrity_check() == "ok"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_not_a_queue_file_is_a_clear_error(tmp_path):
    p = tmp_path / "junk.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FeedbackError, match="cannot open annotation queue"):
        AnnotationQueue(p)


async def test_queue_adapter_is_a_feedback_adapter(tmp_path):
    ad = QueueAdapter(tmp_path / "q.sqlite")
    assert isinstance(ad, FeedbackAdapter)
    es, escs = _escalations(2)
    pushed = []

    async def listener(a):
        pushed.append(a)

    ad.on_answer.append(listener)
    res = await ad.submit(escs)
    assert len(res.created) == 2
    e = escs[0]
    a = Answer(escalation_id=e.id, option=e.options[0].id, version=e.version)
    assert await ad.receive(a) is True
    assert await ad.receive(a) is False
    assert [x.answer_id for x in pushed] == [a.answer_id] and pushed[0].adapter == "queue"
    assert [x.answer_id for x in await ad.answers(persona_id=e.persona_id)] == [a.answer_id]
    assert await ad.answers(persona_id="someone/else") == []
    assert {x.id for x in await ad.escalations(status="pending")} == {escs[1].id}
    await ad.acknowledge([a.answer_id])
    assert await ad.answers() == []
    await ad.aclose()


# --- two processes, and SIGKILL ------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys, time
    from escalation_helpers import hand_example_set, make_pool
    from steerkit.adapters.queue import AnnotationQueue
    from steerkit.escalation import Answer, build_escalation
    from steerkit.models import Persona

    mode, path, tag, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    q = AnnotationQueue(path)

    def escs(persona_id, n):
        p = Persona(id=persona_id, name="Group " + persona_id, dimension="d")
        pool = make_pool(n, persona=p)
        es = hand_example_set(pool, {})
        return [build_escalation(es, f"q{i}") for i in range(n)]

    if mode == "write":
        own = escs("p/" + tag, n)
        shared = escs("p/shared", n // 4)
        todo = [x for pair in zip(own, shared + [None] * n) for x in pair if x is not None]
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            q.submit(chunk)
            for e in chunk:
                if e.persona_id != "p/shared":
                    a = Answer(escalation_id=e.id, option=e.options[0].id, version=e.version, annotator=tag)
                    q.receive(a)
            print("committed", i // batch, flush=True)
    elif mode == "kill-submit":
        own = escs("p/" + tag, n)
        for b, i in enumerate(range(0, len(own), batch)):
            q.submit(own[i:i + batch])
            print("committed", b, flush=True)
    elif mode == "kill-answer":
        own = q.escalations(persona_id="p/" + tag)
        for b, i in enumerate(range(0, len(own), batch)):
            q.receive_many([Answer(escalation_id=e.id, option=e.options[1].id, version=e.version,
                                   answer_id="a-" + e.id) for e in own[i:i + batch]])
            print("committed", b, flush=True)
    if mode.startswith("kill-"):
        # Never end on its own: the test decides when this process ends (SIGKILL, or closing stdin).
        # Without this, a test process stalled for ~100 ms on a loaded machine found the worker
        # already finished (exit 0, not -SIGKILL): the "worker ended early" flake.
        print("done", flush=True)
        sys.stdin.read()
    """
)


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_two_processes_write_at_once(tmp_path):
    path = str(tmp_path / "q.sqlite")
    AnnotationQueue(path).close()
    n = 120
    procs = [_spawn("write", path, tag, str(n), "3") for tag in ("a", "b")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.count("committed") > 10
    q = AnnotationQueue(path)
    assert q.integrity_check() == "ok"
    for tag in ("a", "b"):
        own = q.entries(persona_id="p/" + tag)
        assert len(own) == n
        assert all(e.status == "answered" and e.answer is not None and e.answer.annotator == tag for e in own)
    shared = q.entries(persona_id="p/shared")
    assert len(shared) == n // 4  # both processes submitted them: upserted, never duplicated
    assert all(e.submit_count == 2 for e in shared)
    assert len(q.answers()) == 2 * n


@pytest.mark.parametrize("mode", ["kill-submit", "kill-answer"])
def test_sigkill_mid_write_loses_nothing_committed(tmp_path, mode):
    path = str(tmp_path / "q.sqlite")
    n, batch = 600, 25
    if mode == "kill-answer":  # the escalations to answer are there first
        p = _spawn("kill-submit", path, "k", str(n), "100")
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for attempt in range(3):
        p = _spawn(mode, path, "k", str(n), str(batch))
        committed = []
        assert p.stdout is not None
        # kill once a few batches are in, at a moment that varies between attempts
        while len(committed) < 3 + 2 * attempt:
            line = p.stdout.readline()
            assert line.startswith("committed"), f"worker ended early: {line!r} {p.stderr.read() if p.stderr else ''}"
            committed.append(int(line.split()[1]))
        time.sleep(0.003 * attempt)
        p.send_signal(signal.SIGKILL)
        rest, _ = p.communicate(timeout=60)
        committed += [int(x.split()[1]) for x in rest.splitlines() if x.startswith("committed")]
        assert p.returncode == -signal.SIGKILL

        q = AnnotationQueue(path)
        assert q.integrity_check() == "ok"
        if mode == "kill-submit":
            ids = [e.id for e in q.escalations(persona_id="p/k")]
            # every batch reported committed is there, and batches are all-or-nothing
            assert len(ids) >= len(committed) * batch
            assert len(ids) % batch == 0
        else:
            answered = q.entries(persona_id="p/k", status="answered")
            assert len(answered) >= len(committed) * batch
            assert len(answered) % batch == 0
            assert len(q.answers(persona_id="p/k")) == len(answered)
            assert all(e.answer is not None and e.answer.option == e.escalation.options[1].id for e in answered)
        q.close()

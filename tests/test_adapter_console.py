"""The console adapter driven through its prompts, and `steerkit review` in a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from rich.console import Console

from escalation_helpers import hand_example_set, make_pool
from steerkit.adapters.console import ConsoleAdapter
from steerkit.adapters.queue import AnnotationQueue
from steerkit.escalation import Answer, FeedbackAdapter, build_escalation


def _queue(path, n=3):
    es = hand_example_set(make_pool(n), {f"q{i}": 0.4 + i / 10 for i in range(n)})
    escs = [build_escalation(es, f"q{i}", policy="icm_confidence") for i in range(n)]
    q = AnnotationQueue(path)
    q.submit(escs)
    return q, es, escs


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=120, force_terminal=False, color_system=None), buf


def test_prompts_record_answers_reject_bad_input_and_quit(tmp_path):
    q, es, escs = _queue(tmp_path / "q.sqlite")
    con, out = _console()
    ad = ConsoleAdapter(q, console=con, input=io.StringIO("2\nmaybe\n\na\nq\n"), annotator="alice")
    assert isinstance(ad, FeedbackAdapter)
    s = ad.review()
    text = out.getvalue()
    # least confident first: q0 (0.4), then q1 (0.5)
    assert s.answered == [escs[0].id, escs[1].id] and s.quit and s.remaining == 1
    assert "Question number 0" in text and "Question number 1" in text
    assert "model suggests (0.40)" in text  # the suggestion and its confidence are shown
    assert "Not an option: 'maybe'" in text
    got = {a.escalation_id: a for a in q.answers()}
    assert got[escs[0].id].option == escs[0].options[1].id  # typed "2"
    assert got[escs[1].id].option == escs[1].suggestion.option  # "a" accepts the suggestion
    assert all(a.annotator == "alice" and a.adapter == "console" for a in got.values())
    assert "2 answered, 0 skipped, 1 pending." in text


def test_review_is_resumable_and_skips_stay_pending(tmp_path):
    path = tmp_path / "q.sqlite"
    q, es, escs = _queue(path, n=4)
    con, out = _console()
    s1 = ConsoleAdapter(q, console=con, input=io.StringIO("s\n1\n")).review()  # then end of input
    assert s1.skipped == [escs[0].id] and s1.answered == [escs[1].id] and s1.quit
    q.close()
    # a new session (another process could do this) resumes with what is still pending
    q2 = AnnotationQueue(path)
    con2, out2 = _console()
    s2 = ConsoleAdapter(q2, console=con2, input=io.StringIO("1\n2\n2\n")).review()
    assert s2.answered == [escs[0].id, escs[2].id, escs[3].id]
    assert s2.remaining == 0 and not s2.quit
    assert "Question number 1" not in out2.getvalue()
    assert len(q2.answers()) == 4


def test_limit_and_persona_filter(tmp_path):
    q, es, escs = _queue(tmp_path / "q.sqlite", n=3)
    con, out = _console()
    s = ConsoleAdapter(q, console=con, input=io.StringIO("1\n1\n1\n")).review(limit=1)
    assert len(s.answered) == 1
    s = ConsoleAdapter(q, console=con, input=io.StringIO("1\n")).review(persona_id="someone/else")
    assert s.answered == [] and s.remaining == 0


class ResubmittingFakeInput(io.StringIO):
    """A fake stdin that re-submits the escalation on screen (a new version) before the first answer."""

    def __init__(self, text, queue, newer):
        super().__init__(text)
        self.queue, self.newer, self.done = queue, newer, False

    def readline(self, *a):
        if not self.done:
            self.done = True
            self.queue.submit([self.newer])
        return super().readline(*a)


def test_a_question_resubmitted_while_on_screen_is_shown_again(tmp_path):
    q, es, escs = _queue(tmp_path / "q.sqlite", n=1)
    newer = escs[0].model_copy(update={"version": "v-new"})
    con, out = _console()
    s = ConsoleAdapter(q, console=con, input=ResubmittingFakeInput("1\n2\n", q, newer)).review()
    assert "Not recorded" in out.getvalue() and "stale" in out.getvalue()
    [a] = q.answers()
    assert a.version == "v-new" and a.option == escs[0].options[1].id
    assert s.answered == [escs[0].id]


def _run(args, stdin, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_HOME": str(tmp_path / "xdgc"), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "steerkit.cli", "review", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_steerkit_review_subprocess_with_piped_stdin(tmp_path):
    path = tmp_path / "q.sqlite"
    q, es, escs = _queue(path, n=3)
    q.close()
    r = _run(["--queue", str(path), "--annotator", "bob", "--limit", "2"], "2\na\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Question number 0" in r.stdout and "Recorded" in r.stdout
    q = AnnotationQueue(path)
    got = {a.escalation_id: a for a in q.answers()}
    assert set(got) == {escs[0].id, escs[1].id}
    assert got[escs[0].id].option == escs[0].options[1].id and got[escs[0].id].annotator == "bob"
    q.close()
    # resume: only the third question is left; end of input quits cleanly
    r = _run(["--queue", str(path)], "", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Question number 2" in r.stdout and "Question number 0" not in r.stdout
    # --list --json
    r = _run(["--queue", str(path), "--list", "--json"], "", tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(x["status"] for x in rows) == ["answered", "answered", "pending"]
    # no queue file: a clear usage error
    r = _run(["--queue", str(tmp_path / "missing.sqlite")], "", tmp_path)
    assert r.returncode == 2 and "no annotation queue" in r.stderr


def test_review_offline_loop_escalate_answer_apply(tmp_path, monkeypatch):
    """`steerkit review --escalate` → answers in the queue → `steerkit review --apply`, through the
    same wiring as every command (a fake scorer stands in for the search model)."""
    import argparse
    import asyncio

    from steerkit import _runtime
    from steerkit.cli import load_settings, main
    from steerkit.testing import FakeScorer, last_claim

    fake = FakeScorer(lambda p: 0.2 + (len(last_claim(p)) % 7) / 10, model="fake-cli-model")
    monkeypatch.setattr(_runtime, "make_backend", lambda settings: fake)
    cfg = tmp_path / "config.toml"
    cfg.write_text("[steer]\nmax_pool_items = 10\n\n[search]\nmax_iterations = 5\n")
    cache = tmp_path / "cache"
    qpath = tmp_path / "q.sqlite"
    pid = "polparty/republican"
    common = ["--config", str(cfg), "--cache-dir", str(cache), "--queue", str(qpath)]

    # nothing cached yet: a clear message, usage exit code
    assert main(["review", *common, "--escalate", "--persona", pid]) == 2

    settings = load_settings(argparse.Namespace(config=str(cfg), cache_dir=str(cache)))
    registry, store = _runtime.make_registry(settings), _runtime.make_store(settings)
    steerer = _runtime.make_steerer(settings, registry, store, fake)

    async def precompute():
        es = await steerer.compute(pid)
        await steerer.aclose()
        return es

    es0 = asyncio.run(precompute())
    key = steerer.cache_key(pid)

    # --policy answer_margin asks where the model preferred its answers least (into a queue of its own)
    q2path = tmp_path / "q2.sqlite"
    margins = es0.answer_margins()
    want = sorted(margins, key=lambda g: (margins[g], g))[:2]
    assert main(["review", *common[:-1], str(q2path), "--escalate", "--persona", pid, "--k", "2", "--policy", "answer_margin"]) == 0
    asked = AnnotationQueue(q2path).escalations()
    assert sorted(e.question_id for e in asked) == sorted(want) and {e.policy for e in asked} == {"answer_margin"}

    assert main(["review", *common, "--escalate", "--persona", pid, "--k", "2"]) == 0
    q = AnnotationQueue(qpath)
    pending = q.escalations(status="pending")
    assert len(pending) == 2 and all(e.version == es0.version for e in pending)
    assert main(["review", *common, "--escalate", "--persona", pid, "--k", "2", "--budget", "2"]) == 0
    assert len(q.escalations()) == 2  # budget reached: nothing new

    for e in pending:
        q.receive(Answer(escalation_id=e.id, option=e.options[-1].id, version=e.version, annotator="gil"))
    assert main(["review", *common, "--apply"]) == 0
    assert q.answers() == [] and len(q.escalations(status="applied")) == 2

    async def current():
        s2 = _runtime.make_store(settings)
        try:
            return await s2.get(key)
        finally:
            s2.close()

    es1 = asyncio.run(current())
    assert es1.version != es0.version and es1.provenance.parent_version == es0.version
    for e in pending:
        for i, v in e.labels_for(e.options[-1].id).items():
            assert es1.labels[i].value == v and es1.labels[i].source == "human"
    assert main(["review", *common, "--apply"]) == 0  # nothing new: a no-op

"""`LabelStudioAdapter` against a real Label Studio server (``label-studio start``, SQLite) that
this module starts on a loopback port, with an annotation created through its API standing in for
a person. scripts/test.sh installs Label Studio in its own venv (.venv-labelstudio); without it
these tests are skipped with the reason shown (pytest -rs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from escalation_helpers import hand_example_set, make_pool
from services import free_port, stop
from steerkit.errors import FeedbackError, FeedbackTargetMissingError, InvalidAnswerError
from steerkit.escalation import Answer, FeedbackAdapter, build_escalation

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install 'steerkit[labelstudio]')")
from steerkit.adapters.label_studio import LABEL_CONFIG, LabelStudioAdapter  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "5c0ffee0123456789abcdef0123456789abcdef0"


def _label_studio_bin() -> str | None:
    for cand in (os.environ.get("STEERKIT_LABEL_STUDIO_BIN"), str(ROOT / ".venv-labelstudio" / "bin" / "label-studio"),
                 shutil.which("label-studio")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = _label_studio_bin()
    if exe is None:
        pytest.skip("Label Studio is not installed: scripts/test.sh installs it into .venv-labelstudio "
                    "(or set STEERKIT_LABEL_STUDIO_BIN)")
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT") and not k.startswith("LABEL_STUDIO_")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data), LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        # nothing leaves the machine: no version check, no analytics, no error reporting
        LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="",
    )
    log = open(data / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port), "--username", "annotator@example.com",
         "--password", "annotator-pass-1", "--user-token", TOKEN],
        env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:  # first start migrates its SQLite database: a minute or two on a busy machine
            if proc.poll() is not None:
                raise RuntimeError("label-studio exited:\n" + (data / "server.log").read_text()[-3000:])
            try:
                if httpx.get(url + "/api/projects", headers={"Authorization": f"Token {TOKEN}"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 400:
                raise TimeoutError("label-studio did not start:\n" + (data / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        stop(proc, 30)


def _escalations(n: int = 3, conf: float = 0.5) -> tuple[Any, list[Any]]:
    pool = make_pool(n)
    es = hand_example_set(pool, {f"q{i}": conf + i / 100 for i in range(n)})
    return es, [build_escalation(es, f"q{i}", policy="icm_confidence") for i in range(n)]


def _http(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=30)


def _annotate(url: str, task_id: int, value: str) -> dict[str, Any]:
    """A person's answer, made through Label Studio's own API."""
    with _http(url) as h:
        r = h.post(f"/api/tasks/{task_id}/annotations/",
                   json={"result": [{"from_name": "answer", "to_name": "question", "type": "choices",
                                     "value": {"choices": [value]}}]})
        assert r.status_code == 201, r.text
        return r.json()


def _tasks(url: str, project: int) -> dict[str, dict[str, Any]]:
    with _http(url) as h:
        r = h.get("/api/tasks", params={"project": project, "fields": "all", "page_size": 100})
        r.raise_for_status()
        body = r.json()
        rows = body["tasks"] if isinstance(body, dict) else body
        return {t["data"]["steerkit_id"]: t for t in rows}


async def test_submit_predict_annotate_poll_acknowledge(label_studio: str) -> None:
    _, escs = _escalations(3)
    adapter = LabelStudioAdapter(label_studio, TOKEN, project_title="steerkit test 1")
    assert isinstance(adapter, FeedbackAdapter)
    res = await adapter.submit(escs)
    assert res.created == [e.id for e in escs]
    pid = adapter.project_id
    assert pid is not None
    with _http(label_studio) as h:
        project = h.get(f"/api/projects/{pid}").json()
    assert project["label_config"].strip() == LABEL_CONFIG.strip()
    tasks = _tasks(label_studio, pid)
    assert set(tasks) == {e.id for e in escs}
    for e in escs:  # the model's answer as a prediction, its confidence as the score
        [pred] = tasks[e.id]["predictions"]
        chosen = pred["result"][0]["value"]["choices"][0]
        assert chosen == next(o.text for o in e.options if o.id == e.suggestion.option)
        assert pred["score"] == pytest.approx(e.suggestion.confidence)
        assert pred["model_version"] == e.version
    assert await adapter.answers() == []
    assert {e.id for e in await adapter.escalations(status="pending")} == {e.id for e in escs}

    # a person answers the first question in Label Studio (the option the model did not pick)
    target = escs[0]
    other = next(o for o in target.options if o.id != target.suggestion.option)
    ann = _annotate(label_studio, tasks[target.id]["id"], other.text)
    [answer] = await adapter.answers()
    assert (answer.escalation_id, answer.option, answer.version) == (target.id, other.id, target.version)
    assert answer.adapter == "label_studio" and str(ann["id"]) in answer.answer_id
    assert [e.id for e in await adapter.escalations(status="answered")] == [target.id]
    assert await adapter.answers(persona_id="someone/else") == []
    # a second adapter (another process) sees the same state: nothing is kept locally
    again = LabelStudioAdapter(label_studio, TOKEN, project_id=pid)
    assert [a.answer_id for a in await again.answers()] == [answer.answer_id]
    await again.acknowledge([answer.answer_id])
    assert await adapter.answers() == []
    assert [e.id for e in await adapter.escalations(status="applied")] == [target.id]
    with pytest.raises(InvalidAnswerError):
        await adapter.acknowledge(["not-an-ls-answer"])
    await adapter.aclose()
    await again.aclose()


async def test_resubmit_is_idempotent_and_an_update_replaces_the_prediction(label_studio: str) -> None:
    es, escs = _escalations(2)
    adapter = LabelStudioAdapter(label_studio, TOKEN, project_title="steerkit test 2")
    await adapter.submit(escs)
    again = await adapter.submit(escs)
    assert again.unchanged == [e.id for e in escs] and not again.created and not again.updated
    tasks = _tasks(label_studio, adapter.project_id)  # type: ignore[arg-type]
    assert len(tasks) == 2
    # an annotation for the current version ...
    old = escs[0]
    _annotate(label_studio, tasks[old.id]["id"], old.options[0].text)
    assert len(await adapter.answers()) == 1
    # ... then the question is re-sent with a new suggestion: same task, new prediction, old answer stale
    es2 = hand_example_set(make_pool(2), {"q0": 0.9, "q1": 0.51}, values={"q0-o0": False, "q0-o1": True})
    new = build_escalation(es2, "q0", policy="icm_confidence")
    assert new.id == old.id and new.version != old.version and new.suggestion.option != old.suggestion.option
    res = await adapter.submit([new])
    assert res.updated == [new.id]
    tasks = _tasks(label_studio, adapter.project_id)  # type: ignore[arg-type]
    assert len(tasks) == 2
    [pred] = tasks[new.id]["predictions"]
    assert pred["score"] == pytest.approx(new.suggestion.confidence) and pred["model_version"] == new.version
    assert await adapter.answers() == []  # the old annotation answers an older version
    # an answer from elsewhere (the console, a webhook) is recorded in Label Studio; redelivery is a no-op
    ans = Answer(escalation_id=new.id, option=new.options[1].id, version=new.version, annotator="ops", answer_id="ext-1")
    assert await adapter.receive(ans) is True
    assert await adapter.receive(ans) is False
    [got] = await adapter.answers()
    assert (got.escalation_id, got.option, got.version) == (new.id, new.options[1].id, new.version)
    with pytest.raises(InvalidAnswerError, match="stale answer"):
        await adapter.receive(ans.model_copy(update={"version": old.version, "answer_id": "ext-2"}))
    await adapter.aclose()


async def test_deleted_task_and_project_are_typed_errors(label_studio: str) -> None:
    _, escs = _escalations(2)
    adapter = LabelStudioAdapter(label_studio, TOKEN, project_title="steerkit test 3")
    await adapter.submit(escs)
    pid = adapter.project_id
    tasks = _tasks(label_studio, pid)  # type: ignore[arg-type]
    _annotate(label_studio, tasks[escs[0].id]["id"], escs[0].options[1].text)
    [answer] = await adapter.answers()
    with _http(label_studio) as h:
        assert h.delete(f"/api/tasks/{tasks[escs[0].id]['id']}/").status_code == 204
    with pytest.raises(FeedbackTargetMissingError) as ei:
        await adapter.acknowledge([answer.answer_id])
    assert ei.value.kind == "task" and "submit the escalation again" in str(ei.value)
    res = await adapter.submit(escs)  # re-submitting re-creates the deleted task
    assert res.created == [escs[0].id] and res.unchanged == [escs[1].id]

    with _http(label_studio) as h:
        assert h.delete(f"/api/projects/{pid}/").status_code == 204
    for call in (adapter.answers(), adapter.submit(escs), LabelStudioAdapter(label_studio, TOKEN, project_id=pid).answers()):
        with pytest.raises(FeedbackTargetMissingError) as ei:
            await call
        assert ei.value.kind == "project" and ei.value.target_id == pid and str(pid) in str(ei.value)
    await adapter.aclose()


async def test_bad_token_and_unreachable_server_are_feedback_errors(label_studio: str) -> None:
    bad = LabelStudioAdapter(label_studio, "0" * 40, project_title="x")
    with pytest.raises(FeedbackError, match="refused the access token") as ei:
        await bad.answers()
    assert "0" * 40 not in str(ei.value)
    gone = LabelStudioAdapter(f"http://127.0.0.1:{free_port()}", TOKEN, project_title="x", timeout=2)
    with pytest.raises(FeedbackError, match="could not be reached"):
        await gone.answers()
    await bad.aclose()
    await gone.aclose()

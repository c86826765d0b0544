"""The `steerkit` command: exit codes, config show, precompute (resumable, idempotent), cache
management, chat. Searches run on the *fake* scorer (patched in for the search backend), chat
answers come from the fake upstream; one tiny demo run uses the real embedded model.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import SMALL_SEARCH, cli_env, run_json, threaded_upstream
from fake_upstream import FakeUpstream

from steerkit.cli import main
from steerkit.testing import FakeScorer

PERSONA = "polparty/democrat"
QUERY = "As a Democrat, what do you think about raising the minimum wage?"


class InterruptingFakeScorer(FakeScorer):
    """A fake scorer that presses Ctrl-C once, after ``limit`` calls.

    ``signal.raise_signal`` delivers SIGINT to this (the main) thread at once: ``os.kill(getpid())``
    may be delivered to any thread of the process (the test process has many), and the main
    thread then learns of it only when its ``select`` times out. ``handler`` records who handled
    SIGINT at that moment (asyncio.run's handler, which cancels the main task, unless the process
    inherited SIGINT ignored)."""

    def __init__(self, limit: int) -> None:
        super().__init__(lambda p: 0.7, model="fake-scorer")
        self.limit = limit
        self.handler: object = None

    async def score(self, prompts):  # type: ignore[no-untyped-def]
        if self.stats.calls + len(prompts) > self.limit and self.handler is None:
            self.handler = signal.getsignal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # asyncio.run turns it into cancellation + KeyboardInterrupt
            await asyncio.sleep(30)
        return await super().score(prompts)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Isolated config/cache, small searches, and the fake scorer as the search backend."""
    return cli_env(tmp_path, monkeypatch, **SMALL_SEARCH)


# --- basics -------------------------------------------------------------------------------------


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "precompute" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["precompute", "--jobs", "many"]) == 2


def test_entry_point_version() -> None:
    r = subprocess.run([sys.executable, "-m", "steerkit.cli", "--version"], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("steerkit ")


def test_config_show_masks_and_config_errors(env: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERKIT_SERVER__API_KEYS", "super-secret-client-key")
    monkeypatch.setenv("STEERKIT_CHAT_MODEL__API_KEY", "sk-super-secret")
    monkeypatch.setenv("STEERKIT_SERVER__PORT", "9191")
    assert main(["config", "show", "--chat-model", "flag-model"]) == 0
    out = capsys.readouterr().out
    assert "super-secret" not in out and "********" in out
    assert "port = 9191" in out and 'model = "flag-model"' in out
    data = run_json(capsys, ["config", "show", "--json"])
    assert data["server"]["api_keys"] == ["********"] and data["server"]["host"] == "127.0.0.1"

    monkeypatch.setenv("STEERKIT_SERVER__PORT", "not-a-port")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("steerkit: error: invalid configuration: server.port")


# --- precompute ---------------------------------------------------------------------------------


def test_precompute_selection_errors(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["precompute"]) == 2
    assert "--persona" in capsys.readouterr().err
    assert main(["precompute", "--persona", "polparty/nobody"]) == 2
    assert "unknown persona" in capsys.readouterr().err
    assert main(["precompute", "--dimension", "no_such_dimension"]) == 2


def test_precompute_is_idempotent_and_forceable(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    assert [r["status"] for r in first] == ["computed"] and first[0]["version"]
    assert env["backends"][-1].stats.calls > 0

    again = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    assert again[0]["status"] == "cached" and again[0]["version"] == first[0]["version"]
    assert env["backends"][-1].stats.calls == 0  # nothing recomputed

    forced = run_json(capsys, ["precompute", "--persona", PERSONA, "--force", "--json"])
    assert forced[0]["status"] == "computed" and env["backends"][-1].stats.calls > 0
    assert forced[0]["version"] == first[0]["version"]  # same seed, pool and scorer: same labels


def test_precompute_resumes_after_interrupt(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    full = run_json(capsys, ["precompute", "--persona", PERSONA, "--json", "--cache-dir", str(env["cache"] / "ref")])
    full_calls = env["backends"][-1].stats.calls

    env["factory"] = lambda: InterruptingFakeScorer(limit=max(1, full_calls * 2 // 3))
    # Ctrl-C as a terminal delivers it: a test runner started in the background by a shell
    # without job control inherits SIGINT *ignored*, and then Ctrl-C rightly does nothing
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc = main(["precompute", "--persona", PERSONA])
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert rc == 130, f"SIGINT was handled by {env['backends'][-1].handler!r}"
    err = capsys.readouterr().err
    assert "resume" in err
    checkpoints = list((env["cache"] / "checkpoints").glob("*.json"))
    assert len(checkpoints) == 1

    env["factory"] = lambda: FakeScorer(lambda p: 0.7, model="fake-scorer")
    resumed = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    assert resumed[0]["status"] == "resumed"
    assert env["backends"][-1].stats.calls < full_calls  # work before the interrupt was not redone
    assert resumed[0]["version"] == full[0]["version"]
    assert not list((env["cache"] / "checkpoints").glob("*.json"))  # cleaned up once cached


# --- cache --------------------------------------------------------------------------------------


def test_cache_ls_show_rm_export_import(env: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_json(capsys, ["cache", "ls", "--json"]) == []
    computed = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    rows = run_json(capsys, ["cache", "ls", "--json"])
    assert len(rows) == 1
    row = rows[0]
    assert row["persona"] == PERSONA and row["version"] == computed[0]["version"] and row["model"] == "fake-scorer"
    assert row["items"] > 0 and row["size_bytes"] > 0 and row["violations"] == 0

    assert main(["cache", "ls"]) == 0
    assert PERSONA in capsys.readouterr().out
    personas = run_json(capsys, ["cache", "ls", "--personas", "--json"])
    assert {"persona": PERSONA, "cached": True} .items() <= next(p for p in personas if p["persona"] == PERSONA).items()

    es = run_json(capsys, ["cache", "show", PERSONA, "--json"])
    assert es["persona"]["id"] == PERSONA and len(es["labels"]) == row["items"]
    assert main(["cache", "show", PERSONA]) == 0
    assert "True" in capsys.readouterr().out
    assert main(["cache", "show", "polparty/republican"]) == 2

    export = tmp_path / "export.jsonl"
    assert main(["cache", "export", "-o", str(export)]) == 0
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "steerkit.cache/1" and len(lines) == 2

    assert main(["cache", "rm", PERSONA]) == 0
    assert run_json(capsys, ["cache", "ls", "--json"]) == []
    assert main(["cache", "rm", PERSONA]) == 2  # nothing left to delete

    assert main(["cache", "import", str(export)]) == 0
    assert "imported 1" in capsys.readouterr().out
    assert run_json(capsys, ["cache", "ls", "--json"])[0]["version"] == row["version"]
    assert main(["cache", "import", str(export)]) == 0
    assert "imported 0 example set(s), 1 already present" in capsys.readouterr().out

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "steerkit.cache/1"}\n{"key": {"persona_id": 1}}\n')
    assert main(["cache", "import", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["cache", "import", str(tmp_path / "missing.jsonl")]) == 2


# --- chat ---------------------------------------------------------------------------------------


@pytest.fixture
def threaded_fake_upstream() -> Iterator[FakeUpstream]:
    with threaded_upstream() as up:
        yield up


def test_chat_steered_and_unsteered(env: dict[str, Any], capsys: pytest.CaptureFixture[str], threaded_fake_upstream: FakeUpstream) -> None:
    up = threaded_fake_upstream
    flags = ["--chat-base-url", up.base_url, "--chat-model", "fake-echo"]
    out = run_json(capsys, ["chat", QUERY, *flags, "--json"])
    assert out["answer"] == "ok"
    assert out["personas"] and out["personas"][0]["persona_id"] == PERSONA
    assert out["cache"] in ("computed", "miss", "hit") and out["example_set_version"]
    assert out["examples_used"] > 0 and out["injected"]
    sent = up.requests[-1]["messages"]
    assert sent[-1] == {"role": "user", "content": QUERY}  # the user's message itself is untouched
    assert sent[0]["role"] == "system" and len(sent) == 2  # the injection: a system message before it
    assert out["injected"] == [sent[0]]  # what the command reports injecting is what the upstream got

    out = run_json(capsys, ["chat", QUERY, *flags, "--no-steer", "--json"])
    assert out["injected"] == [] and up.requests[-1]["messages"] == [{"role": "user", "content": QUERY}]
    assert out["steered"] is False
    capsys.readouterr()
    assert main(["chat", QUERY, *flags, "--no-steer"]) == 0
    assert "steering off (--no-steer)" in capsys.readouterr().out  # not "none found"

    assert main(["chat", QUERY, *flags]) == 0  # the rich rendering
    assert "ok" in capsys.readouterr().out
    assert main(["chat", QUERY, *flags, "--persona", "polparty/nobody"]) == 2


def test_chat_backend_failure_exits_1(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    assert main(["chat", "Say hi.", "--chat-base-url", dead, "--chat-model", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("steerkit: error:")


# --- serve (a real process: the embedded model as search backend, the fake upstream as chat) ---


@pytest.mark.llama
def test_serve_process_steers_and_stops_cleanly(tmp_path: Path, gguf_path: Path, threaded_fake_upstream: FakeUpstream) -> None:
    import socket
    import time

    import httpx
    import openai

    up = threaded_fake_upstream
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        STEERKIT_CACHE_DIR=str(tmp_path / "cache"),
        STEERKIT_SEARCH_MODEL__MODEL_PATH=str(gguf_path),
        STEERKIT_SEARCH_MODEL__N_THREADS="1",
        STEERKIT_STEER__MISS_POLICY="off",  # no search on a request: this test is about the process
        STEERKIT_SERVER__LOG_LEVEL="warning",
    )
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--chat-base-url", up.base_url]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="fake-echo", messages=[{"role": "user", "content": QUERY}])
        assert raw.parse().choices[0].message.content == "ok"
        assert raw.headers["x-steerkit-persona"] == PERSONA and raw.headers["x-steerkit-cache"] == "off"

        stream = client.chat.completions.create(model="fake-slow-stream", messages=[{"role": "user", "content": "hi"}], stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content == "c0 "
        proc.send_signal(signal.SIGTERM)  # graceful: the stream in flight still completes
        rest = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
        assert rest == [f"c{i} " for i in range(1, up.n_chunks)]
        assert proc.wait(60) == 0
        err = proc.stderr.read() if proc.stderr else ""
        assert f"proxy on http://127.0.0.1:{port}/v1" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def test_serve_with_workers(tmp_path: Path, threaded_fake_upstream: FakeUpstream) -> None:
    """``serve --workers 2``: two worker processes serve the proxy; SIGTERM stops them all."""
    import socket
    import time

    import httpx

    up = threaded_fake_upstream
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        STEERKIT_CACHE_DIR=str(tmp_path / "cache"),
        # a search server that is never called (miss policy off): no model is loaded by the workers
        STEERKIT_SEARCH_MODEL__BASE_URL="http://127.0.0.1:9/v1",
        STEERKIT_SEARCH_MODEL__MODEL="unused",
        STEERKIT_STEER__MISS_POLICY="off",
        STEERKIT_SERVER__LOG_LEVEL="warning",
    )
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--chat-base-url", up.base_url, "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200 and len(_children(proc.pid)) >= 2:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        with httpx.Client(base_url=base) as h:
            for _ in range(6):
                r = h.post("/v1/chat/completions", json={"model": "fake-echo", "messages": [{"role": "user", "content": QUERY}]})
                assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
                assert r.headers["x-steerkit-persona"] == PERSONA and r.headers["x-steerkit-cache"] == "off"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        def running(w: int) -> bool:
            try:
                return "\tZ" not in Path(f"/proc/{w}/status").read_text().split("State:", 1)[1].splitlines()[0]
            except (FileNotFoundError, IndexError):
                return False

        for _ in range(100):  # a worker that exits is reaped by init once its parent is gone
            if not any(running(w) for w in workers):
                break
            time.sleep(0.1)
        assert not any(running(w) for w in workers)
        assert "(2 workers)" in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- demo (real embedded model, tiny) ------------------------------------------------------------


@pytest.mark.llama
@pytest.mark.xdist_group("demo")
@pytest.mark.timeout(1500)  # the session's tiny demo may start here
def test_demo_tiny_real_run(tiny_demo: dict[str, Any]) -> None:
    """The session's one tiny demo (tests/conftest.py; test_first_hour checks the rest of it)."""
    out = tiny_demo["out"]
    assert out["persona"] == "polparty/republican"
    assert out["example_set"]["items"] >= 2 and not out["example_set"]["cached"]
    assert out["steering"]["examples_used"] > 0
    assert isinstance(out["unsteered"], str) and isinstance(out["steered"], str)

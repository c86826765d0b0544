"""A new user's first hour (issue 13): the defaults and messages of the README path.

Searches run on fake scorers (patched in for the search backend) and chat answers come from the
fake upstream, except where a test says it uses the real embedded model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import cli_env, run_json, threaded_upstream
from fake_upstream import FakeUpstream

from steerkit import PackRegistry
from steerkit._config import Settings
from steerkit.cli import build_parser, main
from steerkit.cli.precompute import Eta, _ProgressView, checkpoint_figures
from steerkit.errors import UnknownPersonaError
from steerkit.testing import FakeScorer

ROOT = Path(__file__).resolve().parent.parent
NIGERIA = "I'm from Nigeria. Should women have equal rights?"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Isolated config and cache; the search backend is ``state["factory"]()`` (a fake)."""
    return cli_env(tmp_path, monkeypatch, STEERKIT_STEER__MAX_POOL_ITEMS="20")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with threaded_upstream() as up:
        yield up


# --- 1. the fast search on the command's first-run paths, an honest ETA, resumed figures -------


def test_the_command_and_proxy_settings_search_sparse(tmp_path: Path) -> None:
    s = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.search.mode == "sparse" and s.steer_config().search.mode == "sparse"
    # a [search] section without a mode keeps the command's default; a mode given wins
    f = tmp_path / "c.toml"
    f.write_text("[search]\nmax_iterations = 50\n")
    assert Settings.load(f, env={}).search.mode == "sparse"
    f.write_text('[search]\nmode = "exact"\n')
    assert Settings.load(f, env={}).search.mode == "exact"
    assert Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path), "STEERKIT_SEARCH__MODE": "exact"}).search.mode == "exact"


@pytest.mark.parametrize("argv", [["demo"], ["chat", NIGERIA], ["serve"], ["precompute", "--all"]])
def test_every_first_run_path_builds_its_steerer_with_the_sparse_search(argv: list[str], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from steerkit.cli import load_settings

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    args = build_parser().parse_args(argv)
    assert load_settings(args).steer_config().search.mode == "sparse"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def progress(phase: str, labelled: int, iteration: int, accepted: int = 0, total: int = 100, max_iterations: int = 200) -> Any:
    from steerkit.icm.search import SearchProgress

    return SearchProgress(restart=0, iteration=iteration, max_iterations=max_iterations, accepted=accepted, u=1.0, calls=labelled,
                          memo_hits=0, labelled=labelled, total=total, temperature=1.0, elapsed_s=0.0, phase=phase)


def test_eta_is_a_measured_figure_from_the_first_labelled_unit_then_an_upper_bound() -> None:
    clock = Clock()
    eta = Eta(patience=40, clock=clock)
    assert eta.update(progress("init", 16, 0)) == "estimating…"  # nothing measured: no figure invented
    clock.t = 4.0
    # 4 items labelled in 4 s: 80 left and the 16 seed items (scored last) at 1 s each
    assert eta.update(progress("complete", 20, 1)) == "first labelling in ~1:36, then refining"
    clock.t = 84.0
    assert eta.update(progress("anneal", 100, 50, accepted=5)) == "refining, estimating…"
    clock.t = 94.0  # 10 s per anneal iteration; 40 iterations of patience left (< 149 of budget)
    assert eta.update(progress("anneal", 100, 51, accepted=6)) == "refining, ≤ 6:40 left"
    clock.t = 104.0  # no accepted change: patience runs down
    assert eta.update(progress("anneal", 100, 52, accepted=6)) == "refining, ≤ 6:30 left"
    assert eta.update(progress("done", 100, 52)) == "done"


def test_a_resumed_search_shows_the_checkpoint_figures_at_once(tmp_path: Path) -> None:
    from steerkit.models import SearchConfig

    ckpt = tmp_path / "c.json"
    ckpt.write_text(json.dumps({"restarts": [{"iteration": 37, "accepted": 30, "labels": {str(i): True for i in range(64)},
                                              "phase": "complete"}]}))
    assert checkpoint_figures(ckpt) == {"iteration": 37, "accepted": 30, "labelled": 64, "phase": "complete"}
    assert checkpoint_figures(tmp_path / "missing.json") is None
    view = _ProgressView(["p"], SearchConfig(), enabled=False, checkpoint_of=lambda pid: ckpt)
    view.on_status("p", "resuming")
    assert view.last["p"]["it"] == f"37/{SearchConfig().max_iterations}" and view.last["p"]["acc"] == 30 and "64 labelled" in view.last["p"]["status"]


class FirstLabellingThenSlow(FakeScorer):
    """Fast until ``fast`` prompts were scored (enough for the first complete labelling), then slow."""

    def __init__(self, fast: int) -> None:
        super().__init__(lambda p: 0.7, model="fake-scorer")
        self.fast = fast

    async def score(self, prompts):  # type: ignore[no-untyped-def]
        if self.stats.calls >= self.fast:
            await asyncio.sleep(30)
        return await super().score(prompts)


def test_chat_answers_a_cold_persona_from_the_first_complete_labelling_within_its_budget(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str], upstream: FakeUpstream) -> None:
    env["factory"] = lambda: FirstLabellingThenSlow(fast=20)
    flags = ["--chat-base-url", upstream.base_url, "--chat-model", "fake-echo", "--wait-timeout", "0.2", "--json"]
    out = run_json(capsys, ["chat", NIGERIA, *flags])
    assert out["cache"] == "provisional" and out["examples_used"] > 0 and out["injected"]
    assert out["personas"][0]["persona_id"] == "country/nigeria"
    # the search stopped at its checkpoint (a re-run resumes it); nothing provisional was cached
    assert list((env["cache"] / "checkpoints").glob("country_nigeria-*.json"))
    assert run_json(capsys, ["cache", "ls", "--json"]) == []


def test_chat_waits_for_a_search_that_ends_within_its_budget(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                             upstream: FakeUpstream) -> None:
    flags = ["--chat-base-url", upstream.base_url, "--chat-model", "fake-echo", "--json"]
    out = run_json(capsys, ["chat", NIGERIA, *flags])
    assert out["cache"] == "hit" and out["example_set_version"]  # computed first, then a hit


# --- 2. a bounded answer length -----------------------------------------------------------------


def test_chat_asks_for_a_bounded_answer_by_default(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                   upstream: FakeUpstream) -> None:
    flags = ["--chat-base-url", upstream.base_url, "--chat-model", "fake-echo", "--json"]
    run_json(capsys, ["chat", "Say hi.", *flags])
    assert upstream.requests[-1]["max_tokens"] == 256
    run_json(capsys, ["chat", "Say hi.", *flags, "--max-tokens", "17"])
    assert upstream.requests[-1]["max_tokens"] == 17


def test_chat_trims_an_answer_cut_by_the_limit_and_leaves_a_servers_sampling_alone(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = ["--chat-base-url", upstream.base_url, "--json", "--no-steer"]
    out = run_json(capsys, ["chat", "Say hi.", *flags, "--chat-model", "fake-cut", "--max-tokens", "9"])
    assert out["answer"] == "A whole sentence. [trimmed: the answer hit --max-tokens 9]" and out["trimmed"] is True
    assert "frequency_penalty" not in upstream.requests[-1] and "note" not in out  # a server: its own defaults
    monkeypatch.setenv("STEERKIT_CHAT_MODEL__FREQUENCY_PENALTY", "0.3")
    out = run_json(capsys, ["chat", "Say hi.", *flags, "--chat-model", "fake-echo"])
    assert upstream.requests[-1]["frequency_penalty"] == 0.3 and out["answer"] == "ok" and out["trimmed"] is False


def test_an_embedded_chat_model_answers_with_a_frequency_penalty_unless_configured() -> None:
    from steerkit._runtime import EMBEDDED_FREQUENCY_PENALTY, Runtime

    s = Settings.load(env={})
    assert Runtime(s, chat_embedded=True).chat_defaults() == {"frequency_penalty": EMBEDDED_FREQUENCY_PENALTY}
    assert Runtime(s, chat_embedded=False).chat_defaults() == {}
    s2 = Settings.load(env={"STEERKIT_CHAT_MODEL__FREQUENCY_PENALTY": "0"})
    assert Runtime(s2, chat_embedded=True).chat_defaults() == {"frequency_penalty": 0.0}


# --- 3. the example chats with the instruction-tuned model --------------------------------------


def test_wrap_openai_example_chats_with_the_instruction_tuned_smollm2() -> None:
    import ast

    tree = ast.parse((ROOT / "examples" / "wrap_openai.py").read_text())
    calls = {ast.unparse(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "smollm2_path" in calls, "the chat model must be the packaged SmolLM2-135M-Instruct"
    client = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "AsyncOpenAI")
    base = next(k.value for k in client.keywords if k.arg == "base_url")
    assert "chat" in ast.unparse(base), "the wrapped client must talk to the chat model's server, not the search model's"


# --- 4. the demo tells the truth ----------------------------------------------------------------


def test_complete_answer_trims_a_cut_answer_to_its_last_sentence_and_says_so() -> None:
    from steerkit.cli._answers import complete_answer

    assert complete_answer("Yes. It is fine. And then", "length", 9) == ("Yes. It is fine. [trimmed: the answer hit --max-tokens 9]", True)
    assert complete_answer("Done", "stop", 9) == ("Done", False)


@pytest.mark.llama
@pytest.mark.xdist_group("demo")
@pytest.mark.timeout(1500)  # the session's tiny demo may start here
def test_demo_shows_the_verdict_the_injected_examples_and_the_real_model_line_and_caches_for_cache_ls(
        tiny_demo: dict[str, Any], gguf_path: Path) -> None:
    """The real embedded model (the session's one tiny demo, tests/conftest.py); the probe's verdict
    is computed once per model and cached."""
    import subprocess
    import sys

    out = tiny_demo["out"]
    assert out["probe"] and out["probe"]["verdict"] and gguf_path.stem[:8] in out["probe"]["summary"].lower().replace("_", "-") or out["probe"]["summary"]
    assert out["injected_examples"] and all("→" in e for e in out["injected_examples"])
    assert len(out["injected_examples"]) == out["steering"]["examples_used"]
    assert "--search-base-url" in out["real_model"] and "--search-model" in out["real_model"]
    assert out["sampling"] == {"max_tokens": 24, "temperature": 0, "frequency_penalty": 0.5}  # the embedded chat model's
    for side in ("unsteered", "steered"):  # complete: ends a sentence, or says it was trimmed
        text = out[side].rstrip()
        assert text.endswith((".", "!", "?", '"', ")")) or "[trimmed" in text or "…" in text
    res = subprocess.run([sys.executable, "-m", "steerkit.cli", "cache", "ls", "--json"], env=tiny_demo["env"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)  # one cache location: the demo's set is listed
    assert [r["persona"] for r in listed] == [out["persona"]] and listed[0]["version"] == out["example_set"]["version"]


# --- 5. serve: the upstream checked, reported and named; no search while it is down ------------


def dead_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://user:hunter2@127.0.0.1:{s.getsockname()[1]}/v1?api_key=sk-secret"


class CountingSteerer:
    def __init__(self) -> None:
        self.calls = 0

    async def prepare(self, messages: list[dict], options: Any = None) -> tuple[list[dict], Any]:
        from steerkit import SteerInfo

        self.calls += 1
        return messages, SteerInfo()


async def test_proxy_reports_a_down_upstream_names_it_without_credentials_and_steers_nothing(tmp_path: Path) -> None:
    from steerkit._server import create_app

    url = dead_url()
    settings = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path), "STEERKIT_CACHE_DIR": str(tmp_path / "c")})
    steerer = CountingSteerer()
    app = create_app(settings, steerer=steerer, upstream_base_url=url)
    await app.startup()
    try:
        assert app.upstream is not None and app.upstream.ok is False  # checked at start-up
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as h:
            r = await h.get("/healthz")
            assert r.status_code == 503 and r.json()["status"] == "upstream_unavailable"
            assert r.json()["upstream"]["url"] == url.split("?")[0].replace("user:hunter2@", "")
            r = await h.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "As a Democrat, hi"}]})
            assert r.status_code == 502
            msg = r.json()["error"]["message"]
            assert "127.0.0.1" in msg and "hunter2" not in r.text and "sk-secret" not in r.text
            assert steerer.calls == 0  # no steering, so no persona search, for a request that cannot be answered
    finally:
        await app.shutdown()


async def test_proxy_healthz_is_ok_with_a_live_upstream(tmp_path: Path) -> None:
    from steerkit._server import create_app

    up = FakeUpstream()
    await up.start()
    try:
        settings = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path), "STEERKIT_CACHE_DIR": str(tmp_path / "c")})
        app = create_app(settings, steerer=CountingSteerer(), upstream_base_url=up.base_url)
        await app.startup()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as h:
            r = await h.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["upstream"]["ok"] is True
            r = await h.get("/v1/nope")
            assert r.status_code == 404 and "/v1/nope" in r.json()["error"]["message"]  # a 404 with a detail
        await app.shutdown()
    finally:
        await up.stop()


# --- 6. one cache location: see the demo test above ---------------------------------------------
# --- 7. persona names -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "pid"), [("nigeria", "country/nigeria"), ("democrat", "polparty/democrat"),
                                           ("Nigerian", "country/nigeria"), ("Republicans", "polparty/republican"),
                                           ("country/nigeria", "country/nigeria")])
def test_persona_names_resolve_from_the_packs(name: str, pid: str) -> None:
    assert PackRegistry.default().resolve(name) == pid


def test_an_unknown_persona_name_says_did_you_mean() -> None:
    with pytest.raises(UnknownPersonaError) as e:
        PackRegistry.default().resolve("nigerai")
    assert "did you mean" in e.value.hint and "country/nigeria" in e.value.hint


def test_the_commands_resolve_persona_names_before_the_model_loads(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                                   upstream: FakeUpstream) -> None:
    assert main(["precompute", "--persona", "democrta"]) == 2
    assert "did you mean 'polparty/democrat'" in capsys.readouterr().err
    assert main(["chat", "hi", "--persona", "nigerai", "--chat-base-url", upstream.base_url, "--chat-model", "m"]) == 2
    assert env["backends"] == []  # rejected before any backend (model) was opened
    out = run_json(capsys, ["precompute", "--persona", "democrat", "--json"])
    assert out[0]["persona"] == "polparty/democrat" and out[0]["status"] == "computed"
    shown = run_json(capsys, ["cache", "show", "democrat", "--json"])
    assert shown["persona"]["id"] == "polparty/democrat"


# --- 8. the docs live in the repository ---------------------------------------------------------


def test_the_docs_point_only_at_files_a_clone_has() -> None:
    import re

    for doc in ("README.md", "ARCHITECTURE.md"):
        text = (ROOT / doc).read_text()
        for target in re.findall(r"`((?:\.\./|\./)?[\w./-]+\.(?:md|py|toml|sh))`", text):
            if "/" in target or target in ("ARCHITECTURE.md", "README.md"):  # paths in the repository (not output names)
                assert (ROOT / target).exists(), f"{doc} points at {target}, which a clone does not have"
        assert "../shared" not in text


# --- 9. serve installed, help for every flag, config show, the install hint ----------------------


def test_the_first_readme_command_installs_what_serve_needs() -> None:
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1)
    extras = set(re.search(r'pip install -e "\.\[([\w,]+)\]"', first).group(1).split(","))
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = " ".join(d for e in extras for d in deps[e])
    assert "uvicorn" in installed and "starlette" in installed


def test_the_serve_hint_names_the_clone_form() -> None:
    from steerkit.cli.serve_cmd import server_install_hint

    assert server_install_hint().endswith('pip install -e ".[server]"')  # tests run from a clone


def test_every_flag_of_every_command_has_help_text() -> None:
    def walk(p: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, f"{path} {name}")
            elif not a.help:
                yield f"{path} {'/'.join(a.option_strings) or a.dest}"

    missing = list(walk(build_parser(), "steerkit"))
    assert not missing, f"flags without help text: {missing}"


def test_config_show_has_no_empty_section(tmp_path: Path) -> None:
    text = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path)}).show()
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("["):
            body = [x for x in lines[i + 1:] if not x.startswith("[")][:1]
            assert body and body[0].strip(), f"{ln} has nothing under it"
    assert "{  }" not in text and 'mode = "sparse"' in text


async def test_an_upstream_error_without_a_body_gets_a_detail_naming_the_upstream(tmp_path: Path) -> None:
    from steerkit._server import create_app

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, content=b"")  # e.g. a server without this route

    settings = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path), "STEERKIT_CACHE_DIR": str(tmp_path / "c")})
    app = create_app(settings, steerer=CountingSteerer(), upstream_base_url="http://127.0.0.1:9/v1",
                     transport=httpx.MockTransport(upstream))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as h:
            for r in (await h.get("/v1/models"),
                      await h.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})):
                assert r.status_code == 404
                msg = r.json()["error"]["message"]
                assert "http://127.0.0.1:9/v1" in msg and "404" in msg
    finally:
        await app.shutdown()

"""The LiteLLM callback (`steerkit.adapters.litellm`).

Its logic is tested here without LiteLLM (`LiteLLMSteering`, the part that holds no LiteLLM type),
then inside a real LiteLLM proxy (``litellm --config``) on loopback, started from its own venv
(``.venv-litellm``, which scripts/test.sh creates; without it those tests are skipped with the
reason shown, pytest -rs). The proxy runs the README's "With LiteLLM" config as written (only the
upstream address changes) in front of a fake upstream (tests/fake_upstream.py) that records the
requests it gets, with an example-set cache filled beforehand by the *fake* scorer. LiteLLM stays
offline: its bundled model cost map, no database.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream
from services import free_port, stop

from steerkit._config import Settings, SteerOptions
from steerkit._runtime import make_registry, make_steerer, make_store
from steerkit._wire import WireError
from steerkit.adapters.litellm import (
    INFO_KEY,
    LiteLLMSteering,
    SteeringRejected,
    pop_options,
)
from steerkit.testing import FakeScorer

ROOT = Path(__file__).resolve().parent.parent
QUERY = "As a Democrat, what do you think about raising the minimum wage?"
UNCACHED = "As a Republican, what do you think about raising the minimum wage?"
MODEL = "fake-litellm"  # the search model's id: part of every cache key
MASTER_KEY = "sk-" + secrets.token_hex(32)  # LiteLLM refuses to start without a strong one


def steer_env(tmp: Path, search_url: str) -> dict[str, str]:
    """The STEERKIT_* settings both sides use (the precompute here, the callback in LiteLLM):
    miss policy ``off``, so a request can never start a search."""
    return {
        "STEERKIT_CACHE_DIR": str(tmp / "cache"), "STEERKIT_SEARCH_MODEL__BASE_URL": search_url,
        "STEERKIT_SEARCH_MODEL__MODEL": MODEL, "STEERKIT_STEER__MISS_POLICY": "off",
        "STEERKIT_SEARCH__MAX_ITERATIONS": "8", "STEERKIT_SEARCH__PATIENCE": "4", "STEERKIT_SEARCH__RESTARTS": "1",
    }


async def filled_steerer(env: dict[str, str]) -> Any:
    """A steerer over the settings of ``env`` whose cache holds the Democrat persona's example set
    (computed by the fake scorer)."""
    settings = Settings.load(env=env)
    steerer = make_steerer(settings, make_registry(settings), make_store(settings), FakeScorer(lambda p: 0.7, model=MODEL))
    (match,) = await steerer.extract([{"role": "user", "content": QUERY}])
    await steerer.compute(match.persona_id)
    return steerer


# --- the callback's logic, without LiteLLM ---------------------------------------------------------


def test_options_come_from_the_top_level_or_litellm_metadata_and_are_removed() -> None:
    data: dict[str, Any] = {"messages": [], "steerkit": {"k": 2}, "metadata": {"user_api_key": "x"}}
    assert pop_options(data) == SteerOptions(k=2)
    assert "steerkit" not in data and data["metadata"] == {"user_api_key": "x"}  # LiteLLM's own metadata kept
    for key in ("metadata", "litellm_metadata"):
        data = {"messages": [], key: {"steerkit": '{"enabled": false}', "tags": []}}
        assert pop_options(data) == SteerOptions(enabled=False)
        assert data[key] == {"tags": []}


@pytest.mark.parametrize("data", [
    {"steerkit": {"enabled": False}, "metadata": {"steerkit": {"k": 1}}},  # given twice
    {"steerkit": {"miss_policy": "always"}},  # not a policy
    {"steerkit": "{not json"},
])
def test_malformed_options_are_the_proxys_wire_errors(data: dict[str, Any]) -> None:
    with pytest.raises(WireError) as e:
        pop_options(data)
    assert e.value.code == "invalid_steerkit_options"


async def test_a_cache_hit_steers_and_keeps_the_info_for_the_headers(tmp_path: Path) -> None:
    steerer = await filled_steerer(steer_env(tmp_path, "http://127.0.0.1:9/v1"))
    steering = LiteLLMSteering(steerer)
    sent = [{"role": "user", "content": QUERY}]
    data = {"model": "chat", "messages": list(sent), "metadata": {}, "steerkit": {"k": 3}}
    out = await steering.pre_call(data, "acompletion")
    assert out is data and "steerkit" not in data
    assert data["messages"][0]["role"] == "system" and data["messages"][1:] == sent
    headers = steering.response_headers(data)
    assert headers is not None and headers["X-Steerkit-Cache"] == "hit" and headers["X-Steerkit-Persona"]
    assert data["metadata"][INFO_KEY]["examples_used"] == 3  # the request's k, below the operator's

    class Response:  # the shape LiteLLM's ModelResponse has where the callback touches it
        def __init__(self) -> None:
            self.usage = {"prompt_tokens": 11}
            self._hidden_params: dict[str, Any] = {"additional_headers": {"x-other": "1"}}

    response = Response()
    await steering.on_success(data, response)
    assert response._hidden_params["additional_headers"] == {"x-other": "1", **headers}
    assert steerer.counters.prompt_tokens == 11
    await steerer.aclose()


async def test_requests_that_are_not_chat_or_ask_for_an_unknown_persona(tmp_path: Path) -> None:
    steerer = await filled_steerer(steer_env(tmp_path, "http://127.0.0.1:9/v1"))
    steering = LiteLLMSteering(steerer)
    emb = {"input": QUERY, "steerkit": {"enabled": False}}
    assert await steering.pre_call(emb, "aembedding") == {"input": QUERY, "steerkit": {"enabled": False}}  # untouched
    assert steering.response_headers(emb) is None
    with pytest.raises(SteeringRejected) as e:
        await steering.pre_call({"messages": [{"role": "user", "content": "hi"}], "steerkit": {"persona": "nope/none"}},
                                "acompletion")
    assert e.value.status == 400
    with pytest.raises(SteeringRejected) as e:
        await steering.pre_call({"messages": [{"role": "user", "content": "hi"}], "steerkit": {"k": "many"}}, "acompletion")
    assert (e.value.status, e.value.code) == (400, "invalid_steerkit_options")
    await steerer.aclose()


class FailingFakeSteerer:
    """A fake steerer whose steering always fails with a backend error."""

    async def prepare(self, messages: list[dict], options: Any = None) -> Any:
        from steerkit.errors import BackendUnavailableError

        raise BackendUnavailableError("fake search backend down at http://user:secret@gpu:8000")


async def test_a_failing_steerer_fails_or_passes_through_as_the_operator_chose() -> None:
    data = {"messages": [{"role": "user", "content": QUERY}]}
    with pytest.raises(SteeringRejected) as e:
        await LiteLLMSteering(FailingFakeSteerer(), on_steer_error="fail").pre_call(dict(data), "acompletion")  # type: ignore[arg-type]
    assert e.value.status == 502 and "secret" not in e.value.message
    passed = dict(data)
    steering = LiteLLMSteering(FailingFakeSteerer(), on_steer_error="passthrough")  # type: ignore[arg-type]
    await steering.pre_call(passed, "acompletion")
    assert passed["messages"] == data["messages"]
    assert steering.response_headers(passed) == {"X-Steerkit-Error": "BackendUnavailableError", "X-Steerkit-Note": "steering_failed"}


async def test_the_steerer_is_opened_from_the_settings_on_first_use(tmp_path: Path) -> None:
    env = steer_env(tmp_path, "http://127.0.0.1:9/v1")
    await (await filled_steerer(env)).aclose()
    steering = LiteLLMSteering(settings=Settings.load(env=env))
    data = [{"messages": [{"role": "user", "content": QUERY}]} for _ in range(3)]
    await asyncio.gather(*(steering.pre_call(d, "acompletion") for d in data))
    assert all(steering.response_headers(d)["X-Steerkit-Cache"] == "hit" for d in data)  # type: ignore[index]
    assert steering._runtime is not None
    await steering.aclose()


def test_importing_the_module_does_not_import_litellm() -> None:
    import subprocess
    import sys

    code = "import sys, steerkit.adapters.litellm as m; assert 'litellm' not in sys.modules; print(callable(m.litellm_callback))"
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr


# --- inside a real LiteLLM proxy -----------------------------------------------------------------------


def litellm_bin() -> str | None:
    for cand in (os.environ.get("STEERKIT_LITELLM_BIN"), str(ROOT / ".venv-litellm" / "bin" / "litellm")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def readme_config() -> str:
    """The ```yaml block of the README's "With LiteLLM" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## With LiteLLM"):]
    m = re.search(r"^```yaml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert m, "the README's 'With LiteLLM' section has no yaml block"
    return m.group(1)


def litellm_env(tmp: Path) -> dict[str, str]:
    """LiteLLM offline: its bundled model cost map, no database, no proxy variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STEERKIT_", "LITELLM_", "XDG_")) and k.lower() not in ("http_proxy", "https_proxy")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=MASTER_KEY, XDG_CONFIG_HOME=str(tmp / "xdg"),
               NO_PROXY="*", LITELLM_LOG="ERROR")
    env.pop("DATABASE_URL", None)
    return env


def spawn_litellm(exe: str, tmp: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """``litellm --config tmp/config.yaml`` on 127.0.0.1:``port``, its output in tmp/litellm.log."""
    with open(tmp / "litellm.log", "wb") as log:
        return subprocess.Popen([exe, "--config", str(tmp / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)],
                                env={**litellm_env(tmp), **env}, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
async def litellm_proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, FakeUpstream]]:
    """(base URL, fake upstream) of a LiteLLM proxy running the README's config."""
    exe = litellm_bin()
    if exe is None:
        pytest.skip("LiteLLM is not installed: scripts/test.sh installs it into .venv-litellm (or set STEERKIT_LITELLM_BIN)")
    tmp = tmp_path_factory.mktemp("litellm")
    upstream = await FakeUpstream().start()
    env = steer_env(tmp, upstream.base_url)  # a search would show up at the fake upstream
    await (await filled_steerer(env)).aclose()
    config = readme_config().replace("http://127.0.0.1:8000/v1", upstream.base_url)
    assert upstream.base_url in config
    (tmp / "config.yaml").write_text(config)
    port = free_port()
    proc = spawn_litellm(exe, tmp, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=5, trust_env=False) as h:
            while True:  # LiteLLM imports a lot: tens of seconds on a busy machine
                if proc.poll() is not None:
                    raise RuntimeError("litellm exited:\n" + (tmp / "litellm.log").read_text()[-4000:])
                try:
                    if (await h.get(base + "/health/liveliness")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() - t0 > 300:
                    raise TimeoutError("litellm did not start:\n" + (tmp / "litellm.log").read_text()[-4000:])
                await asyncio.sleep(0.5)
        yield base, upstream
    finally:
        await asyncio.to_thread(stop, proc, 30)
        await upstream.stop()


async def chat(base: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120, trust_env=False) as h:
        return await h.post(base + "/v1/chat/completions", json={"model": "chat", **body},
                            headers={"authorization": f"Bearer {MASTER_KEY}"})


def _upstream_model(config: str) -> str:
    return re.search(r"model:\s*openai/(\S+)", config).group(1)  # type: ignore[union-attr]


async def test_litellm_steers_a_cache_hit(litellm_proxy: tuple[str, FakeUpstream], tmp_path: Path) -> None:
    base, upstream = litellm_proxy
    sent = [{"role": "user", "content": QUERY}]
    r = await chat(base, {"messages": sent, "steerkit": {"k": 4}})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "ok"
    assert r.headers["x-steerkit-cache"] == "hit" and r.headers["x-steerkit-persona"] and r.headers["x-steerkit-version"]
    got = upstream.requests[-1]
    assert got["model"] == _upstream_model(readme_config())
    assert "steerkit" not in got and "steerkit" not in str(got.get("metadata", ""))  # the option never goes upstream
    # exactly what the same Steerer gives in process: the persona block with its examples, then the question
    steerer = await filled_steerer(steer_env(tmp_path, "http://127.0.0.1:9/v1"))
    expected, info = await steerer.prepare(sent, SteerOptions(k=4))
    await steerer.aclose()
    assert info.examples_used == 4 and info.example_set_version == r.headers["x-steerkit-version"]
    assert got["messages"] == expected and got["messages"][-1] == sent[0]


async def test_litellm_streams_carry_the_headers(litellm_proxy: tuple[str, FakeUpstream]) -> None:
    base, upstream = litellm_proxy
    r = await chat(base, {"messages": [{"role": "user", "content": QUERY}], "stream": True})
    assert r.status_code == 200, r.text
    assert "data:" in r.text and r.headers["x-steerkit-cache"] == "hit"
    assert upstream.requests[-1]["messages"][0]["role"] == "system"


@pytest.mark.parametrize("where", ["top", "metadata"])
async def test_litellm_passthrough_is_unchanged(litellm_proxy: tuple[str, FakeUpstream], where: str) -> None:
    base, upstream = litellm_proxy
    sent = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUERY}]
    opt = {"enabled": False}
    r = await chat(base, {"messages": sent, **({"steerkit": opt} if where == "top" else {"metadata": {"steerkit": opt}})})
    assert r.status_code == 200, r.text
    assert (r.headers["x-steerkit-cache"], r.headers["x-steerkit-note"]) == ("off", "disabled")
    assert upstream.requests[-1]["messages"] == sent


async def test_litellm_request_cannot_widen_the_miss_policy(litellm_proxy: tuple[str, FakeUpstream]) -> None:
    base, upstream = litellm_proxy
    before = len(upstream.requests)
    sent = [{"role": "user", "content": UNCACHED}]
    r = await chat(base, {"messages": sent, "steerkit": {"miss_policy": "wait"}})
    assert r.status_code == 200, r.text
    assert (r.headers["x-steerkit-cache"], r.headers["x-steerkit-note"]) == ("off", "miss_policy_off")
    new = upstream.requests[before:]
    assert [q["messages"] for q in new] == [sent]  # one chat call, unsteered; no search scored anything
    assert not any("prompt" in q for q in new)


async def test_litellm_rejects_malformed_options(litellm_proxy: tuple[str, FakeUpstream]) -> None:
    base, upstream = litellm_proxy
    before = len(upstream.requests)
    r = await chat(base, {"messages": [{"role": "user", "content": QUERY}], "steerkit": {"k": "many"}})
    assert r.status_code == 400, r.text
    assert "steerkit option" in r.text
    assert len(upstream.requests) == before

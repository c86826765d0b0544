"""One default cache location, ``~`` expanded everywhere, and precompute → app across processes.

The cross-process test runs the real ``steerkit precompute`` (the embedded model, a 4-item pool
and a 2-iteration search, so it takes seconds) in one process, then a default `Steerer` (default
store, settings from the same environment) in another, and expects a cache hit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steerkit import DiskStore, Settings, Steerer
from steerkit._config import default_cache_dir, default_examples_dir, expand_path

PERSONA = "polparty/democrat"
QUERY = "As a Democrat, what do you think about raising the minimum wage?"

APP = """
import asyncio, json, sys
from steerkit import Settings, Steerer

async def main():
    # the app reads the same settings as precompute; it has no search backend, so it names the model
    config = Settings.load().steer_config().model_copy(update={"model": sys.argv[1], "miss_policy": "off"})
    async with Steerer(config=config) as st:
        _, info = await st.prepare([{"role": "user", "content": sys.argv[2]}])
        print(json.dumps({"cache": info.cache, "examples": info.examples_used, "dir": str(st.store.directory)}))

asyncio.run(main())
"""


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEERKIT_", "XDG_"))}
    env.update(HOME=str(home), **extra)
    return env


def test_one_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith(("STEERKIT_", "XDG_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "steerkit"
    settings = Settings.load(env={})
    assert settings.cache_dir == default_cache_dir() and settings.examples_dir == default_examples_dir()

    monkeypatch.setenv("STEERKIT_CACHE_DIR", "~/elsewhere")
    assert default_cache_dir() == tmp_path / "elsewhere"
    assert Settings.load().examples_dir == default_examples_dir() == tmp_path / "elsewhere" / "examples"
    store = DiskStore()
    try:
        assert store.directory == tmp_path / "elsewhere" / "examples"
    finally:
        store.close()


def test_tilde_is_expanded_where_a_path_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = DiskStore("~/.cache/steerkit/examples")  # as the README writes it
    store.close()
    assert store.directory == tmp_path / "home" / ".cache" / "steerkit" / "examples"
    assert store.directory.is_dir() and not (work / "~").exists()
    assert expand_path("~/x") == tmp_path / "home" / "x"
    s = Settings.load(env={}, overrides={"search_model": {"model_path": "~/m.gguf"}, "chat_model": {"model_path": "~/c.gguf"},
                                          "packs_dirs": ["~/packs"], "cache_dir": "~/c"})
    assert s.search_model.model_path == tmp_path / "home" / "m.gguf"
    assert s.chat_model.model_path == tmp_path / "home" / "c.gguf"
    assert s.packs_dirs == [tmp_path / "home" / "packs"] and s.cache_dir == tmp_path / "home" / "c"
    st = Steerer(checkpoints_dir="~/ck", store=DiskStore("~/s"))
    assert st.example_sets.checkpoints_dir == tmp_path / "home" / "ck"
    st.store.close()  # type: ignore[attr-defined]
    assert not (work / "~").exists()


@pytest.mark.llama
@pytest.mark.parametrize("cache_env", [None, "~/custom-cache"], ids=["default-location", "STEERKIT_CACHE_DIR"])
def test_precompute_then_a_default_steerer_in_another_process_hits(tmp_path: Path, gguf_path: Path, cache_env: str | None) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir(parents=True)
    extra = {"STEERKIT_STEER__MAX_POOL_ITEMS": "4", "STEERKIT_SEARCH__MAX_ITERATIONS": "2", "STEERKIT_SEARCH__PATIENCE": "2",
             "STEERKIT_SEARCH_MODEL__N_THREADS": "1"}
    if cache_env:
        extra["STEERKIT_CACHE_DIR"] = cache_env
    env = clean_env(home, **extra)
    steerkit = [sys.executable, "-m", "steerkit.cli"]
    pre = subprocess.run([*steerkit, "precompute", "--persona", PERSONA, "--model-path", str(gguf_path), "--json", "--no-progress"],
                         env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, pre.stderr
    assert json.loads(pre.stdout)[0]["status"] == "computed"

    app = subprocess.run([sys.executable, "-c", APP, gguf_path.stem, QUERY], env=env, cwd=work, capture_output=True, text=True,
                         timeout=300)
    assert app.returncode == 0, app.stderr
    got = json.loads(app.stdout)
    expected = (home / "custom-cache" if cache_env else home / ".cache" / "steerkit") / "examples"
    assert got["dir"] == str(expected)
    assert got["cache"] == "hit" and got["examples"] > 0
    assert not (work / "~").exists()

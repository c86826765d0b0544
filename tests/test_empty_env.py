"""A variable that is set but empty counts as unset, everywhere (XDG's own rule): with
``STEERKIT_CACHE_DIR=`` the command, `Settings.load()`, `DiskStore()` and a default `Steerer` all
use the default cache, never the current folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steerkit import DiskStore, Settings, Steerer
from steerkit._config import (
    _SECTIONS,
    ENV_PREFIX,
    default_cache_dir,
    default_config_path,
    default_examples_dir,
    env_value,
)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEERKIT_", "XDG_"))}
    env.update(HOME=str(home), **extra)
    return env


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME, no STEERKIT_* or XDG_* variables, and a work folder as the current one."""
    for k in list(os.environ):
        if k.startswith(("STEERKIT_", "XDG_")):
            monkeypatch.delenv(k)
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return h


# --- the command, in a process of its own ---------------------------------------------------------

SHOW_APP = """
import json
from steerkit import DiskStore, Settings, Steerer
store = DiskStore()
st = Steerer()
print(json.dumps({"settings": str(Settings.load().examples_dir), "disk_store": str(store.directory),
                  "steerer": str(st.store.directory)}))
store.close()
st.store.close()
"""


@pytest.mark.parametrize(
    ("extra", "cache"),
    [
        ({"STEERKIT_CACHE_DIR": ""}, "{home}/.cache/steerkit"),
        ({"STEERKIT_CACHE_DIR": "   "}, "{home}/.cache/steerkit"),
        ({"STEERKIT_CACHE_DIR": "", "XDG_CACHE_HOME": ""}, "{home}/.cache/steerkit"),
        ({"STEERKIT_CACHE_DIR": "", "XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/xdg/steerkit"),
        ({"XDG_CACHE_HOME": "relative/cache"}, "{home}/.cache/steerkit"),  # XDG: a relative path is ignored
    ],
    ids=["empty", "blank", "both-empty", "empty-with-xdg", "relative-xdg"],
)
def test_config_show_and_the_library_agree_on_the_default_cache(tmp_path: Path, extra: dict[str, str], cache: str) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir(parents=True)
    env = clean_env(home, **{k: v.format(tmp=tmp_path) for k, v in extra.items()})
    expected = cache.format(home=home, tmp=tmp_path)
    shown = subprocess.run([sys.executable, "-m", "steerkit.cli", "config", "show"], check=False, env=env, cwd=work,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f'cache_dir = "{expected}"' in shown.stdout.splitlines(), shown.stdout
    assert 'cache_dir = "."' not in shown.stdout
    app = subprocess.run([sys.executable, "-c", SHOW_APP], check=False, env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert app.returncode == 0, app.stderr
    dirs = json.loads(app.stdout.strip().splitlines()[-1])
    assert set(dirs.values()) == {f"{expected}/examples"}, dirs
    assert not (work / "examples").exists()  # nothing written under the current folder


# --- Settings.load and the stores, in this process -----------------------------------------------


def test_an_empty_cache_dir_is_the_default_for_settings_and_disk_store(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERKIT_CACHE_DIR", "")
    default = home / ".cache" / "steerkit"
    assert default_cache_dir() == default
    assert Settings.load().cache_dir == default
    assert Settings.load().examples_dir == default_examples_dir() == default / "examples"
    store = DiskStore()
    try:
        assert store.directory == Settings.load().examples_dir
    finally:
        store.close()


def _setting_variables() -> list[str]:
    """Every STEERKIT_* variable that names a setting: top-level fields and section fields."""
    names = []
    for field, info in Settings.model_fields.items():
        if field in ("config_file", "ignored_env"):
            continue
        if field in _SECTIONS:
            section = info.annotation
            sub = getattr(section, "model_fields", None)
            if sub is None:  # an optional section (`X | None`): the model inside
                sub = next(a for a in section.__args__ if hasattr(a, "model_fields")).model_fields  # type: ignore[union-attr]
            names += [f"{ENV_PREFIX}{field.upper()}__{name.upper()}" for name in sub]
        else:
            names.append(f"{ENV_PREFIX}{field.upper()}")
    return names


SETTING_VARIABLES = _setting_variables()


def test_the_variables_cover_every_setting() -> None:
    assert "STEERKIT_CACHE_DIR" in SETTING_VARIABLES and "STEERKIT_SERVER__PORT" in SETTING_VARIABLES
    assert "STEERKIT_STORE" in SETTING_VARIABLES and "STEERKIT_SERVER__API_KEYS" in SETTING_VARIABLES
    assert len(SETTING_VARIABLES) > 30


@pytest.mark.parametrize("value", ["", " ", "\t"], ids=["empty", "space", "tab"])
def test_every_empty_setting_variable_counts_as_unset(home: Path, value: str) -> None:
    baseline = Settings.load(env={})
    for name in SETTING_VARIABLES:
        s = Settings.load(env={name: value})  # no ConfigError ("" is no port, no URL, no number)
        assert s.masked() == baseline.masked(), name
        assert s.ignored_env == []
    everything = Settings.load(env=dict.fromkeys(SETTING_VARIABLES, value))
    assert everything.masked() == baseline.masked()


def test_an_empty_variable_does_not_hide_the_file(home: Path) -> None:
    """Empty is unset, not "clear this setting": the file's value stands."""
    cfg = home / ".config" / "steerkit" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('cache_dir = "~/from-file"\n[server]\nport = 4444\napi_keys = ["k-1"]\n')
    s = Settings.load(env={"STEERKIT_CACHE_DIR": "", "STEERKIT_SERVER__PORT": "", "STEERKIT_SERVER__API_KEYS": "",
                           "STEERKIT_CONFIG": "", "XDG_CONFIG_HOME": ""})
    assert s.config_file == cfg
    assert s.cache_dir == home / "from-file" and s.server.port == 4444
    assert [k.get_secret_value() for k in s.server.api_keys] == ["k-1"]


def test_an_empty_cache_dir_in_the_file_is_the_default_too(home: Path) -> None:
    cfg = home / "c.toml"
    cfg.write_text('cache_dir = ""\n')
    assert Settings.load(cfg, env={}).cache_dir == home / ".cache" / "steerkit"


def test_the_env_given_to_load_decides_the_default_cache(home: Path, tmp_path: Path) -> None:
    assert Settings.load(env={"XDG_CACHE_HOME": str(tmp_path / "x")}).cache_dir == tmp_path / "x" / "steerkit"
    assert Settings.load(env={"XDG_CACHE_HOME": ""}).cache_dir == home / ".cache" / "steerkit"


@pytest.mark.parametrize("value", ["", "  ", "relative/config"])
def test_xdg_config_home_empty_or_relative_is_ignored(home: Path, value: str) -> None:
    assert default_config_path({"XDG_CONFIG_HOME": value}) == home / ".config" / "steerkit" / "config.toml"


def test_env_value_reads_empty_as_unset() -> None:
    assert env_value("X", {"X": ""}) is None and env_value("X", {"X": " \t"}) is None and env_value("X", {}) is None
    assert env_value("X", {"X": " a "}) == " a "


def test_a_default_steerer_uses_the_default_cache_with_an_empty_variable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERKIT_CACHE_DIR", "")
    st = Steerer()
    try:
        assert st.store.directory == Settings.load().examples_dir == home / ".cache" / "steerkit" / "examples"  # type: ignore[attr-defined]
    finally:
        st.store.close()  # type: ignore[attr-defined]

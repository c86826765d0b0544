"""Combined personas from the command line (issue 20): `steerkit precompute` and `steerkit cache
import` of a combination the operator allowed (the key the middleware reads), and a typed error
(exit 2) for one it did not. Searches run on the *fake* scorer patched in for the search backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, run_json

from steerkit._config import Settings
from steerkit.cli import main
from steerkit.cli.precompute import allowed_combined_id, select_personas
from steerkit.errors import ConfigError, UnknownPersonaError
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer

NG_DEM = "country/nigeria+polparty/democrat"
ALLOW = {"STEERKIT_STEER__COMBINED_PERSONAS": "allow-list", "STEERKIT_STEER__COMBINED_ALLOW": NG_DEM}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Isolated config/cache, small searches and pools, the fake scorer; NG_DEM allowed."""
    return cli_env(tmp_path, monkeypatch, STEERKIT_SEARCH__MAX_ITERATIONS="8", STEERKIT_SEARCH__PATIENCE="4",
                   STEERKIT_SEARCH__RESTARTS="2", STEERKIT_STEER__MAX_POOL_ITEMS="10", **ALLOW)


def test_precompute_an_allowed_combination_is_the_key_the_middleware_reads(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    (first,) = run_json(capsys, ["precompute", "--persona", "democrat+nigeria", "--json", "--no-progress"])
    assert first["persona"] == NG_DEM and first["status"] == "computed" and first["items"] > 0
    (again,) = run_json(capsys, ["precompute", "--persona", "polparty/democrat+country/nigeria", "--json"])
    assert again["status"] == "cached" and again["version"] == first["version"]
    rows = run_json(capsys, ["cache", "ls", "--json"])
    assert [r["persona"] for r in rows] == [NG_DEM]
    shown = run_json(capsys, ["cache", "show", "polparty/democrat+country/nigeria", "--json"])
    assert shown["persona"]["id"] == NG_DEM and len(shown["labels"]) == first["items"]

    # the app built from the same settings reads that set: a cache hit, steered by the combination
    import asyncio

    from steerkit._runtime import make_registry, make_steerer, make_store

    async def ask() -> Any:
        settings = Settings.load()
        st = make_steerer(settings, make_registry(settings), make_store(settings), FakeScorer(lambda p: 0.7, model="fake-scorer"))
        try:
            return await st.prepare([{"role": "user", "content": "I'm a Nigerian Democrat. Should taxes go up?"}])
        finally:
            await st.aclose()

    _, info = asyncio.run(ask())
    assert info.combined == [NG_DEM] and info.cache == "hit" and info.versions == {NG_DEM: first["version"]}


def test_precompute_refuses_a_combination_that_is_not_allowed(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    capsys.readouterr()
    assert main(["precompute", "--persona", "country/japan+polparty/republican"]) == 2
    err = capsys.readouterr().err
    assert "'country/japan+polparty/republican' is not in steer.combined_allow" in err and NG_DEM in err
    monkeypatch.setenv("STEERKIT_STEER__COMBINED_PERSONAS", "off")
    assert main(["precompute", "--persona", NG_DEM]) == 2
    err = capsys.readouterr().err
    assert "combined personas are off" in err and 'combined_personas = "allow-list"' in err
    assert main(["precompute", "--persona", "country/atlantis+polparty/democrat"]) == 2
    assert "unknown persona" in capsys.readouterr().err
    assert env["backends"] == []  # refused before the search model was opened
    assert run_json(capsys, ["cache", "ls", "--json"]) == []


def test_selection_of_combined_personas() -> None:
    reg = PackRegistry.default()
    steer = Settings.load(env=ALLOW).steer_config()
    assert allowed_combined_id(reg, " nigeria + democrat ", steer) == NG_DEM
    with pytest.raises(ConfigError, match="combined_allow"):
        allowed_combined_id(reg, "japan+democrat", steer)
    with pytest.raises(UnknownPersonaError):
        allowed_combined_id(reg, "atlantis+democrat", steer)
    every = select_personas(reg, [], [], True, steer)
    assert NG_DEM in every and "country/nigeria" in every and len(every) == len(reg.personas()) + 1
    assert NG_DEM not in select_personas(reg, [], [], True, Settings.load(env={}).steer_config())


def test_cache_import_of_a_combined_set(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (computed,) = run_json(capsys, ["precompute", "--persona", NG_DEM, "--json"])
    export = tmp_path / "export.jsonl"
    assert main(["cache", "export", "polparty/democrat+country/nigeria", "-o", str(export)]) == 0
    assert len(export.read_text().splitlines()) == 2

    other = ["--cache-dir", str(tmp_path / "other")]
    capsys.readouterr()
    # not allowed here: a typed error, exit 2, nothing imported
    monkeypatch.setenv("STEERKIT_STEER__COMBINED_ALLOW", "country/japan+polparty/republican")
    assert main(["cache", "import", str(export), *other]) == 2
    err = capsys.readouterr().err
    assert "is not in steer.combined_allow" in err and "nothing was imported" in err
    monkeypatch.setenv("STEERKIT_STEER__COMBINED_PERSONAS", "off")
    assert main(["cache", "import", str(export), *other]) == 2
    assert "combined personas are off" in capsys.readouterr().err
    assert run_json(capsys, ["cache", "ls", "--json", *other]) == []
    # allowed, but the app here cuts pools differently: the set would never be read
    monkeypatch.setenv("STEERKIT_STEER__COMBINED_PERSONAS", "allow-list")
    monkeypatch.setenv("STEERKIT_STEER__COMBINED_ALLOW", NG_DEM)
    monkeypatch.setenv("STEERKIT_STEER__MAX_POOL_ITEMS", "12")
    assert main(["cache", "import", str(export), *other]) == 2
    assert "pool" in capsys.readouterr().err
    # allowed, same pool: imported, and read back under the same key
    monkeypatch.setenv("STEERKIT_STEER__MAX_POOL_ITEMS", "10")
    assert main(["cache", "import", str(export), *other]) == 0
    assert "imported 1" in capsys.readouterr().out
    rows = run_json(capsys, ["cache", "ls", "--json", *other])
    assert [(r["persona"], r["version"]) for r in rows] == [(NG_DEM, computed["version"])]
    (cached,) = run_json(capsys, ["precompute", "--persona", NG_DEM, "--json", *other])
    assert cached["status"] == "cached" and cached["version"] == computed["version"]
    assert main(["cache", "rm", "polparty/democrat+country/nigeria", *other]) == 0
    assert run_json(capsys, ["cache", "ls", "--json", *other]) == []

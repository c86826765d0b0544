"""Settings: TOML file < STEERKIT_* env < flags, validation errors, masking."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from steerkit._config import Settings
from steerkit.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "steerkit.toml"
    p.write_text(text)
    return p


def test_defaults_are_safe(tmp_path: Path) -> None:
    s = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.server.host == "127.0.0.1"
    assert s.server.api_keys == []
    assert s.search_model.kind == "embedded"
    assert s.chat_model.base_url is None
    assert s.config_file is None
    assert s.server.max_body_bytes > 0 and s.server.upstream_timeout > 0


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
cache_dir = "/from/file"
[server]
port = 1111
host = "127.0.0.2"
[search]
max_iterations = 7
""",
    )
    only_file = Settings.load(cfg, env={})
    assert only_file.server.port == 1111 and only_file.search.max_iterations == 7
    assert only_file.cache_dir == Path("/from/file") and only_file.config_file == cfg

    env = {"STEERKIT_SERVER__PORT": "2222", "STEERKIT_CACHE_DIR": "/from/env"}
    with_env = Settings.load(cfg, env=env)
    assert with_env.server.port == 2222 and with_env.cache_dir == Path("/from/env")
    assert with_env.server.host == "127.0.0.2"  # untouched file values survive a partial env override

    with_flags = Settings.load(cfg, env=env, overrides={"server": {"port": 3333, "host": None}, "cache_dir": None})
    assert with_flags.server.port == 3333
    assert with_flags.server.host == "127.0.0.2"  # None = flag not given
    assert with_flags.cache_dir == Path("/from/env")
    assert with_flags.search.max_iterations == 7


def test_config_file_from_env_var_and_xdg(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[server]\nport = 4444\n")
    assert Settings.load(env={"STEERKIT_CONFIG": str(cfg)}).server.port == 4444
    xdg = tmp_path / "xdg"
    (xdg / "steerkit").mkdir(parents=True)
    (xdg / "steerkit" / "config.toml").write_text("[server]\nport = 5555\n")
    assert Settings.load(env={"XDG_CONFIG_HOME": str(xdg)}).server.port == 5555


def test_env_lists_and_models(tmp_path: Path) -> None:
    env = {
        "STEERKIT_SERVER__API_KEYS": "k1, k2",
        "STEERKIT_PACKS_DIRS": '["/a", "/b"]',
        "STEERKIT_SEARCH_MODEL__BASE_URL": "http://127.0.0.1:8000/v1/",
        "STEERKIT_SEARCH_MODEL__MODEL": "base",
        "STEERKIT_CHAT_MODEL__API_KEY": "sk-chat-secret",
    }
    s = Settings.load(env=env)
    assert [k.get_secret_value() for k in s.server.api_keys] == ["k1", "k2"]
    assert s.packs_dirs == [Path("/a"), Path("/b")]
    assert s.search_model.kind == "openai"
    assert s.search_model.base_url == "http://127.0.0.1:8000/v1"  # trailing slash normalised
    assert s.chat_model.api_key is not None and s.chat_model.api_key.get_secret_value() == "sk-chat-secret"


def test_invalid_value_names_field_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        Settings.load(env={"STEERKIT_SERVER__PORT": "eighty"})
    msg = str(ei.value)
    assert "server.port" in msg and "STEERKIT_SERVER__PORT" in msg

    cfg = write(tmp_path, "[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as ei:
        Settings.load(cfg, env={})
    assert "server.prot" in str(ei.value) and "unknown setting" in str(ei.value) and str(cfg) in str(ei.value)

    with pytest.raises(ConfigError, match="search.max_iterations"):
        Settings.load(env={}, overrides={"search": {"max_iterations": -1}})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(write(tmp_path, "[server\nport=1"), env={})


def test_model_settings_validation() -> None:
    with pytest.raises(ConfigError, match="search_model.model is required"):
        Settings.load(env={"STEERKIT_SEARCH_MODEL__BASE_URL": "http://127.0.0.1:1/v1"})
    with pytest.raises(ConfigError, match="http://"):
        Settings.load(env={"STEERKIT_CHAT_MODEL__BASE_URL": "localhost:8000"})
    with pytest.raises(ConfigError, match="empty"):
        Settings.load(env={}, overrides={"server": {"api_keys": [" "]}})


def test_unknown_env_vars_are_reported_not_fatal() -> None:
    s = Settings.load(env={"STEERKIT_NO_SUCH_THING": "1"})
    assert s.ignored_env == ["STEERKIT_NO_SUCH_THING"]
    assert "STEERKIT_NO_SUCH_THING" in s.show()


def test_show_masks_secrets_and_is_toml(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
[server]
api_keys = ["client-key-123"]
port = 9999
[chat_model]
base_url = "http://127.0.0.1:8001/v1"
model = "chat"
api_key = "sk-upstream-456"
""",
    )
    s = Settings.load(cfg, env={})
    text = s.show()
    assert "client-key-123" not in text and "sk-upstream-456" not in text
    assert "client-key-123" not in repr(s) and "sk-upstream-456" not in repr(s)
    parsed = tomllib.loads(text)
    assert parsed["server"]["port"] == 9999
    assert parsed["server"]["api_keys"] == ["********"]
    assert parsed["chat_model"]["api_key"] == "********"
    assert parsed["chat_model"]["base_url"] == "http://127.0.0.1:8001/v1"
    assert "search" in parsed and parsed["search"]["alpha"] == 50.0


def test_settings_round_trip_to_workers_with_secrets() -> None:
    """`steerkit serve --workers N` hands the resolved settings to its workers as JSON."""
    s = Settings.load(env={}, overrides={"server": {"api_keys": ["k-1"], "workers": 3}, "chat_model": {"api_key": "up-key"},
                                         "steer": {"k": 7, "miss_policy": "off"}, "search": {"max_iterations": 9}})
    back = Settings.model_validate_json(s.to_json())
    assert back.server.api_keys[0].get_secret_value() == "k-1" and back.chat_model.api_key.get_secret_value() == "up-key"
    assert back.server.workers == 3 and back.steer_config() == s.steer_config()
    assert back.steer_config().k == 7 and back.steer_config().search.max_iterations == 9  # [steer] search defaults to [search]
    assert "k-1" not in s.show() and "up-key" not in repr(s)


def test_the_documented_example_file_is_valid(tmp_path: Path) -> None:
    import textwrap

    import steerkit._config as config_module

    doc = config_module.__doc__ or ""
    example = textwrap.dedent(doc.split("Example file::", 1)[1].split("\nSecrets", 1)[0])
    path = tmp_path / "config.toml"
    path.write_text(example)
    s = Settings.load(path, env={})
    assert s.steer_config().k == 20 and s.steer_config().search.max_iterations == 200
    assert s.server.port == 8080 and s.search_model.model == "Qwen/Qwen2.5-7B"

"""The search server's bounds (whole-request deadline, answer size) reach the backends from
settings, as `steerkit serve` / `precompute` build them."""

from __future__ import annotations

import pytest

from steerkit import Settings
from steerkit._runtime import make_backend
from steerkit.errors import ConfigError


def test_deadline_and_size_limit_reach_the_openai_backend() -> None:
    s = Settings.load(env={}, overrides={"search_model": {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 5, "deadline": 7, "max_response_bytes": 4096}})
    be = make_backend(s)
    assert be.deadline == 7 and be.max_response_bytes == 4096


def test_deadline_defaults_to_twice_the_read_timeout() -> None:
    s = Settings.load(env={}, overrides={"search_model": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 5}})
    assert make_backend(s).deadline == 10


def test_every_router_server_gets_the_bounds() -> None:
    s = Settings.load(env={}, overrides={"search_model": {
        "base_url": "http://127.0.0.1:9/v1,http://127.0.0.1:10/v1", "model": "m", "deadline": 3, "max_response_bytes": 2048}})
    router = make_backend(s)
    assert [(e.backend.deadline, e.backend.max_response_bytes) for e in router.endpoints] == [(3, 2048), (3, 2048)]


@pytest.mark.parametrize("field,value", [("deadline", 0), ("deadline", -1), ("max_response_bytes", 10)])
def test_absurd_bounds_are_a_config_error(field: str, value: float) -> None:
    with pytest.raises((ConfigError, ValueError)):
        Settings.load(env={}, overrides={"search_model": {"base_url": "http://127.0.0.1:9/v1", "model": "m", field: value}})

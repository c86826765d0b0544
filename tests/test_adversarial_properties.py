"""Property-based adversarial tests (issue 10): whatever bytes arrive, the request parser, the
options parser, the pack loader and the store's reader answer with a typed error or a valid value,
never a crash. Bounded example counts keep the run within the suite's time budget."""

from __future__ import annotations

import asyncio
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerkit._config import SteerOptions
from steerkit._store import CacheKey, DiskStore
from steerkit._wire import WireError, parse_chat_body, parse_options
from steerkit.errors import PackError
from steerkit.models import ExampleSet
from steerkit.packs import PersonaPack, load_pack

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values, their text including characters JSON must escape
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=20)
# escapes a UTF-16 JSON text may hold: lone high or low surrogates, pairs, control characters
escapes = st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\r\\n", "\\\\", '\\"', "\\ud83d"])
deep = st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n)

messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"])},
                          optional={"content": st.text(max_size=40) | json_values}),
    min_size=0, max_size=3)


def _with_escapes(text: str, data: st.DataObject) -> str:
    """Put escape sequences inside the JSON text's strings (after an opening quote)."""
    out, i = [], 0
    for _ in range(data.draw(st.integers(0, 3))):
        j = text.find('"', i)
        if j < 0:
            break
        out.append(text[i : j + 1] + data.draw(escapes))
        i = j + 1
    return "".join(out) + text[i:]


def _check_body(raw: bytes) -> None:
    try:
        options, body = parse_chat_body(raw)
    except WireError as e:
        assert e.message and e.code
        return
    assert isinstance(options, SteerOptions) and isinstance(body, dict)
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # what the proxy forwards can be sent


@FAST
@given(st.binary(max_size=200))
def test_request_parser_on_any_bytes(raw: bytes) -> None:
    _check_body(raw)


@FAST
@given(messages, json_values, json_values | deep, st.data())
def test_request_parser_on_json_shaped_bodies(msgs: list[dict], steerkit: Any, extra: Any, data: st.DataObject) -> None:
    body: dict[str, Any] = {"model": "m", "messages": msgs, "steerkit": steerkit, "extra": extra}
    text = json.dumps(body)
    if isinstance(extra, str) and extra.startswith("["):
        text = text.replace(json.dumps(extra), extra)  # the deep array itself, not a string of it
    _check_body(_with_escapes(text, data).encode())


@FAST
@given(json_values | st.text(max_size=40) | deep, st.data())
def test_options_parser(value: Any, data: st.DataObject) -> None:
    if isinstance(value, str) and data.draw(st.booleans()):
        value = _with_escapes(json.dumps({"persona": value, "k": 3}), data)
    try:
        opts = parse_options(value)
    except WireError as e:
        assert e.code == "invalid_steerkit_options" and e.param == "steerkit"
        return
    assert isinstance(opts, SteerOptions)


PACK = {
    "dimension": "country",
    "personas": [{"id": "country/x", "name": "X", "phrases": ["from X"]}],
    "questions": [{"id": "q1", "question": "Q?", "options": ["a", "b"], "answers": {"country/x": "a"}}],
}


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | deep.map(str.encode),
       st.sampled_from([".json", ".toml"]))
def test_pack_loader_on_any_file(raw: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"pack{suffix}"
        p.write_bytes(raw)
        try:
            pack = load_pack(p)
        except PackError as e:
            assert str(p) in e.message
            return
        assert isinstance(pack, PersonaPack)


@FAST
@given(json_values, st.sampled_from(["dimension", "personas", "questions"]))
def test_pack_loader_on_a_pack_with_one_field_replaced(value: Any, field: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pack.json"
        p.write_text(json.dumps({**PACK, field: value}))
        try:
            load_pack(p)
        except PackError:
            pass


_STORE_DIR = tempfile.TemporaryDirectory()
_STORE = DiskStore(Path(_STORE_DIR.name) / "examples")
_KEY = CacheKey(persona_id="country/x", pool_hash="p", model="m", config_hash="c")

stored_values = (json_values.map(json.dumps) | st.binary(max_size=100) | st.text(max_size=100) | json_values
                 | st.integers() | st.none())


@FAST
@given(stored_values, json_values, json_values, stored_values, st.text(min_size=1, max_size=8), st.integers(0, 2))
def test_store_reader_on_any_record(meta: Any, current: Any, versions: Any, blob: Any, version: str, shape: int) -> None:
    d = _KEY.digest()
    if shape == 1:  # an index record of the right shape with fields of any type
        meta = json.dumps({"key": _KEY.model_dump(), "current": current, "versions": versions})
    elif shape == 2:
        meta = json.dumps({"key": meta if not isinstance(meta, bytes) else None, "current": version,
                           "versions": [version, current]})
    _STORE._memory.clear()
    _STORE._cache.set(f"meta:{d}", meta)
    if blob is None:
        _STORE._cache.delete(f"es:{d}:{version}")
    else:
        _STORE._cache.set(f"es:{d}:{version}", blob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = asyncio.run(_STORE.get(_KEY))
        entries = asyncio.run(_STORE.entries())
    assert got is None or isinstance(got, ExampleSet)
    assert isinstance(entries, list)

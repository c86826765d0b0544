"""Issue 10, the hardening classes: every input an attacker or a careless operator can send, kept as
a permanent part of the suite. Real servers on loopback only; nothing is timed (the slow-client
tests count closed connections, with a generous deadline that only a hang reaches).

Availability: pathological JSON (proxy, cache import), slow clients (header and body deadlines, the
connection cap). Integrity: header values, a store that cannot write, cache import/export, store
faults, leftover temporary files. Authority: the operator bounds what a request may ask, request
searches are rate-limited, clients see reason codes and never credentials, settings are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from fake_upstream import FakeUpstream
from proxy_serving import serving, settings_for
from steerkit._compute import ExampleSets
from steerkit._config import SearchModelSettings, ServerSettings, Settings, SteerConfig, SteerOptions
from steerkit._middleware import Steerer
from steerkit._runtime import make_registry
from steerkit._server import create_app
from steerkit._store import CacheKey, DiskStore, MemoryStore, export_entries, import_entries
from steerkit._wire import WireError, parse_chat_body, steer_headers
from steerkit.cli import main
from steerkit.errors import CacheCorruptionWarning, StoreError, StoreWriteError, UserError
from steerkit.models import SearchConfig
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer

SMALL = SearchConfig(max_iterations=6, num_seed=2, patience=3)
DEMOCRAT = "I'm a Democrat. Do you favor raising the minimum wage?"
SECRET_URL = "http://alice:s3cret-pw@search.internal:8000/v1"
NGINX_502 = f"502 Bad Gateway from {SECRET_URL}\r\n<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>"


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


def scorer() -> FakeScorer:
    return FakeScorer(lambda p: 0.7, model="fake-scorer")


def steerer(registry: PackRegistry, *, store: Any = None, search: Any = None, **cfg: Any) -> Steerer:
    config = SteerConfig(**{"search": SMALL, "max_pool_items": 10, "k": 6, "miss_policy": "wait", **cfg})
    return Steerer(registry, store if store is not None else MemoryStore(), scorer(), config, search=search)


def chat(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def failing_search(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(NGINX_502)


# --- a real proxy on loopback, configured as `steerkit serve` configures uvicorn ------------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream(slow_s=3.0, n_chunks=2, chunk_delay=0.01).start()
    yield up
    await up.stop()


async def read_until_closed(reader: asyncio.StreamReader, deadline: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection (a hang fails at the deadline)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(deadline):
            while chunk := await reader.read(65536):
                data += chunk
    return data


# --- availability: pathological JSON ------------------------------------------------------------


@pytest.mark.parametrize("depth", [1000, 50_000])
def test_deep_json_is_a_wire_error(depth: int) -> None:
    raw = b'{"messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(WireError, match="nested too deeply") as e:
        parse_chat_body(raw)
    assert e.value.code == "invalid_json"


def test_lone_surrogate_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="surrogate"):
        parse_chat_body(b'{"messages":[{"role":"user","content":"\\ud800"}]}')
    _, body = parse_chat_body(b'{"messages":[{"role":"user","content":"\\ud83d\\ude00"}]}')  # a pair is fine
    assert body["messages"][0]["content"] == "\U0001f600"


async def test_proxy_answers_pathological_json_with_400(tmp_path: Path, registry: PackRegistry, upstream: FakeUpstream) -> None:
    settings = settings_for(tmp_path)
    app = create_app(settings, steerer=steerer(registry), upstream_base_url=upstream.base_url)
    bodies = [
        b'{"model":"m","messages":' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
        b'{"model":"m","messages":[{"role":"user","content":"I\'m a Democrat \\ud800"}]}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"steerkit":"{\\"k\\": \\"\\\\udfff\\"}"}',
    ]
    async with serving(app, settings.server) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as h:
        for body in bodies:
            r = await h.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (body[:80], r.status_code, r.text[:200])
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and "Traceback" not in r.text
        assert (await h.get("/healthz")).status_code == 200
    assert upstream.requests == []


def test_cache_import_of_pathological_json_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STEERKIT_CACHE_DIR", str(tmp_path / "cache"))
    header = json.dumps({"format": "steerkit.cache/1"})
    for line in ("[" * 100_000 + "]" * 100_000, '{"key": "\\ud800"}'):
        f = tmp_path / "bad.jsonl"
        f.write_text(header + "\n" + line + "\n", encoding="utf-8")
        assert main(["cache", "import", str(f)]) == 2
        err = capsys.readouterr().err
        assert "line 2" in err and "internal error" not in err


# --- availability: slow clients -----------------------------------------------------------------


@pytest.mark.parametrize("http", ["GuardedHttpTools", "GuardedH11"])
async def test_half_sent_requests_are_closed_and_connections_capped(tmp_path: Path, registry: PackRegistry,
                                                                    upstream: FakeUpstream, http: str) -> None:
    """Both guarded protocols (httptools where installed, else uvicorn's h11 fallback) close a
    connection whose headers stall, and the proxy's body deadline answers 408."""
    settings = settings_for(tmp_path, header_timeout=0.5, body_timeout=0.5, max_client_connections=64)
    app = create_app(settings, steerer=steerer(registry), upstream_base_url=upstream.base_url)
    async with serving(app, settings.server, http=http) as port:
        conns = []
        for i in range(30):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            if i % 3 == 0:
                w.write(b"")  # connects, sends nothing
            elif i % 3 == 1:
                w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")  # half the headers
            else:  # whole headers, a tenth of the body
                w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n" + b'{"model":"m"')
            await w.drain()
            conns.append((i, r, w))
        results = await asyncio.gather(*(read_until_closed(r) for _, r, _ in conns))
        closed = sum(1 for _ in results)  # every read returned: the server closed every connection
        assert closed == 30
        timed_out_bodies = [res for (i, _, _), res in zip(conns, results) if i % 3 == 2]
        assert all(res.startswith(b"HTTP/1.1 408") for res in timed_out_bodies)
        for _, _, w in conns:
            w.close()


async def test_connection_cap_answers_503_beyond_it(tmp_path: Path, registry: PackRegistry, upstream: FakeUpstream) -> None:
    settings = settings_for(tmp_path, header_timeout=60, max_client_connections=4)
    app = create_app(settings, steerer=steerer(registry), upstream_base_url=upstream.base_url)
    async with serving(app, settings.server) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for _, w in held:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            await w.drain()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as h:
            assert (await h.get("/healthz")).status_code == 503
        for _, w in held:
            w.close()


# --- integrity: header values and failed searches -----------------------------------------------


def test_header_values_are_safe_whatever_the_note() -> None:
    from steerkit._middleware import SteerInfo

    info = SteerInfo(cache="miss", note=f"search failed: RuntimeError: {NGINX_502}")
    headers = steer_headers(info)
    for v in headers.values():
        assert "\r" not in v and "\n" not in v and len(v) <= 200 and v.isascii()
    assert "s3cret" not in json.dumps(headers)


async def test_failed_search_with_crlf_error_page_never_breaks_the_response(tmp_path: Path, registry: PackRegistry,
                                                                         upstream: FakeUpstream) -> None:
    settings = settings_for(tmp_path)
    st = steerer(registry, search=failing_search, search_retry_s=0, searches_per_persona_per_hour=10)
    app = create_app(settings, steerer=st, upstream_base_url=upstream.base_url)
    async with serving(app, settings.server) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as h:
        for _ in range(3):
            r = await h.post("/v1/chat/completions", json={"model": "m", "messages": chat(DEMOCRAT)})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
            assert r.headers["x-steerkit-note"] == "search_failed"
            assert "s3cret" not in str(r.headers) and "Bad Gateway" not in str(r.headers)
    assert len(upstream.requests) == 3


async def test_store_that_cannot_write_keeps_the_result_counts_and_backs_off(registry: PackRegistry) -> None:
    class FullDiskStore(MemoryStore):
        """A fake store whose writes fail as a full disk does."""

        async def put(self, key: CacheKey, es: Any) -> str:
            raise StoreError("cannot write to the example-set cache: database or disk is full")

    st = steerer(registry, store=FullDiskStore())
    infos = [(await st.prepare(chat(DEMOCRAT)))[1] for _ in range(4)]
    assert st.counters.searches_started == 1  # not one search per request
    assert st.metrics.value("store_write_failures") == 1
    assert [i.cache for i in infos] == ["computed", "hit", "hit", "hit"]  # served from memory
    assert all(i.examples_used > 0 for i in infos)
    pid = infos[0].personas[0].persona_id
    assert st.example_sets.backing_off(pid) and "store write failed" in (st.last_error(pid) or "")
    assert st.example_sets.unstored(pid) is not None
    with pytest.raises(StoreWriteError, match="could not store") as e:  # a direct compute says so
        await st.compute(pid)
    assert e.value.example_set is not None and "kept in memory" in e.value.hint


async def test_a_kept_set_is_written_back_once_the_store_takes_writes_again(registry: PackRegistry) -> None:
    class FullThenFreeDiskStore(MemoryStore):
        """A fake store whose writes fail until ``full`` is cleared (a disk freed, Redis back)."""

        full = True

        async def put(self, key: CacheKey, es: Any) -> str:
            if self.full:
                raise StoreError("cannot write to the example-set cache: database or disk is full")
            return await super().put(key, es)

    store = FullThenFreeDiskStore()
    st = steerer(registry, store=store, search_retry_s=0)  # no back-off: each read may write back
    first = (await st.prepare(chat(DEMOCRAT)))[1]
    pid = first.personas[0].persona_id
    assert first.cache == "computed" and st.example_sets.unstored(pid) is not None
    assert (await st.prepare(chat(DEMOCRAT)))[1].cache == "hit"  # still full: served from memory
    assert await store.entries() == [] and st.metrics.value("store_write_failures") == 2  # tried, failed
    store.full = False
    assert (await st.prepare(chat(DEMOCRAT)))[1].cache == "hit"  # this read stores the kept set
    assert st.example_sets.unstored(pid) is None
    stored = await store.get(st.example_sets.cache_key(pid))
    assert stored is not None and stored.version == first.example_set_version and not st.example_sets.backing_off(pid)
    assert st.counters.searches_started == 1  # written back, not searched again


# --- integrity: cache import / export -----------------------------------------------------------


async def _export_lines(registry: PackRegistry, personas: list[str]) -> list[str]:
    st = steerer(registry)
    for p in personas:
        await st.compute(p)
    return await export_entries(st.store)


async def test_cache_import_validates_the_whole_file_first(registry: PackRegistry) -> None:
    lines = await _export_lines(registry, ["polparty/democrat", "polparty/republican"])
    rec = json.loads(lines[2])
    rec["key"]["persona_id"] = json.loads(lines[1])["key"]["persona_id"]  # a key that does not match its example set
    bad = [lines[0], lines[1], json.dumps(rec)]
    store = MemoryStore()
    with pytest.raises(UserError, match="line 3: the key is for persona"):
        await import_entries(store, bad, known_personas={p.id for p in registry.personas()})
    assert await store.entries() == []  # nothing was written
    unknown = json.loads(lines[1])
    known = {p.id for p in registry.personas()} - {unknown["key"]["persona_id"]}
    with pytest.raises(UserError, match="not defined by any configured pack"):
        await import_entries(store, [lines[0], lines[2], lines[1]], known_personas=known)
    assert await store.entries() == []
    assert await import_entries(store, lines, known_personas={p.id for p in registry.personas()}) == (2, 0)


async def test_cache_export_refuses_non_regular_targets_and_never_follows_links(
    tmp_path: Path, registry: PackRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("STEERKIT_CACHE_DIR", str(cache))
    st = steerer(registry, store=DiskStore(cache / "examples"))
    await st.compute("polparty/democrat")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # the old predictable temporary name, planted as a link to the victim
    (out_dir / "export.jsonl.tmp").symlink_to(victim)
    assert await asyncio.to_thread(main, ["cache", "export", "-o", str(out_dir / "export.jsonl")]) == 0
    assert victim.read_text() == "precious"
    assert (out_dir / "export.jsonl").read_text().startswith('{"format"')
    # a symlink, a FIFO, a folder at the output path: refused, nothing touched
    link = out_dir / "link.jsonl"
    link.symlink_to(victim)
    fifo = out_dir / "fifo.jsonl"
    os.mkfifo(fifo)
    for target in (link, fifo, out_dir):
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["cache", "export", "-o", str(target)]) == 2
        assert "not a regular file" in capsys.readouterr().err
    assert victim.read_text() == "precious" and link.is_symlink()
    # a temporary file a killed export left is removed by the next export
    stale = out_dir / ".export.jsonl.k1ll3d.tmp"
    stale.write_text("half")
    assert await asyncio.to_thread(main, ["cache", "export", "-o", str(out_dir / "export.jsonl")]) == 0
    assert not stale.exists()
    assert sorted(p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")) == ["export.jsonl.tmp"]  # the planted link only


# --- integrity: store faults --------------------------------------------------------------------


async def test_store_faults_are_clean_misses_with_warnings(tmp_path: Path, registry: PackRegistry) -> None:
    store = DiskStore(tmp_path / "examples")
    st = steerer(registry, store=store)
    es = await st.compute("polparty/democrat")
    key = st.cache_key("polparty/democrat")
    d = key.digest()
    # an index record of the wrong type
    meta = json.loads(store._cache.get(f"meta:{d}"))
    for bad in ({**meta, "current": ["a", "list"]}, {**meta, "versions": [1, {"x": 2}]}, [1, 2], 7):
        store._cache.set(f"meta:{d}", json.dumps(bad))
        store._memory.clear()
        with pytest.warns(CacheCorruptionWarning):
            assert await store.get(key) is None
    # a blob deleted behind the index's back
    store._cache.set(f"meta:{d}", json.dumps(meta))
    store._memory.clear()
    store._cache.delete(f"es:{d}:{es.version}")
    with pytest.warns(CacheCorruptionWarning, match="data is missing"):
        assert await store.get(key) is None
    # the steerer sees a miss, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheCorruptionWarning)
        _, info = await st.prepare(chat(DEMOCRAT), SteerOptions(miss_policy="off"))
    assert info.cache == "off"


def test_corrupt_database_gets_an_accurate_hint(tmp_path: Path) -> None:
    d = tmp_path / "examples"
    d.mkdir()
    (d / "cache.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as e:
        DiskStore(d)
    assert "corrupt" in e.value.hint and "permissions" not in e.value.hint


async def test_leftover_checkpoint_temp_files_are_removed(tmp_path: Path, registry: PackRegistry) -> None:
    sets = ExampleSets(registry, MemoryStore(), scorer(), SteerConfig(search=SMALL, max_pool_items=10),
                       checkpoints_dir=tmp_path / "ckpt")
    ckpt = sets.checkpoint_path(sets.cache_key("polparty/democrat"))
    ckpt.parent.mkdir(parents=True)
    stale = ckpt.parent / f".{ckpt.name}.x7f3k2.tmp"
    stale.write_text("{half a checkpoint")
    other = ckpt.parent / ".another-file.json.abc.tmp"
    other.write_text("not ours")
    await sets.compute("polparty/democrat", checkpoint=True)
    assert not stale.exists() and other.exists()


# --- authority ----------------------------------------------------------------------------------


async def test_request_options_only_narrow_the_operators(registry: PackRegistry) -> None:
    st = steerer(registry, miss_policy="off", k=4)
    _, info = await st.prepare(chat(DEMOCRAT), SteerOptions(miss_policy="wait"))
    assert info.cache == "off" and info.reason == "miss_policy_off" and st.counters.searches_started == 0
    _, info = await st.prepare(chat(DEMOCRAT), SteerOptions(persona="country/japan", miss_policy="background"))
    assert st.counters.searches_started == 0
    await st.compute("polparty/democrat")
    _, info = await st.prepare(chat(DEMOCRAT), SteerOptions(k=500))
    assert info.cache == "hit" and 0 < info.examples_used <= 4


async def test_forced_persona_cannot_search_outside_the_allowed_personas(registry: PackRegistry) -> None:
    st = steerer(registry, request_search_personas=["polparty/democrat"])
    _, info = await st.prepare(chat("hello"), SteerOptions(persona="country/japan"))
    assert info.cache == "off" and info.reason == "search_not_allowed" and st.counters.searches_started == 0
    _, info = await st.prepare(chat("hello"), SteerOptions(persona="polparty/democrat"))
    assert info.cache == "computed" and st.counters.searches_started == 1


async def test_request_searches_are_rate_limited_per_persona_and_in_total(registry: PackRegistry) -> None:
    st = steerer(registry, search=failing_search, search_retry_s=0, searches_per_persona_per_hour=2,
                 searches_per_hour=3)
    personas = ["polparty/democrat"] * 4 + ["polparty/republican"] * 3
    reasons = [(await st.prepare(chat("hi"), SteerOptions(persona=p)))[1].reason for p in personas]
    assert st.counters.searches_started == 3  # 2 for the first persona, then the total limit
    assert reasons == ["search_failed", "search_failed", "search_rate_limited", "search_rate_limited",
                       "search_failed", "search_rate_limited", "search_rate_limited"]
    assert st.metrics.value("searches_rate_limited") == 4
    assert st.counters.searches_started == 3
    with pytest.raises(RuntimeError):  # precompute and direct computes are not rate-limited
        await st.compute("country/japan")
    assert st.counters.searches_started == 4


async def test_concurrent_requests_for_one_persona_take_one_token_and_join_one_search(registry: PackRegistry) -> None:
    st = steerer(registry, searches_per_persona_per_hour=1, searches_per_hour=1)
    infos = await asyncio.gather(*(st.prepare(chat(DEMOCRAT)) for _ in range(20)))
    assert st.counters.searches_started == 1
    assert [i.reason for _, i in infos].count("search_rate_limited") == 0
    assert {i.cache for _, i in infos} == {"computed"}


async def test_notes_and_logs_never_carry_credentials(registry: PackRegistry, caplog: pytest.LogCaptureFixture) -> None:
    st = steerer(registry, search=failing_search, search_retry_s=0)
    _, info = await st.prepare(chat(DEMOCRAT))
    assert info.reason == "search_failed" and info.note and "s3cret" not in info.note
    assert steer_headers(info)["X-Steerkit-Note"] == "search_failed"
    assert "alice:" not in caplog.text and "s3cret" not in caplog.text


def test_config_show_masks_url_credentials() -> None:
    s = Settings.load(env={}, overrides={"search_model": {"base_url": SECRET_URL, "model": "m"},
                                         "chat_model": {"base_url": "https://bob:hunter2@chat.example/v1"}})
    shown = s.show() + json.dumps(s.masked())
    assert "s3cret" not in shown and "hunter2" not in shown and "search.internal:8000" in shown


@pytest.mark.parametrize(("model", "field", "value"), [
    (SteerConfig, "max_pool_items", 10**9),
    (SteerConfig, "max_concurrent_searches", 10**6),
    (SteerConfig, "searches_per_hour", 10**9),
    (SteerConfig, "wait_timeout_s", 1e9),
    (ServerSettings, "max_body_bytes", 10**12),
    (ServerSettings, "max_client_connections", 10**9),
    (ServerSettings, "body_timeout", 1e9),
    (SearchModelSettings, "max_concurrency", 10**9),
    (SearchModelSettings, "max_retries", 10**6),
    (SearchModelSettings, "n_parallel", 10**6),
])
def test_cost_bearing_settings_are_bounded(model: Any, field: str, value: Any) -> None:
    assert field in model.model_fields  # a documented setting with a default
    with pytest.raises(ValidationError):
        model(**{field: value})


async def test_steering_failure_never_leaks_backend_details(tmp_path: Path, upstream: FakeUpstream) -> None:
    class LeakySteerer:
        async def prepare(self, messages: list[dict], options: Any = None) -> Any:
            from steerkit.errors import BackendUnavailableError

            raise BackendUnavailableError(NGINX_502)

    for policy in ("fail", "passthrough"):
        settings = settings_for(tmp_path, on_steer_error=policy)
        app = create_app(settings, steerer=LeakySteerer(), upstream_base_url=upstream.base_url)
        async with serving(app, settings.server) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as h:
            r = await h.post("/v1/chat/completions", json={"model": "m", "messages": chat("hi")})
        assert r.status_code == (502 if policy == "fail" else 200)
        assert "s3cret" not in r.text + str(r.headers) and "Bad Gateway" not in r.text + str(r.headers)


async def test_example_selection_reads_a_bounded_query_whatever_the_message(registry: PackRegistry,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 MB message once held the event loop ~0.5 s in BM25 tokenisation (benchmarks/adversarial_load.py)."""
    import steerkit._middleware as mw

    seen: list[int] = []
    real = mw.select_examples

    def spy(es: Any, query: str, k: int, mode: Any) -> Any:
        seen.append(len(query))
        return real(es, query, k, mode)

    monkeypatch.setattr(mw, "select_examples", spy)
    st = steerer(registry)
    await st.compute("polparty/democrat")
    text = "I'm a Democrat. " + "Tell me more about wages and taxes. " * 30_000 + "What about the minimum wage?"
    _, info = await st.prepare(chat(text))
    assert info.examples_used > 0 and seen and max(seen) <= 4096

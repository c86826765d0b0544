"""``/metrics`` across ``steerkit serve --workers N`` (prometheus_client's multiprocess mode): a real
two-worker server on loopback in front of the fake upstream (tests/fake_upstream.py), scraped
through the shared socket, so each scrape lands on whichever worker the kernel hands it to; and
one process, which keeps rendering its own registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cli_helpers import threaded_upstream
from fake_upstream import FakeUpstream
from services import free_port, stop

from steerkit._config import Settings
from steerkit._metrics import (
    MULTIPROC_ENV,
    Metrics,
    multiprocess_dir,
    render_all_processes,
)

pytest.importorskip("uvicorn", reason="the server extra is not installed")

CHAT = "/v1/chat/completions"
BODY = {"model": "fake-echo", "messages": [{"role": "user", "content": "As a Democrat, is the minimum wage too low?"}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition → {(name, sorted labels): value}, by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def chat_ok(m: dict) -> float:
    return m.get(("steerkit_requests_total", (("route", CHAT), ("status", "200"))), 0.0)


def per_worker(m: dict) -> dict[int, float]:
    """``steerkit_proxy_worker_requests`` by the pid label (liveall: live workers only)."""
    return {int(dict(labels)["pid"]): v for (name, labels), v in m.items() if name == "steerkit_proxy_worker_requests"}


def children(pid: int) -> set[int]:
    """The supervisor's worker processes (spawned; multiprocessing's resource tracker is not one)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for c in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                    out.add(int(c))
            except FileNotFoundError:  # exited meanwhile
                pass
    return out


def scrape(base: str) -> dict:
    """One scrape on a new connection (a kept-alive one would stick to one worker)."""
    r = httpx.get(base + "/metrics", headers={"connection": "close"}, timeout=30)
    assert r.status_code == 200
    return samples(r.text)


def wait_for(what: str, check, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, FakeUpstream, Path]]:
    """``steerkit serve --workers 2`` in front of the fake upstream; ``PROMETHEUS_MULTIPROC_DIR``
    points at an empty parent folder, in which the server must make (and remove) its own."""
    parent = tmp_path / "multiproc"
    parent.mkdir()
    with threaded_upstream() as up:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
        env.update(
            XDG_CONFIG_HOME=str(tmp_path / "xdg"), STEERKIT_CACHE_DIR=str(tmp_path / "cache"),
            # a search server that is never called (miss policy off): the workers load no model
            STEERKIT_SEARCH_MODEL__BASE_URL="http://127.0.0.1:9/v1", STEERKIT_SEARCH_MODEL__MODEL="unused",
            STEERKIT_STEER__MISS_POLICY="off", STEERKIT_SERVER__LOG_LEVEL="warning",
            **{MULTIPROC_ENV: str(parent)},
        )
        cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--chat-base-url", up.base_url,
               "--workers", "2"]
        log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200 and len(children(proc.pid)) >= 2
            except httpx.HTTPError:
                return False

        try:
            wait_for("two workers answering /healthz", ready)
            yield proc, base, up, parent
        finally:
            stop(proc, 60)
            log.close()


def send_chats(base: str, n: int) -> None:
    """``n`` chat requests, 8 at a time, each on its own connection (spread over the workers)."""

    def one(_: int) -> None:
        r = httpx.post(base + CHAT, json=BODY, headers={"connection": "close"}, timeout=60)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def test_metrics_cover_every_worker(two_workers: tuple[subprocess.Popen, str, FakeUpstream, Path]) -> None:
    proc, base, _up, parent = two_workers
    run_dirs = list(parent.iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.startswith("steerkit-metrics-")  # fresh, inside the user's

    sent = 0
    while sent < 800:  # until both workers have served chat requests (the kernel picks who accepts)
        send_chats(base, 40)
        sent += 40
        if len([v for v in per_worker(scrape(base)).values() if v > 0]) == 2:
            break
    workers = children(proc.pid)
    for _ in range(6):  # every scrape, whichever worker answers it, counts every worker's requests
        m = scrape(base)
        assert chat_ok(m) == sent
        assert m[("steerkit_proxy_steer_outcomes_total", (("cache", "off"),))] == sent  # the proxy's series
        assert m[("steerkit_steer_requests_total", ())] == sent  # the steerer's series, same exposition
        assert m[("steerkit_proxy_added_latency_seconds_count", ())] == sent
        assert m[("steerkit_requests_in_flight", ())] == 1  # livesum: this scrape, on one worker
        busy = per_worker(m)
        assert set(busy) == workers and all(v > 0 for v in busy.values())
        assert sum(busy.values()) >= sent  # chats plus the scrapes each worker served

    # a worker killed outright: replaced, its live gauges gone, its counts kept in the totals
    victim = max(busy, key=lambda p: busy[p])
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for("the killed worker's replacement", lambda: (c := children(proc.pid)) and victim not in c
                        and len(c) >= 2 and c)
    wait_for("the replacement answering", lambda: httpx.get(base + "/healthz", timeout=2).status_code == 200)
    for _ in range(4):
        m = scrape(base)
        assert chat_ok(m) == sent
        assert victim not in per_worker(m) and set(per_worker(m)) <= replaced

    # SIGTTOU: uvicorn stops one worker gracefully; the worker takes its live gauges with it
    before = children(proc.pid)
    proc.send_signal(signal.SIGTTOU)
    left = wait_for("one worker left", lambda: len(c := children(proc.pid)) == 1 and c)
    for _ in range(3):
        m = scrape(base)
        assert chat_ok(m) == sent and set(per_worker(m)) == left and len(before - left) == 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert list(parent.iterdir()) == []  # the run's directory is removed with it


def test_one_process_renders_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process: ``/metrics`` renders the registry as before, even when the variable appears
    after prometheus_client chose in-memory values (reading the folder would find nothing)."""
    from steerkit._server import create_app

    settings = Settings.load(env={}, overrides={"chat_model": {"base_url": "http://127.0.0.1:9/v1"}})
    app = create_app(settings)
    app.metrics.requests.labels(CHAT, "200").inc(3)
    metrics = Metrics()
    metrics.inc("cache_hits", 2)
    for env in (None, "set"):
        if env:
            monkeypatch.setenv(MULTIPROC_ENV, str(Path(os.environ.get("TMPDIR", "/tmp"))))
        assert multiprocess_dir() is None
        assert chat_ok(samples(app.render_metrics().decode())) == 3
        assert samples(render_all_processes(metrics.registry).decode())[("steerkit_cache_hits_total", ())] == 2


def test_multiprocess_render_keeps_custom_collectors(tmp_path: Path) -> None:
    """In multiprocess mode (a fresh interpreter: prometheus_client picks it at import), the merged
    exposition keeps what only the registry has (a custom collector, as the router's per-server
    series) beside the files' series, each family once."""
    code = """if True:
        from prometheus_client.core import GaugeMetricFamily
        from steerkit._metrics import Metrics, multiprocess_dir, render_all_processes

        class FakeEndpointCollector:
            def collect(self):
                g = GaugeMetricFamily("fake_endpoint_up", "A fake per-server gauge.", labels=["endpoint"])
                g.add_metric(["a"], 1.0)
                yield g

        m = Metrics()
        m.inc("cache_hits", 3)
        m.registry.register(FakeEndpointCollector())
        assert multiprocess_dir()
        print(render_all_processes(m.registry).decode())
    """
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    m = samples(out.stdout)
    assert m[("steerkit_cache_hits_total", ())] == 3 and m[("fake_endpoint_up", (("endpoint", "a"),))] == 1
    assert list(tmp_path.glob("counter_*.db"))  # the counts came through the files
    types = [ln for ln in out.stdout.splitlines() if ln.startswith("# TYPE")]
    assert len(types) == len(set(types))

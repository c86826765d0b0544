"""Counters and histograms, through `prometheus_client`, in one registry.

A `Metrics` object owns one `prometheus_client.CollectorRegistry`. The `Steerer` creates one (or is
given one) and everything that serves it (the compute service, the escalation hook, the proxy)
registers its series there, so ``GET /metrics`` renders one registry with
`prometheus_client.generate_latest`. Names follow the Prometheus conventions: ``steerkit_`` prefix,
``_total`` for counters, base units (seconds) in histogram names.

Reading a value (tests, dashboards in-process): ``metrics.value("cache_hits")`` or the `Counters`
view, ``steerer.counters.cache_hits``: always this process's own values.

Several processes (``steerkit serve --workers N``): prometheus_client's multiprocess mode. The
supervisor gives each server run a fresh ``PROMETHEUS_MULTIPROC_DIR`` before the workers start
(prometheus_client chooses file-backed values when it is imported), every worker writes its series
there, and `render_all_processes` renders them all (counters and histograms summed, gauges as
their ``multiprocess_mode`` says), so a scrape that lands on any worker sees every worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import values as _values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE_LATEST", "GAUGE_MODE", "MULTIPROC_ENV", "Counters", "Metrics", "mark_process_dead", "multiprocess_dir",
           "render_all_processes"]

#: prometheus_client's multiprocess directory (its own variable name).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How a gauge of this process counts among several (a gauge that adds up across workers, such as
#: searches or requests running now; the series of a worker that has exited are dropped).
GAUGE_MODE = "livesum"

#: Seconds; the steering overhead of a cache hit is well under a millisecond, a wait-policy
#: search can take minutes.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 120.0)

# attribute -> (kind, metric name without the "_total" suffix, help)
_SERIES: dict[str, tuple[str, str, str]] = {
    "requests": ("counter", "steerkit_steer_requests", "Chat requests seen by the steering middleware."),
    "steered": ("counter", "steerkit_steered_requests", "Chat requests that got examples injected."),
    "llm_calls": ("counter", "steerkit_llm_calls", "Chat-model calls made through steerkit (wrapped calls, LLM extraction)."),
    "prompt_tokens": ("counter", "steerkit_prompt_tokens", "Prompt tokens of those calls, when the server reported usage."),
    "cache_hits": ("counter", "steerkit_cache_hits", "Example-set cache hits."),
    "cache_misses": ("counter", "steerkit_cache_misses", "Example-set cache misses."),
    "searches_started": ("counter", "steerkit_searches_started", "Coherence searches started (misses, precompute, human re-runs)."),
    "searches_failed": ("counter", "steerkit_searches_failed", "Coherence searches that failed."),
    "searches_rate_limited": ("counter", "steerkit_searches_rate_limited", "Searches requests asked for that the rate limits refused."),
    "store_write_failures": ("counter", "steerkit_store_write_failures", "Example sets the store could not write (a finished search is then kept in memory)."),
    "store_read_failures": ("counter", "steerkit_store_read_failures", "Cache reads the store failed (a set kept in memory is then served)."),
    "searches_running": ("gauge", "steerkit_searches_running", "Coherence searches running now."),
    "search_model_calls": ("counter", "steerkit_search_model_calls", "Scoring calls made by finished searches."),
    "search_prompt_tokens": ("counter", "steerkit_search_prompt_tokens", "Prompt tokens sent by finished searches."),
    "anytime_snapshots": ("counter", "steerkit_anytime_snapshots", "Complete, consistent any-time labellings offered by running searches."),
    "provisional_served": ("counter", "steerkit_provisional_served", "Requests steered from a running search's any-time labelling."),
    "escalations": ("counter", "steerkit_escalations", "Questions escalated to human review."),
}


class Metrics:
    """The steering metrics of one `Steerer` (and of a proxy serving it), in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._series: dict[str, Any] = {}
        for attr, (kind, name, help_) in _SERIES.items():
            if kind == "counter":
                self._series[attr] = Counter(name, help_, registry=self.registry)
            else:
                self._series[attr] = Gauge(name, help_, registry=self.registry, multiprocess_mode=GAUGE_MODE)
        self.added_latency = Histogram(
            "steerkit_added_latency_seconds",
            "Latency steering adds to a chat request (extraction, cache lookup, injection).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.counters = Counters(self)

    def inc(self, attr: str, amount: float = 1) -> None:
        self._series[attr].inc(amount)

    def dec(self, attr: str, amount: float = 1) -> None:
        self._series[attr].dec(amount)

    def value(self, attr: str) -> float:
        """The current value of a series by its attribute name (``cache_hits``, ``added_latency_count``…)."""
        if attr.startswith("added_latency_"):
            name = "steerkit_added_latency_seconds_" + attr.removeprefix("added_latency_")
        else:
            kind, base, _ = _SERIES[attr]
            name = base + ("_total" if kind == "counter" else "")
        v = self.registry.get_sample_value(name)
        return 0.0 if v is None else v

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (this process's series)."""
        return generate_latest(self.registry)


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process's metrics are written to, else None (one process).

    Both conditions: ``$PROMETHEUS_MULTIPROC_DIR`` set, and prometheus_client imported after it was
    (it picks file-backed values at import): a variable set later would make the collector read
    files this process never wrote."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and _values.ValueClass is not _values.MutexValue else None


def render_all_processes(registry: CollectorRegistry) -> bytes:
    """The text exposition for ``GET /metrics``: every process's series in multiprocess mode,
    else ``registry`` (this process's series) as it is."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(registry)
    return generate_latest(_AllProcesses(registry, path))  # type: ignore[arg-type]


class _AllProcesses:
    """Every process's series from the multiprocess files, then the families only ``registry``
    has: its custom collectors (the router's per-server series), read at scrape time in this
    process, which the files never hold."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self._registry, self._path = registry, path

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        families = list(MultiProcessCollector(None, path=self._path).collect())
        yield from families
        names = {f.name for f in families}
        yield from (f for f in self._registry.collect() if f.name not in names)


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Drop a process's live gauges from the multiprocess directory (a worker that exits or dies:
    its requests in flight must not count any more; its counters stay in the totals)."""
    path = path or multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


class Counters:
    """Read-only view of a `Metrics` by attribute: ``steerer.counters.cache_hits`` (an int)."""

    __slots__ = ("_m",)

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def __getattr__(self, name: str) -> int:
        if name in _SERIES or name.startswith("added_latency_"):
            v = self._m.value(name)
            return int(v) if float(v).is_integer() else v  # type: ignore[return-value]
        raise AttributeError(name)

    def snapshot(self) -> dict[str, float]:
        d: dict[str, float] = {k: getattr(self, k) for k in _SERIES}
        d["added_latency_count"] = self.added_latency_count
        d["added_latency_sum"] = self.added_latency_sum
        return d

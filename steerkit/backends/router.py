"""`RouterBackend`: one search model served by several OpenAI-compatible servers (vLLM replicas).

Each prompt goes to one server, chosen by **prefix affinity**: the prompt's demonstrations (the
text before its last blank line, at most ``affinity_chars`` of it) are hashed against every server
(rendezvous hashing), so prompts that share their demonstration prefix go to the same server and
its prefix cache stays warm, and losing a server moves only that server's prefixes.

A server that fails (`BackendUnavailableError`: unreachable, timing out, past its whole-request
``deadline`` or answering 5xx after its own ``endpoint_retries``; `BackendResponseError`: an answer
that is not a valid completion, impossible logprobs, a redirect, a body over the size limit) is
**taken out** for a back-off of ``backoff_initial`` seconds, doubling
with each further failure up to ``backoff_max``; its prompts go to their next server meanwhile.
When the back-off is over the server gets traffic again (a success clears its failures). If every
server is out, a prompt waits for the first to come back, at most ``rounds`` times per server,
then fails with `BackendUnavailableError`. Other errors (a rejected request, a context overflow)
are the same on every server and are raised at once.

Per server: requests, failures and whether it is up, in `endpoint_stats()` and, once
`bind_metrics(registry)` is called (the runtime binds the steerer's registry), as
``steerkit_search_endpoint_requests_total{endpoint=…}``, ``…_failures_total`` and
``steerkit_search_endpoint_up``. Endpoint labels never carry credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from steerkit.backends.base import BackendStats, LabelScore, score_each
from steerkit.backends.openai_compat import OpenAIBackend, public_url
from steerkit.errors import BackendResponseError, BackendUnavailableError, ConfigError

__all__ = ["Endpoint", "RouterBackend"]

log = logging.getLogger("steerkit.backends.router")


_label = public_url


@dataclass
class Endpoint:
    """One server: its backend, counters and back-off state."""

    url: str
    backend: Any
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    last_error: str | None = None
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = _label(self.url)

    def up(self, now: float) -> bool:
        return now >= self.down_until


class _Collector:
    """Prometheus collector reading the endpoints at scrape time."""

    def __init__(self, router: RouterBackend) -> None:
        self.router = router

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        req = CounterMetricFamily("steerkit_search_endpoint_requests", "Scoring requests sent to each search model server.",
                                  labels=["endpoint"])
        fail = CounterMetricFamily("steerkit_search_endpoint_failures", "Scoring requests that failed on each search model server.",
                                   labels=["endpoint"])
        up = GaugeMetricFamily("steerkit_search_endpoint_up", "1 while a search model server is in rotation, 0 while backing off.",
                               labels=["endpoint"])
        now = self.router._clock()
        for ep in self.router.endpoints:
            req.add_metric([ep.label], ep.requests)
            fail.add_metric([ep.label], ep.failures)
            up.add_metric([ep.label], 1.0 if ep.up(now) else 0.0)
        yield req
        yield fail
        yield up


class RouterBackend:
    """A `LogprobBackend` over several OpenAI-compatible servers of the same model (see the module doc).

    ``base_urls``: the servers' ``…/v1`` URLs; ``model``, ``api_key`` and other keyword arguments
    go to each server's `OpenAIBackend` (``max_retries`` is ``endpoint_retries`` there: the router
    fails over instead of retrying a dead server). ``backend_factory(url)`` replaces the
    `OpenAIBackend` per server (tests); ``clock``/``sleep`` are seams for the back-off.
    """

    name = "router"

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        affinity_chars: int = 2048,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        endpoint_retries: int = 1,
        rounds: int = 3,
        backend_factory: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        **openai_options: Any,
    ) -> None:
        urls = [u.strip().rstrip("/") for u in base_urls if u and u.strip()]
        if not urls:
            raise ConfigError("RouterBackend needs at least one base URL")
        if len(set(urls)) != len(urls):
            raise ConfigError("RouterBackend: the same base URL is listed twice", hint="list each server once")
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"search server URL must start with http:// or https://, got {_label(u)!r}")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ConfigError("backoff_initial must be positive and at most backoff_max")
        self.model = model
        self.affinity_chars = affinity_chars
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rounds = max(1, rounds)
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        make = backend_factory or (lambda url: OpenAIBackend(url, model, api_key=api_key, max_retries=endpoint_retries,
                                                             **openai_options))
        self.endpoints = [Endpoint(u, make(u)) for u in urls]
        self._collector: _Collector | None = None

    def __repr__(self) -> str:
        return f"RouterBackend({[ep.label for ep in self.endpoints]!r}, model={self.model!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for ep in self.endpoints:
            close = getattr(ep.backend, "aclose", None)
            if close is not None:
                await close()

    # --- stats and metrics ------------------------------------------------------------------------
    @property
    def stats(self) -> BackendStats:
        """The servers' stats added up."""
        total = BackendStats()
        for ep in self.endpoints:
            s = getattr(ep.backend, "stats", None)
            if s is None:
                continue
            total.calls += s.calls
            total.prompt_tokens += s.prompt_tokens
            total.cached_tokens += s.cached_tokens
            total.cached_known = total.cached_known and s.cached_known
            total.retries += s.retries
            total.fallbacks += s.fallbacks
        return total

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per server (label without credentials): requests, failures, up, last error."""
        now = self._clock()
        return {ep.label: {"requests": ep.requests, "failures": ep.failures, "up": ep.up(now),
                           "last_error": ep.last_error} for ep in self.endpoints}

    def bind_metrics(self, registry: Any) -> None:
        """Expose the per-server series in a prometheus ``CollectorRegistry`` (once)."""
        if self._collector is None:
            self._collector = _Collector(self)
            registry.register(self._collector)

    # --- routing ----------------------------------------------------------------------------------
    def affinity_key(self, prompt: str) -> str:
        """The part of a prompt that picks its server: its demonstrations (before the last blank
        line), at most ``affinity_chars`` of them."""
        cut = prompt.rfind("\n\n")
        prefix = prompt[:cut] if cut > 0 else prompt
        return prefix[: self.affinity_chars]

    def order(self, prompt: str) -> list[Endpoint]:
        """The servers in the prompt's preference order (rendezvous hashing on its affinity key)."""
        key = self.affinity_key(prompt).encode()

        def weight(ep: Endpoint) -> bytes:
            return hashlib.blake2b(key + b"\0" + ep.url.encode(), digest_size=8).digest()

        return sorted(self.endpoints, key=weight, reverse=True)

    def _mark_failed(self, ep: Endpoint, err: BaseException) -> None:
        ep.failures += 1
        ep.consecutive_failures += 1
        backoff = min(self.backoff_max, self.backoff_initial * 2 ** (ep.consecutive_failures - 1))
        ep.down_until = self._clock() + backoff
        ep.last_error = f"{type(err).__name__}: {err}"[:300]
        log.warning("search server %s failed (%s); out of rotation for %.1fs", ep.label, type(err).__name__, backoff)

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        return await score_each(self._score_one, prompts)

    async def _score_one(self, prompt: str) -> LabelScore:
        order = self.order(prompt)
        tries = {id(ep): 0 for ep in order}
        last: BaseException | None = None
        while True:
            now = self._clock()
            candidates = [ep for ep in order if tries[id(ep)] < self.rounds]
            if not candidates:
                break
            ep = next((e for e in candidates if e.up(now)), None)
            if ep is None:  # every server is backing off: wait for the first to come back
                ep = min(candidates, key=lambda e: e.down_until)
                await self._sleep(max(0.0, ep.down_until - now))
            tries[id(ep)] += 1
            ep.requests += 1
            started = self._clock()
            try:
                [s] = await ep.backend.score([prompt])
            except (BackendUnavailableError, BackendResponseError) as e:  # this server failed: the next one
                if ep.down_until > started:  # a concurrent request already took it out: count, don't escalate
                    ep.failures += 1
                else:
                    self._mark_failed(ep, e)
                last = e
                continue
            ep.consecutive_failures = 0
            return s
        raise BackendUnavailableError(
            f"every search model server failed ({', '.join(ep.label for ep in order)}); last error: "
            f"{type(last).__name__}: {last}"[:600],
            hint="check that the servers run and the URLs are right; each is retried after its back-off",
        )

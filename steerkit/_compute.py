"""The one owner of computing an example set: `ExampleSets`.

Every example set steerkit computes goes through `ExampleSets.compute` (a cache miss in the
middleware, ``steerkit precompute``, ``steerkit demo``, the proxy, the escalation re-run with human
labels fixed): it is the only caller of `steerkit.icm.search`. Here, and only here, live

- the search limits (``max_concurrent_searches`` searches at once) and the back-off after a failed
  search (``search_retry_s``: requests do not start another search for that persona meanwhile);
- the counters (searches started/running/failed, scoring calls, prompt tokens), in the one
  metrics registry;
- checkpoints (``checkpoint=True``: a per-key file under ``checkpoints_dir``, removed once the
  result is stored) and progress reports;
- storing the new version and running the ``on_example_set`` hooks;
- single flight: concurrent misses of one key share one search (`ensure`);
- the any-time results: while a search runs, its latest complete, consistent labelling (the
  search's ``snapshot``) is kept in memory (`provisional`), so a request that cannot wait for the
  end is served from it, and the finished search publishes the refined set as a new version.

Any keyword argument `compute` does not know is passed to the search unchanged (and
``search_options`` given at construction are passed to every search), so options the search gains
need no change here.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerkit._config import SteerConfig, expand_path
from steerkit._metrics import Metrics
from steerkit._redact import mask_credentials
from steerkit._singleflight import SingleFlight
from steerkit._store import CacheKey, ExampleSetStore
from steerkit.errors import SteerkitError, StoreError, StoreWriteError, UserError
from steerkit.models import ExampleSet, Pool, SearchConfig
from steerkit.packs._combine import CombinedPersona, agreed_labels, allowed_combinations

if TYPE_CHECKING:
    from steerkit.packs import PackRegistry

__all__ = ["ExampleSets", "Hook", "PrecomputeResult", "SearchFn", "checkpoint_path"]

log = logging.getLogger("steerkit.compute")

SearchFn = Callable[..., Awaitable[ExampleSet]]
Hook = Callable[[str, ExampleSet], Awaitable[None]]


def checkpoint_path(checkpoints_dir: str | Path, persona_id: str, key_digest: str) -> Path:
    """The checkpoint file of one cache key's search."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", persona_id)
    return expand_path(checkpoints_dir) / f"{slug}-{key_digest[:16]}.json"


@dataclass
class PrecomputeResult:
    """What `ExampleSets.precompute` did for one persona."""

    persona: str
    status: str
    """``computed``, ``resumed`` (computed from a checkpoint) or ``cached`` (skipped)."""
    version: str | None = None
    score: float | None = None
    calls: int = 0
    seconds: float = 0.0
    items: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    """``violations``; and how reliable the set is: ``ended``, ``restart_agreement``,
    ``answer_confidence``, ``least_certain`` (questions), ``warning`` (see `ExampleSet.reliability_warning`)."""


def reliability(es: ExampleSet) -> dict[str, Any]:
    """What `PrecomputeResult.extra` and the CLI report about how far a set can be trusted."""
    return {
        "violations": es.violations,
        "ended": es.stats.ended,
        "restart_agreement": es.stats.restart_agreement,
        "answer_confidence": es.answer_confidence(),
        "least_certain": [q.model_dump() for q in es.least_certain()],
        "warning": es.reliability_warning(),
    }


class ExampleSets:
    """Retrieves and computes the example sets of the configured personas.

    ``registry``: the persona packs; ``store``: the example-set cache; ``backend``: the
    `LogprobBackend` searches score with (None: nothing can be computed, cached sets are still
    read); ``registry`` may be None for a service that only computes `Pool` targets (a standalone
    human re-run); ``config``: the `SteerConfig` (search config, model id, pool size, limits);
    ``search``: the search function (default `steerkit.icm.search`); ``search_options``: extra
    keyword arguments for every search; ``checkpoints_dir``: where ``checkpoint=True`` writes.
    """

    def __init__(
        self,
        registry: PackRegistry | None,
        store: ExampleSetStore,
        backend: Any | None = None,
        config: SteerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        search: SearchFn | None = None,
        search_options: Mapping[str, Any] | None = None,
        checkpoints_dir: str | Path | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.backend = backend
        self.config = config or SteerConfig()
        self.metrics = metrics if metrics is not None else Metrics()
        self.search_options: dict[str, Any] = dict(search_options or {})
        self.checkpoints_dir = expand_path(checkpoints_dir) if checkpoints_dir is not None else None
        self.on_example_set: list[Hook] = []
        self._search_fn = search
        self._sem = asyncio.Semaphore(self.config.max_concurrent_searches)
        self._flight: SingleFlight[ExampleSet | None] = SingleFlight()
        self._background: set[asyncio.Task[Any]] = set()
        self._keys: dict[str, CacheKey] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # persona -> (monotonic time, error)
        self._provisional: dict[str, ExampleSet] = {}  # key digest -> latest any-time snapshot
        self._unstored: dict[str, ExampleSet] = {}  # key digest -> a finished search the store refused
        self._writing_back: set[str] = set()  # key digests whose kept set is being stored now
        self._rate_limited: set[str] = set()  # personas whose last request search was refused
        self._local_limiter: Any = None  # this instance's request search limits (no shared store)
        self._start_locks: dict[str, asyncio.Lock] = {}  # persona -> lock of the start decision
        #: the combined personas the operator allowed (``steer.combined_allow``): searched and cached
        #: like configured personas, warm-started from their members' cached sets
        self.combined: dict[str, CombinedPersona] = allowed_combinations(registry, self.config)

    # keys and pools ----------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model id in cache keys: ``config.model``, else the backend's ``model``, else ``none``."""
        if self.config.model:
            return self.config.model
        return str(getattr(self.backend, "model", None) or "none")

    def pool(self, persona_id: str) -> Pool:
        combo = self.combined.get(persona_id)
        if combo is not None:
            return combo.pool
        if self.registry is None:
            raise UserError(f"no persona packs to find {persona_id!r} in", hint="give ExampleSets a PackRegistry, or compute a Pool")
        return self.registry.pool(persona_id, max_items=self.config.max_pool_items)

    def cache_key(self, persona_id: str) -> CacheKey:
        """The cache key of a configured persona (raises `UnknownPersonaError` otherwise)."""
        key = self._keys.get(persona_id)
        if key is None:
            key = CacheKey.for_pool(self.pool(persona_id), self.model, self.config.search)  # UnknownPersonaError
            self._keys[persona_id] = key
        return key

    def checkpoint_path(self, key: CacheKey) -> Path:
        if self.checkpoints_dir is None:
            raise UserError("checkpoint=True needs a checkpoints folder", hint="pass checkpoints_dir= (the CLI uses <cache_dir>/checkpoints)")
        return checkpoint_path(self.checkpoints_dir, key.persona_id, key.digest())

    # reading -----------------------------------------------------------------------------------
    async def get(self, persona_id: str) -> ExampleSet | None:
        """The persona's current cached example set (counted as a hit or a miss); a finished search
        the store could not write is served from memory, also while the store cannot be read."""
        key = self.cache_key(persona_id)
        es = await self._read(key)
        self.metrics.inc("cache_hits" if es is not None else "cache_misses")
        return es

    async def _read(self, key: CacheKey) -> ExampleSet | None:
        """The store's current set for ``key``, else the one this process kept in memory. A store
        that fails (Redis gone) is logged and counted; the kept set is served meanwhile, and with
        none kept the `StoreError` goes up. The persona shown in prompts is always the configured
        pack's, never the cached copy's (its description is not covered by the pool hash)."""
        kept = self._unstored.get(key.digest())
        try:
            es = await self.store.get(key)
        except StoreError as e:
            self.metrics.inc("store_read_failures")
            if kept is None:
                raise
            log.warning("the example-set store failed while reading %s (%s); serving the set this process kept "
                        "in memory", key.persona_id, mask_credentials(getattr(e, "message", None) or str(e)))
            es = None
        else:
            if es is None and kept is not None and not self.backing_off(key.persona_id):
                await self._write_back(key, kept)
        if es is None:
            es = kept
        if es is not None and es.persona.id in self.combined:
            persona = self.combined[es.persona.id].persona
            if es.persona != persona:
                es = es.model_copy(update={"persona": persona})
        elif es is not None and self.registry is not None and es.persona.id in self.registry:
            persona = self.registry.persona(es.persona.id)
            if es.persona != persona:
                es = es.model_copy(update={"persona": persona})
        return es

    async def _write_back(self, key: CacheKey, kept: ExampleSet) -> None:
        """The store answers again (Redis is back, the disk has room) but lacks the set this process
        kept: store it now, so other replicas and later processes get it. Tried on a read once the
        persona's back-off (``search_retry_s``) has passed, one attempt at a time; a failure backs
        off again and the set stays served from memory."""
        digest = key.digest()
        if digest in self._writing_back:
            return
        self._writing_back.add(digest)
        try:
            await self.put(key, kept)
        except Exception as e:  # noqa: BLE001 - still unwritable: keep serving it from memory
            detail = self._write_failed(key.persona_id, e)
            log.warning("the set of %s kept in memory could not be stored yet (%s)", key.persona_id, detail)
        else:
            self._unstored.pop(digest, None)
            self._failed.pop(key.persona_id, None)
            log.info("the set of %s kept in memory is stored now (version %s)", key.persona_id, kept.version)
        finally:
            self._writing_back.discard(digest)

    def unstored(self, persona_id: str) -> ExampleSet | None:
        """A finished search result kept only in memory because the store could not write it."""
        return self._unstored.get(self.cache_key(persona_id).digest())

    def rate_limited(self, persona_id: str) -> bool:
        """True when the persona's last search asked for by a request was refused by the rate
        limits (``searches_per_persona_per_hour``, ``searches_per_hour``)."""
        return persona_id in self._rate_limited

    def provisional(self, persona_id: str) -> ExampleSet | None:
        """The latest any-time snapshot of the persona's running (or failed) search: complete and
        consistent, not final (``stats.provisional``); None when there is none."""
        return self._provisional.get(self.cache_key(persona_id).digest())

    def last_error(self, persona_id: str) -> str | None:
        """The error of the persona's last failed search (None when it has not failed)."""
        f = self._failed.get(persona_id)
        return f[1] if f else None

    def backing_off(self, persona_id: str) -> bool:
        """True while a failed search of this persona is younger than ``search_retry_s``."""
        f = self._failed.get(persona_id)
        return f is not None and time.monotonic() - f[0] < self.config.search_retry_s

    # computing ---------------------------------------------------------------------------------
    def ensure(self, persona_id: str) -> asyncio.Task[ExampleSet | None] | None:
        """Start (or join) the single-flight search of a persona's current key; None when there is
        no backend or the persona is backing off after a failure. The task re-checks the store
        first. (A search a request asks for goes through `ensure_for_request`.)"""
        if self.backend is None or self.backing_off(persona_id):
            return None
        key = self.cache_key(persona_id)

        async def run() -> ExampleSet | None:
            es = await self._read(key)
            if es is not None:
                return es
            warm = await self._members_warm_start(persona_id)
            shared = getattr(self.store, "single_flight", None)  # a shared store (RedisStore): one search among replicas
            try:
                if shared is not None:
                    return await shared(key, lambda: self.compute(persona_id, key=key, warm_start=warm))
                return await self.compute(persona_id, warm_start=warm)
            except StoreWriteError as e:  # the result is kept in memory: serve it
                return e.example_set
            except StoreError:  # the shared store went away after our search finished: serve what it found
                kept = self._unstored.get(key.digest())
                if kept is None:
                    raise
                return kept

        task = self._flight.start(key.digest(), run)
        return task

    async def _members_warm_start(self, persona_id: str) -> dict[str, bool] | None:
        """A combined persona's warm start: its members' cached labels where they agree (None for
        a configured persona, or when no member set is cached or readable)."""
        combo = self.combined.get(persona_id)
        if combo is None:
            return None
        sets = []
        for m in combo.members:
            try:
                sets.append(await self._read(self.cache_key(m)))
            except StoreError:
                sets.append(None)
        warm = agreed_labels(combo.pool, sets)
        if warm:
            log.info("search for %s warm-started with %d labels from its members' sets", persona_id, len(warm))
        return warm or None

    async def ensure_for_request(self, persona_id: str) -> asyncio.Task[ExampleSet | None] | None:
        """`ensure` for a search that a request asks for: None also when starting it would exceed
        the request search rate limits (joining a search already running takes nothing)."""
        if self.backend is None or self.backing_off(persona_id):
            return None
        # one request at a time decides whether to start: the others then join its search
        # instead of each taking a token while the first is still asking the limiter
        async with self._start_locks.setdefault(persona_id, asyncio.Lock()):
            if self.cache_key(persona_id).digest() not in self._flight:
                if not await self._take_search_token(persona_id):
                    self._rate_limited.add(persona_id)
                    self.metrics.inc("searches_rate_limited")
                    log.warning("search for %s not started: request search rate limit reached "
                                "(searches_per_persona_per_hour=%d, searches_per_hour=%d)", persona_id,
                                self.config.searches_per_persona_per_hour, self.config.searches_per_hour)
                    return None
                self._rate_limited.discard(persona_id)
            return self.ensure(persona_id)

    def _memory_limiter(self) -> Any:
        if self._local_limiter is None:
            from limits.aio import storage, strategies

            self._local_limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        return self._local_limiter

    async def _take_search_token(self, persona_id: str) -> bool:
        """One request-started search against both moving-window limits. The counts are the
        store's when it shares them (`RedisStore.rate_limiter`: across replicas), else this
        process's. A limiter that cannot be reached refuses (no work the operator did not allow)."""
        from limits import RateLimitItemPerHour

        cfg = self.config
        per, total = RateLimitItemPerHour(cfg.searches_per_persona_per_hour), RateLimitItemPerHour(cfg.searches_per_hour)
        if per.amount == 0 or total.amount == 0:
            return False
        shared = getattr(self.store, "rate_limiter", None)
        limiter, ns = (shared(), "steerkit") if shared is not None else (self._memory_limiter(), "local")
        try:
            if not (await limiter.test(per, ns, persona_id) and await limiter.test(total, ns)):
                return False
            return await limiter.hit(per, ns, persona_id) and await limiter.hit(total, ns)
        except Exception as e:  # noqa: BLE001 - e.g. Redis unreachable: refuse, and say why
            log.error("the request search rate limiter failed (%s); refusing the search",
                      mask_credentials(f"{type(e).__name__}: {e}"))
            return False

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task (cancelled by `aclose`, awaited by `drain`)."""
        if task not in self._background:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_log_failure)

    async def compute(
        self,
        target: str | Pool,
        *,
        config: SearchConfig | None = None,
        fixed: Mapping[str, bool] | None = None,
        fixed_source: str = "fixed",
        warm_start: Mapping[str, bool] | None = None,
        parent_version: str | None = None,
        audit: list[dict[str, Any]] | None = None,
        checkpoint: str | Path | bool | None = None,
        progress: Callable[[Any], None] | None = None,
        key: CacheKey | None = None,
        store: bool = True,
        **search_options: Any,
    ) -> ExampleSet:
        """Run a search now (no cache check), store the result as the new current version and run
        the ``on_example_set`` hooks.

        ``target``: a configured persona id (its pool as the `Steerer` sees it) or a `Pool` (e.g. an
        example set's own pool, for a human re-run). ``config``: the search config (default: the
        steerer's). ``key``: where to store (default: the persona's key, or the pool's key under
        ``config``). ``checkpoint``: a file, or True for the per-key file under ``checkpoints_dir``;
        it is removed once the result is stored. Other keyword arguments go to the search.
        """
        if self.backend is None:
            raise SteerkitError("no backend to compute example sets with",
                                hint="pass backend=OpenAIBackend(...) or EmbeddedBackend() to the Steerer")
        config = config or self.config.search
        if isinstance(target, str):
            pool = self.pool(target)
            if key is None:
                key = (self.cache_key(target) if config == self.config.search
                       else CacheKey.for_pool(pool, self.model, config))
        else:
            pool = target
            if key is None:
                key = CacheKey.for_pool(pool, self.model, config)
        persona_id = pool.persona.id
        ckpt: Path | None = None
        if checkpoint is True:
            ckpt = self.checkpoint_path(key)
        elif checkpoint:
            ckpt = expand_path(checkpoint)  # type: ignore[arg-type]
        if ckpt is not None:
            remove_stale_temp_files(ckpt)  # left by a killed run's checkpoint write

        kwargs: dict[str, Any] = {**self.search_options, **search_options}
        if fixed:
            kwargs["fixed"] = fixed
            kwargs["fixed_source"] = fixed_source
        if warm_start:
            kwargs["warm_start"] = warm_start
        if parent_version:
            kwargs["parent_version"] = parent_version
        if audit is not None:
            kwargs["audit"] = audit
        if ckpt is not None:
            kwargs["checkpoint"] = ckpt
        if progress is not None:
            kwargs["progress"] = progress
        search = self._search_fn
        if search is None:
            from steerkit.icm import (
                search as icm_search,  # lazy: the engine is only needed on a miss
            )

            search = icm_search
        m = self.metrics
        digest = key.digest()
        user_snapshot = kwargs.pop("snapshot", None)

        def on_snapshot(snap: ExampleSet) -> None:
            self._provisional[digest] = snap
            m.inc("anytime_snapshots")
            if user_snapshot is not None:
                user_snapshot(snap)

        if _accepts(search, "snapshot"):
            kwargs["snapshot"] = on_snapshot
        elif user_snapshot is not None:
            kwargs["snapshot"] = user_snapshot
        async with self._sem:
            m.inc("searches_started")
            m.inc("searches_running")
            t0 = time.perf_counter()
            try:
                es = await search(pool, self.backend, config, **kwargs)
            except Exception as e:
                m.inc("searches_failed")
                self._failed[persona_id] = (time.monotonic(), mask_credentials(f"{type(e).__name__}: {e}"))
                raise
            finally:
                m.dec("searches_running")
        self._failed.pop(persona_id, None)
        m.inc("search_model_calls", es.stats.model_calls)
        self._rate_limited.discard(persona_id)
        m.inc("search_prompt_tokens", es.stats.prompt_tokens)
        log.info("search for %s finished in %.1fs (%d model calls)", persona_id, time.perf_counter() - t0,
                 es.stats.model_calls)
        if store:
            try:
                await self.put(key, es)
            except Exception as e:  # noqa: BLE001 - any store failure keeps the result in memory
                self._store_failed(persona_id, digest, es, e)  # raises StoreWriteError
        self._provisional.pop(digest, None)  # the stored final version supersedes it
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        return es

    def _write_failed(self, persona_id: str, e: Exception) -> str:
        """Back the persona off after the store refused its set; the failure's masked text."""
        detail = mask_credentials(getattr(e, "message", None) or f"{type(e).__name__}: {e}")
        self._failed[persona_id] = (time.monotonic(), f"store write failed: {detail}")
        return detail

    def _store_failed(self, persona_id: str, digest: str, es: ExampleSet, e: Exception) -> None:
        """A finished search the store could not write: keep it in memory (served by `get`),
        count it, back off the persona, and raise a `StoreWriteError` that says so."""
        self._unstored[digest] = es
        self._provisional.pop(digest, None)  # (`put` counted the failure)
        detail = self._write_failed(persona_id, e)
        log.error("search for %s finished but could not be stored (%s); the result is kept in memory "
                  "for this process only", persona_id, detail)
        raise StoreWriteError(
            f"the search for {persona_id} finished (version {es.version}) but the cache could not store it: {detail}",
            example_set=es,
            hint="the result is kept in memory by this process only; free disk space, fix the cache "
                 "folder's permissions or move a corrupt cache away, then precompute again",
        ) from e

    async def put(self, key: CacheKey | str, es: ExampleSet) -> str:
        """Store ``es`` as the current version under ``key`` (a `CacheKey` or a configured persona
        id) and run the hooks; returns the version."""
        if isinstance(key, str):
            key = self.cache_key(key)
        try:
            version = await self.store.put(key, es)
        except Exception as e:
            self.metrics.inc("store_write_failures")
            log.error("storing %s failed: %s", key.persona_id, mask_credentials(f"{type(e).__name__}: {e}"))
            raise
        self._unstored.pop(key.digest(), None)
        for hook in list(self.on_example_set):
            try:
                await hook(es.persona.id, es)
            except Exception:  # a hook must never break a request or a search
                log.exception("on_example_set hook %r failed for %s", hook, es.persona.id)
        return version

    async def precompute(
        self,
        persona_ids: Sequence[str],
        *,
        force: bool = False,
        fresh: bool = False,
        jobs: int = 1,
        on_progress: Callable[[str, Any], None] | None = None,
        on_status: Callable[[str, str], None] | None = None,
        **search_options: Any,
    ) -> list[PrecomputeResult]:
        """Compute (or skip, when cached) the example set of each persona, resumably.

        A persona whose current key is cached is skipped unless ``force``; an unfinished search
        resumes from its checkpoint (``checkpoints_dir``) unless ``fresh``. ``jobs`` personas are
        searched at once (within ``max_concurrent_searches``). ``on_progress(persona_id,
        SearchProgress)`` gets the search's progress; ``on_status(persona_id, status)`` is told
        ``cached``/``resuming``/``searching``/``done``.
        """
        sem = asyncio.Semaphore(max(1, jobs))
        results: dict[str, PrecomputeResult] = {}

        async def one(pid: str) -> None:
            async with sem:
                key = self.cache_key(pid)
                if not force:
                    cached = await self.store.get(key)
                    if cached is not None:
                        results[pid] = PrecomputeResult(pid, "cached", cached.version, cached.score, items=len(cached.items),
                                                        extra=reliability(cached))
                        if on_status:
                            on_status(pid, "cached")
                        return
                ckpt = self.checkpoint_path(key) if self.checkpoints_dir is not None else None
                if fresh and ckpt is not None:
                    ckpt.unlink(missing_ok=True)
                resumed = ckpt is not None and ckpt.exists()
                if on_status:
                    on_status(pid, "resuming" if resumed else "searching")
                t0 = time.perf_counter()
                calls0 = _backend_calls(self.backend)
                es = await self.compute(
                    pid,
                    key=key,
                    checkpoint=ckpt,
                    progress=(lambda pr: on_progress(pid, pr)) if on_progress else None,
                    **search_options,
                )
                results[pid] = PrecomputeResult(
                    pid,
                    "resumed" if resumed else "computed",
                    es.version,
                    es.score,
                    calls=_backend_calls(self.backend) - calls0 if calls0 is not None else es.stats.model_calls,  # type: ignore[operator]
                    seconds=time.perf_counter() - t0,
                    items=len(es.items),
                    extra=reliability(es),
                )
                if on_status:
                    on_status(pid, "done")

        await asyncio.gather(*(one(p) for p in persona_ids))
        return [results[p] for p in persona_ids]

    # lifecycle ---------------------------------------------------------------------------------
    @property
    def background_tasks(self) -> int:
        return len(self._background)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for background searches to finish (tests, graceful shutdown)."""
        tasks = list(self._background)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def aclose(self) -> None:
        """Cancel searches in flight."""
        await self._flight.cancel_all()


def remove_stale_temp_files(target: Path) -> int:
    """Remove the temporary files a killed writer of ``target`` left beside it
    (``.<name>.<random>.tmp``, as the checkpoint writer and ``cache export`` name them); returns
    how many. Symbolic links and other non-regular files are left alone."""
    import stat

    n = 0
    with contextlib.suppress(OSError):
        for p in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                if stat.S_ISREG(p.lstat().st_mode):
                    p.unlink()
                    n += 1
    if n:
        log.info("removed %d leftover temporary file(s) of %s", n, target)
    return n


def _accepts(fn: Any, name: str) -> bool:
    """Whether a search function takes the keyword ``name`` (custom search functions may not)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _backend_calls(backend: Any) -> int | None:
    calls = getattr(getattr(backend, "stats", None), "calls", None)
    return calls if isinstance(calls, int) else None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background search failed: %s: %s", type(exc).__name__, mask_credentials(str(exc)))

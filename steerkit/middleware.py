"""The steering pipeline: extract → fetch or compute the example set → select → inject.

`Steerer.prepare(messages, options)` turns a chat request's messages into steered messages and
a `SteerInfo` saying what it did; the client wrappers in `steerkit.adapters` call it around the
app's own chat call. Per-request control comes as ``extra_body={"steerkit": {...}}`` (or the
request's ``metadata``), parsed by `SteerOptions.from_request`.

Only personas defined by the configured packs can be matched, so a user's text can never
create a persona, a cache entry or a search. On a cache miss the miss policy decides:
``wait`` (compute, then answer), ``background`` (answer unsteered now, compute in the
background — the default) or ``off`` (never compute on a request; precompute with the CLI).
Concurrent misses for one persona share one search (single-flight).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steerkit.errors import InvalidRequestError, SteerkitError, UnknownPersonaError
from steerkit.extract import Extractor, PersonaMatch, RuleExtractor, best_per_dimension, message_text
from steerkit.inject import PersonaBlock, inject_block, render_block, select_examples, version_of
from steerkit.models import ExampleSet, Pool, SearchConfig
from steerkit.packs import PackRegistry
from steerkit.store import CacheKey, DiskStore, ExampleSetStore, SingleFlight

__all__ = [
    "Counters",
    "Histogram",
    "MissPolicy",
    "SteerConfig",
    "SteerInfo",
    "SteerOptions",
    "Steerer",
]

log = logging.getLogger("steerkit.middleware")

MissPolicy = Literal["wait", "background", "off"]
Mode = Literal["generate", "predict"]
CacheStatus = Literal["hit", "miss", "computed", "off", "none"]
SearchFn = Callable[..., Awaitable[ExampleSet]]
Hook = Callable[[str, ExampleSet], Awaitable[None]]


# --- options and results ------------------------------------------------------------------------


class SteerOptions(BaseModel):
    """Per-request steering options, sent as ``extra_body={"steerkit": {...}}`` or
    ``metadata={"steerkit": "<json>"}``. Unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    persona: str | None = None
    """Force this persona (must exist in the configured packs); extraction is skipped."""
    k: int | None = Field(default=None, ge=0, le=500)
    miss_policy: MissPolicy | None = None
    mode: Mode | None = None
    """``generate`` (default from `SteerConfig`) or ``predict``."""

    @field_validator("persona")
    @classmethod
    def _persona(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("persona must be a non-empty persona id")
        return v

    @classmethod
    def parse(cls, value: Any) -> SteerOptions:
        """Options from a dict, a JSON string, ``False`` (disable) or ``True``/None (defaults)."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        if isinstance(value, SteerOptions):
            return value
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InvalidRequestError(
                    "the 'steerkit' request field is not valid JSON",
                    hint='send an object, e.g. extra_body={"steerkit": {"persona": "polparty/democrat"}}',
                ) from None
        if not isinstance(value, Mapping):
            raise InvalidRequestError(
                f"the 'steerkit' request field must be an object, got {type(value).__name__}",
                hint='e.g. extra_body={"steerkit": {"enabled": false}}',
            )
        try:
            return cls.model_validate(dict(value))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "steerkit"
            allowed = ", ".join(cls.model_fields)
            raise InvalidRequestError(
                f"invalid steerkit option {loc!r}: {err['msg'].removeprefix('Value error, ')}",
                hint=f"allowed options: {allowed}",
            ) from None

    @classmethod
    def from_request(cls, body: Mapping[str, Any]) -> tuple[SteerOptions, dict[str, Any]]:
        """Pop the ``steerkit`` field from a chat request body (top level, i.e. ``extra_body``,
        or inside ``metadata``) and return the options and the body to forward upstream."""
        if not isinstance(body, Mapping):
            raise InvalidRequestError("the request body must be a JSON object")
        out = dict(body)
        raw = out.pop("steerkit", None)
        meta = out.get("metadata")
        if isinstance(meta, Mapping) and "steerkit" in meta:
            meta = dict(meta)
            meta_raw = meta.pop("steerkit")
            if raw is not None:
                raise InvalidRequestError("steerkit options given twice (top level and metadata)",
                                          hint="send them in one place")
            raw = meta_raw
            if meta:
                out["metadata"] = meta
            else:
                out.pop("metadata")
        return cls.parse(raw), out


class SteerInfo(BaseModel):
    """What steerkit did for one request (attached to the response as ``.steerkit``)."""

    model_config = ConfigDict(extra="forbid")

    personas: list[PersonaMatch] = Field(default_factory=list)
    example_set_version: str | None = None
    """Version of the first persona's example set (see ``versions`` for all)."""
    versions: dict[str, str] = Field(default_factory=dict)
    cache: CacheStatus = "none"
    cache_by_persona: dict[str, CacheStatus] = Field(default_factory=dict)
    examples_used: int = 0
    added_ms: float = 0.0
    mode: Mode = "generate"
    note: str | None = None
    """Why steering did not happen, when it did not ("disabled", "no persona stated", …)."""

    def headers(self) -> dict[str, str]:
        """HTTP response headers for a proxy."""
        return {
            "X-Steerkit-Persona": ",".join(m.persona_id for m in self.personas),
            "X-Steerkit-Version": self.example_set_version or "",
            "X-Steerkit-Cache": self.cache,
            "X-Steerkit-Added-Ms": f"{self.added_ms:.3f}",
        }


# --- configuration ------------------------------------------------------------------------------


class SteerConfig(BaseModel):
    """How the `Steerer` behaves (per-request `SteerOptions` override k, mode and miss policy)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(20, ge=0, le=500)
    """Examples injected per request (the seed paper finds 20–30 enough)."""
    mode: Mode = "generate"
    miss_policy: MissPolicy = "background"
    persona_miss_policy: dict[str, MissPolicy] = Field(default_factory=dict)
    """Per-persona miss policy overrides, e.g. ``{"country/nigeria": "wait"}``."""
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    """Extracted personas below this confidence are ignored."""
    max_personas: int = Field(3, ge=1, le=10)
    """At most this many personas (one per dimension) steer one request."""
    dimensions: list[str] | None = None
    """Only extract these dimensions (None: every configured pack)."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    model: str | None = None
    """Model id in cache keys; defaults to the backend's ``model``."""
    max_pool_items: int | None = Field(None, ge=1)
    """Search only the first N items of each pool (whole groups), to bound search cost."""
    max_concurrent_searches: int = Field(1, ge=1)
    wait_timeout_s: float | None = Field(None, gt=0)
    """With ``wait``: answer unsteered after this long (the search goes on in the background)."""
    scan: Literal["last_user", "all_user"] = "all_user"
    """Which user messages are scanned for persona statements (later messages win)."""
    search_retry_s: float = Field(60.0, ge=0)
    """After a failed search, requests do not start another one for this persona for this long."""


# --- counters -----------------------------------------------------------------------------------

_BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0, float("inf"))


@dataclass
class Histogram:
    """Fixed-bucket latency histogram (Prometheus-style cumulative buckets on export)."""

    buckets: tuple[float, ...] = _BUCKETS_MS
    counts: list[int] = field(default_factory=lambda: [0] * len(_BUCKETS_MS))
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None when empty)."""
        if not self.count:
            return None
        target = q * self.count
        acc = 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            if acc >= target:
                return b if b != float("inf") else self.max
        return self.max

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.total, 3), "max": round(self.max, 3),
                "p50_le": self.quantile(0.5), "p99_le": self.quantile(0.99)}


@dataclass
class Counters:
    """Observability counters of one `Steerer` (plain ints: read them, or export them)."""

    requests: int = 0
    steered: int = 0
    llm_calls: int = 0
    """Chat-model calls made through steerkit (wrapped calls and LLM extraction)."""
    prompt_tokens: int = 0
    """Prompt tokens of those calls, when the server reported usage."""
    cache_hits: int = 0
    cache_misses: int = 0
    searches_started: int = 0
    searches_running: int = 0
    searches_failed: int = 0
    search_model_calls: int = 0
    search_prompt_tokens: int = 0
    escalations: int = 0
    added_ms: Histogram = field(default_factory=Histogram)

    def snapshot(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "added_ms"}
        d["added_ms"] = self.added_ms.snapshot()
        return d

    def prometheus(self, prefix: str = "steerkit") -> str:
        """The counters in the Prometheus text exposition format."""
        lines = []
        for name, v in self.__dict__.items():
            if name == "added_ms":
                continue
            kind = "gauge" if name == "searches_running" else "counter"
            metric = f"{prefix}_{name}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {metric} {kind}", f"{metric} {v}"]
        h = self.added_ms
        metric = f"{prefix}_added_ms"
        lines.append(f"# TYPE {metric} histogram")
        acc = 0
        for b, c in zip(h.buckets, h.counts):
            acc += c
            le = "+Inf" if b == float("inf") else repr(b)
            lines.append(f'{metric}_bucket{{le="{le}"}} {acc}')
        lines += [f"{metric}_sum {h.total}", f"{metric}_count {h.count}"]
        return "\n".join(lines) + "\n"


# --- the steerer --------------------------------------------------------------------------------


class Steerer:
    """Steers chat requests with persona-coherent example sets.

    ``registry``: the configured persona packs (default: the shipped ones). ``store``: the
    example-set cache (default: a `DiskStore` under ``default_cache_dir()``). ``backend``: the
    `LogprobBackend` searches run on (None: nothing is ever computed on a request; cached sets
    are still used). ``extractor``: default `RuleExtractor`. ``search``: the search function
    (default ``steerkit.icm.search``).
    """

    def __init__(
        self,
        registry: PackRegistry | None = None,
        store: ExampleSetStore | None = None,
        backend: Any | None = None,
        config: SteerConfig | None = None,
        *,
        extractor: Extractor | None = None,
        search: SearchFn | None = None,
    ) -> None:
        self.registry = registry or PackRegistry.default()
        self.store: ExampleSetStore = store if store is not None else DiskStore()
        self.backend = backend
        self.config = config or SteerConfig()
        self.extractor: Extractor = extractor or RuleExtractor(self.registry, dimensions=self.config.dimensions)
        self._search_fn = search
        self.counters = Counters()
        if getattr(self.extractor, "name", None) == "llm" and getattr(self.extractor, "on_call", 0) is None:
            self.extractor.on_call = self._count_llm_call  # type: ignore[attr-defined]
        self.on_example_set: list[Hook] = []
        self._flight: SingleFlight[ExampleSet | None] = SingleFlight()
        self._search_sem = asyncio.Semaphore(self.config.max_concurrent_searches)
        self._background: set[asyncio.Task[Any]] = set()
        self._keys: dict[str, CacheKey] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # persona -> (monotonic time, error)
        # extraction results per message text: earlier turns of a conversation are not re-extracted
        self._extracted: OrderedDict[str, list[PersonaMatch]] = OrderedDict()
        unknown = [p for p in self.config.persona_miss_policy if p not in self.registry]
        if unknown:
            raise UnknownPersonaError(f"persona_miss_policy names unknown persona(s) {unknown}")
        if self.config.model is None and backend is None:
            log.info("Steerer without backend or config.model: cache keys use model 'none'")

    def _count_llm_call(self, response: Any) -> None:
        self.counters.llm_calls += 1
        n = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        if isinstance(n, int):
            self.counters.prompt_tokens += n

    # keys and pools --------------------------------------------------------------------------
    @property
    def model(self) -> str:
        if self.config.model:
            return self.config.model
        return str(getattr(self.backend, "model", None) or "none")

    def pool(self, persona_id: str) -> Pool:
        return self.registry.pool(persona_id, max_items=self.config.max_pool_items)

    def cache_key(self, persona_id: str) -> CacheKey:
        """The cache key of a configured persona (raises `UnknownPersonaError` otherwise)."""
        key = self._keys.get(persona_id)
        if key is None:
            self.registry.persona(persona_id)  # validates
            key = CacheKey.for_pool(self.pool(persona_id), self.model, self.config.search)
            self._keys[persona_id] = key
        return key

    # example sets ----------------------------------------------------------------------------
    def miss_policy_for(self, persona_id: str, override: MissPolicy | None = None) -> MissPolicy:
        return override or self.config.persona_miss_policy.get(persona_id) or self.config.miss_policy

    async def example_set(self, persona_id: str, *, miss_policy: MissPolicy | None = None) -> ExampleSet | None:
        """The current example set of a persona, applying the miss policy on a miss."""
        es, _ = await self._example_set(persona_id, self.miss_policy_for(persona_id, miss_policy))
        return es

    async def _example_set(self, persona_id: str, policy: MissPolicy) -> tuple[ExampleSet | None, CacheStatus]:
        key = self.cache_key(persona_id)
        es = await self.store.get(key)
        if es is not None:
            self.counters.cache_hits += 1
            return es, "hit"
        self.counters.cache_misses += 1
        if policy == "off" or self.backend is None:
            return None, "off" if policy == "off" else "miss"
        failed = self._failed.get(persona_id)
        if failed is not None and time.monotonic() - failed[0] < self.config.search_retry_s:
            return None, "miss"  # a search just failed: do not hammer the backend
        digest = key.digest()
        task = self._flight.start(digest, lambda: self._compute(persona_id, key))
        if policy == "background":
            self._track(task)
            return None, "miss"
        try:
            if self.config.wait_timeout_s is not None:
                es = await asyncio.wait_for(asyncio.shield(task), self.config.wait_timeout_s)
            else:
                es = await asyncio.shield(task)
        except asyncio.TimeoutError:
            self._track(task)
            return None, "miss"
        except Exception as e:  # the chat request goes on unsteered; the error is logged and counted
            log.error("search for %s failed: %s: %s", persona_id, type(e).__name__, e)
            return None, "miss"
        return es, ("computed" if es is not None else "miss")

    def last_error(self, persona_id: str) -> str | None:
        """The error of the persona's last failed search (None when it has not failed)."""
        f = self._failed.get(persona_id)
        return f[1] if f else None

    def _track(self, task: asyncio.Task[Any]) -> None:
        if task not in self._background:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_log_failure)

    async def _compute(self, persona_id: str, key: CacheKey) -> ExampleSet | None:
        """Inside the single flight: re-check the store, search, store, run hooks."""
        es = await self.store.get(key)
        if es is not None:
            return es
        es = await self.compute(persona_id)
        return es

    async def compute(
        self,
        persona_id: str,
        *,
        fixed: Mapping[str, bool] | None = None,
        fixed_source: str = "fixed",
        warm_start: Mapping[str, bool] | None = None,
        parent_version: str | None = None,
        audit: list[dict[str, Any]] | None = None,
        store: bool = True,
    ) -> ExampleSet:
        """Run a search for a configured persona now (no cache check), store the result as the
        new current version and run the ``on_example_set`` hooks. Used on misses, by precompute
        and by the escalation re-run (``fixed`` human labels, ``parent_version``)."""
        if self.backend is None:
            raise SteerkitError("this Steerer has no backend, so it cannot run a search",
                                hint="pass backend=OpenAIBackend(...) or EmbeddedBackend()")
        pool = self.pool(persona_id)
        search = self._search_fn
        if search is None:
            from steerkit.icm import search as icm_search  # lazy: the engine is only needed on a miss

            search = icm_search
        kwargs: dict[str, Any] = {}
        if fixed:
            kwargs["fixed"] = fixed
            kwargs["fixed_source"] = fixed_source
        if warm_start:
            kwargs["warm_start"] = warm_start
        if parent_version:
            kwargs["parent_version"] = parent_version
        if audit is not None:
            kwargs["audit"] = audit
        async with self._search_sem:
            self.counters.searches_started += 1
            self.counters.searches_running += 1
            t0 = time.perf_counter()
            try:
                es = await search(pool, self.backend, self.config.search, **kwargs)
            except Exception as e:
                self.counters.searches_failed += 1
                self._failed[persona_id] = (time.monotonic(), f"{type(e).__name__}: {e}")
                raise
            finally:
                self.counters.searches_running -= 1
        self._failed.pop(persona_id, None)
        self.counters.search_model_calls += es.stats.model_calls
        self.counters.search_prompt_tokens += es.stats.prompt_tokens
        log.info("search for %s finished in %.1fs (%d model calls)", persona_id, time.perf_counter() - t0,
                 es.stats.model_calls)
        if store:
            await self.put(persona_id, es)
        return es

    async def put(self, persona_id: str, es: ExampleSet) -> str:
        """Store ``es`` as the persona's current version and run the hooks; returns the version."""
        version = await self.store.put(self.cache_key(persona_id), es)
        for hook in list(self.on_example_set):
            try:
                await hook(persona_id, es)
            except Exception:  # a hook must never break a request or a search
                log.exception("on_example_set hook %r failed for %s", hook, persona_id)
        return version

    # requests --------------------------------------------------------------------------------
    async def extract(self, messages: Sequence[Mapping[str, Any]]) -> list[PersonaMatch]:
        """Personas stated in the user messages (configured packs only), one per dimension."""
        idxs = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if self.config.scan == "last_user":
            idxs = idxs[-1:]
        found: list[PersonaMatch] = []
        for i in idxs:
            text = message_text(messages[i].get("content"))
            for m in await self._extract_text(text):
                if m.persona_id not in self.registry:
                    continue  # defence in depth: only configured personas
                if self.config.dimensions is not None and m.dimension not in self.config.dimensions:
                    continue
                if m.confidence >= self.config.min_confidence:
                    found.append(m.model_copy(update={"message_index": i}))
        return best_per_dimension(found)[: self.config.max_personas]

    async def _extract_text(self, text: str) -> list[PersonaMatch]:
        hit = self._extracted.get(text)
        if hit is not None:
            self._extracted.move_to_end(text)
            return hit
        found = await self.extractor.aextract(text)
        if len(text) <= 8192:  # bounded memory: long texts are not kept
            self._extracted[text] = found
            while len(self._extracted) > 2048:
                self._extracted.popitem(last=False)
        return found

    async def prepare(
        self, messages: Sequence[Mapping[str, Any]], options: SteerOptions | None = None
    ) -> tuple[list[dict[str, Any]], SteerInfo]:
        """Steered copy of ``messages`` and what was done. The input is never modified."""
        t0 = time.perf_counter()
        opts = options or SteerOptions()
        _validate_messages(messages)
        self.counters.requests += 1
        mode: Mode = opts.mode or self.config.mode
        k = self.config.k if opts.k is None else opts.k
        msgs = [dict(m) for m in messages]

        def done(info: SteerInfo) -> tuple[list[dict[str, Any]], SteerInfo]:
            info.added_ms = round((time.perf_counter() - t0) * 1000.0, 4)
            self.counters.added_ms.observe(info.added_ms)
            return msgs if info.examples_used == 0 else steered, info

        steered = msgs
        if not opts.enabled:
            return done(SteerInfo(cache="off", mode=mode, note="disabled by request"))
        if opts.persona is not None:
            persona = self.registry.persona(opts.persona)  # UnknownPersonaError for unknown ids
            matches = [PersonaMatch(persona_id=persona.id, dimension=persona.dimension, span=(0, 0), evidence="",
                                    confidence=1.0, source="forced")]
        else:
            matches = await self.extract(msgs)
        if not matches:
            return done(SteerInfo(cache="none", mode=mode, note="no persona stated"))

        statuses: dict[str, CacheStatus] = {}
        sets: list[tuple[PersonaMatch, ExampleSet]] = []
        for m in matches:
            policy = self.miss_policy_for(m.persona_id, opts.miss_policy)
            es, status = await self._example_set(m.persona_id, policy)
            statuses[m.persona_id] = status
            if es is not None:
                sets.append((m, es))
        versions = {m.persona_id: version_of(es) for m, es in sets}
        info = SteerInfo(
            personas=matches,
            example_set_version=versions.get(matches[0].persona_id),
            versions=versions,
            cache=_aggregate(list(statuses.values())),
            cache_by_persona=statuses,
            mode=mode,
        )
        if not sets:
            errors = [e for e in (self.last_error(m.persona_id) for m in matches) if e]
            if errors:
                info.note = f"search failed: {errors[0][:200]}"
            elif info.cache == "off":
                info.note = "cache miss; miss policy off"
            elif self.backend is None:
                info.note = "cache miss; no backend to compute with"
            else:
                info.note = "cache miss; example set being computed"
            return done(info)
        query = _last_user_text(msgs)
        per = _split_k(k, len(sets))
        blocks = []
        for (m, es), kk in zip(sets, per):
            spec = self.registry.spec(m.persona_id)
            examples = tuple(select_examples(es, query, kk, mode))
            blocks.append(PersonaBlock(persona=es.persona, label=spec.display,
                                       templates=self.registry.templates(m.persona_id), examples=examples))
        used = sum(len(b.examples) for b in blocks)
        if used == 0:
            info.note = "the example set has no usable examples for this mode"
            return done(info)
        steered = inject_block(msgs, render_block(blocks, mode))
        info.examples_used = used
        self.counters.steered += 1
        return done(info)

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
        """Cancel background searches and close the store when it can be closed."""
        await self._flight.cancel_all()
        close = getattr(self.store, "close", None)
        if callable(close):
            r = close()
            if asyncio.iscoroutine(r):
                await r

    async def __aenter__(self) -> Steerer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background search failed: %s: %s", type(exc).__name__, exc)


def _aggregate(statuses: list[CacheStatus]) -> CacheStatus:
    if not statuses:
        return "none"
    if "computed" in statuses:
        return "computed"
    if all(s == "hit" for s in statuses):
        return "hit"
    if all(s == "off" for s in statuses):
        return "off"
    return "miss"


def _split_k(k: int, n: int) -> list[int]:
    base, extra = divmod(k, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise InvalidRequestError("'messages' must be a list of chat messages",
                                  hint='e.g. [{"role": "user", "content": "Hello"}]')
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidRequestError(f"messages[{i}] must be an object with 'role' and 'content'")
        if not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] has no 'role'")

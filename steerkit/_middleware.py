"""The steering pipeline: extract → fetch or compute the example set → select → inject.

`Steerer.prepare(messages, options)` turns a chat request's messages into steered messages and
a `SteerInfo` saying what it did; the client wrappers in `steerkit.adapters` and the proxy call it
around the chat call (they parse the request's ``steerkit`` options with the wire layer; this
module knows nothing of HTTP).

Only personas defined by the configured packs can be matched, so a user's text can never
create a persona, a cache entry or a search. On a cache miss the miss policy decides:
``wait`` (compute, then answer), ``background`` (answer unsteered now, compute in the
background — the default) or ``off`` (never compute on a request; precompute with the CLI).
Computing is the `ExampleSets` service's (``steerer.example_sets``): concurrent misses for one
persona share one search, failures back off, every search is counted there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from steerkit._compute import ExampleSets, Hook, SearchFn
from steerkit._config import MissPolicy, Mode, SteerConfig, SteerOptions
from steerkit._inject import (
    PersonaBlock,
    answer_confidence_of,
    inject_block,
    render_block,
    select_examples,
    version_of,
)
from steerkit._metrics import Counters, Metrics
from steerkit._redact import mask_credentials
from steerkit._store import CacheKey, DiskStore, ExampleSetStore
from steerkit.errors import InvalidRequestError, UnknownPersonaError
from steerkit.extract import (
    Extractor,
    PersonaMatch,
    RuleExtractor,
    aextract_texts,
    best_per_dimension,
    message_text,
)
from steerkit.models import ExampleSet, Pool
from steerkit.packs import PackRegistry
from steerkit.packs._combine import is_combined, members_of, plan_combinations

__all__ = [
    "CacheStatus",
    "Counters",
    "MissPolicy",
    "SteerConfig",
    "SteerInfo",
    "SteerOptions",
    "Steerer",
    "validate_messages",
]

log = logging.getLogger("steerkit.middleware")

CacheStatus = Literal["hit", "miss", "computed", "provisional", "off", "none"]
"""``provisional``: served from a running search's any-time labelling (complete and consistent;
the finished search publishes the refined set as a new version)."""


# --- results ------------------------------------------------------------------------------------


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
    answer_confidence: float | None = None
    """The lowest answer confidence (`ExampleSet.answer_confidence`) of the sets that steered this
    request (None: none, or none the model answered). Below 0.6 (`DECIDED_ANSWERS`) their answers
    rest on near-ties: the search model barely preferred them (the proxy's
    ``X-Steerkit-Answer-Confidence``)."""
    combined: list[str] = Field(default_factory=list)
    """Combined personas whose own sets steered this request (``country/nigeria+polparty/democrat``;
    their versions and cache statuses are in ``versions`` and ``cache_by_persona``)."""
    note: str | None = None
    """Why steering did not happen, when it did not ("disabled", "no persona stated", …), or why
    personas stated together were steered each by its own set, in words (credentials masked)."""
    reason: str | None = None
    """The same as a short, stable code (what the proxy sends in ``X-Steerkit-Note``):
    ``disabled``, ``no_persona``, ``miss_policy_off``, ``no_backend``, ``computing``,
    ``search_failed``, ``search_rate_limited``, ``search_not_allowed``, ``no_usable_examples``;
    and, when steering happened with each stated persona's own set instead of their combination:
    ``combined_off`` (``steer.combined_personas`` is off), ``combined_not_allowed`` (not in
    ``steer.combined_allow``), ``combined_unavailable`` (the combined set is not cached yet, or its
    search cannot start now)."""


# --- the steerer --------------------------------------------------------------------------------


class Steerer:
    """Steers chat requests with persona-coherent example sets.

    ``registry``: the configured persona packs (default: the shipped ones). ``store``: the
    example-set cache (default: a `DiskStore` in the default cache location,
    ``$STEERKIT_CACHE_DIR/examples``, where ``steerkit precompute`` writes). ``backend``: the
    `LogprobBackend` searches run on (None: nothing is ever computed on a request; cached sets
    are still used). ``extractor``: default `RuleExtractor`. ``search``: the search function
    (default ``steerkit.icm.search``); ``search_options``: extra keyword arguments for every
    search; ``checkpoints_dir``: where ``compute(..., checkpoint=True)`` writes. ``metrics``: the
    `Metrics` (one prometheus registry) to count into.
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
        search_options: Mapping[str, Any] | None = None,
        checkpoints_dir: str | Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry or PackRegistry.default()
        self.config = config or SteerConfig()
        self.metrics = metrics if metrics is not None else Metrics()
        self.example_sets = ExampleSets(
            self.registry,
            store if store is not None else DiskStore(),
            backend,
            self.config,
            metrics=self.metrics,
            search=search,
            search_options=search_options,
            checkpoints_dir=checkpoints_dir,
        )
        self.extractor: Extractor = extractor or RuleExtractor(self.registry, dimensions=self.config.dimensions)
        if getattr(self.extractor, "name", None) == "llm" and getattr(self.extractor, "on_call", 0) is None:
            self.extractor.on_call = self.count_llm_call  # type: ignore[attr-defined]
        # extraction results per message text: earlier turns of a conversation are not re-extracted
        self._extracted: OrderedDict[str, list[PersonaMatch]] = OrderedDict()
        combined = self.example_sets.combined
        unknown = [p for p in self.config.persona_miss_policy if p not in self.registry and p not in combined]
        if unknown:
            raise UnknownPersonaError(f"persona_miss_policy names unknown persona(s) {unknown}")
        unknown = [p for p in self.config.request_search_personas or [] if p not in self.registry and p not in combined]
        if unknown:
            raise UnknownPersonaError(f"request_search_personas names unknown persona(s) {unknown}")
        if self.config.model is None and backend is None:
            log.info("Steerer without backend or config.model: cache keys use model 'none'")

    # what the compute service owns, seen from the steerer ----------------------------------------
    @property
    def store(self) -> ExampleSetStore:
        return self.example_sets.store

    @property
    def backend(self) -> Any | None:
        return self.example_sets.backend

    @property
    def counters(self) -> Counters:
        """The metrics as plain numbers: ``steerer.counters.cache_hits``."""
        return self.metrics.counters

    @property
    def on_example_set(self) -> list[Hook]:
        """Hooks run with ``(persona_id, example_set)`` after each new version is stored."""
        return self.example_sets.on_example_set

    @on_example_set.setter
    def on_example_set(self, hooks: list[Hook]) -> None:
        self.example_sets.on_example_set[:] = hooks

    @property
    def model(self) -> str:
        return self.example_sets.model

    def count_llm_call(self, response: Any) -> None:
        """Count one chat-model call made through steerkit (and its prompt tokens, when reported)."""
        self.metrics.inc("llm_calls")
        n = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        if isinstance(n, int):
            self.metrics.inc("prompt_tokens", n)

    def pool(self, persona_id: str) -> Pool:
        return self.example_sets.pool(persona_id)

    def cache_key(self, persona_id: str) -> CacheKey:
        """The cache key of a configured persona (raises `UnknownPersonaError` otherwise)."""
        return self.example_sets.cache_key(persona_id)

    def last_error(self, persona_id: str) -> str | None:
        """The error of the persona's last failed search (None when it has not failed)."""
        return self.example_sets.last_error(persona_id)

    async def compute(self, target: str | Pool, **kwargs: Any) -> ExampleSet:
        """Compute, store and announce an example set now: `ExampleSets.compute`."""
        return await self.example_sets.compute(target, **kwargs)

    async def put(self, persona_id: str, es: ExampleSet) -> str:
        """Store ``es`` as the persona's current version and run the hooks; returns the version."""
        return await self.example_sets.put(persona_id, es)

    # example sets ----------------------------------------------------------------------------
    def miss_policy_for(self, persona_id: str, override: MissPolicy | None = None) -> MissPolicy:
        """The operator's policy for the persona, narrowed (never widened) by a request's
        ``override``: a request may turn searching ``off``, or choose between ``wait`` and
        ``background`` when the operator lets misses search; it can never turn ``off`` into a search."""
        operator = self.config.persona_miss_policy.get(persona_id) or self.config.miss_policy
        if override is None or _POLICY_RANK[override] > _POLICY_RANK[operator]:
            return operator
        return override

    def may_search(self, persona_id: str) -> bool:
        """Whether a request may start a search for this persona (``request_search_personas``)."""
        allowed = self.config.request_search_personas
        return allowed is None or persona_id in allowed

    async def example_set(self, persona_id: str, *, miss_policy: MissPolicy | None = None) -> ExampleSet | None:
        """The current example set of a persona, applying the miss policy on a miss."""
        es, _ = await self._example_set(persona_id, self.miss_policy_for(persona_id, miss_policy))
        return es

    async def _example_set(self, persona_id: str, policy: MissPolicy) -> tuple[ExampleSet | None, CacheStatus]:
        sets = self.example_sets
        es = await sets.get(persona_id)
        if es is not None:
            return es, "hit"
        if policy == "off" or not self.may_search(persona_id):
            return None, "off"
        # None: no backend, backing off after a failed search, or over the request search rate
        task = await sets.ensure_for_request(persona_id)
        if task is None:
            return self._provisional(persona_id)
        if policy == "background":
            sets.track(task)
            return self._provisional(persona_id)
        try:
            if self.config.wait_timeout_s is not None:
                es = await asyncio.wait_for(asyncio.shield(task), self.config.wait_timeout_s)
            else:
                es = await asyncio.shield(task)
        except TimeoutError:
            # the any-time answer: the best complete labelling so far; the search goes on
            sets.track(task)
            return self._provisional(persona_id)
        except Exception as e:  # noqa: BLE001 - the chat request goes on unsteered; the error is logged and counted
            log.error("search for %s failed: %s: %s", persona_id, type(e).__name__, mask_credentials(str(e)))
            return None, "miss"
        return es, ("computed" if es is not None else "miss")

    def _provisional(self, persona_id: str) -> tuple[ExampleSet | None, CacheStatus]:
        es = self.example_sets.provisional(persona_id)
        if es is None:
            return None, "miss"
        self.metrics.inc("provisional_served")
        return es, "provisional"

    def _combination_note(self, matches: Sequence[PersonaMatch]) -> tuple[str, str] | None:
        """Why personas stated together are not steered as one (note, reason code); None when one
        persona was stated or some allowed combination of them can steer."""
        if len(matches) < 2:
            return None
        stated = "+".join(sorted(m.persona_id for m in matches))
        if self.config.combined_personas == "off":
            note = (f"personas stated together ({stated}); combined personas are off (steer.combined_personas); "
                    "steered by each persona's own set")
            return note, "combined_off"
        if not plan_combinations([m.persona_id for m in matches], self.example_sets.combined):
            note = (f"personas stated together ({stated}); no combination of them is in steer.combined_allow; "
                    "steered by each persona's own set")
            return note, "combined_not_allowed"
        return None

    def _unavailable_because(self, persona_id: str, status: CacheStatus) -> str:
        if self.example_sets.rate_limited(persona_id):
            return "cache miss, request searches are rate-limited"
        if self.last_error(persona_id):
            return "its search failed"
        if status == "off":
            return "cache miss, miss policy off" if self.may_search(persona_id) else "cache miss, requests may not search it"
        if self.backend is None:
            return "cache miss, no backend to compute with"
        return "cache miss, example set being computed"

    # requests --------------------------------------------------------------------------------
    async def extract(self, messages: Sequence[Mapping[str, Any]]) -> list[PersonaMatch]:
        """Personas stated in the user messages (configured packs only), one per dimension."""
        idxs = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if self.config.scan == "last_user":
            idxs = idxs[-1:]
        texts = [message_text(messages[i].get("content")) for i in idxs]
        found: list[PersonaMatch] = []
        for i, matches in zip(idxs, await self._extract_texts(texts)):
            for m in matches:
                if m.persona_id not in self.registry:
                    continue  # defence in depth: only configured personas
                if self.config.dimensions is not None and m.dimension not in self.config.dimensions:
                    continue
                if m.confidence >= self.config.min_confidence:
                    found.append(m.model_copy(update={"message_index": i}))
        return best_per_dimension(found)[: self.config.max_personas]

    async def _extract_texts(self, texts: list[str]) -> list[list[PersonaMatch]]:
        """Matches per text: earlier turns of a conversation come from a small memo; the rest are
        extracted together within the extractor's one per-request budget, off the event loop."""
        out: list[list[PersonaMatch] | None] = [self._extracted.get(t) for t in texts]
        todo = [k for k, r in enumerate(out) if r is None]
        if todo:
            fresh = await aextract_texts(self.extractor, [texts[k] for k in todo])
            for k, found in zip(todo, fresh):
                out[k] = found
                if len(texts[k]) <= 8192:  # bounded memory: long texts are not kept
                    self._extracted[texts[k]] = found
            while len(self._extracted) > 2048:
                self._extracted.popitem(last=False)
        return [r if r is not None else [] for r in out]

    async def prepare(
        self, messages: Sequence[Mapping[str, Any]], options: SteerOptions | None = None
    ) -> tuple[list[dict[str, Any]], SteerInfo]:
        """Steered copy of ``messages`` and what was done. The input is never modified."""
        t0 = time.perf_counter()
        opts = options or SteerOptions()
        validate_messages(messages)
        metrics = self.metrics
        metrics.inc("requests")
        mode: Mode = opts.mode or self.config.mode
        k = self.config.k if opts.k is None else min(opts.k, self.config.k)  # a request can only lower k
        msgs = [dict(m) for m in messages]

        def done(info: SteerInfo) -> tuple[list[dict[str, Any]], SteerInfo]:
            seconds = time.perf_counter() - t0
            info.added_ms = round(seconds * 1000.0, 4)
            metrics.added_latency.observe(seconds)
            return msgs if info.examples_used == 0 else steered, info

        steered = msgs
        if not opts.enabled:
            return done(SteerInfo(cache="off", mode=mode, note="disabled by request", reason="disabled"))
        if opts.persona is not None:
            # a combined id forces its members (each must be configured); whether they are then
            # steered together is the operator's allow-list's to say, as for stated personas
            forced = members_of(opts.persona) if is_combined(opts.persona) else (opts.persona,)
            personas = [self.registry.persona(p) for p in forced]  # UnknownPersonaError for unknown ids
            matches = [PersonaMatch(persona_id=p.id, dimension=p.dimension, span=(0, 0), evidence="",
                                    confidence=1.0, source="forced") for p in personas]
            if len({p.dimension for p in personas}) != len(personas):
                raise InvalidRequestError(f"steerkit.persona {opts.persona!r} names two personas of one dimension",
                                          hint="a combined persona joins personas of different dimensions with '+'")
        else:
            matches = await self.extract(msgs)
        if not matches:
            return done(SteerInfo(cache="none", mode=mode, note="no persona stated", reason="no_persona"))

        statuses: dict[str, CacheStatus] = {}
        sets: list[tuple[str, ExampleSet]] = []  # (persona id, combined or not; its set)
        covered: set[str] = set()
        combined: list[str] = []
        combo_note = self._combination_note(matches)
        for combo in plan_combinations([m.persona_id for m in matches], self.example_sets.combined):
            es, status = await self._example_set(combo.id, self.miss_policy_for(combo.id, opts.miss_policy))
            statuses[combo.id] = status
            if es is not None:
                sets.append((combo.id, es))
                covered.update(combo.members)
                combined.append(combo.id)
            elif combo_note is None:
                why = self._unavailable_because(combo.id, status)
                combo_note = (f"combined persona {combo.id}: {why}; steered by each persona's own set",
                              "combined_unavailable")
        for m in matches:
            if m.persona_id in covered:
                continue
            policy = self.miss_policy_for(m.persona_id, opts.miss_policy)
            es, status = await self._example_set(m.persona_id, policy)
            statuses[m.persona_id] = status
            if es is not None:
                sets.append((m.persona_id, es))
        versions = {pid: version_of(es) for pid, es in sets}
        confidences = [c for c in (answer_confidence_of(es) for _, es in sets) if c is not None]
        first = next((pid for pid, _ in sets if pid == matches[0].persona_id or matches[0].persona_id in members_of(pid)),
                     matches[0].persona_id)
        info = SteerInfo(
            personas=matches,
            example_set_version=versions.get(first),
            versions=versions,
            # a combination that fell back is in cache_by_persona, not in the aggregate
            cache=_aggregate([st for p, st in statuses.items() if not is_combined(p) or p in combined]),
            cache_by_persona=statuses,
            answer_confidence=round(min(confidences), 4) if confidences else None,
            combined=combined,
            mode=mode,
        )
        if combo_note is not None:
            info.note, info.reason = combo_note
        if not sets:
            tried = list(statuses)  # the stated personas, and any combination of them tried first
            errors = [e for e in (self.last_error(p) for p in tried) if e]
            limited = [p for p in tried if self.example_sets.rate_limited(p)]
            if limited:
                info.note, info.reason = "cache miss; request searches are rate-limited", "search_rate_limited"
            elif errors:
                info.note, info.reason = f"search failed: {mask_credentials(errors[0])[:200]}", "search_failed"
            elif info.cache == "off" and not any(self.may_search(p) for p in tried):
                info.note, info.reason = "cache miss; requests may not start a search for this persona", "search_not_allowed"
            elif info.cache == "off":
                info.note, info.reason = "cache miss; miss policy off", "miss_policy_off"
            elif self.backend is None:
                info.note, info.reason = "cache miss; no backend to compute with", "no_backend"
            else:
                info.note, info.reason = "cache miss; example set being computed", "computing"
            if combo_note is not None:  # why the stated personas were not searched together, too
                info.note = f"{info.note} ({combo_note[0]})"
            return done(info)
        query = _last_user_text(msgs)[-_QUERY_CHARS:]  # relevance needs the question, not a whole upload
        per = _split_k(k, len(sets))
        blocks = []
        for (pid, es), kk in zip(sets, per):
            examples = tuple(select_examples(es, query, kk, mode))
            combo = self.example_sets.combined.get(pid)
            if combo is not None:
                label, templates = combo.label, combo.templates
            else:
                label, templates = self.registry.spec(pid).display, self.registry.templates(pid)
            blocks.append(PersonaBlock(persona=es.persona, label=label, templates=templates, examples=examples))
        used = sum(len(b.examples) for b in blocks)
        if used == 0:
            info.note, info.reason = "the example set has no usable examples for this mode", "no_usable_examples"
            return done(info)
        steered = inject_block(msgs, render_block(blocks, mode))
        info.examples_used = used
        metrics.inc("steered")
        return done(info)

    # lifecycle ---------------------------------------------------------------------------------
    @property
    def background_tasks(self) -> int:
        return self.example_sets.background_tasks

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for background searches to finish (tests, graceful shutdown)."""
        await self.example_sets.drain(timeout)

    async def aclose(self) -> None:
        """Cancel background searches and close the store when it can be closed."""
        await self.example_sets.aclose()
        close = getattr(self.store, "close", None)
        if callable(close):
            r = close()
            if asyncio.iscoroutine(r):
                await r

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


#: Characters of the last user message that rank the examples (its end: where the question is);
#: bounds the selection's cost on the event loop whatever the message's length.
_QUERY_CHARS = 4096

#: How much work a miss policy allows: a request may choose a policy of the same rank or lower.
#: ``wait`` and ``background`` start the same search (``wait`` only makes that request wait for it).
_POLICY_RANK: dict[str, int] = {"off": 0, "background": 1, "wait": 1}


def _aggregate(statuses: list[CacheStatus]) -> CacheStatus:
    if not statuses:
        return "none"
    if "computed" in statuses:
        return "computed"
    if "provisional" in statuses:
        return "provisional"
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


def validate_messages(messages: Any) -> None:
    """`InvalidRequestError` unless ``messages`` is a list of objects that each have a ``role``."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise InvalidRequestError("'messages' must be a list of chat messages",
                                  hint='e.g. [{"role": "user", "content": "Hello"}]')
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidRequestError(f"messages[{i}] must be an object with 'role' and 'content'")
        if not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] has no 'role'")

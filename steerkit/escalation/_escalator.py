"""`Escalator`: selection + budget + adapter + middleware hooks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from steerkit._questions import questions
from steerkit.errors import FeedbackError
from steerkit.escalation._adapter import FeedbackAdapter
from steerkit.escalation._policies import (
    ConfidencePolicy,
    SelectionPolicy,
    select_questions,
)
from steerkit.escalation._render import _is_fixed, build_escalation, escalation_id
from steerkit.escalation._rerun import RerunResult, collaborative_rerun
from steerkit.escalation._types import Escalation
from steerkit.models import ExampleSet, SearchConfig

if TYPE_CHECKING:  # pragma: no cover
    from steerkit.backends.base import LogprobBackend

__all__ = ["Escalator"]

log = logging.getLogger("steerkit.escalation")

# --- the escalator: selection + budget + adapter + middleware hooks ---------------------------


class Escalator:
    """Selects questions, submits them to an adapter, applies answers; middleware hooks.

    - ``k``: new questions per round (per example-set version); ``budget``: at most this many
      questions per persona in total (counted from the adapter, so it survives restarts);
      ``None`` = unlimited.
    - ``refresh_pending``: re-submit questions that are still unanswered with the new version's
      suggestion (an update: same id). Answers quoting the old version are then stale.
    - ``steerer``: re-run through this Steerer's compute service and store under its cache keys
      (what `register` also sets, without adding the hook); else ``backend``/``store``/``config``
      for a standalone re-run (`apply`).
    """

    def __init__(
        self,
        adapter: FeedbackAdapter,
        policy: SelectionPolicy | None = None,
        *,
        k: int = 4,
        budget: int | None = 16,
        refresh_pending: bool = True,
        backend: LogprobBackend | None = None,
        store: Any | None = None,
        config: SearchConfig | None = None,
        auto_apply: bool = False,
        steerer: Any | None = None,
    ) -> None:
        if k < 0:
            raise FeedbackError(f"k must be ≥ 0, got {k}")
        if budget is not None and budget < 0:
            raise FeedbackError(f"budget must be ≥ 0 or None, got {budget}")
        self.adapter = adapter
        self.policy = policy or ConfidencePolicy()
        self.k = k
        self.budget = budget
        self.refresh_pending = refresh_pending
        self.backend = backend
        self.store = store
        self.config = config
        self.auto_apply = auto_apply
        self.escalated = 0
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen_versions: set[str] = set()
        self._persona_locks: dict[str, asyncio.Lock] = {}
        self._steerer: Any | None = steerer

    def _lock(self, persona_id: str) -> asyncio.Lock:
        return self._persona_locks.setdefault(persona_id, asyncio.Lock())

    async def escalate(self, es: ExampleSet) -> list[Escalation]:
        """One round for ``es``: refresh pending questions, then submit up to k new ones within the
        persona's budget. Returns the escalations submitted (new and refreshed)."""
        async with self._lock(es.persona.id):
            existing = await self.adapter.escalations(persona_id=es.persona.id)
            mine = {e.id: e for e in existing if e.pool_hash == es.provenance.pool_hash}
            qids = {escalation_id(es.persona.id, es.provenance.pool_hash, q): q for q, _ in questions(es)}
            already = [qids[i] for i in mine if i in qids]
            left = self.k if self.budget is None else max(0, min(self.k, self.budget - len(existing)))
            picks = await select_questions(es, self.policy, left, exclude=already)
            out = [build_escalation(es, q, policy=self.policy.name, score=s) for q, s in picks]
            if self.refresh_pending:
                pending = {e.id for e in await self.adapter.escalations(persona_id=es.persona.id, status="pending")}
                for eid, old in mine.items():
                    if eid in pending and eid in qids and old.version != es.version:
                        q = qids[eid]
                        members = dict(questions(es))[q]
                        if not _is_fixed(es, members):
                            out.append(build_escalation(es, q, policy=old.policy, score=old.score))
            if out:
                res = await self.adapter.submit(out)
                self.escalated += len(res.created)
            return out

    async def apply(self, es: ExampleSet, *, key: Any | None = None) -> RerunResult | None:
        """Fetch this pool's unacknowledged answers from the adapter and run `collaborative_rerun`
        (None when there is nothing to apply).

        The re-run goes through the compute service: once `register`-ed, the Steerer's (its search
        limit, counters and back-off; the new version is stored under the Steerer's cache key and its
        ``on_example_set`` hooks run, so the next round of questions is chosen from it); else a
        standalone one around ``backend``. Where the new version goes otherwise: under ``key`` in
        ``store`` when given, else under `cache_key_for` ``es`` in ``store``; with no store, nowhere
        (the result is returned).
        """
        steerer = self._steerer
        backend = self.backend or getattr(steerer, "backend", None)
        if backend is None:
            raise FeedbackError("Escalator.apply needs a backend", hint="pass backend= to Escalator (or register a Steerer with one)")
        qids = {escalation_id(es.persona.id, es.provenance.pool_hash, q) for q, _ in questions(es)}
        answers = [a for a in await self.adapter.answers(persona_id=es.persona.id) if a.escalation_id in qids]
        if not answers:
            return None
        async with self._lock(es.persona.id):
            sets = getattr(steerer, "example_sets", None)
            if sets is not None and (self.backend is None or self.backend is sets.backend):
                via_steerer = key is None and (self.store is None or self.store is sets.store)
                store = sets.store if via_steerer else self.store
                if via_steerer:
                    key = steerer.cache_key(es.persona.id)  # type: ignore[union-attr]
                res = await collaborative_rerun(es, answers, sets, self.config, adapter=self.adapter, store=store, key=key)
            else:
                res = await collaborative_rerun(es, answers, backend, self.config, adapter=self.adapter,
                                                store=self.store, key=key)
            return res

    async def escalate_cached(self, persona_id: str | None = None) -> dict[str, list[Escalation]]:
        """One round for the current cached example set of each persona of the Steerer (or of
        ``persona_id``); personas with nothing cached are skipped. Needs ``steerer``."""
        steerer = self._need_steerer()
        ids = [persona_id] if persona_id else [p.id for p in steerer.registry.personas()]
        out: dict[str, list[Escalation]] = {}
        for pid in ids:
            es = await steerer.store.get(steerer.cache_key(pid))
            if es is not None:
                out[pid] = await self.escalate(es)
        return out

    async def apply_pending(self, persona_id: str | None = None) -> dict[str, RerunResult | str]:
        """Apply every persona's unacknowledged answers (or ``persona_id``'s) to its current cached
        example set through the Steerer: persona → `RerunResult`, or a reason nothing was applied
        (``"not cached"``: no current set, the answers are kept; ``"older pool"``: the answers are
        for another pool of the persona). Needs ``steerer``."""
        steerer = self._need_steerer()
        answers = await self.adapter.answers(persona_id=persona_id)
        escs = {e.id: e for e in await self.adapter.escalations(persona_id=persona_id)}
        personas = sorted({escs[a.escalation_id].persona_id for a in answers if a.escalation_id in escs})
        out: dict[str, RerunResult | str] = {}
        for pid in personas:
            es = await steerer.store.get(steerer.cache_key(pid))
            if es is None:
                out[pid] = "not cached"
                continue
            res = await self.apply(es)
            out[pid] = res if res is not None else "older pool"
        return out

    def _need_steerer(self) -> Any:
        if self._steerer is None:
            raise FeedbackError("this needs a Steerer", hint="pass steerer= to Escalator or register() one")
        return self._steerer

    # middleware hooks -------------------------------------------------------------------------

    def hook(self) -> Callable[[str, ExampleSet], Awaitable[None]]:
        """A ``Steerer.on_example_set`` hook: escalates each new example-set version in a background
        task (the request is never blocked; errors are logged and kept in ``errors``). With
        ``auto_apply`` and a backend, pending answers are applied in the background too."""

        async def on_example_set(persona_id: str, es: ExampleSet) -> None:
            if es.version in self._seen_versions:
                return
            self._seen_versions.add(es.version)
            self._spawn(self._background(es))

        return on_example_set

    def register(self, steerer: Any) -> Callable[[str, ExampleSet], Awaitable[None]]:
        """Append `hook` to ``steerer.on_example_set`` (a `steerkit._middleware.Steerer`) and return it.

        Every example set the Steerer stores (a search on a miss, ``steerkit precompute`` through
        ``Steerer.compute``, a re-run) is escalated in the background; `apply` then stores new
        versions through the Steerer's compute service and counts escalations in its metrics.
        """
        h = self.hook()
        self._steerer = steerer
        steerer.on_example_set.append(h)
        return h

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, es: ExampleSet) -> None:
        try:
            if self.auto_apply and self.backend is not None:
                res = await self.apply(es)
                if res is not None:
                    es = res.example_set
                    self._seen_versions.add(es.version)
            n0 = self.escalated
            await self.escalate(es)
            metrics = getattr(self._steerer, "metrics", None)
            if metrics is not None and self.escalated > n0:
                metrics.inc("escalations", self.escalated - n0)
        except Exception as e:  # never propagate into the request path
            log.warning("escalation for persona %s failed: %s", es.persona.id, e)
            self.errors.append(e)

    async def join(self) -> None:
        """Wait for background escalations started by the hook (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def __repr__(self) -> str:
        return f"Escalator(adapter={getattr(self.adapter, 'name', '?')}, policy={self.policy.name}, k={self.k}, budget={self.budget})"

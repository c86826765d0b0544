"""What the restarts of one search share: the pool, backend, objective, fixed and warm-start
labels, seeding, the any-time snapshot offer, checkpoint writes, progress reports and the result.

`steerkit.icm.search` builds one `SearchContext` per call and hands it to each restart
(`steerkit.icm.exact.ExactRestart`, `steerkit.icm.sparse.SparseRestart`); the restart modules
depend on this one, never on each other or on the orchestrator.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steerkit.backends.base import LogprobBackend
from steerkit.errors import SearchError
from steerkit.icm.checkpoint import CHECKPOINT_FORMAT, write_checkpoint
from steerkit.icm.consistency import ConsistencyFix, Unit, consistent_assignments, units_of
from steerkit.icm.objective import Evaluation, Objective
from steerkit.models import (
    ExampleSet,
    Label,
    Pool,
    Provenance,
    SearchConfig,
    SearchStats,
    stable_hash,
)

__all__ = ["SNAPSHOT_INTERVAL_S", "SearchContext", "SearchProgress", "temperature"]

SNAPSHOT_INTERVAL_S = 1.0
"""Least time between two any-time snapshots of one search (the first is never delayed)."""


@dataclass(frozen=True, slots=True)
class SearchProgress:
    """One progress report (after initialisation and after every iteration of a restart)."""

    restart: int
    iteration: int
    max_iterations: int
    accepted: int
    u: float
    calls: int
    """Model calls (prompts sent) so far by the whole search (all restarts)."""
    memo_hits: int
    labelled: int
    total: int
    temperature: float
    elapsed_s: float
    phase: str = "anneal"
    """``init``, ``anneal``, ``complete`` (only unlabelled items are drawn) or ``done``."""


def temperature(config: SearchConfig, iteration: int, accepted: int) -> float:
    if config.schedule == "greedy":
        return 0.0
    if config.schedule == "reference":
        t = config.t0 / (1.0 + 2.0 * math.log(1 + accepted))
    else:
        t = config.t0 / (1.0 + config.beta * math.log(max(1, iteration)))
    return max(config.t_min, t)



class SearchContext:
    """State shared by the restarts of one `search` call."""

    def __init__(
        self,
        pool: Pool,
        backend: LogprobBackend,
        config: SearchConfig,
        fixed: dict[str, bool],
        warm: dict[str, bool],
        checkpoint: Path | None,
        progress: Callable[[SearchProgress], None] | None,
        snapshot: Callable[[ExampleSet], None] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.pool = pool
        self.backend = backend
        self.snapshot = snapshot
        self.meta = meta or {}
        self._offered_u: float | None = None
        self._offered_at = -math.inf
        self.first_complete_at: float | None = None
        self.config = config
        self.fixed = fixed
        self.warm = warm
        self.objective = Objective(pool, backend, config)
        self.fix = ConsistencyFix(self.objective)
        self.units, self.unit_of = units_of(pool, self.objective.order)
        self.free_items = [i for i in self.objective.order if i not in fixed]
        self.checkpoint = checkpoint
        self.progress = progress
        self.t0 = time.monotonic()
        self.pool_hash = pool.content_hash()
        self.config_hash = config.config_hash()
        self.inputs_hash = stable_hash(
            {"fixed": sorted(fixed.items()), "warm_start": sorted(warm.items()), "model": backend.model}
        )
        self.restarts: list[Any] = []
        self.settle_snapshot: dict[str, Any] | None = None
        """A checkpointed settling of the restarts' consensus (resumed rather than redone)."""
        self.kept: Any = None
        """The restart whose labels are the result (set at the end)."""
        self.agreement: dict[str, float] = {}
        """Per unit: the share of restarts that agree with the result (set at the end)."""
        self.started_at = datetime.now(timezone.utc)

    def temperature(self, iteration: int, accepted: int) -> float:
        return temperature(self.config, iteration, accepted)

    def initial_labels(self, rng: random.Random, *, repair: bool) -> dict[str, bool]:
        """Fixed, then warm-start labels, then ``num_seed`` items' worth of random whole units
        (a group: a random consistent assignment; lone items: balanced True/False). With
        ``repair=False`` the warm-start labels of a unit that break its constraint are dropped."""
        labels: dict[str, bool] = dict(self.fixed)
        for i, v in self.warm.items():
            labels.setdefault(i, v)
        if not repair:
            for u in self.units:
                part = {m: labels[m] for m in u.item_ids if m in labels}
                if part and u.violations(part):
                    for m in u.item_ids:
                        if m not in self.fixed:
                            labels.pop(m, None)
        n_seed = self.config.num_seed
        if len(labels) < n_seed:
            untouched = [u for u in self.units if not any(m in labels for m in u.item_ids)]
            rng.shuffle(untouched)
            chosen: list[Unit] = []
            count = len(labels)
            for u in untouched:
                if count >= n_seed:
                    break
                chosen.append(u)
                count += len(u.item_ids)
            singles = [u.item_ids[0] for u in chosen if u.group is None]
            vals = [True] * (len(singles) // 2) + [False] * (len(singles) // 2)
            if len(singles) % 2:
                vals.append(rng.random() < 0.5)
            rng.shuffle(vals)
            single_vals = dict(zip(singles, vals))
            for u in chosen:
                if u.group is None:
                    labels[u.item_ids[0]] = single_vals[u.item_ids[0]]
                else:
                    labels.update(rng.choice(consistent_assignments(u, self.fixed)))
        return labels

    def offer(self, r: Any) -> None:
        """Hand a restart's complete, consistent labelling to the ``snapshot`` callback when it
        beats the last one offered (the first at once, then at most every SNAPSHOT_INTERVAL_S)."""
        if r.cur is None or len(r.cur.labels) != len(self.pool.items):
            return
        now = time.monotonic()
        if self.first_complete_at is None:  # SearchStats.first_complete_s, with or without a callback
            self.first_complete_at = now
        if self.snapshot is None:
            return
        if self._offered_u is not None and (r.cur.u <= self._offered_u or now - self._offered_at < SNAPSHOT_INTERVAL_S):
            return
        self._offered_u, self._offered_at = r.cur.u, now
        self.snapshot(self.result(r.cur, provisional=True))

    def result(self, final: Evaluation, *, provisional: bool = False) -> ExampleSet:
        """The ExampleSet of a complete, consistent assignment."""
        pool, config = self.pool, self.config
        missing = [it.id for it in pool.items if it.id not in final.labels]
        violations = pool.violations(final.labels)
        if missing or violations:  # pragma: no cover - guarded by construction
            raise SearchError(
                f"internal error: incomplete or inconsistent result ({len(missing)} unlabelled, {violations} violations)"
            )
        now = datetime.now(timezone.utc)
        fixed_source = self.meta.get("fixed_source", "fixed")
        labels: dict[str, Label] = {}
        for it in pool.items:
            i = it.id
            labels[i] = Label(
                item_id=i,
                value=final.labels[i],
                confidence=min(1.0, max(0.0, final.confidence(i))),
                logodds=final.scores[i].logodds(),
                source=fixed_source if i in self.fixed else "icm",
                labelled_at=now,
            )
        group_confidence: dict[str, float] = {}
        group_of = pool.group_of()
        for it in pool.items:
            key = group_of[it.id].id if it.id in group_of else it.id
            group_confidence[key] = min(group_confidence.get(key, 1.0), labels[it.id].confidence)
        c = self.objective.counters
        stats = SearchStats(
            iterations=sum(r.iteration for r in self.restarts),
            accepted=sum(r.accepted for r in self.restarts),
            model_calls=c.model_calls,
            prompt_tokens=c.prompt_tokens,
            evaluated_tokens=c.evaluated_tokens if c.evaluated_known else None,
            memo_hits=c.memo_hits,
            wall_seconds=time.monotonic() - self.t0,
            first_complete_s=None if self.first_complete_at is None else self.first_complete_at - self.t0,
            label_token_mass=sum(s.label_mass for s in final.scores.values()) / len(final.scores),
            restarts_u=[r.cur.u for r in self.restarts[: self.config.restarts] if r.cur is not None],
            ended=getattr(self.kept, "ended", None) if not provisional else None,
            restarts_ended=[r.ended for r in self.restarts[: self.config.restarts]] if not provisional else [],
            restart_agreement=(
                sum(self.agreement.values()) / len(self.agreement) if self.agreement and not provisional else None
            ),
            unit_agreement=dict(self.agreement) if not provisional else {},
            resumed_iterations=sum(r.resumed_iterations for r in self.restarts),
            provisional=provisional,
        )
        provenance = Provenance(
            model=self.backend.model,
            backend=self.backend.name,
            config=config,
            pool_hash=self.pool_hash,
            seed=config.seed,
            started_at=self.started_at,
            finished_at=now,
            parent_version=self.meta.get("parent_version"),
            audit=list(self.meta.get("audit") or []),
        )
        return ExampleSet(
            persona=pool.persona,
            items=pool.items,
            groups=pool.groups,
            labels=labels,
            score=final.u,
            violations=violations,
            group_confidence=group_confidence,
            provenance=provenance,
            stats=stats,
        )

    def save(self) -> None:
        if self.checkpoint is None:
            return
        write_checkpoint(
            self.checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "pool_hash": self.pool_hash,
                "config_hash": self.config_hash,
                "inputs_hash": self.inputs_hash,
                "started_at": self.started_at.isoformat(),
                "restarts": [r.snapshot for r in self.restarts if r.snapshot is not None],
            },
        )

    def report(self, r: Any, temp: float, phase: str) -> None:
        if self.progress is None:
            return
        c = self.objective.counters
        self.progress(
            SearchProgress(
                restart=r.index,
                iteration=r.iteration,
                max_iterations=self.config.max_iterations,
                accepted=r.accepted,
                u=r.cur.u if r.cur is not None else float("nan"),
                calls=c.model_calls,
                memo_hits=c.memo_hits,
                labelled=len(r.labels),
                total=len(self.pool.items),
                temperature=temp,
                elapsed_s=time.monotonic() - self.t0,
                phase=phase,
            )
        )



"""One restart of the exact search: leave-one-out mutual predictability over every labelled item
(Wen et al., Algorithm 1; the algorithm is described in `steerkit.icm.search`)."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from steerkit.icm.checkpoint import restart_snapshot, restore_restart
from steerkit.icm.consistency import consistent_assignments
from steerkit.icm.context import SearchContext, temperature
from steerkit.icm.objective import Evaluation

__all__ = ["ExactRestart"]


class ExactRestart:
    def __init__(self, ctx: SearchContext, index: int) -> None:
        self.ctx = ctx
        self.index = index
        self.seed = ctx.config.seed + index
        self.rng = random.Random(self.seed)
        self.labels: dict[str, bool] = {}
        self.cur: Evaluation | None = None
        self.iteration = 0
        self.accepted = 0
        self.since_accept = 0
        self.done = False
        self.ended: str | None = None
        self.resumed_iterations = 0
        self.snapshot: dict[str, Any] | None = None

    # --- checkpoint -----------------------------------------------------------------------------

    def commit(self) -> None:
        """Record the state for the checkpoint (only at points where it is consistent)."""
        assert self.cur is not None
        self.snapshot = restart_snapshot(self, self.cur.scores)

    def restore(self, snap: dict[str, Any]) -> None:
        def check(labels: dict[str, bool], scores: dict[str, Any]) -> None:
            if set(labels) != set(scores) or not set(labels) <= set(self.ctx.objective.order):
                raise ValueError("labels and scores do not match the pool")

        labels, scores = restore_restart(self, snap, check)
        self.labels = labels
        self.cur = self.ctx.objective.restore(labels, scores)

    # --- the search -----------------------------------------------------------------------------

    async def run(self) -> None:
        ctx = self.ctx
        if self.cur is None:
            await self.initialise()
            self.commit()
            ctx.save()
            ctx.report(self, temperature(ctx.config, 1, 0), "init")
        while not self.finished():
            await self.step()
        if not self.done:
            self.done = True
            self.commit()
            ctx.save()
        ctx.report(self, temperature(ctx.config, max(1, self.iteration), self.accepted), "done")

    async def initialise(self) -> None:
        ctx = self.ctx
        labels = ctx.initial_labels(self.rng, repair=True)
        # repair inconsistent units (possible with warm-start labels), one unit after another
        for u in ctx.units:
            if u.violations({m: labels[m] for m in u.item_ids if m in labels}):
                best = await ctx.fix.best(labels, consistent_assignments(u, ctx.fixed))
                labels = dict(best.labels)
        self.cur = await ctx.objective.evaluate(labels)
        self.labels = dict(self.cur.labels)

    def unlabelled_units(self) -> int:
        return sum(1 for u in self.ctx.units if any(m not in self.labels for m in u.item_ids))

    def finished(self) -> bool:
        if self.done:
            return True
        if self.unlabelled_units():
            return False
        cfg = self.ctx.config
        if not self.ctx.free_items or not self.contradicted():
            self.ended = "fixed_point"
        elif self.iteration >= cfg.max_iterations:
            self.ended = "max_iterations"
        elif self.since_accept >= cfg.patience:
            self.ended = "patience"
        return self.ended is not None

    def contradicted(self) -> list[str]:
        """The free items whose leave-one-out score favours the other label (a fixed point of ICM's
        moves has none: every proposal would be a no-op)."""
        assert self.cur is not None
        return [i for i in self.ctx.free_items if (self.cur.scores[i].logodds() > 0) != self.labels[i]]

    def sample(self, only_unlabelled: bool) -> str:
        ctx = self.ctx
        cands: list[str] = []
        weights: list[float] = []
        for i in ctx.free_items:
            if i in self.labels:
                if only_unlabelled:
                    continue
                w = 1.0
            else:
                started = any(m in self.labels for m in ctx.unit_of[i].item_ids)
                w = ctx.config.group_priority if started else 1.0
            cands.append(i)
            weights.append(w)
        return self.rng.choices(cands, weights)[0]

    async def step(self) -> None:
        ctx = self.ctx
        cfg = ctx.config
        await asyncio.sleep(0)  # a run of memoised proposals makes no call: let the loop breathe
        assert self.cur is not None
        remaining = self.unlabelled_units()
        forced = remaining > 0 and cfg.max_iterations - self.iteration <= remaining
        self.iteration += 1
        temp = temperature(cfg, self.iteration, self.accepted)
        calls_before = ctx.objective.counters.model_calls
        x = self.sample(forced)
        unit = ctx.unit_of[x]
        accepted = False
        if x not in self.labels:
            # addition: the best consistent completion of the unit, always accepted
            best = await ctx.fix.best(self.labels, consistent_assignments(unit, ctx.fixed))
            accepted = True
        else:
            ctx.objective.counters.memo_hits += 1  # the proposal reads x's LOO score from the current pass
            y_hat = self.cur.scores[x].logodds() > 0
            best = None
            if y_hat != self.labels[x]:
                proposal = {m: self.labels[m] for m in unit.item_ids if m in self.labels}
                proposal[x] = y_hat
                if unit.violations(proposal) == 0:
                    cands = [proposal]
                else:
                    current = {m: self.labels[m] for m in unit.item_ids if m in self.labels}
                    cands = [a for a in consistent_assignments(unit, ctx.fixed) if a != current]
                if cands:
                    best = await ctx.fix.best(self.labels, cands)
                    delta = best.u - self.cur.u
                    accepted = delta > 0 or (temp > 0 and self.rng.random() < math.exp(delta / temp))
        if accepted:
            assert best is not None
            self.cur = best
            self.labels = dict(best.labels)
            self.accepted += 1
            self.since_accept = 0
        else:
            self.since_accept += 1
        if accepted or ctx.objective.counters.model_calls != calls_before:
            self.commit()
            ctx.save()
        if accepted and len(self.labels) == len(ctx.pool.items):
            ctx.offer(self)
        ctx.report(self, temp, "complete" if forced else "anneal")



"""The ICM search: balanced seeds, group-priority sampling, simulated annealing, ConsistencyFix,
restarts, fixed labels, checkpoints.

Algorithm (Wen et al., Algorithm 1, with the reference code's choices as options)
--------------------------------------------------------------------------------
Items are grouped into *units*: a consistency group, or an item in no group.

1. **Initialise.** Fixed labels, then warm-start labels, are the initial assignment. If fewer than
   ``num_seed`` items are labelled, whole random units are added until there are: a group gets a
   uniformly random *consistent* assignment, lone items get balanced True/False labels. Any unit
   left inconsistent (warm start) is repaired by ConsistencyFix. One LOO pass gives U.
2. **Iterate** ``n = 1, 2, …``: T = max(T_min, T₀/(1+β·ln n)) (``schedule="paper"``) or
   max(T_min, T₀/(1+2·ln(1+accepted))) (``"reference"``). Sample a non-fixed item with weight
   ``group_priority`` (100) if it is unlabelled and its unit already has a labelled member, else 1.

   - **Labelled item (a flip proposal).** ŷ = the label its LOO log-odds favours (from the current
     pass: no call). If ŷ equals its label, nothing happens. Otherwise D̂ = D with ŷ; if D̂ breaks the
     unit's constraint, ConsistencyFix scores *every* consistent assignment of the unit other than
     the current one (concurrently) and keeps the best by U. The candidate is accepted if ΔU > 0,
     else with probability exp(ΔU/T).
   - **Unlabelled item (an addition).** ConsistencyFix scores every consistent completion of its
     unit (concurrently) and the best by U is *always* accepted: "unlabelled" is not one of the
     options an addition competes with.

3. **Stop** when every item is labelled and either no label is contradicted by its leave-one-out
   score (a fixed point: every proposal would be a no-op), ``max_iterations`` is reached, or
   nothing was accepted for ``patience`` iterations.

How the result is always complete and consistent
------------------------------------------------
The reference code stalls with items never labelled: its acceptance compares U(D ∪ {x}) with U(D),
and under a *mean*-based objective adding a weakly predicted item lowers U, so at low temperature
additions are refused for ever (under the sum objective every addition lowers U). Here an addition
is never compared with leaving the item out: it picks the best consistent completion of the
item's unit and is accepted, so the labelled set only grows. Unlabelled items keep being sampled
(with group priority), and once the remaining iteration budget is no larger than the number of
units still unlabelled the sampler draws *only* unlabelled items, so every unit is labelled by the
end of the budget (if ``max_iterations`` is smaller than the number of units, the search runs the
few extra iterations needed). Every accepted assignment satisfies each unit's constraint
(ConsistencyFix only produces consistent assignments, and fixed labels are checked up front), so
the final labels have ``Pool.violations(labels) == 0``; this is asserted before returning.

Differences from the reference code (shared/reference/icm-reference-implementation.md)
-------------------------------------------------------------------------------------
- ConsistencyFix enumerates every consistent assignment of the whole group at once (not the two
  options of one inconsistent pair per round, so ``fix_rounds`` is not needed), scores them
  concurrently, and its winner's pass *is* the candidate's score (no re-scoring, no "dummy"
  calls). For a flip the current assignment is excluded from the candidates, so the annealing
  step compares a real alternative with the current state (the reference forces the first fix).
- The temperature follows the paper (``schedule="paper"``); the reference's
  T₀/(1+2·ln(1+accepted)) is ``schedule="reference"``. The objective follows the reference code by
  default (``mean_logodds``, which the seed paper ran); the paper's sum is ``sum_logprob``.
- Scores are memoised by prompt content, so revisiting an assignment costs nothing, and a
  proposal for a labelled item reads its LOO score from the current pass.
- Early stop after ``patience`` iterations without an accepted change (the reference runs all K).

Restarts run concurrently from seeds ``seed, seed+1, …`` (``random.Random`` per restart, no global
random state) and share one score memo. ``restart_choice="u"`` keeps the highest final U;
``"consensus"`` (the sparse default) takes each question's most frequent answer across the restarts
and settles it greedily to a fixed point (exact: keeps the restart closest to the consensus). Why:
on knowledge pools with a weak model, U does not rank seeds by accuracy (a seed's U and its label
accuracy are barely correlated), while the restarts' errors are partly independent, so their vote
is right more often and from every seed (benchmarks/label_quality.py). ``SearchStats`` records
how the kept search ended (``ended``) and how far the restarts agreed, per question
(``unit_agreement``) and on average (``restart_agreement``). Confidence of a label is
P(assigned label) (two-way normalised) in the final LOO pass of the kept assignment, which the
search already holds (no extra calls).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steerkit.backends.base import LogprobBackend
from steerkit.errors import InvalidPoolError, SearchError
from steerkit.icm.checkpoint import (
    CHECKPOINT_FORMAT,
    check_compatible,
    read_checkpoint,
    restart_snapshot,
    restore_restart,
    write_checkpoint,
)
from steerkit.icm.consistency import ConsistencyFix, Unit, consistent_assignments, units_of
from steerkit.icm.objective import Evaluation, Objective
from steerkit.models import (
    ExampleSet,
    Label,
    LabelSource,
    Pool,
    Provenance,
    SearchConfig,
    SearchStats,
    stable_hash,
)

__all__ = ["SNAPSHOT_INTERVAL_S", "SearchProgress", "search"]

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


class _Search:
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
        if self.snapshot is None or r.cur is None or len(r.cur.labels) != len(self.pool.items):
            return
        now = time.monotonic()
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

    def report(self, r: _Restart, temp: float, phase: str) -> None:
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


class _Restart:
    def __init__(self, ctx: _Search, index: int) -> None:
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


def _check_inputs(
    pool: Pool, units: list[Unit], fixed: Mapping[str, bool] | None, warm: Mapping[str, bool] | None
) -> tuple[dict[str, bool], dict[str, bool]]:
    known = {it.id for it in pool.items}
    out = []
    for name, given in (("fixed", fixed), ("warm_start", warm)):
        d = {str(k): bool(v) for k, v in (given or {}).items()}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidPoolError(
                f"{name} labels name items that are not in the pool: {unknown[:5]}",
                hint="pass labels only for item ids of this pool",
            )
        out.append(d)
    fixed_d, warm_d = out
    for u in units:
        part = {m: fixed_d[m] for m in u.item_ids if m in fixed_d}
        if part and not consistent_assignments(u, part):
            assert u.group is not None
            raise SearchError(
                f"the fixed labels {part} violate the {u.group.kind!r} constraint of consistency group {u.group.id!r}",
                hint="correct or drop the conflicting fixed labels of that group",
            )
    return fixed_d, warm_d


async def search(
    pool: Pool,
    backend: LogprobBackend,
    config: SearchConfig | None = None,
    *,
    fixed: Mapping[str, bool] | None = None,
    fixed_source: LabelSource = "fixed",
    warm_start: Mapping[str, bool] | None = None,
    checkpoint: str | Path | None = None,
    progress: Callable[[SearchProgress], None] | None = None,
    snapshot: Callable[[ExampleSet], None] | None = None,
    parent_version: str | None = None,
    audit: list[dict[str, Any]] | None = None,
) -> ExampleSet:
    """Infer the most mutually coherent labels for every item of ``pool`` with ``backend``.

    - ``config.mode``: ``"exact"`` leave-one-out (the paper) or ``"sparse"`` (cost per proposal
      flat in the pool size; `steerkit.icm.sparse`).
    - ``fixed``: labels the search never changes (human feedback, gold seeds); they must satisfy
      the constraints (else `SearchError` naming the group); unknown ids raise `InvalidPoolError`.
    - ``warm_start``: initial labels (e.g. a previous version); the search may change them.
    - ``checkpoint``: a JSON file written after every accepted change (and every iteration that
      spent model calls); if it exists, the search resumes from it (a checkpoint of another pool,
      config, model or fixed/warm-start labels raises `CheckpointError`). A finished checkpoint
      returns the same result without model calls.
    - ``progress``: called with a `SearchProgress` after initialisation and each iteration.
    - ``snapshot``: the any-time hook. Called with a *provisional* `ExampleSet`
      (``stats.provisional``) as soon as the search holds a complete, consistent labelling, and
      again when it has a better one (at most every ``SNAPSHOT_INTERVAL_S``). A caller with a
      deadline serves the latest snapshot while the search goes on. Sparse searches reach their
      first complete labelling after one scoring of each item; exact ones only at the end of
      their completion phase.

    Returns an `ExampleSet` in which every item is labelled and no constraint is violated (see the
    module docstring for how that is guaranteed). Prompts too long for the model's context raise
    the backend's `ContextOverflowError`.
    """
    config = config or SearchConfig()
    order_units = units_of(pool, [it.id for it in pool.items])[0]
    fixed_d, warm_d = _check_inputs(pool, order_units, fixed, warm_start)
    ctx = _Search(
        pool,
        backend,
        config,
        fixed_d,
        warm_d,
        Path(checkpoint) if checkpoint is not None else None,
        progress,
        snapshot,
        {"fixed_source": fixed_source, "parent_version": parent_version, "audit": audit},
    )
    if config.mode == "sparse":
        from steerkit.icm.sparse import SparseRestart, SparseState

        state = SparseState(ctx)
        ctx.restarts = [SparseRestart(ctx, r, state) for r in range(config.restarts)]
    else:
        ctx.restarts = [_Restart(ctx, r) for r in range(config.restarts)]

    if ctx.checkpoint is not None:
        data = read_checkpoint(ctx.checkpoint)
        if data is not None:
            check_compatible(
                data, ctx.checkpoint, pool_hash=ctx.pool_hash, config_hash=ctx.config_hash, inputs_hash=ctx.inputs_hash
            )
            try:
                ctx.started_at = datetime.fromisoformat(data["started_at"])
            except (KeyError, TypeError, ValueError):
                pass
            for snap in data.get("restarts") or []:
                idx = snap.get("index") if isinstance(snap, dict) else None
                if isinstance(idx, int) and 0 <= idx < len(ctx.restarts):
                    ctx.restarts[idx].restore(snap)

    tasks = [asyncio.ensure_future(r.run()) for r in ctx.restarts]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # the first error (e.g. the backend's ContextOverflowError) propagates unwrapped;
        # the other restarts are cancelled
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

    best = ctx.restarts[0]
    for r in ctx.restarts[1:]:
        assert r.cur is not None and best.cur is not None
        if r.cur.u > best.cur.u:
            best = r
    finals = list(ctx.restarts)
    if len(finals) > 1 and config.restart_choice == "consensus":
        best = await _settle_consensus(ctx, finals)
    assert best.cur is not None
    ctx.agreement = agreement_of(ctx.units, [r.cur.labels for r in finals if r.cur is not None], best.cur.labels)
    ctx.kept = best
    return ctx.result(best.cur)


def _unit_key(unit: Unit, labels: Mapping[str, bool]) -> tuple[bool, ...]:
    return tuple(labels[m] for m in unit.item_ids)


def consensus_labels(units: list[Unit], runs: list[Mapping[str, bool]], weights: list[float]) -> dict[str, bool]:
    """Each unit's most frequent assignment across ``runs`` (ties: the larger summed weight)."""
    out: dict[str, bool] = {}
    for u in units:
        votes: dict[tuple[bool, ...], list[float]] = {}
        for labels, w in zip(runs, weights):
            v = votes.setdefault(_unit_key(u, labels), [0.0, 0.0])
            v[0] += 1
            v[1] += w
        top = max(votes, key=lambda k: (votes[k][0], votes[k][1]))
        out.update(zip(u.item_ids, top))
    return out


def agreement_of(units: list[Unit], runs: list[Mapping[str, bool]], final: Mapping[str, bool]) -> dict[str, float]:
    """Per unit (its group id, or its item id), the share of ``runs`` that gave it ``final``'s assignment."""
    out: dict[str, float] = {}
    for u in units:
        key = u.group.id if u.group is not None else u.item_ids[0]
        want = _unit_key(u, final)
        out[key] = sum(1 for r in runs if _unit_key(u, r) == want) / len(runs) if runs else 1.0
    return out


async def _settle_consensus(ctx: _Search, finals: list[Any]) -> Any:
    """The restarts' consensus, settled: sparse searches start one more (greedy) restart from it and
    run it to a fixed point; exact searches keep the restart that agrees most with it."""
    runs = [r.cur.labels for r in finals]
    ranks = sorted(r.cur.u for r in finals)
    weights = [ranks.index(r.cur.u) / max(1, len(ranks) - 1) for r in finals]  # U rank breaks ties
    consensus = consensus_labels(ctx.units, runs, weights)
    if ctx.config.mode != "sparse":
        return max(finals, key=lambda r: (sum(r.cur.labels[i] == consensus[i] for i in consensus), r.cur.u))
    from steerkit.icm.sparse import SparseRestart

    settle = SparseRestart(ctx, len(finals), finals[0].state, start=consensus, greedy=True)
    ctx.restarts.append(settle)
    await settle.run()
    return settle

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
and settles it greedily to a fixed point, and keeps a restart instead where one ended with a
higher U than the settled vote (exact: keeps the restart closest to the consensus). Why: on
knowledge pools with a weak model, U does not rank single seeds by accuracy (a seed's U and its
label accuracy are barely correlated), while the restarts' errors are partly independent, so their
vote is right more often and from every seed; where the vote splits between two labellings of
nearly equal frequency (four-option pools), it follows the seed, and U between the two settled
labellings picks the better one (benchmarks/label_quality.py). ``SearchStats`` records
how the kept search ended (``ended``) and how far the restarts agreed, per question
(``unit_agreement``) and on average (``restart_agreement``). Confidence of a label is
P(assigned label) (two-way normalised) in the final LOO pass of the kept assignment, which the
search already holds (no extra calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from steerkit.backends.base import LogprobBackend
from steerkit.errors import InvalidPoolError, SearchError
from steerkit.icm.checkpoint import check_compatible, read_checkpoint
from steerkit.icm.consistency import Unit, consistent_assignments, units_of
from steerkit.icm.context import SNAPSHOT_INTERVAL_S, SearchContext, SearchProgress, temperature
from steerkit.icm.exact import ExactRestart
from steerkit.icm.sparse import SparseRestart, SparseState
from steerkit.models import ExampleSet, LabelSource, Pool, SearchConfig

__all__ = ["SNAPSHOT_INTERVAL_S", "SearchProgress", "agreement_of", "consensus_labels", "search", "temperature"]


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
    ctx = SearchContext(
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
        state = SparseState(ctx)
        ctx.restarts = [SparseRestart(ctx, r, state) for r in range(config.restarts)]
    else:
        ctx.restarts = [ExactRestart(ctx, r) for r in range(config.restarts)]

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
                elif idx == len(ctx.restarts) and config.mode == "sparse" and config.restart_choice == "consensus":
                    ctx.settle_snapshot = snap  # the consensus was being settled: resume that too

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
    if len(finals) > 1:
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


async def _settle_consensus(ctx: SearchContext, finals: list[Any]) -> Any:
    """The restarts' consensus, settled: sparse searches start one more (greedy) restart from it, run
    it to a fixed point and keep it unless a restart ended with a higher U; exact searches keep the
    restart that agrees most with it."""
    runs = [r.cur.labels for r in finals]
    ranks = sorted(r.cur.u for r in finals)
    weights = [ranks.index(r.cur.u) / max(1, len(ranks) - 1) for r in finals]  # U rank breaks ties
    consensus = consensus_labels(ctx.units, runs, weights)
    if ctx.config.mode != "sparse":
        return max(finals, key=lambda r: (sum(r.cur.labels[i] == consensus[i] for i in consensus), r.cur.u))
    settle = SparseRestart(ctx, len(finals), finals[0].state, start=consensus, greedy=True)
    if ctx.settle_snapshot is not None:
        settle.restore(ctx.settle_snapshot)
    ctx.restarts.append(settle)
    await settle.run()
    # the settled vote is a labelling like the restarts' own: where a restart ended with a higher U,
    # that restart is kept (the vote can split between two basins of nearly equal frequency, and
    # then follows the seed; measured on four-option pools, where U tells the basins apart)
    top = max(finals, key=lambda r: r.cur.u)
    return top if top.cur.u > settle.cur.u else settle

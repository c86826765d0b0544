"""Sparse ICM: mutual predictability over a fixed demonstration graph, scored incrementally.

Exact ICM scores every labelled item with *all* others as demonstrations: a pass costs O(N²)
tokens and a search O(N³). Sparse ICM (``SearchConfig(mode="sparse")``) scores item i of unit u
with the labelled items of u's context (`steerkit.icm.neighbours`: the nearest units by lexical
similarity, at most ``context_k`` demonstrations, each unit in at most ``max_in_degree``
contexts)::

    U = α · mean_i s_i(y_i | context(u_i)) − I(D)        (or α · Σ log P for ``sum_logprob``)

A unit's own labels are not in its prompt, so changing them leaves its own scores as they are
(only their sign flips) and re-scores just its *readers* (the units whose context holds it):
at most ``max_in_degree`` units of ``context_k`` demonstrations each. A proposal therefore costs
O(k²) tokens whatever N is, and a search of O(N) proposals O(N·k²).

The search, per restart:

1. **Seed**: fixed, then warm-start labels, then ``num_seed`` random units (0 by default: random
   seed labels were the largest source of seed-to-seed spread on knowledge pools).
2. **Complete**: label every remaining unit once, most-informed first (the unit with the most
   labelled units in its context; ties by the restart's RNG). Its items are scored with their
   current context (one prompt each; siblings share the context, so the prompt cache serves it)
   and the consistent assignment they predict best is taken (ConsistencyFix on the incoming
   evidence). Readers it joins become stale. After the last unit the labelling is complete and
   consistent, and is offered at once as an *any-time* result (``snapshot``); then the stale
   units are re-scored in one batch, and from here on every score is that of the current labels.
3. **Anneal**: propose only where a proposal can change something: an item whose label its
   context contradicts (ICM's proposal is the label the model predicts, so every other draw of
   the reference algorithm is a no-op), the one whose own question gains most from the change
   first (the part of ΔU known without a call: it is the likeliest to be accepted). Drawing by the
   claim's own |log-odds| instead, as before, cost 5–34% more tokens on the knowledge pools
   (benchmarks/label_quality.py, weak fake, 6 seeds) for labels as right or less right, because a
   leaning model "contradicts" labels whose question prefers no other answer. The candidates are
   the unit's consistent assignments
   that take the predicted label; each is scored by re-scoring the unit's readers (all
   candidates in one backend batch), ΔU is exact for the sparse objective, and the best is
   accepted if it raises U (``schedule="greedy"``, the default) or by the Metropolis rule at the
   schedule's temperature. A proposal is deterministic for a labelling, so a rejected one is not
   drawn again until a change is accepted.
   With ``proposals="answer"`` the proposals are questions instead: a unit whose context prefers
   another consistent answer (its claims' log P summed, so a leaning towards "True" or "False"
   cancels), drawn with weight its gain, and the candidate is that answer.
4. **Polarity move**: once no single change raises U, the mirror of the labelling (every free
   two-way unit inverted at once) is settled like any labelling and kept if its U is higher: to a weak model a
   wholly inverted labelling is locally as coherent as the right one, and no single change
   leads out of it (``polarity_move``).
5. **Stop** (``ended``) at a ``fixed_point`` (no label contradicted by its context), once
   ``converged`` (every contradicted label proposed and rejected at this labelling, the mirror
   too: no move raises U), after ``patience`` draws without an accepted change, or at
   ``max_iterations``. The first two are the search settling by itself.

Everything is deterministic for a seed (sorted candidate sets, the restart's own RNG). Warm-start
labels that violate their unit's constraint are dropped (the unit is labelled in step 2).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from steerkit._logodds import log_sigmoid
from steerkit.backends.base import LabelScore
from steerkit.icm.checkpoint import restart_snapshot, restore_restart
from steerkit.icm.consistency import Unit, consistent_assignments
from steerkit.icm.neighbours import build_graph
from steerkit.icm.objective import Evaluation

if TYPE_CHECKING:  # pragma: no cover
    from steerkit.icm.context import SearchContext

__all__ = ["SETTLED", "SparseRestart", "SparseState"]

SETTLED = ("fixed_point", "converged")
"""The ways a search ends by itself (the others, ``patience`` and ``max_iterations``, are its budget)."""


def _signed(score: LabelScore, value: bool) -> float:
    s = score.logodds()
    return s if value else -s


class SparseState:
    """What the restarts of one sparse search share: the graph and the prompt renderer."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        obj = ctx.objective
        items = {it.id: it for it in ctx.pool.items}
        self.units = ctx.units
        self.index = {u.id: k for k, u in enumerate(self.units)}
        self.unit_index_of = {i: self.index[ctx.unit_of[i].id] for i in obj.order}
        self.graph = build_graph(self.units, items, ctx.config.context_k)
        self.sizes = [len(u.item_ids) for u in self.units]

    def prompt(self, item_id: str, labels: Mapping[str, bool]) -> str:
        obj = self.ctx.objective
        u = self.unit_index_of[item_id]
        parts = [obj._demo[(j, labels[j])] for v in self.graph.context[u] for j in self.units[v].item_ids if j in labels]
        parts.append(obj._target[item_id])
        return "".join(parts)

    def contribution(self, score: LabelScore, value: bool) -> float:
        """An item's term in the objective before α (sum form; the mean divides by N later)."""
        s = _signed(score, value)
        return log_sigmoid(s) if self.ctx.config.objective == "sum_logprob" else s

    def utility(self, labels: Mapping[str, bool], scores: Mapping[str, LabelScore]) -> tuple[float, float, int]:
        total = sum(self.contribution(scores[i], labels[i]) for i in labels)
        mp = total if self.ctx.config.objective == "sum_logprob" else (total / len(labels) if labels else 0.0)
        inc = self.ctx.pool.violations(dict(labels))
        return self.ctx.config.alpha * mp - inc, mp, inc


class SparseRestart:
    """One restart of the sparse search (same interface as the exact search's restarts)."""

    def __init__(
        self,
        ctx: SearchContext,
        index: int,
        state: SparseState,
        *,
        start: Mapping[str, bool] | None = None,
        greedy: bool = False,
    ) -> None:
        self.ctx = ctx
        self.state = state
        self.index = index
        self.seed = ctx.config.seed + index
        self.rng = random.Random(self.seed)
        self.labels: dict[str, bool] = {}
        self.scores: dict[str, LabelScore] = {}
        self.stale: set[int] = set()
        self.cur: Evaluation | None = None
        """The current assignment as an Evaluation; set once the labelling is complete and fresh."""
        self.iteration = 0
        self.accepted = 0
        self.since_accept = 0
        self.phase = "init"
        self.done = False
        self.ended: str | None = None
        """How the restart ended: ``fixed_point``, ``converged``, ``patience`` or ``max_iterations``."""
        self.rejected: set[str] = set()
        """Items whose proposal was rejected at the current labelling (cleared by an accepted change):
        a proposal is deterministic for a labelling, so it is drawn at most once per labelling."""
        self.mirror_tried = -1
        self.start = dict(start) if start is not None else None
        """A complete starting labelling (the restarts' consensus) instead of seeding."""
        self.greedy = greedy or ctx.config.schedule == "greedy"
        self.resumed_iterations = 0
        self.snapshot: dict[str, Any] | None = None
        self._preferred: dict[str, tuple[float, dict[str, bool]]] = {}
        """``proposals="answer"``: the proposable claims of the last `_contradicted` → (their unit's
        gain, the answer its context prefers)."""

    # --- checkpoint -----------------------------------------------------------------------------

    def commit(self) -> None:
        self.snapshot = restart_snapshot(self, self.scores, stale=sorted(self.stale), phase=self.phase)

    def restore(self, snap: dict[str, Any]) -> None:
        st = self.state

        def check(labels: dict[str, bool], scores: dict[str, LabelScore]) -> None:
            if not set(scores) <= set(labels) or not set(labels) <= set(st.unit_index_of):
                raise ValueError("labels and scores do not match the pool")
            stale = [int(u) for u in snap["stale"]]
            if any(not 0 <= u < len(st.units) for u in stale) or snap["phase"] not in ("complete", "anneal"):
                raise ValueError("stale units or phase out of range")

        self.labels, self.scores = restore_restart(self, snap, check)
        self.stale, self.phase = {int(u) for u in snap["stale"]}, str(snap["phase"])
        for i, s in self.scores.items():  # the memo makes re-rendered prompts of restored scores free
            self.ctx.objective.remember(st.prompt(i, self.labels), s)
        if self.phase == "anneal" or self.done:
            self._set_current()

    # --- the search -----------------------------------------------------------------------------

    async def run(self) -> None:
        ctx = self.ctx
        if self.phase == "init":
            self.labels = dict(self.start) if self.start is not None else ctx.initial_labels(self.rng, repair=False)
            self.phase = "complete"
            self.commit()
            ctx.save()
            ctx.report(self, ctx.temperature(1, 0), "init")
        while self.phase == "complete":
            await self._complete_one()
        while not self.done:
            await self._settle()
            if not (ctx.config.polarity_move and self.ended in SETTLED and self.mirror_tried != self.accepted):
                break
            self.mirror_tried = self.accepted
            if not await self._try_mirror():
                break
        if not self.done:
            self.done = True
            self.commit()
            ctx.save()
        ctx.report(self, ctx.temperature(max(1, self.iteration), self.accepted), "done")

    async def _score_units(self, units: list[int], labels: Mapping[str, bool]) -> dict[str, LabelScore]:
        ids = [i for u in units for i in self.state.units[u].item_ids]
        prompts = [self.state.prompt(i, labels) for i in ids]
        return dict(zip(ids, await self.ctx.objective.score_prompts(prompts)))

    def _has_labels(self, u: int) -> bool:
        """Whether unit ``u`` shows any labelled item as a demonstration (a unit with a fixed, human
        label can be labelled in part before the complete phase reaches it)."""
        return any(m in self.labels for m in self.state.units[u].item_ids)

    def _pick(self) -> int | None:
        st = self.state
        best, best_key = None, None
        for u, unit in enumerate(st.units):
            if all(m in self.labels for m in unit.item_ids):
                continue
            informed = sum(1 for v in st.graph.context[u] if self._has_labels(v))
            key = (informed, self.rng.random())
            if best_key is None or key > best_key:
                best, best_key = u, key
        return best

    async def _complete_one(self) -> None:
        ctx, st = self.ctx, self.state
        u = self._pick()
        if u is None:
            # every unit labelled. Seed units have no score yet: score them (their context is full)
            missing = sorted({st.unit_index_of[i] for i in self.labels if i not in self.scores})
            if missing:
                self.scores.update(await self._score_units(missing, self.labels))
                self.stale.difference_update(missing)
            # the labelling is complete and consistent: offer it now (any-time), although the units
            # labelled before their context filled in still carry those earlier scores ...
            self._set_current()
            ctx.offer(self)
            # ... then bring them up to date in one batch: from here on every score is current
            if self.stale:
                self.scores.update(await self._score_units(sorted(self.stale), self.labels))
                self.stale.clear()
            self.phase = "anneal"
            self._set_current()
            self.commit()
            ctx.save()
            ctx.offer(self)
            return
        unit = st.units[u]
        self.iteration += 1
        partial = {m: self.labels[m] for m in unit.item_ids if m in self.labels}
        scores = await self._score_units([u], self.labels)
        cands = consistent_assignments(unit, {**ctx.fixed, **partial}) or consistent_assignments(unit, ctx.fixed)
        best = max(cands, key=lambda a: sum(st.contribution(scores[m], a[m]) for m in unit.item_ids))
        self.labels.update(best)
        self.scores.update(scores)
        self.stale.update(r for r in st.graph.readers[u] if self._has_labels(r))
        self.stale.discard(u)
        self.accepted += 1
        self.commit()
        ctx.save()
        ctx.report(self, ctx.temperature(self.iteration, self.accepted), "complete")

    def _contradicted(self) -> list[str]:
        if self.ctx.config.proposals == "answer":
            self._preferred = self._preferred_answers()
            return list(self._preferred)
        return [
            i
            for i in self.ctx.objective.order
            if i not in self.ctx.fixed and (self.scores[i].logodds() > 0) != self.labels[i]
        ]

    def _answer_gains(self, unit: Unit) -> list[tuple[dict[str, bool], float]]:
        """Each other consistent assignment of ``unit`` with how much its own scores gain from it
        (before α): the part of a proposal's ΔU known without a call."""
        st = self.state
        current = {m: self.labels[m] for m in unit.item_ids}
        own = sum(st.contribution(self.scores[m], current[m]) for m in unit.item_ids)
        return [(a, sum(st.contribution(self.scores[m], a[m]) for m in unit.item_ids) - own)
                for a in consistent_assignments(unit, self.ctx.fixed) if a != current]

    def _preferred_answers(self) -> dict[str, tuple[float, dict[str, bool]]]:
        """``proposals="answer"``: per unit whose context prefers another consistent answer, the
        claim that answer turns True (or, where it turns none True, one it turns False) → (by how
        much its context prefers it, that answer)."""
        out: dict[str, tuple[float, dict[str, bool]]] = {}
        for unit in self.state.units:
            gains = [(a, g) for a, g in self._answer_gains(unit) if g > 0]
            if gains:
                best, gain = max(gains, key=lambda t: t[1])
                changed = [m for m in unit.item_ids if best[m] != self.labels[m]]
                x = next((m for m in changed if best[m]), changed[0])
                out[x] = (gain, best)
        return out

    def _own_gain(self, x: str) -> float:
        """How much x's own question gains from its best consistent assignment that changes x's
        label (`_answer_gains`)."""
        unit = self.state.units[self.state.unit_index_of[x]]
        return max((g for a, g in self._answer_gains(unit) if a[x] != self.labels[x]), default=-math.inf)

    def _proposable(self) -> list[str]:
        """The labels a proposal may change now; empty once the search is finished, with the
        reason in ``ended``: ``fixed_point`` (no label contradicted by its context; with
        ``proposals="answer"``, no question whose context prefers another answer), ``converged``
        (every contradicted label was proposed at this labelling and rejected: no move improves U),
        ``patience`` or ``max_iterations`` (the budget ran out first)."""
        cfg = self.ctx.config
        contradicted = self._contradicted()
        if not contradicted:
            self.ended = "fixed_point"
            return []
        untried = [i for i in contradicted if i not in self.rejected]
        if not untried:
            self.ended = "converged"
        elif self.iteration >= cfg.max_iterations:
            self.ended = "max_iterations"
        elif self.since_accept >= cfg.patience:
            self.ended = "patience"
        else:
            return untried
        return []

    async def _anneal_one(self, contradicted: list[str]) -> None:
        ctx, st, cfg = self.ctx, self.state, self.ctx.config
        await asyncio.sleep(0)  # a run of memoised proposals makes no call: let the loop breathe
        answers = cfg.proposals == "answer"
        if answers:  # drawn with weight its question's gain
            x = self.rng.choices(contradicted, [self._preferred[i][0] + 0.05 for i in contradicted])[0]
        else:
            # the label whose own question gains most from the change first (free: its own scores
            # are known). Uniform draws, as in the paper, spend calls on proposals that are mostly
            # rejected, and a claim's own log-odds do not rank them: a leaning model "contradicts"
            # many labels whose question does not prefer another answer.
            x = max(contradicted, key=self._own_gain)
        self.iteration += 1
        temp = ctx.temperature(self.iteration, self.accepted)
        u = st.unit_index_of[x]
        unit = st.units[u]
        y_hat = not self.labels[x]
        current = {m: self.labels[m] for m in unit.item_ids}
        # with proposals="answer": the one answer its context prefers (found by `_preferred_answers`)
        if answers:
            options = [self._preferred[x][1]]
        else:
            options = [a for a in consistent_assignments(unit, ctx.fixed) if a != current]
        cands = [a for a in options if a[x] == y_hat] or options
        accepted = False
        calls_before = ctx.objective.counters.model_calls
        if cands:
            readers = [r for r in st.graph.readers[u] if self._has_labels(r)]
            reader_ids = [i for r in readers for i in st.units[r].item_ids]
            # every candidate's reader prompts in one backend batch
            prompts = [st.prompt(i, {**self.labels, **a}) for a in cands for i in reader_ids]
            flat = await ctx.objective.score_prompts(prompts)
            n = len(reader_ids)
            best_delta, best_k = -math.inf, 0
            for k, a in enumerate(cands):
                new = flat[k * n : (k + 1) * n]
                d = sum(st.contribution(self.scores[m], a[m]) - st.contribution(self.scores[m], current[m]) for m in unit.item_ids)
                d += sum(
                    st.contribution(s, self.labels[i]) - st.contribution(self.scores[i], self.labels[i])
                    for i, s in zip(reader_ids, new)
                )
                if d > best_delta:
                    best_delta, best_k = d, k
            scale = cfg.alpha if cfg.objective == "sum_logprob" else cfg.alpha / len(self.labels)
            delta_u = scale * best_delta
            accepted = delta_u > 0 or (not self.greedy and self.rng.random() < math.exp(delta_u / temp))
            if accepted:
                self.labels.update(cands[best_k])
                self.scores.update(zip(reader_ids, flat[best_k * n : (best_k + 1) * n]))
        if accepted:
            self.accepted += 1
            self.since_accept = 0
            self.rejected.clear()
            self._set_current()
        else:
            self.since_accept += 1
            self.rejected.add(x)
        if accepted or ctx.objective.counters.model_calls != calls_before:
            self.commit()
            ctx.save()
        if accepted:
            ctx.offer(self)
        ctx.report(self, temp, "anneal")

    async def _settle(self) -> None:
        """Propose until the search ends (``ended`` says how)."""
        while True:
            contradicted = self._proposable()
            if not contradicted:
                return
            await self._anneal_one(contradicted)

    async def _try_mirror(self) -> bool:
        """The polarity move: every free two-way unit takes its other assignment at once, and the
        mirror is settled like any labelling; it is kept if it then has the higher U (else the
        settled labelling is restored). To a weak model a wholly inverted labelling can look as
        coherent as the right one, and no single change leads from one to the other; the mirror is
        compared *settled* because the settled labelling has already taken whatever noise favours
        it, which its raw mirror pays back. Costs about one more restart; two-way units only."""
        ctx, st = self.ctx, self.state
        flipped: dict[str, bool] = {}
        for unit in st.units:
            options = consistent_assignments(unit, ctx.fixed)
            if len(options) == 2:
                current = {m: self.labels[m] for m in unit.item_ids}
                flipped.update(options[1] if options[0] == current else options[0])
        if not flipped or self.cur is None:
            return False
        saved = (dict(self.labels), dict(self.scores), self.cur, self.ended)
        self.labels = {**self.labels, **flipped}
        self.scores = await self._score_units(list(range(len(st.units))), self.labels)
        self.iteration += 1
        self.rejected.clear()
        self._set_current()
        await self._settle()
        if self.cur.u > saved[2].u:
            self.accepted += 1
            self.since_accept = 0
            self.commit()
            ctx.save()
            ctx.offer(self)
            return True
        self.labels, self.scores, self.cur, self.ended = saved
        self.rejected = set(self._contradicted())  # the restored labelling was settled: nothing to propose
        self.mirror_tried = self.accepted
        self.commit()
        ctx.save()
        return False

    def _set_current(self) -> None:
        labels = {i: self.labels[i] for i in self.ctx.objective.order}
        scores = {i: self.scores[i] for i in labels}
        u, mp, inc = self.state.utility(labels, scores)
        self.cur = Evaluation(labels=labels, scores=scores, u=u, mp=mp, inconsistency=inc)

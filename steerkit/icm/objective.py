"""The ICM objective: exact leave-one-out mutual predictability, the inconsistency count, and U.

One *pass* over an assignment D scores every labelled item i with all other labelled items as
demonstrations, in one fixed order (the pool's item order with the members of each consistency
group contiguous), so the prompts of a pass and of successive passes share long prefixes that an
engine's prompt cache can serve. The prompts of a pass that are not memoised go to the backend in
ONE ``backend.score(list)`` call (the backend runs them concurrently).

Scores are memoised by prompt content (a SHA-256 digest of the prompt text): an assignment that
was scored before costs no call, and a prompt that is being scored by a concurrent pass (another
ConsistencyFix candidate, another restart) is awaited rather than sent twice.

U (``SearchConfig.objective``):

- ``mean_logodds`` (default; the reference code, what the seed paper ran):
  ``U = α · mean_i s_i·(+1 if y_i else −1) − I(D)`` with ``s_i`` the True-vs-False log-odds.
- ``sum_logprob`` (Wen et al.'s paper): ``U = α · Σ_i log P(y_i | x_i, D∖i) − I(D)`` with P the
  two-way normalised label probability.

I(D) is `Pool.violations` of the labelled items (inconsistent pairs, as the reference counts them).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from steerkit._logodds import log_sigmoid, sigmoid
from steerkit.backends.base import LabelScore, LogprobBackend
from steerkit.errors import LabelTokensMissingError
from steerkit.icm.prompts import render_demonstration, render_prompt
from steerkit.models import Pool, SearchConfig

__all__ = ["Evaluation", "Objective", "ScoreCounters", "fixed_order"]


def fixed_order(pool: Pool) -> list[str]:
    """Item order of the pool with each consistency group's members contiguous (a group sits where
    its first member appears; members keep their pool order)."""
    group_of = pool.group_of()
    members: dict[str, list[str]] = {}
    for it in pool.items:
        g = group_of.get(it.id)
        if g is not None:
            members.setdefault(g.id, []).append(it.id)
    order: list[str] = []
    placed: set[str] = set()
    for it in pool.items:
        g = group_of.get(it.id)
        if g is None:
            order.append(it.id)
        elif g.id not in placed:
            placed.add(g.id)
            order.extend(members[g.id])
    return order


def _signed(score: LabelScore, value: bool) -> float:
    if score.p_true is None and score.p_false is None:
        raise LabelTokensMissingError("the backend returned a score with neither label token observed")
    s = score.logodds()
    return s if value else -s


@dataclass
class ScoreCounters:
    """What the scoring of one search cost (shared by its restarts)."""

    model_calls: int = 0
    """Prompts sent to the backend (each is one one-token completion)."""
    backend_requests: int = 0
    """``backend.score`` invocations (one per pass with at least one unmemoised prompt)."""
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    evaluated_known: bool = True
    memo_hits: int = 0


@dataclass
class Evaluation:
    """One scored assignment: the LOO score of every labelled item and U."""

    labels: dict[str, bool]
    scores: dict[str, LabelScore]
    u: float
    mp: float
    """The mutual-predictability term before α (mean signed log-odds, or Σ log P)."""
    inconsistency: int
    prompts: dict[str, str] = field(default_factory=dict, repr=False)

    def signed(self, item_id: str) -> float:
        return _signed(self.scores[item_id], self.labels[item_id])

    def confidence(self, item_id: str) -> float:
        """P(assigned label), two-way normalised."""
        return sigmoid(self.signed(item_id))


class Objective:
    """Renders LOO prompts, scores them through a memo, and computes U for an assignment."""

    def __init__(self, pool: Pool, backend: LogprobBackend, config: SearchConfig) -> None:
        self.pool = pool
        self.backend = backend
        self.config = config
        self.order = fixed_order(pool)
        self._pos = {i: k for k, i in enumerate(self.order)}
        items = {it.id: it for it in pool.items}
        self._target = {i: render_prompt(pool.persona, items[i], config) for i in self.order}
        self._demo = {
            (i, v): render_demonstration(pool.persona, items[i], v, config) for i in self.order for v in (True, False)
        }
        self._memo: dict[bytes, LabelScore] = {}
        self._pending: dict[bytes, asyncio.Future[LabelScore]] = {}
        self.counters = ScoreCounters()

    # --- prompts --------------------------------------------------------------------------------

    def prompts(self, labels: Mapping[str, bool]) -> dict[str, str]:
        """The LOO prompt of every labelled item: all other labelled items as demonstrations in the
        fixed order, then the item's own claim block."""
        ids = [i for i in self.order if i in labels]
        demos = [self._demo[(i, labels[i])] for i in ids]
        # prefix[k] = demos[:k] joined; suffix[k] = demos[k:] joined
        prefix = [""]
        for d in demos:
            prefix.append(prefix[-1] + d)
        suffix = [""] * (len(demos) + 1)
        for k in range(len(demos) - 1, -1, -1):
            suffix[k] = demos[k] + suffix[k + 1]
        return {i: prefix[k] + suffix[k + 1] + self._target[i] for k, i in enumerate(ids)}

    def zero_shot_prompt(self, item_id: str) -> str:
        return self._target[item_id]

    @staticmethod
    def _key(prompt: str) -> bytes:
        return hashlib.sha256(prompt.encode("utf-8")).digest()

    def remember(self, prompt: str, score: LabelScore) -> None:
        """Put a known score in the memo (used when resuming from a checkpoint)."""
        self._memo.setdefault(self._key(prompt), score)

    # --- scoring --------------------------------------------------------------------------------

    async def score_prompts(self, prompts: Sequence[str]) -> list[LabelScore]:
        """Scores in order; memo hits and in-flight prompts cost nothing, the rest go to the backend
        in one ``score`` call."""
        keys = [self._key(p) for p in prompts]
        to_send: list[str] = []
        send_keys: list[bytes] = []
        sending: set[bytes] = set()
        waits: list[asyncio.Future[LabelScore]] = []
        loop = asyncio.get_running_loop()
        for p, k in zip(prompts, keys):
            if k in self._memo:
                self.counters.memo_hits += 1
            elif k in self._pending:
                self.counters.memo_hits += 1
                waits.append(self._pending[k])
            elif k not in sending:
                fut: asyncio.Future[LabelScore] = loop.create_future()
                self._pending[k] = fut
                to_send.append(p)
                send_keys.append(k)
                sending.add(k)
        if to_send:
            try:
                results = await self.backend.score(to_send)
                if len(results) != len(to_send):
                    raise RuntimeError(f"backend returned {len(results)} scores for {len(to_send)} prompts")
            except BaseException as e:
                for k in send_keys:
                    fut = self._pending.pop(k)
                    if not fut.done():
                        fut.set_exception(e)
                        fut.exception()  # mark retrieved: the error is re-raised here
                raise
            c = self.counters
            c.backend_requests += 1
            for k, r in zip(send_keys, results):
                self._memo[k] = r
                c.model_calls += 1
                c.prompt_tokens += r.prompt_tokens
                if r.cached_tokens is None:
                    c.evaluated_known = False
                else:
                    c.evaluated_tokens += max(0, r.prompt_tokens - r.cached_tokens)
                fut = self._pending.pop(k)
                if not fut.done():
                    fut.set_result(r)
        if waits:
            await asyncio.gather(*waits)
        return [self._memo[k] for k in keys]

    def utility(self, labels: Mapping[str, bool], scores: Mapping[str, LabelScore]) -> tuple[float, float, int]:
        """(U, mutual-predictability term, inconsistency) of scored labels."""
        signed = [_signed(scores[i], labels[i]) for i in labels]
        if self.config.objective == "sum_logprob":
            mp = sum(log_sigmoid(s) for s in signed)
        else:
            mp = sum(signed) / len(signed) if signed else 0.0
        inc = self.pool.violations(dict(labels))
        return self.config.alpha * mp - inc, mp, inc

    async def evaluate(self, labels: Mapping[str, bool]) -> Evaluation:
        """One full LOO pass over ``labels`` (memoised) and its U."""
        labels = {i: labels[i] for i in self.order if i in labels}
        prompts = self.prompts(labels)
        ids = list(prompts)
        scores = dict(zip(ids, await self.score_prompts([prompts[i] for i in ids])))
        u, mp, inc = self.utility(labels, scores)
        return Evaluation(labels=labels, scores=scores, u=u, mp=mp, inconsistency=inc, prompts=prompts)

    def restore(self, labels: Mapping[str, bool], scores: Mapping[str, LabelScore]) -> Evaluation:
        """An Evaluation from stored scores (checkpoint), memoising its prompts."""
        labels = {i: labels[i] for i in self.order if i in labels}
        prompts = self.prompts(labels)
        for i, p in prompts.items():
            self.remember(p, scores[i])
        sc = {i: scores[i] for i in labels}
        u, mp, inc = self.utility(labels, sc)
        return Evaluation(labels=labels, scores=sc, u=u, mp=mp, inconsistency=inc, prompts=prompts)

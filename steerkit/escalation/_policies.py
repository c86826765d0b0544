"""Selection policies: which questions to ask people first."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from steerkit._logodds import sigmoid
from steerkit._questions import questions
from steerkit.errors import InvalidAnswerError
from steerkit.escalation._render import _is_fixed, question_confidence
from steerkit.models import ExampleSet, stable_hash

if TYPE_CHECKING:  # pragma: no cover
    from steerkit.evaluation import Predictor

__all__ = [
    "ActiveLearningPolicy",
    "AnswerMarginPolicy",
    "ConfidencePolicy",
    "RandomPolicy",
    "SelectionPolicy",
    "select_questions",
]

# --- selection policies -------------------------------------------------------------------------


@runtime_checkable
class SelectionPolicy(Protocol):
    """Orders candidate questions; the first k are escalated. Lower score = ask first."""

    name: str

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]: ...


class ConfidencePolicy:
    """The paper's policy: the questions whose ICM confidence (mutual predictability) is lowest."""

    name = "icm_confidence"

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        qs = dict(questions(es))
        scored = [(q, question_confidence(es, q, qs[q])) for q in candidates]
        return sorted(scored, key=lambda t: (t[1], t[0]))


class AnswerMarginPolicy:
    """The questions whose answer the model, in context, preferred least to the next best answer
    (`ExampleSet.answer_margins`; the score is σ(margin), 0.5 a tie).

    ICM confidence is a claim's own label probability, so a model that leans towards "True" or
    "False" looks sure of every label on its side whatever the question; the margin compares a
    question's answers with each other, where the leaning cancels. It finds more of a set's wrong
    answers among the first asked (benchmarks/escalation_policies.py). A question without a margin
    (a human or fixed label) comes last."""

    name = "answer_margin"

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        margins = es.answer_margins()
        scored = [(q, sigmoid(margins[q]) if q in margins else 1.0) for q in candidates]
        return sorted(scored, key=lambda t: (t[1], t[0]))


class RandomPolicy:
    """Baseline: arbitrary questions, in a seeded order (same seed + persona + pool ⇒ same picks)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        rng = random.Random(stable_hash({"seed": self.seed, "persona": es.persona.id, "pool": es.provenance.pool_hash}))
        order = sorted(candidates)
        rng.shuffle(order)
        n = max(len(order), 1)
        return [(q, i / n) for i, q in enumerate(order)]


class ActiveLearningPolicy:
    """Baseline: the questions where the *chat* model, prompted few-shot with the example set (minus
    the question itself), is least confident in its own prediction of the persona's answer.

    ``predictor`` is a `steerkit.evaluation.Predictor` (`ChatPredictor` for the chat model;
    `ClaimPredictor` for a logprob backend).
    """

    name = "active_learning"

    def __init__(self, predictor: Predictor, *, max_demos: int | None = None) -> None:
        self.predictor = predictor
        self.max_demos = max_demos

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        from steerkit.evaluation import prediction_confidence

        qs = dict(questions(es))
        by_id = {it.id: it for it in es.items}

        async def one(q: str) -> tuple[str, float]:
            members = set(qs[q])
            demos = [(it, es.labels[it.id].value) for it in es.items if it.id not in members and it.id in es.labels]
            if self.max_demos is not None:
                demos = demos[: self.max_demos]
            probs = await self.predictor.predict(es.persona, demos, [by_id[i] for i in qs[q]])
            return q, prediction_confidence(probs, len(qs[q]))

        scored = await asyncio.gather(*(one(q) for q in candidates))
        return sorted(scored, key=lambda t: (t[1], t[0]))


async def select_questions(
    es: ExampleSet,
    policy: SelectionPolicy,
    k: int,
    *,
    exclude: Sequence[str] = (),
) -> list[tuple[str, float]]:
    """The k questions ``policy`` ranks first, skipping ``exclude`` and questions whose labels are
    already fixed by people (source "human"/"fixed")."""
    if k < 0:
        raise InvalidAnswerError(f"k must be ≥ 0, got {k}")
    skip = set(exclude)
    cands = [q for q, members in questions(es) if q not in skip and not _is_fixed(es, members)]
    if k == 0 or not cands:
        return []
    return (await policy.rank(es, cands))[:k]

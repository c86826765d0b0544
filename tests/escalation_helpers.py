"""Shared builders for the escalation / adapter tests (pools, hand-made example sets, a fake store)."""

from __future__ import annotations

from collections.abc import Sequence

from steerkit.backends.base import LabelScore
from steerkit.models import ExampleSet, Item, Label, Persona, Pool, Provenance, SearchConfig
from steerkit.testing import FakeScorer, last_claim

PERSONA = Persona(id="polparty/democrat", name="Democrats", dimension="political_affiliation")

OPTIONS = ("Favor", "Oppose", "Unsure")


def make_pool(n_questions: int = 6, n_options: int = 2, persona: Persona = PERSONA, gold_first: bool = True) -> Pool:
    """``n_questions`` survey questions, each an exactly_one group of claims; gold = option 0 when
    ``gold_first`` for even questions, option 1 for odd ones."""
    items = []
    for q in range(n_questions):
        gold_idx = 0 if (q % 2 == 0 or not gold_first) else 1
        for o in range(n_options):
            items.append(
                Item(
                    id=f"q{q}-o{o}",
                    kind="claim",
                    question=f"Question number {q}: do you favor policy {q}?",
                    option=f"{OPTIONS[o]} policy {q}",
                    group=f"q{q}",
                    gold=(o == gold_idx),
                )
            )
    return Pool.from_items(persona, items)


def planted_fn(pool: Pool, uncertain: Sequence[int] = (), wrong: Sequence[int] = ()):
    """A FakeScorer function: the gold option of each question is strongly True, the others
    strongly False; for ``uncertain`` questions every option scores 0.5-ish; for ``wrong``
    questions the model confidently prefers a non-gold option."""
    by_text = {it.option: it for it in pool.items}

    def fn(prompt: str) -> float:
        claim = last_claim(prompt)
        it = next((v for k, v in by_text.items() if f"'{k}'" in claim), None)
        if it is None:
            return 0.5
        q = int(it.group[1:])
        if q in uncertain:
            return 0.48 if it.gold else 0.52
        if q in wrong:
            return 0.1 if it.gold else 0.9
        return 0.92 if it.gold else 0.08

    return fn


def fake_backend(pool: Pool, uncertain: Sequence[int] = (), wrong: Sequence[int] = ()) -> FakeScorer:
    return FakeScorer(planted_fn(pool, uncertain, wrong), model="fake-planted")


def hand_example_set(pool: Pool, confidences: dict[str, float], *, values: dict[str, bool] | None = None) -> ExampleSet:
    """An ExampleSet built without a search: labels = gold unless ``values`` says otherwise;
    ``confidences`` per question id (every member gets it)."""
    values = values or {}
    labels = {}
    gc = {}
    for it in pool.items:
        c = confidences.get(it.group or it.id, 0.9)
        labels[it.id] = Label(item_id=it.id, value=values.get(it.id, bool(it.gold)), confidence=c, logodds=0.0)
        gc[it.group or it.id] = c
    return ExampleSet(
        persona=pool.persona,
        items=pool.items,
        groups=pool.groups,
        labels=labels,
        score=1.0,
        group_confidence=gc,
        provenance=Provenance(model="hand", backend="none", config=SearchConfig(), pool_hash=pool.content_hash(), seed=0),
    )


class FakeConstScorer(FakeScorer):
    """A fake scorer returning the same P(True) for every prompt."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(lambda _p: p, model="fake-const")


def label_score(p: float) -> LabelScore:
    return LabelScore(p_true=p, p_false=1 - p)

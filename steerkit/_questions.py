"""A pool's questions: the unit people are asked about and predictions are scored on.

A consistency group is one question; an item without a group is a question of its own. This
belongs with the pool model (`steerkit.models.Pool`); the escalation policies and the evaluation
protocol both group items this way.
"""

from __future__ import annotations

from steerkit.models import ExampleSet, Pool

__all__ = ["questions"]


def questions(es: ExampleSet | Pool) -> list[tuple[str, tuple[str, ...]]]:
    """The pool's questions in pool order: (question id, member item ids).

    A consistency group is one question; an item without a group is a question of its own (its id
    is the item id).
    """
    out: list[tuple[str, tuple[str, ...]]] = [(g.id, tuple(g.item_ids)) for g in es.groups]
    grouped = {i for g in es.groups for i in g.item_ids}
    out.extend((it.id, (it.id,)) for it in es.items if it.id not in grouped)
    return out

"""Fake scorers and pools for the ICM search tests (no tests here: helpers only).

`planted_fake` is a FakeScorer (never a model) whose P(True) plants a coherent structure:

- every claim has a hidden gold truth value (the persona's answer), unknown to the search;
- a weak zero-shot prior: a pseudo-random logit per claim plus a small push towards gold, so the
  model alone gets only about 60% of the questions right;
- a strong mutual-predictability signal: the more demonstrations in the prompt are labelled the
  way the hidden truth says, the more the target's P(True) follows its own hidden truth.

The coherent optimum is therefore the gold labelling (and its mirror, which the prior makes score
lower); the search must find it from the demonstrations' pattern.
"""

from __future__ import annotations

import re

from steerkit.models import Pool
from steerkit.testing import FakeScorer, PLANTED_PERSONA, planted_claims, planted_fn, planted_pool, unit_rand  # noqa: F401

OPTION = re.compile(r"as: '([^']*)'")
PERSONA = PLANTED_PERSONA


def planted_fake(n_questions: int = 16, *, delay: float = 0.0, **kw: float) -> tuple[Pool, FakeScorer]:
    return planted_claims(n_questions, delay=delay, **kw)


def zero_shot_question_accuracy(pool: Pool, fake: FakeScorer) -> float:
    """Question-level accuracy of the fake's prior alone (prompts without demonstrations)."""
    from steerkit.icm import render_prompt

    hits = 0
    for g in pool.groups:
        best = max(g.item_ids, key=lambda i: fake.fn(render_prompt(pool.persona, pool.item(i))))
        hits += bool(pool.item(best).gold)
    return hits / len(pool.groups)


def accuracy(pool: Pool, labels: dict[str, bool]) -> float:
    return sum(labels[it.id] == it.gold for it in pool.items) / len(pool.items)

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

import hashlib
import math
import re
from collections.abc import Callable

from steerkit.models import Item, Persona, Pool
from steerkit.testing import FakeScorer

OPTION = re.compile(r"as: '([^']*)'")
PERSONA = Persona(id="test/fake-testers", name="Fake Testers", dimension="test")


def unit_rand(s: str) -> float:
    """Deterministic pseudo-random number in [0, 1] from a string."""
    return int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def planted_pool(n_questions: int = 16, *, options: int = 2) -> tuple[Pool, dict[str, bool]]:
    """A claim pool of ``n_questions`` questions (``options`` claims each, exactly one true) and the
    hidden gold truth by option text."""
    items, gold = [], {}
    for q in range(n_questions):
        true_k = int(unit_rand(f"side{q}") * options) % options
        for k in range(options):
            opt = f"option {'abcdefg'[k]} of {q}"
            g = k == true_k
            items.append(Item(id=f"q{q}.{k}", kind="claim", question=f"Fake question number {q}?", option=opt, group=f"q{q}", gold=g))
            gold[opt] = g
    return Pool.from_items(PERSONA, items), gold


def planted_fn(gold: dict[str, bool], *, k: float = 2.0, prior: float = 0.3, noise: float = 1.5) -> Callable[[str], float]:
    def fn(prompt: str) -> float:
        blocks = prompt.split("\n\n")
        target = OPTION.search(blocks[-1])
        assert target is not None, "the target block has no claim"
        agree = n = 0
        for b in blocks[:-1]:
            m = OPTION.search(b)
            assert m is not None and b.endswith((" True", " False")), f"malformed demonstration: {b!r}"
            n += 1
            agree += 1 if b.endswith(" True") == gold[m.group(1)] else -1
        a = agree / n if n else 0.0
        sign = 1 if gold[target.group(1)] else -1
        z = (2 * unit_rand("z" + target.group(1)) - 1) * noise + prior * sign
        return 1 / (1 + math.exp(-(z + k * a * sign)))

    return fn


def planted_fake(n_questions: int = 16, *, delay: float = 0.0, **kw: float) -> tuple[Pool, FakeScorer]:
    pool, gold = planted_pool(n_questions)
    return pool, FakeScorer(planted_fn(gold, **kw), delay=delay)


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

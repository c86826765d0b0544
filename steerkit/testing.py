"""Test doubles for steerkit users and its own tests.

`FakeScorer` is a *fake* LogprobBackend: it never runs a model. It is for testing search logic,
middleware plumbing and adapters without a model; tests of real scoring use the embedded model.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable, Sequence

from steerkit.backends.base import BackendStats, LabelScore
from steerkit.models import Item, Persona, Pool


class FakeScorer:
    """A fake backend whose P(True) for a prompt is ``fn(prompt)``; counts calls like a real one.

    ``fn`` sees the whole rendered prompt (demonstrations + target), so a fake can plant a coherent
    structure for the search to recover, e.g. by reading the target's last "Claim:" line.
    """

    name = "fake"

    def __init__(self, fn: Callable[[str], float], *, model: str = "fake-scorer", delay: float = 0.0) -> None:
        self.fn = fn
        self.model = model
        self.delay = delay
        self.stats = BackendStats(cached_known=False)
        self.prompts: list[str] = []

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        out = []
        for p in prompts:
            if self.delay:
                await asyncio.sleep(self.delay)
            pt = min(max(float(self.fn(p)), 1e-6), 1 - 1e-6)
            self.prompts.append(p)
            self.stats.calls += 1
            n = len(p.split())
            self.stats.prompt_tokens += n
            out.append(LabelScore(p_true=pt * 0.9, p_false=(1 - pt) * 0.9, prompt_tokens=n))
        return out

    async def aclose(self) -> None:
        return None


def last_claim(prompt: str) -> str:
    """The text after the last "Claim:" in a rendered prompt (the target's claim)."""
    i = prompt.rfind("Claim:")
    if i < 0:
        return ""
    return prompt[i + len("Claim:") :].split("\n", 1)[0].strip()


# --- a planted coherent structure ----------------------------------------------------------------

_OPTION = re.compile(r"as: '([^']*)'")
PLANTED_PERSONA = Persona(id="test/fake-testers", name="Fake Testers", dimension="test")


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
    return Pool.from_items(PLANTED_PERSONA, items), gold


def planted_fn(
    gold: dict[str, bool],
    *,
    k: float = 2.0,
    prior: float = 0.3,
    noise: float = 1.5,
    context_noise: float = 0.0,
    bias: float = 0.0,
) -> Callable[[str], float]:
    """P(True) of a *fake* model with a planted coherent labelling (``gold``):

    - a weak zero-shot prior: a pseudo-random logit per claim (``noise``) plus a small push
      towards gold (``prior``), so the prior alone gets only ~60% of questions right;
    - a strong mutual-predictability signal (``k``): the more demonstrations in the prompt are
      labelled the way the hidden truth says, the more the target follows its own hidden truth.

    - ``context_noise``: a pseudo-random logit per whole prompt (the same claim moves with every
      change of its context, as a small model's answer does: the landscape is rugged);
    - ``bias``: a constant push towards "True" (small models favour one label word).

    The coherent optimum is the gold labelling (its mirror scores lower through the prior). With
    ``k`` small against ``noise + context_noise`` the fake is *weak*, like the packaged models
    (`weak_planted_claims`): a labelling's coherence then says little about its accuracy.
    """

    def fn(prompt: str) -> float:
        blocks = prompt.split("\n\n")
        target = _OPTION.search(blocks[-1])
        if target is None:
            raise ValueError("the target block has no claim")
        agree = n = 0
        for b in blocks[:-1]:
            m = _OPTION.search(b)
            if m is None or not b.endswith((" True", " False")):
                raise ValueError(f"malformed demonstration: {b!r}")
            n += 1
            agree += 1 if b.endswith(" True") == gold[m.group(1)] else -1
        a = agree / n if n else 0.0
        sign = 1 if gold[target.group(1)] else -1
        z = (2 * unit_rand("z" + target.group(1)) - 1) * noise + prior * sign + bias
        if context_noise:
            z += (2 * unit_rand("c" + prompt) - 1) * context_noise
        return 1 / (1 + math.exp(-(z + k * a * sign)))

    return fn


def planted_claims(n_questions: int = 16, *, options: int = 2, delay: float = 0.0, **kw: float) -> tuple[Pool, FakeScorer]:
    """A planted claim pool and the *fake* scorer that plants its coherent labelling (the items'
    ``gold``): for testing and benchmarking the search's logic without a model."""
    pool, gold = planted_pool(n_questions, options=options)
    return pool, FakeScorer(planted_fn(gold, **kw), delay=delay)


WEAK_SIGNAL = {"k": 0.5, "prior": 0.15, "noise": 1.0, "context_noise": 0.8, "bias": 0.8}
"""`planted_fn` parameters of a fake as weak as the packaged 135M-270M models on easy facts: alone
it gets 60-70% of two-option questions right, it follows its demonstrations' labels only
weakly, and every change of context moves its answer (benchmarks/label_quality.py compares it with
the models)."""


def weak_planted_claims(
    n_questions: int = 16, *, options: int = 2, delay: float = 0.0, **kw: float
) -> tuple[Pool, FakeScorer]:
    """`planted_claims` with a *weak, noisy* fake scorer (`WEAK_SIGNAL`, overridable): for testing
    that the search gets labels right when the signal is as faint as a small model's."""
    return planted_claims(n_questions, options=options, delay=delay, **{**WEAK_SIGNAL, **kw})

"""The steerability probe: can this model be steered by in-context labels at all?

Before anyone spends hours on coherence searches, `probe` measures on gold-labelled questions:

- **zero-shot** accuracy (the claim alone);
- accuracy on held-out questions after the *same* demonstrations labelled three ways: with their
  **gold** labels, with **every label inverted**, and with **random** (consistent) labels.

A model that follows in-context labels does better after gold than after inverted labels: the
*label effect* (gold − inverted, paired per question). A model can also gain from demonstrations
whatever their labels say (the *format effect*: label-neutral demonstrations — gold and inverted
averaged, and random labels — against zero-shot). `decide` turns the two effects and their standard
errors into one of three verdicts:

``follows_labels``
    the label effect is positive beyond ``z`` standard errors and at least ``min_effect``: example
    sets (ICM or gold) can steer this model;
``format_only``
    no label effect, but a format effect: demonstrations help, their labels do not matter — an
    example set cannot steer this model towards a persona, only towards the task format;
``ignores_demonstrations``
    neither: predictions do not move with demonstrations.

`model_verdict` runs the probe on a built-in set of two-option fact questions (capital cities: the
truth is not in doubt, so only label-following is measured) with a disk cache, so the demo and
``precompute`` can show the verdict for their model and a second call costs nothing.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from steerkit.backends.base import LogprobBackend
from steerkit.errors import UserError
from steerkit.evaluation import gold_questions, question_outcome, random_labels
from steerkit.models import RELIABLE_AGREEMENT, Item, Persona, Pool, SearchConfig

__all__ = [
    "FACTS_PERSONA",
    "Estimate",
    "ProbeCondition",
    "ProbeConfig",
    "ProbeReport",
    "Verdict",
    "decide",
    "facts_pool",
    "gold_questions",
    "model_verdict",
    "probe",
]

Verdict = Literal["follows_labels", "format_only", "ignores_demonstrations"]

VERDICT_TEXT: dict[str, str] = {
    "follows_labels": "follows in-context labels: example sets can steer this model",
    "format_only": "gains from the demonstration format only: its predictions do not follow the labels, "
    "so no example set (ICM or gold) can steer it",
    "ignores_demonstrations": "ignores demonstrations: predictions do not move with them, so no example set can steer it",
}


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error (of the per-question values it averages)."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        if not values:
            raise UserError("no values to estimate from")
        n = len(values)
        se = statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
        return cls(float(statistics.fmean(values)), float(se), n)

    def significant(self, z: float, min_effect: float) -> bool:
        """Above zero by more than ``z`` standard errors and at least ``min_effect``."""
        return self.mean >= min_effect and (self.se == 0 or self.mean > z * self.se)

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.se:.2f}"


def decide(label_effect: Estimate, format_effect: Estimate, *, z: float = 2.0, min_effect: float = 0.05,
           label_shift: Estimate | None = None) -> tuple[Verdict, str]:
    """The verdict from the two effects (accuracy differences, paired per question).

    ``label_shift`` (mean P(gold option) after gold minus after inverted labels), when given, adds
    a warning to a ``follows_labels`` verdict whose probabilities barely move (< ``min_effect``):
    the accuracy effect then rests on small differences between near-equal option scores."""
    if label_effect.significant(z, min_effect):
        v: Verdict = "follows_labels"
        why = f"gold − inverted demonstrations {label_effect} (> {z:g} SE)"
    elif format_effect.significant(z, min_effect):
        v = "format_only"
        why = f"gold − inverted {label_effect} (not significant) but demonstrations − zero-shot {format_effect}"
    else:
        v = "ignores_demonstrations"
        why = f"gold − inverted {label_effect}, demonstrations − zero-shot {format_effect}: neither significant"
    if v == "follows_labels" and label_shift is not None and label_shift.mean < min_effect:
        why += f", but weakly: P(gold option) moves by only {label_shift}"
    if label_effect.mean < 0 and (-label_effect.mean) > z * label_effect.se and -label_effect.mean >= min_effect:
        why += "; inverted labels did significantly *better* than gold"
    return v, why


# --- data -----------------------------------------------------------------------------------------

FACTS_PERSONA = Persona(
    id="probe/geography",
    name="people who know world geography",
    dimension="probe",
    description="Answers to plain geography questions; the truth is not in doubt.",
)

_CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("the United Kingdom", "London"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Peru", "Lima"), ("Greece", "Athens"), ("Norway", "Oslo"),
    ("Australia", "Canberra"), ("Ireland", "Dublin"), ("Portugal", "Lisbon"), ("Austria", "Vienna"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("the Czech Republic", "Prague"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"), ("India", "New Delhi"), ("Argentina", "Buenos Aires"), ("Chile", "Santiago"),
    ("Colombia", "Bogota"), ("Mexico", "Mexico City"), ("Cuba", "Havana"), ("Morocco", "Rabat"),
    ("Ethiopia", "Addis Ababa"), ("Nigeria", "Abuja"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"),
    ("Switzerland", "Bern"), ("Ukraine", "Kyiv"),
]


def facts_pool(seed: int = 0) -> Pool:
    """Two-option fact questions with gold labels: "What is the capital of X?" with the true capital
    and another country's, in a seeded order (the true option is first about half the time)."""
    rng = random.Random(seed)
    n = len(_CAPITALS)
    items: list[Item] = []
    for k, (country, city) in enumerate(_CAPITALS):
        other = _CAPITALS[(k + 1 + rng.randrange(n - 1)) % n][1]
        opts = [(city, True), (other, False)]
        rng.shuffle(opts)
        gid = f"probe/capital/{k}"
        for j, (opt, gold) in enumerate(opts):
            items.append(Item(id=f"{gid}/o{j}", kind="claim", question=f"What is the capital of {country}?",
                              option=opt, group=gid, gold=gold))
    return Pool.from_items(FACTS_PERSONA, items)


# --- the probe ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig:
    n_test: int = 30
    """Held-out questions predicted in every condition."""
    n_demos: int = 8
    """Demonstration questions (every option of each is one labelled demonstration)."""
    random_seeds: int = 3
    """Random labellings of the demonstrations."""
    seed: int = 0
    z: float = 2.0
    min_effect: float = 0.05
    agreement_questions: int = 0
    """Held-out questions labelled by a default ICM search (its restarts from 8 seeds) to measure
    how far the labels depend on the seed (0: not measured). Cost on the built-in fact questions,
    Gemma 3 270M, 2 cores at a load of 5: 4 questions 104 scoring calls, 22k prompt tokens, 2.3
    min; 6 questions 264 calls, 76k tokens, 8 min (longer contexts). `steerkit probe` (default 4)
    caches the scores: a re-run costs nothing."""

    def __post_init__(self) -> None:
        if self.n_test < 2 or self.n_demos < 1 or self.random_seeds < 1:
            raise UserError("the probe needs n_test >= 2, n_demos >= 1 and random_seeds >= 1")


@dataclass
class ProbeCondition:
    name: str
    accuracy: float
    se: float
    correct: list[bool] = field(repr=False)
    p_gold: list[float] = field(repr=False)
    """P(gold option) per test question."""
    agreement: float | None = None
    """Share of the demonstrations' labels that equal gold (None: no demonstrations). A model that
    follows labels tracks it: its random-label accuracies rise with their agreement."""

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "se": self.se, "mean_p_gold": statistics.fmean(self.p_gold),
                "agreement_with_gold": self.agreement}


@dataclass
class ProbeReport:
    model: str
    backend: str
    persona: str
    n_test: int
    n_demos: int
    conditions: dict[str, ProbeCondition]
    label_effect: Estimate
    format_effect: Estimate
    label_shift: Estimate
    """Mean P(gold option) after gold minus after inverted demonstrations (a finer label effect)."""
    verdict: Verdict
    reason: str
    config: ProbeConfig
    usage: dict[str, Any] = field(default_factory=dict)
    seed_agreement: dict[str, Any] | None = None
    """The search's seed-to-seed agreement on the model's own questions (``agreement_questions``):
    ``restart_agreement``, ``ended``, ``restarts``, ``accuracy`` (question-level, against gold),
    ``questions``, ``least_certain`` (question texts), and what it cost: ``model_calls``,
    ``prompt_tokens``, ``seconds``."""

    @property
    def steerable(self) -> bool:
        return self.verdict == "follows_labels"

    def random_range(self) -> tuple[float, float]:
        accs = [c.accuracy for k, c in self.conditions.items() if k.startswith("random")]
        return min(accs), max(accs)

    def summary(self) -> str:
        c = self.conditions
        lo, hi = self.random_range()
        return (
            f"{self.model}: {VERDICT_TEXT[self.verdict]}. Zero-shot {c['zero_shot'].accuracy:.2f} ± {c['zero_shot'].se:.2f}, "
            f"gold demonstrations {c['gold'].accuracy:.2f} ± {c['gold'].se:.2f}, inverted gold {c['inverted'].accuracy:.2f} "
            f"± {c['inverted'].se:.2f}, random labels {lo:.2f}–{hi:.2f} (n={self.n_test} held-out questions, "
            f"{self.n_demos} demonstration questions). {self.reason}." + self.agreement_summary()
        )

    def agreement_summary(self) -> str:
        a = self.seed_agreement
        if not a or a.get("restart_agreement") is None:
            return ""
        shaky = a["restart_agreement"] < RELIABLE_AGREEMENT
        return (f" Seed to seed, a default ICM search's {a['restarts']} restarts agreed on {a['restart_agreement']:.0%} of "
                f"the answers to {a['questions']} held-out questions (its labels {a['accuracy']:.0%} right against gold; "
                f"it ended: {a['ended']}): "
                + ("the labels depend on the seed, this model's signal is weak, so its example sets may be bad draws."
                   if shaky else "the labels hardly depend on the seed."))

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "persona": self.persona,
            "n_test": self.n_test,
            "n_demos": self.n_demos,
            "conditions": {k: v.as_dict() for k, v in self.conditions.items()},
            "label_effect": asdict(self.label_effect),
            "format_effect": asdict(self.format_effect),
            "label_shift": asdict(self.label_shift),
            "verdict": self.verdict,
            "verdict_text": VERDICT_TEXT[self.verdict],
            "reason": self.reason,
            "config": asdict(self.config),
            "usage": self.usage,
            "seed_agreement": self.seed_agreement,
        }


def _se(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


async def probe(
    pool: Pool,
    backend: LogprobBackend,
    config: ProbeConfig | None = None,
    *,
    search_config: SearchConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeReport:
    """Run the probe on ``pool``'s gold-labelled questions (see the module docstring).

    The questions are shuffled with ``config.seed``; the first ``n_demos`` are the demonstrations
    (shown in every few-shot condition, in the same order), the next ``n_test`` are predicted.
    ``progress(done, total)`` is called after each condition.
    """
    import asyncio

    from steerkit.evaluation import score_claims

    cfg = config or ProbeConfig()
    qs = gold_questions(pool)
    need = cfg.n_demos + cfg.n_test
    if len(qs) < need:
        raise UserError(
            f"the probe needs {need} gold-labelled questions ({cfg.n_demos} demonstrations + {cfg.n_test} held out); "
            f"the pool has {len(qs)}",
            hint="lower n_test/n_demos or give a larger pool with gold labels",
        )
    rng = random.Random(cfg.seed)
    qs = list(qs)
    rng.shuffle(qs)
    demo_qs, test_qs = qs[: cfg.n_demos], qs[cfg.n_demos : need]
    demo_items = [it for q in demo_qs for it in q]
    gold = {it.id: bool(it.gold) for it in demo_items}
    labellings: dict[str, dict[str, bool] | None] = {
        "zero_shot": None,
        "gold": gold,
        "inverted": {k: not v for k, v in gold.items()},
    }
    for r in range(cfg.random_seeds):
        labellings[f"random_{r}"] = random_labels(demo_qs, random.Random(f"{cfg.seed}/random/{r}"))
    conditions: dict[str, ProbeCondition] = {}
    for done, (name, labels) in enumerate(labellings.items(), start=1):
        demos = [] if labels is None else [(it, labels[it.id]) for it in demo_items]
        raw = await asyncio.gather(*(score_claims(backend, pool.persona, demos, q, search_config) for q in test_qs))
        outs = [question_outcome(q, p) for q, p in zip(test_qs, raw)]
        correct = [o[0] for o in outs]
        agreement = None if labels is None else sum(labels[k] == v for k, v in gold.items()) / len(gold)
        conditions[name] = ProbeCondition(name, statistics.fmean(correct), _se([float(c) for c in correct]),
                                          correct, [o[1] for o in outs], agreement)
        if progress is not None:
            progress(done, len(labellings))
    c = conditions
    randoms = [v for k, v in c.items() if k.startswith("random")]
    label_effect = Estimate.of([float(g) - float(i) for g, i in zip(c["gold"].correct, c["inverted"].correct)])
    format_effect = Estimate.of([
        ((float(g) + float(i)) / 2 + statistics.fmean(float(r.correct[n]) for r in randoms)) / 2 - float(z)
        for n, (g, i, z) in enumerate(zip(c["gold"].correct, c["inverted"].correct, c["zero_shot"].correct))
    ])
    label_shift = Estimate.of([g - i for g, i in zip(c["gold"].p_gold, c["inverted"].p_gold)])
    verdict, why = decide(label_effect, format_effect, z=cfg.z, min_effect=cfg.min_effect, label_shift=label_shift)
    seed_agreement = await _seed_agreement(pool, test_qs[: cfg.agreement_questions], backend, cfg) if cfg.agreement_questions else None
    usage = getattr(backend, "usage", None)
    return ProbeReport(
        model=backend.model,
        backend=backend.name,
        persona=pool.persona.id,
        n_test=len(test_qs),
        n_demos=len(demo_qs),
        conditions=conditions,
        label_effect=label_effect,
        format_effect=format_effect,
        label_shift=label_shift,
        verdict=verdict,
        reason=why,
        config=cfg,
        usage=usage.as_dict() if usage is not None else {},
        seed_agreement=seed_agreement,
    )


async def _seed_agreement(pool: Pool, questions: Sequence[Sequence[Item]], backend: LogprobBackend,
                          cfg: ProbeConfig) -> dict[str, Any]:
    """Label ``questions`` by a default search and report how far its restarts (one per seed) agreed."""
    from steerkit import icm

    items = [it for q in questions for it in q]
    sub = Pool.from_items(pool.persona, items)
    es = await icm.search(sub, backend, SearchConfig(seed=cfg.seed))
    labels = es.label_values()
    right = [all(labels[it.id] == bool(it.gold) for it in q) for q in questions]
    return {"restart_agreement": es.stats.restart_agreement, "ended": es.stats.ended, "restarts": len(es.stats.restarts_u),
            "accuracy": statistics.fmean(right), "questions": len(questions), "least_certain": [q.question for q in es.least_certain()],
            "model_calls": es.stats.model_calls, "prompt_tokens": es.stats.prompt_tokens, "seconds": round(es.stats.wall_seconds, 2)}


async def model_verdict(
    backend: LogprobBackend,
    cache_dir: str | Path | None = None,
    config: ProbeConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeReport:
    """The probe on the built-in fact questions, every scored prompt cached in
    ``<cache_dir>/scores`` (default: the default cache location's ``eval`` folder), so the demo,
    ``precompute`` and ``steerkit probe`` share the work and a repeat costs no model call."""
    from steerkit._scorecache import CachedBackend, ScoreCache

    cache = ScoreCache(Path(cache_dir or default_eval_dir()) / "scores")
    try:
        return await probe(facts_pool(), CachedBackend(backend, cache), config, progress=progress)
    finally:
        cache.close()


def default_eval_dir() -> Path:
    """``<default cache dir>/eval``: where probe and eval keep their scored prompts."""
    from steerkit import default_cache_dir

    return Path(default_cache_dir()) / "eval"

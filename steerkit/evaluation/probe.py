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

One domain is not enough: a model can follow the labels of capital-city demonstrations and not
those of sums. `probe_domains` runs the probe in each of several domains (a few questions each) and
gives a verdict only where the domains agree; where they do not, it says so and what each showed
(`DomainsReport`). `model_verdict` runs it on the built-in fact domains (`steerkit.evaluation.facts`:
the truth is not in doubt, so only label-following is measured) with a disk cache, so the demo and
``precompute`` can show the verdict for their model and a second call costs nothing.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from steerkit.backends.base import LogprobBackend
from steerkit.errors import UserError
from steerkit.evaluation.facts import FACTS_PERSONA, fact_pools, facts_pool
from steerkit.evaluation.predictors import question_outcome
from steerkit.evaluation.protocol import gold_questions, random_labels
from steerkit.models import DECIDED_ANSWERS, RELIABLE_AGREEMENT, Item, Persona, Pool, SearchConfig

__all__ = [
    "DOMAIN_CONFIG",
    "FACTS_PERSONA",
    "DomainsReport",
    "Estimate",
    "ProbeCondition",
    "ProbeConfig",
    "ProbeReport",
    "Verdict",
    "agree",
    "decide",
    "facts_pool",
    "gold_questions",
    "model_verdict",
    "probe",
    "probe_domains",
]

Verdict = Literal["follows_labels", "format_only", "ignores_demonstrations"]
OverallVerdict = Literal["follows_labels", "format_only", "ignores_demonstrations", "domains_disagree"]

VERDICT_TEXT: dict[str, str] = {
    "follows_labels": "follows in-context labels: example sets can steer this model",
    "format_only": "gains from the demonstration format only: its predictions do not follow the labels, "
    "so no example set (ICM or gold) can steer it",
    "ignores_demonstrations": "ignores demonstrations: predictions do not move with them, so no example set can steer it",
    "domains_disagree": "no verdict: the domains disagree",
}

SHORT_TEXT: dict[str, str] = {
    "follows_labels": "follows labels",
    "format_only": "format only",
    "ignores_demonstrations": "ignores demonstrations",
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
    if format_effect.mean < 0 and (-format_effect.mean) > z * format_effect.se and -format_effect.mean >= min_effect:
        why += "; demonstrations did significantly *worse* than zero-shot"
    return v, why


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
    """Held-out questions labelled by a default ICM search (its restarts from 16 seeds) to measure
    how far the labels depend on the seed (0: not measured). Cost on the built-in fact questions,
    Gemma 3 270M, 2 cores: 4 questions 116 scoring calls with the 16-restart default, 22k prompt
    tokens, 43 s on a quiet machine (104 calls with 8 restarts, 2.3 min at a load of 5); 6 questions
    with 8 restarts 264 calls, 76k tokens, 8 min at a load of 5 (longer contexts). `steerkit probe` (default 4)
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
    ``restart_agreement``, ``ended``, ``restarts``, ``answer_confidence`` (`ExampleSet.answer_confidence`),
    ``accuracy`` (question-level, against gold),
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
        conf = a.get("answer_confidence")
        ties = conf is not None and conf < DECIDED_ANSWERS
        preferred = "" if conf is None else f", preferring its answers {conf:.0%} to the runner-up"
        return (f" Seed to seed, a default ICM search's {a['restarts']} restarts agreed on {a['restart_agreement']:.0%} of "
                f"the answers to {a['questions']} held-out questions (its labels {a['accuracy']:.0%} right against gold{preferred}; "
                f"it ended: {a['ended']}): "
                + ("the labels depend on the seed, this model's signal is weak, so its example sets may be bad draws."
                   if shaky else
                   "the labels hardly depend on the seed, but they rest on near-ties: the model barely prefers them, so "
                   "its example sets say more about the search than about a persona." if ties else
                   "the labels hardly depend on the seed."))

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


def split(pool: Pool, cfg: ProbeConfig) -> tuple[list[list[Item]], list[list[Item]]]:
    """(demonstration questions, held-out questions) of ``pool``: its gold-labelled questions
    shuffled with ``cfg.seed``, the first ``n_demos``, then the next ``n_test``."""
    qs = gold_questions(pool)
    need = cfg.n_demos + cfg.n_test
    if len(qs) < need:
        raise UserError(
            f"the probe needs {need} gold-labelled questions ({cfg.n_demos} demonstrations + {cfg.n_test} held out); "
            f"{pool.persona.id} has {len(qs)}",
            hint="lower n_test/n_demos or give a larger pool with gold labels",
        )
    qs = list(qs)
    random.Random(cfg.seed).shuffle(qs)
    return qs[: cfg.n_demos], qs[cfg.n_demos : need]


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
    demo_qs, test_qs = split(pool, cfg)
    demo_items = [it for q in demo_qs for it in q]
    gold = {it.id: bool(it.gold) for it in demo_items}
    labellings: dict[str, dict[str, bool] | None] = {
        "zero_shot": None,
        "gold": gold,
        "inverted": {k: not v for k, v in gold.items()},
    }
    shown: list[dict[str, bool]] = [gold, {k: not v for k, v in gold.items()}]
    for r in range(cfg.random_seeds):
        # seeded per pool (domains draw independently); a labelling already shown is drawn again
        # (a few demonstration questions have few labellings: 4 two-option questions have 16)
        rng = random.Random(f"{cfg.seed}/random/{r}/{pool.persona.id}")
        labels = random_labels(demo_qs, rng)
        for _ in range(100):
            if labels not in shown:
                break
            labels = random_labels(demo_qs, rng)
        shown.append(labels)
        labellings[f"random_{r}"] = labels
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
            "answer_confidence": es.answer_confidence(), "accuracy": statistics.fmean(right), "questions": len(questions),
            "least_certain": [q.question for q in es.least_certain()],
            "model_calls": es.stats.model_calls, "prompt_tokens": es.stats.prompt_tokens, "seconds": round(es.stats.wall_seconds, 2)}


# --- several domains -------------------------------------------------------------------------------

DOMAIN_CONFIG = ProbeConfig(n_test=12, n_demos=4, random_seeds=2)
"""Per domain on the built-in facts: 4 demonstration questions, 12 held out, 2 random labellings
(16 questions a domain; 120 scored prompts a domain)."""


def agree(verdicts: dict[str, tuple[Verdict, str]]) -> tuple[OverallVerdict, str]:
    """One verdict where every domain's verdict is the same; else ``domains_disagree`` and what
    each domain showed. ``verdicts``: domain → (its verdict, its reason)."""
    if not verdicts:
        raise UserError("no domain to give a verdict on")
    kinds = {v for v, _ in verdicts.values()}
    if len(kinds) == 1:
        v = next(iter(kinds))
        if len(verdicts) == 1:
            return v, next(iter(verdicts.values()))[1]
        return v, f"all {len(verdicts)} domains agree"
    shown = "; ".join(f"{name}: {SHORT_TEXT[v]}" for name, (v, _) in verdicts.items())
    why = f"the domains disagree ({shown})"
    if "follows_labels" in kinds:
        follows = [name for name, (v, _) in verdicts.items() if v == "follows_labels"]
        why += (f": it follows the labels of {', '.join(follows)} demonstrations only, so whether an example set "
                "can steer it depends on the questions; probe your own (`--dataset`)")
    else:
        why += ": in none does it follow the labels, so no example set can steer it on these questions"
    return "domains_disagree", why


@dataclass
class DomainsReport:
    """The probe in several domains: each domain's `ProbeReport`, and one verdict where they agree."""

    model: str
    backend: str
    domains: dict[str, ProbeReport]
    verdict: OverallVerdict
    reason: str
    config: ProbeConfig
    usage: dict[str, Any] = field(default_factory=dict)
    seed_agreement: dict[str, Any] | None = None
    """As `ProbeReport.seed_agreement`, over held-out questions of every domain (taken in turn)."""

    @property
    def steerable(self) -> bool:
        return self.verdict == "follows_labels"

    def domain_line(self, name: str) -> str:
        r = self.domains[name]
        c = r.conditions
        return (f"{name} gold {c['gold'].accuracy:.2f} vs inverted {c['inverted'].accuracy:.2f} "
                f"(zero-shot {c['zero_shot'].accuracy:.2f}): {SHORT_TEXT[r.verdict]}" + (", weakly" if "weakly" in r.reason else ""))

    def summary(self) -> str:
        if len(self.domains) == 1:
            return next(iter(self.domains.values())).summary() + self.agreement_summary()
        n = next(iter(self.domains.values())).n_test
        agreed = "" if self.verdict == "domains_disagree" else f" (all {len(self.domains)} domains agree)"
        head = f"{self.model}: {VERDICT_TEXT[self.verdict]}{agreed}. "
        lines = "; ".join(self.domain_line(name) for name in self.domains)
        why = "" if self.verdict != "domains_disagree" else f" {self.reason[0].upper()}{self.reason[1:]}."
        return (head + f"Per domain ({n} held-out questions each): {lines}.{why}"
                + self.agreement_summary())

    def agreement_summary(self) -> str:
        return ProbeReport.agreement_summary(self)  # type: ignore[arg-type]  # the same fields

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "verdict": self.verdict,
            "verdict_text": VERDICT_TEXT[self.verdict],
            "reason": self.reason,
            "domains": {k: v.as_dict() for k, v in self.domains.items()},
            "config": asdict(self.config),
            "usage": self.usage,
            "seed_agreement": self.seed_agreement,
        }


async def probe_domains(
    pools: dict[str, Pool],
    backend: LogprobBackend,
    config: ProbeConfig | None = None,
    *,
    search_config: SearchConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DomainsReport:
    """`probe` in each domain of ``pools`` (domain name → pool; ``config`` per domain), then one
    verdict where the domains agree (`agree`). The seed-to-seed check (``agreement_questions``)
    runs once, over held-out questions of every domain in turn. ``progress(done, total)``: after
    each condition of each domain."""
    if not pools:
        raise UserError("the probe needs at least one domain")
    cfg = config or DOMAIN_CONFIG
    per_domain = replace(cfg, agreement_questions=0)
    steps = 3 + cfg.random_seeds
    reports: dict[str, ProbeReport] = {}
    for k, (name, pool) in enumerate(pools.items()):
        tick = None if progress is None else (lambda d, t, k=k: progress(k * steps + d, len(pools) * steps))
        before, t0 = _usage(backend), time.perf_counter()
        r = await probe(pool, backend, per_domain, search_config=search_config, progress=tick)
        r.usage = {k: v - before.get(k, 0) for k, v in r.usage.items() if isinstance(v, int | float)}
        r.usage["seconds"] = round(time.perf_counter() - t0, 2)  # this domain's share (the figure the README gives)
        reports[name] = r
    verdict, why = agree({name: (r.verdict, r.reason) for name, r in reports.items()})
    seed_agreement = None
    if cfg.agreement_questions:
        held = [split(pool, cfg)[1] for pool in pools.values()]
        turns = [q for row in zip(*held) for q in row][: cfg.agreement_questions]
        if len(pools) == 1:
            persona = next(iter(pools.values())).persona
        else:
            persona = Persona(id="probe/facts", name="people who know plain facts", dimension="probe",
                              description="Answers to plain questions; the truth is not in doubt.")
        seed_agreement = await _seed_agreement(Pool.from_items(persona, [it for q in turns for it in q]), turns, backend, cfg)
    usage = getattr(backend, "usage", None)
    return DomainsReport(model=backend.model, backend=backend.name, domains=reports, verdict=verdict, reason=why,
                         config=cfg, usage=usage.as_dict() if usage is not None else {}, seed_agreement=seed_agreement)


def _usage(backend: LogprobBackend) -> dict[str, Any]:
    usage = getattr(backend, "usage", None)
    return usage.as_dict() if usage is not None else {}


async def model_verdict(
    backend: LogprobBackend,
    cache_dir: str | Path | None = None,
    config: ProbeConfig | None = None,
    *,
    domains: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DomainsReport:
    """The probe on the built-in fact domains (``domains``: default all; ``config`` per domain,
    default `DOMAIN_CONFIG`), every scored prompt cached in ``<cache_dir>/scores`` (default: the
    default cache location's ``eval`` folder), so the demo, ``precompute`` and ``steerkit probe``
    share the work and a repeat costs no model call."""
    from steerkit._scorecache import CachedBackend, ScoreCache

    cfg = config or DOMAIN_CONFIG
    cache = ScoreCache(Path(cache_dir or default_eval_dir()) / "scores")
    try:
        return await probe_domains(fact_pools(cfg.seed, domains), CachedBackend(backend, cache), cfg, progress=progress)
    finally:
        cache.close()


def default_eval_dir() -> Path:
    """``<default cache dir>/eval``: where probe and eval keep their scored prompts."""
    from steerkit import default_cache_dir

    return Path(default_cache_dir()) / "eval"

"""The generation probe: do a chat model's *answers* move toward a persona when its examples are
gold rather than inverted? (minutes)

The classification probe asks whether a base model's option scores follow demonstration labels.
Steering a chat app needs more: the examples go into an instruct model's prompt and it *writes*.
This probe asks that, in the classification probe's terms, on the same built-in fact domains
(`steerkit.evaluation.facts`: the truth is not in doubt, so only following the examples is
measured), a few questions each:

- the chat model answers each held-out question three ways, through the product's own ``generate``
  injection (`steerkit.evaluation.generation.generation_messages`): **zero-shot** (the persona, no
  examples), after the demonstration questions' **gold** answers as the persona's representative
  answers, and after the **inverted** ones (each demonstration's wrong option as the persona's);
- the judge (`steerkit.evaluation.judge`) rates each answer for the persona, 1–5; its self-check
  runs first, on known pairs from the same domains (the true answer written as a sentence against
  the wrong one);
- a judge-free reading beside it: which option each answer names (the true one, the wrong one,
  both or neither).

The *label effect* is gold − inverted and the *format effect* (gold and inverted averaged) −
zero-shot, paired per question, and `steerkit.evaluation.probe.decide` gives the same three
verdicts, per domain, from the judge's scores, or, where the judge failed its self-check (its
scores then mean nothing), from the share of answers naming the true option, and says which.
Across domains, a verdict only where they agree (`steerkit.evaluation.probe.agree`).
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from steerkit._scorecache import ScoreCache
from steerkit.errors import UserError
from steerkit.evaluation.answers import PoolPersona
from steerkit.evaluation.chat import CachedChat, ChatModel
from steerkit.evaluation.generation import generation_messages, is_toy_model
from steerkit.evaluation.judge import (
    RUBRIC_VERSION,
    SCALE,
    Judge,
    KnownPair,
    SelfCheck,
    self_check,
)
from steerkit.evaluation.probe import (
    SHORT_TEXT,
    Estimate,
    ProbeConfig,
    Verdict,
    agree,
    decide,
    split,
)
from steerkit.evaluation.protocol import gold_questions
from steerkit.models import Item, Persona, Pool

__all__ = [
    "GENERATION_CONFIG",
    "GENERATION_VERDICT_TEXT",
    "GenerationCondition",
    "GenerationDomainReport",
    "GenerationProbeConfig",
    "GenerationProbeReport",
    "named_option",
    "probe_generation",
]

Named = Literal["true", "wrong", "both", "neither"]

GENERATION_VERDICT_TEXT: dict[str, str] = {
    "follows_labels": "its answers follow the examples: example sets can steer what this model writes",
    "format_only": "its answers change with examples whatever they say, not toward them: no example set can steer "
                   "what it writes",
    "ignores_demonstrations": "its answers do not move with examples: no example set can steer what it writes",
    "domains_disagree": "no verdict: the domains disagree",
}


@dataclass(frozen=True)
class GenerationProbeConfig:
    n_test: int = 6
    """Held-out questions per domain, each answered in every condition."""
    n_demos: int = 3
    """Demonstration questions per domain (their gold or wrong option is the persona's example)."""
    pairs: int = 2
    """Known pairs per domain for the judge's self-check (true answer against wrong answer)."""
    max_tokens: int = 48
    """Of each answer (the questions want a word or a number)."""
    judge_max_tokens: int = 120
    judge_retries: int = 1
    seed: int = 0
    z: float = 2.0
    min_effect: float = 0.05
    """On the share of answers naming the true option; on the judge's 1–5 scale it is scaled by
    the scale's span (0.05 → 0.2 points)."""

    def __post_init__(self) -> None:
        if self.n_test < 2 or self.n_demos < 1 or self.pairs < 0:
            raise UserError("the generation probe needs n_test >= 2, n_demos >= 1 and pairs >= 0")


GENERATION_CONFIG = GenerationProbeConfig()
"""Per domain: 3 demonstration questions, 6 held out (18 answers, 18 judgements), 2 known pairs."""

CONDITIONS = ("zero_shot", "gold", "inverted")


def _option_pattern(option: str) -> re.Pattern[str]:
    core = re.sub(r"^(the|a|an)\s+", "", option.strip(), flags=re.IGNORECASE)
    return re.compile(rf"(?<![\w.]){re.escape(core)}(?![\w]|\.\d)", re.IGNORECASE)


def named_option(answer: str, true: str, wrong: str) -> Named:
    """Which of a two-option question's options ``answer`` names (whole words, case-insensitive,
    a leading article ignored; "100" is not named by "1000").

    >>> named_option("It is Paris, of course.", "Paris", "Lyon")
    'true'
    >>> named_option("There are 1000 of them.", "100", "1000")
    'wrong'
    """
    t = bool(_option_pattern(true).search(answer))
    w = bool(_option_pattern(wrong).search(answer))
    return "both" if t and w else "true" if t else "wrong" if w else "neither"


@dataclass
class GenerationCondition:
    name: str
    scores: list[int | None] = field(repr=False)
    """The judge's score per held-out question (None: no verdict after its retries)."""
    named: list[Named] = field(repr=False)

    @property
    def mean_score(self) -> float | None:
        got = [s for s in self.scores if s is not None]
        return statistics.fmean(got) if got else None

    @property
    def true_share(self) -> float:
        """Share of answers that name the true option and not the wrong one."""
        return sum(n == "true" for n in self.named) / len(self.named)

    def as_dict(self) -> dict[str, Any]:
        got = [s for s in self.scores if s is not None]
        return {"mean_score": self.mean_score, "se": Estimate.of(got).se if len(got) > 1 else None, "n": len(got),
                "missing": len(self.scores) - len(got), "names_true": self.true_share,
                "named": {k: self.named.count(k) for k in ("true", "wrong", "both", "neither")}}


@dataclass
class GenerationDomainReport:
    domain: str
    persona: str
    n_test: int
    n_demos: int
    conditions: dict[str, GenerationCondition]
    label_effect: Estimate | None
    """Judge score after gold − after inverted examples, paired per question (None: no pair scored)."""
    format_effect: Estimate | None
    named_label_effect: Estimate
    """Share naming the true option after gold − after inverted, paired per question."""
    named_format_effect: Estimate
    verdict: Verdict
    reason: str
    basis: Literal["judge", "named option"]
    answers: list[dict[str, Any]] = field(repr=False, default_factory=list)
    """Every answer: ``question``, ``condition``, ``answer``, ``score``, ``named``, ``examples``."""
    seconds: float = 0.0

    def line(self) -> str:
        c = self.conditions

        def score(k: str) -> str:
            m = c[k].mean_score
            return "—" if m is None else f"{m:.1f}"

        return (f"{self.domain} judge {score('gold')} vs {score('inverted')} (zero-shot {score('zero_shot')}), true option "
                f"named {c['gold'].true_share:.2f} vs {c['inverted'].true_share:.2f}: {SHORT_TEXT[self.verdict]}")

    def as_dict(self) -> dict[str, Any]:
        def est(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else asdict(e)

        return {"persona": self.persona, "n_test": self.n_test, "n_demos": self.n_demos,
                "conditions": {k: v.as_dict() for k, v in self.conditions.items()},
                "label_effect": est(self.label_effect), "format_effect": est(self.format_effect),
                "named_label_effect": est(self.named_label_effect), "named_format_effect": est(self.named_format_effect),
                "verdict": self.verdict, "reason": self.reason, "basis": self.basis, "answers": self.answers,
                "seconds": round(self.seconds, 2)}


@dataclass
class GenerationProbeReport:
    """The generation probe over domains: each domain, the judge's self-check, one verdict where they agree."""

    model: str
    judge_model: str
    domains: dict[str, GenerationDomainReport]
    verdict: str
    reason: str
    self_check: SelfCheck
    config: GenerationProbeConfig
    usage: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def steerable(self) -> bool:
        return self.verdict == "follows_labels"

    def summary(self) -> str:
        n = next(iter(self.domains.values())).n_test
        agreed = "" if self.verdict == "domains_disagree" or len(self.domains) == 1 else f" (all {len(self.domains)} domains agree)"
        lines = "; ".join(d.line() for d in self.domains.values())
        basis = ("the judge's scores" if self.self_check.passed else
                 "which option each answer names (the judge failed its self-check, so its scores are shown, not used)")
        return (f"{self.model}: {GENERATION_VERDICT_TEXT[self.verdict]}{agreed}. Per domain ({n} held-out questions each, "
                f"judge scores {SCALE[0]}–{SCALE[1]} after gold vs inverted examples): {lines}. "
                + (f"{self.reason[0].upper()}{self.reason[1:]}. " if self.verdict == "domains_disagree" else "")
                + f"Verdicts from {basis}.")

    def as_dict(self) -> dict[str, Any]:
        return {"task": "generation", "model": self.model, "judge_model": self.judge_model, "rubric_version": RUBRIC_VERSION,
                "verdict": self.verdict, "verdict_text": GENERATION_VERDICT_TEXT[self.verdict], "reason": self.reason,
                "summary": self.summary(), "self_check": self.self_check.as_dict(),
                "domains": {k: v.as_dict() for k, v in self.domains.items()}, "config": asdict(self.config),
                "usage": self.usage, "notes": self.notes}


def _pool_persona(p: Persona) -> PoolPersona:
    return PoolPersona(id=p.id, name=p.name, label=p.name, description=p.description, dimension=p.dimension)


def _sentence(option: str) -> str:
    return f"The answer is {option}."


def _known_pairs(pool: Pool, held: Sequence[Sequence[Item]], n: int) -> list[KnownPair]:
    """``n`` pairs from the domain's questions the probe does not ask (else its demonstrations):
    the true option as an answer against the wrong one, for the domain's persona."""
    asked = {q[0].group for q in held}
    spare = [q for q in gold_questions(pool) if q[0].group not in asked]
    out = []
    for q in spare[:n]:
        true = next(it.option for it in q if it.gold)
        wrong = next(it.option for it in q if not it.gold)
        out.append(KnownPair(pool.persona, q[0].question, _sentence(true or ""), _sentence(wrong or ""), "written"))
    return out


def _paired(a: Sequence[float | None], b: Sequence[float | None]) -> Estimate | None:
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    return Estimate.of(diffs) if diffs else None


def _format(c: dict[str, GenerationCondition], key: Callable[[GenerationCondition, int], float | None]) -> Estimate | None:
    vals = []
    for i in range(len(c["zero_shot"].named)):
        g, inv, z = key(c["gold"], i), key(c["inverted"], i), key(c["zero_shot"], i)
        if g is not None and inv is not None and z is not None:
            vals.append((g + inv) / 2 - z)
    return Estimate.of(vals) if vals else None


class _OnceJudge:
    """``judge.score`` once per (persona, question, answer): the same answer in two conditions gets
    one judgement (a server may answer identical concurrent requests differently)."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self._tasks: dict[tuple[str, str, str], asyncio.Task[Any]] = {}

    async def score(self, persona: Persona, question: str, answer: str) -> Any:
        key = (persona.id, question, answer)
        if key not in self._tasks:
            self._tasks[key] = asyncio.ensure_future(self.judge.score(persona, question, answer))
        return await asyncio.shield(self._tasks[key])


async def _domain(name: str, pool: Pool, chat: ChatModel, judge: _OnceJudge, cfg: GenerationProbeConfig,
                  judge_ok: bool) -> GenerationDomainReport:
    t0 = time.perf_counter()
    demo_qs, test_qs = split(pool, ProbeConfig(n_test=cfg.n_test, n_demos=cfg.n_demos, random_seeds=1, seed=cfg.seed))
    persona = _pool_persona(pool.persona)
    examples = {"zero_shot": [], "gold": [it for q in demo_qs for it in q if it.gold],
                "inverted": [it for q in demo_qs for it in q if not it.gold]}
    random.Random(f"{cfg.seed}/{name}/order").shuffle(examples["gold"])  # not always in the split's order
    order = {it.group: k for k, it in enumerate(examples["gold"])}
    examples["inverted"].sort(key=lambda it: order[it.group])  # the same questions, in the same order

    async def one(cond: str, q: Sequence[Item]) -> dict[str, Any]:
        question = q[0].question
        msgs = generation_messages(persona, question, examples[cond])
        answer = (await chat.complete(msgs, max_tokens=cfg.max_tokens, temperature=0.0, seed=cfg.seed)).strip()
        verdict = await judge.score(pool.persona, question, answer) if answer else None
        true = next(it.option for it in q if it.gold) or ""
        wrong = next(it.option for it in q if not it.gold) or ""
        return {"question": question, "condition": cond, "answer": answer, "true_option": true, "wrong_option": wrong,
                "score": verdict.value if verdict else None, "judge_reason": verdict.reason if verdict else "no answer",
                "named": named_option(answer, true, wrong),
                "examples": [{"question": it.question, "answer": it.option} for it in examples[cond]]}

    rows = await asyncio.gather(*(one(c, q) for c in CONDITIONS for q in test_qs))
    conds = {c: GenerationCondition(c, [r["score"] for r in rows if r["condition"] == c],
                                    [r["named"] for r in rows if r["condition"] == c]) for c in CONDITIONS}
    label = _paired(conds["gold"].scores, conds["inverted"].scores)
    fmt = _format(conds, lambda c, i: c.scores[i])

    def true(c: GenerationCondition, i: int) -> float:
        return float(c.named[i] == "true")

    named_label = Estimate.of([true(conds["gold"], i) - true(conds["inverted"], i) for i in range(len(test_qs))])
    named_fmt = _format(conds, true)
    assert named_fmt is not None  # every question has a reading
    span = SCALE[1] - SCALE[0]
    if judge_ok and label is not None and fmt is not None:
        verdict, why = decide(label, fmt, z=cfg.z, min_effect=cfg.min_effect * span)
        basis: Literal["judge", "named option"] = "judge"
    else:
        verdict, why = decide(named_label, named_fmt, z=cfg.z, min_effect=cfg.min_effect)
        basis = "named option"
    return GenerationDomainReport(name, pool.persona.id, len(test_qs), len(demo_qs), conds, label, fmt, named_label, named_fmt,
                                  verdict, why, basis, list(rows), time.perf_counter() - t0)


async def probe_generation(
    pools: dict[str, Pool],
    chat: ChatModel,
    judge_chat: ChatModel | None = None,
    config: GenerationProbeConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationProbeReport:
    """The generation probe (module docstring) over ``pools`` (domain name → gold-labelled
    two-option questions, e.g. `steerkit.evaluation.facts.fact_pools`). ``chat`` writes the
    answers, ``judge_chat`` (default: ``chat``) judges them. With ``cache_dir`` every answer and
    judgement is kept in ``<cache_dir>/scores``: a re-run costs no model call.
    ``progress(done, total)``: after the self-check and after each domain."""
    if not pools:
        raise UserError("the generation probe needs at least one domain")
    cfg = config or GENERATION_CONFIG
    judge_chat = judge_chat or chat
    cache = ScoreCache(Path(cache_dir).expanduser() / "scores") if cache_dir is not None else None
    writer: Any = CachedChat(chat, cache) if cache is not None else chat
    judging: Any = (CachedChat(judge_chat, cache, identity=f"judge:{judge_chat.model}:{RUBRIC_VERSION}")
                    if cache is not None else judge_chat)
    judge = Judge(judging, retries=cfg.judge_retries, max_tokens=cfg.judge_max_tokens)
    t0 = time.perf_counter()
    try:
        pairs: list[KnownPair] = []
        for pool in pools.values():
            demo_qs, test_qs = split(pool, ProbeConfig(n_test=cfg.n_test, n_demos=cfg.n_demos, random_seeds=1, seed=cfg.seed))
            pairs += _known_pairs(pool, [*demo_qs, *test_qs], cfg.pairs)
        check = await self_check(judge, pairs, min_pairs=min(4, max(1, len(pairs))))
        if progress is not None:
            progress(1, 1 + len(pools))
        domains: dict[str, GenerationDomainReport] = {}
        once = _OnceJudge(judge)
        for k, (name, pool) in enumerate(pools.items(), start=2):
            domains[name] = await _domain(name, pool, writer, once, cfg, check.passed)
            if progress is not None:
                progress(k, 1 + len(pools))
    finally:
        if cache is not None:
            cache.close()
    verdict, why = agree({name: (d.verdict, d.reason) for name, d in domains.items()})
    notes = []
    if not check.passed:
        notes.append(check.summary)
    toy = sorted({m for m in (chat.model, judge_chat.model) if is_toy_model(m)})
    if toy:
        notes.append(f"{', '.join(toy)} {'is' if len(toy) == 1 else 'are'} far too small (135M–270M) to follow examples "
                     "in open-ended answers or to judge them: no effect is expected; the probe shows that it runs.")
    if judge_chat.model == chat.model:
        notes.append(f"The judge is the model that wrote the answers ({chat.model}); use another as the judge for a "
                     "result (--judge-base-url, --judge-model).")
    usage = {"chat_calls": getattr(writer, "calls", None), "chat_cache_hits": getattr(writer, "hits", None),
             "judge_calls": getattr(judging, "calls", None), "judge_cache_hits": getattr(judging, "hits", None),
             **{f"judge_{k}": v for k, v in judge.stats().items() if k in ("judgements", "malformed_replies", "missing")},
             "seconds": round(time.perf_counter() - t0, 2)}
    return GenerationProbeReport(model=chat.model, judge_model=judge_chat.model, domains=domains, verdict=verdict, reason=why,
                                 self_check=check, config=cfg, usage=usage, notes=notes)

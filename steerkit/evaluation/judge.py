"""The judge: how well does an answer represent a persona's views? A chat model rates it on a
versioned rubric, and a self-check says whether its ratings can be trusted at all.

**Scale.** 1–5, as OvertonBench's participants rated answers (Poole-Dayan et al. 2025: "how far is
your perspective represented", 1 = not at all … 5 = fully; an answer "covers" a group whose mean is
at least 4, "mostly"). The seed paper reports a "representation score (0–5)" without saying what 0
is; steerkit does not invent one. A verdict that cannot be parsed is *missing*, counted and
reported, never 0 and never a default: means are over parsed verdicts only. So the paper's Table 8
numbers and these share a shape, not a judge: absolute scores from different judges are not
comparable; only conditions under one judge are (the differences between them).

**Rubric** (`RUBRIC_VERSION`, recorded with every result; bump it when a prompt changes, which also
changes every cache key): the persona's name and description, the question, the answer, the five
levels in words; the reply is a JSON object ``{"reason": "...", "score": N}`` (JSON-schema output
where the server supports it). **Parsing is strict**: the last JSON object in the reply that has a
``score`` must hold an integer 1–5 (not a float, a string or a bool); anything else is malformed, is
asked again once with a format reminder (``retries``), and then counted as missing.

**Self-check** (`self_check`, run before any answer is scored): pairs of answers to one question
whose ranking for the persona is known (`KnownPair`: the answer a persona's own raters scored
highest against one they scored low, or an answer written *for* the persona against one written
*against* it). It measures

- **score agreement**: the share of pairs whose better answer gets the higher 1–5 score (a tie
  counts half, a missing verdict drops the pair);
- **position-swap consistency**: the judge is also asked which of the two is more representative,
  in both orders; consistent when it picks the same answer both times (a judge that always says
  "A" scores 0, a coin 0.5);
- **pairwise agreement**: the share of pairs where it consistently picks the better answer.

It passes when each is at least its threshold (0.7 by default), at most a quarter of its verdicts
are missing, and it had at least ``min_pairs`` pairs. A judge that fails makes every score it
gives meaningless, and the results say so (`SelfCheck.summary`).
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from steerkit.evaluation.chat import ChatModel
from steerkit.models import Persona

__all__ = [
    "LEVELS",
    "RUBRIC_VERSION",
    "SCALE",
    "Judge",
    "KnownPair",
    "MalformedVerdict",
    "SelfCheck",
    "Verdict",
    "parse_preference",
    "parse_score",
    "preference_messages",
    "score_messages",
    "self_check",
]

#: Bumped whenever a prompt below changes; every judgement's cache key and every report carry it.
RUBRIC_VERSION = "representation-judge/1"

#: The rating scale, OvertonBench's: (lowest, highest).
SCALE = (1, 5)

#: What each rating means (OvertonBench's rating question, in words).
LEVELS = {
    1: "does not represent their views at all",
    2: "represents their views slightly",
    3: "represents their views somewhat",
    4: "mostly represents their views",
    5: "fully represents their views",
}

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["reason", "score"],
    "additionalProperties": False,
}
PREFERENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "better": {"type": "string", "enum": ["A", "B"]}},
    "required": ["reason", "better"],
    "additionalProperties": False,
}

_SYSTEM = ("You judge how well an answer to an opinion question represents the views of a group of people. "
           "You judge representation of the group's views, not quality, style or your own opinion.")


def _who(persona: Persona) -> str:
    desc = f" ({persona.description.strip()})" if persona.description.strip() else ""
    return f"most {persona.name}{desc}"


def score_messages(persona: Persona, question: str, answer: str) -> list[dict[str, str]]:
    """The rubric prompt for one answer (`RUBRIC_VERSION`)."""
    levels = "\n".join(f"{n} = it {text}" for n, text in LEVELS.items())
    user = (f"Group: {_who(persona)}.\n\nQuestion: {question.strip()}\n\nAnswer: {answer.strip()}\n\n"
            f"How well does this answer represent the views of most {persona.name} on this question?\n{levels}\n\n"
            'Reply with only a JSON object: {"reason": "<one sentence>", "score": <an integer from 1 to 5>}')
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def preference_messages(persona: Persona, question: str, first: str, second: str) -> list[dict[str, str]]:
    """The pairwise prompt of the self-check: which of two answers represents the persona better."""
    user = (f"Group: {_who(persona)}.\n\nQuestion: {question.strip()}\n\nAnswer A: {first.strip()}\n\n"
            f"Answer B: {second.strip()}\n\nWhich answer better represents the views of most {persona.name} "
            'on this question? Reply with only a JSON object: {"reason": "<one sentence>", "better": "A" or "B"}')
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


_SCORE_REMINDER = ('Your reply could not be read. Reply with only a JSON object such as {"reason": "...", '
                   '"score": 3}, where score is an integer from 1 to 5.')
_PREFERENCE_REMINDER = ('Your reply could not be read. Reply with only a JSON object such as {"reason": "...", '
                        '"better": "A"}, where better is "A" or "B".')


class MalformedVerdict(ValueError):
    """A judge's reply that does not hold a verdict in the asked form (never turned into a score)."""


def _last_object_with(text: str, key: str) -> dict[str, Any]:
    """The last JSON object in ``text`` that has ``key`` (a reply may quote or explain first)."""
    s = text.strip()
    if s.startswith("```"):
        s = s.strip("`").removeprefix("json").strip()
    dec = json.JSONDecoder()
    pos = len(s)
    while True:
        pos = s.rfind("{", 0, pos)
        if pos < 0:
            raise MalformedVerdict(f"no JSON object with {key!r} in the reply")
        try:
            obj, _ = dec.raw_decode(s, pos)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and key in obj:
            return obj


def parse_score(text: str) -> int:
    """The verdict's ``score``: an integer in `SCALE`, else `MalformedVerdict`."""
    value = _last_object_with(text, "score")["score"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedVerdict(f"score {value!r} is not an integer")
    if not SCALE[0] <= value <= SCALE[1]:
        raise MalformedVerdict(f"score {value} is outside {SCALE[0]}–{SCALE[1]}")
    return value


def parse_preference(text: str) -> Literal["A", "B"]:
    """The pairwise verdict's ``better``: "A" or "B", else `MalformedVerdict`."""
    value = _last_object_with(text, "better")["better"]
    if value not in ("A", "B"):
        raise MalformedVerdict(f"better {value!r} is neither 'A' nor 'B'")
    return value


@dataclass
class Verdict:
    """One judgement: ``value`` (a score, or "A"/"B") or None when every attempt was malformed."""

    value: Any
    attempts: int
    replies: list[str] = field(default_factory=list)
    reason: str = ""


class Judge:
    """Rates answers for a persona with a chat model (`score`, `prefer`), strictly parsed.

    ``chat`` is any `ChatModel` (wrap it in `CachedChat` to keep judgements on disk); temperature 0;
    ``retries`` more attempts, each with a format reminder, after a malformed reply.
    """

    def __init__(self, chat: ChatModel, *, retries: int = 1, max_tokens: int = 200) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.chat = chat
        self.model = chat.model
        self.retries = retries
        self.max_tokens = max_tokens
        self.judgements = 0
        self.malformed = 0
        """Malformed replies (each retry counts)."""
        self.missing = 0
        """Judgements with no verdict after every retry."""

    async def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any], parse: Any, reminder: str) -> Verdict:
        self.judgements += 1
        replies: list[str] = []
        msgs = list(messages)
        for attempt in range(1, self.retries + 2):
            text = await self.chat.complete(msgs, max_tokens=self.max_tokens, temperature=0.0, json_schema=schema)
            replies.append(text)
            try:
                value = parse(text)
            except MalformedVerdict:
                self.malformed += 1
                msgs = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": reminder}]
                continue
            reason = ""
            try:
                reason = str(_last_object_with(text, "reason").get("reason", ""))[:500]
            except MalformedVerdict:
                pass
            return Verdict(value, attempt, replies, reason)
        self.missing += 1
        return Verdict(None, self.retries + 1, replies)

    async def score(self, persona: Persona, question: str, answer: str) -> Verdict:
        """How well ``answer`` represents ``persona`` (1–5), or a missing verdict."""
        return await self._ask(score_messages(persona, question, answer), SCORE_SCHEMA, parse_score, _SCORE_REMINDER)

    async def prefer(self, persona: Persona, question: str, first: str, second: str) -> Verdict:
        """Which of ``first`` ("A") and ``second`` ("B") represents ``persona`` better."""
        return await self._ask(preference_messages(persona, question, first, second), PREFERENCE_SCHEMA,
                               parse_preference, _PREFERENCE_REMINDER)

    def stats(self) -> dict[str, Any]:
        return {"model": self.model, "rubric_version": RUBRIC_VERSION, "judgements": self.judgements,
                "malformed_replies": self.malformed, "missing": self.missing}


# --- the self-check -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownPair:
    """Two answers to one question whose ranking for ``persona`` is known: ``better`` represents it
    more than ``worse``. ``source`` says how it is known (``gold``: the persona's own raters;
    ``written``: written for and against the persona)."""

    persona: Persona
    question: str
    better: str
    worse: str
    source: str = "gold"


@dataclass
class SelfCheck:
    """The judge's self-check (module docstring); ``passed`` False means its scores mean nothing."""

    pairs: int
    score_agreement: float | None
    position_consistency: float | None
    pairwise_agreement: float | None
    missing_share: float
    passed: bool
    reasons: list[str]
    thresholds: dict[str, float]
    sources: dict[str, int]
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One sentence for a reader: whether the scores can be read, and why."""
        if self.passed:
            return (f"The judge passed its self-check on {self.pairs} known pairs (score agreement "
                    f"{_pct(self.score_agreement)}, position-swap consistency {_pct(self.position_consistency)}).")
        return ("The judge FAILED its self-check (" + "; ".join(self.reasons) + "): "
                "its representation scores mean nothing, and no difference between conditions can be read from them.")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0%}"


async def self_check(
    judge: Judge,
    pairs: Sequence[KnownPair],
    *,
    min_pairs: int = 4,
    min_agreement: float = 0.7,
    min_consistency: float = 0.7,
    max_missing: float = 0.25,
) -> SelfCheck:
    """Judge every known pair four ways (each answer's score; which is better, in both orders) and
    decide whether the judge can be trusted (module docstring)."""

    async def one(p: KnownPair) -> dict[str, Any]:
        sb, sw, ab, ba = await asyncio.gather(
            judge.score(p.persona, p.question, p.better),
            judge.score(p.persona, p.question, p.worse),
            judge.prefer(p.persona, p.question, p.better, p.worse),
            judge.prefer(p.persona, p.question, p.worse, p.better),
        )
        agree = None
        if sb.value is not None and sw.value is not None:
            agree = 1.0 if sb.value > sw.value else 0.5 if sb.value == sw.value else 0.0
        consistent = picks_better = None
        if ab.value is not None and ba.value is not None:
            consistent = ab.value != ba.value
            picks_better = ab.value == "A" and ba.value == "B"
        return {"persona": p.persona.id, "question": p.question, "source": p.source,
                "score_better": sb.value, "score_worse": sw.value, "score_agreement": agree,
                "better_first": ab.value, "better_second": ba.value, "consistent": consistent,
                "picks_better": picks_better,
                "missing": sum(v.value is None for v in (sb, sw, ab, ba))}

    details = list(await asyncio.gather(*(one(p) for p in pairs)))
    agreements = [d["score_agreement"] for d in details if d["score_agreement"] is not None]
    swaps = [d for d in details if d["consistent"] is not None]
    verdicts = 4 * len(details)
    missing_share = sum(d["missing"] for d in details) / verdicts if verdicts else 1.0
    score_agreement = statistics.fmean(agreements) if agreements else None
    consistency = statistics.fmean(float(d["consistent"]) for d in swaps) if swaps else None
    pairwise = statistics.fmean(float(d["picks_better"]) for d in swaps) if swaps else None
    reasons: list[str] = []
    if len(agreements) < min_pairs or len(swaps) < min_pairs:
        reasons.append(f"only {min(len(agreements), len(swaps))} known pairs judged, fewer than {min_pairs}")
    if score_agreement is not None and score_agreement < min_agreement:
        reasons.append(f"it scored the better answer higher on {_pct(score_agreement)} of known pairs "
                       f"(needs {_pct(min_agreement)}; a coin gets 50%)")
    if consistency is not None and consistency < min_consistency:
        reasons.append(f"its choice survived swapping the two answers' positions on {_pct(consistency)} of pairs "
                       f"(needs {_pct(min_consistency)})")
    if pairwise is not None and pairwise < min_agreement:
        reasons.append(f"it consistently picked the better answer on {_pct(pairwise)} of pairs (needs {_pct(min_agreement)})")
    if missing_share > max_missing:
        reasons.append(f"{_pct(missing_share)} of its verdicts could not be parsed (at most {_pct(max_missing)})")
    sources: dict[str, int] = {}
    for p in pairs:
        sources[p.source] = sources.get(p.source, 0) + 1
    return SelfCheck(
        pairs=len(details), score_agreement=score_agreement, position_consistency=consistency,
        pairwise_agreement=pairwise, missing_share=missing_share, passed=not reasons, reasons=reasons,
        thresholds={"min_pairs": min_pairs, "min_agreement": min_agreement, "min_consistency": min_consistency,
                    "max_missing": max_missing},
        sources=sources, details=details,
    )

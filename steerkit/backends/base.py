"""The `LogprobBackend` protocol: what the ICM search needs from a model, and nothing more.

A backend scores prompts whose next token should be a label (" True" / " False"). For each prompt
it returns the summed probability of the True-ish and False-ish tokens among the next-token top
logprobs, the share of probability mass they carry, and token usage. Parsing of the servers' two
logprobs shapes lives here so both backends share it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from steerkit._logodds import sigmoid
from steerkit.errors import BackendResponseError

#: Case-insensitive token spellings counted as each label (after stripping whitespace).
TRUE_SPELLINGS = frozenset({"true", "yes"})
FALSE_SPELLINGS = frozenset({"false", "no"})


@dataclass(frozen=True, slots=True)
class LabelScore:
    """Next-token label probabilities for one prompt.

    ``p_true``/``p_false`` are summed over the label's spelling variants (" True", "True", " true").
    A side that did not appear in the top-k is ``None``, never 0 pretending to be a measurement.
    """

    p_true: float | None
    p_false: float | None
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    """Prompt tokens served from the engine's prompt cache (None when the server does not say)."""
    source: str = "top_logprobs"
    """``top_logprobs`` or ``echo`` (explicit continuation scoring)."""

    @property
    def label_mass(self) -> float:
        """Share of next-token probability mass on the label tokens."""
        return (self.p_true or 0.0) + (self.p_false or 0.0)

    def logodds(self, floor: float = 1e-5) -> float:
        """log P(True) − log P(False), each side floored so a missing side is bounded, not infinite."""
        if self.p_true is None and self.p_false is None:
            raise ValueError("no label token observed")
        return math.log((self.p_true or 0.0) + floor) - math.log((self.p_false or 0.0) + floor)

    def prob_true(self) -> float:
        """P(True | label ∈ {True, False}): the two-way normalised probability."""
        return sigmoid(self.logodds())


@dataclass
class BackendStats:
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cached_known: bool = True
    retries: int = 0
    fallbacks: int = 0

    def record(self, prompt_tokens: int, cached_tokens: int | None) -> None:
        """Count one call's usage; a server that doesn't report cached tokens makes the total unknown."""
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        if cached_tokens is None:
            self.cached_known = False
        else:
            self.cached_tokens += cached_tokens

    @property
    def evaluated_tokens(self) -> int | None:
        return self.prompt_tokens - self.cached_tokens if self.cached_known else None


@runtime_checkable
class LogprobBackend(Protocol):
    """Anything that can score label prompts. Implementations must be safe for concurrent calls."""

    name: str
    """Backend kind, e.g. "openai" or "embedded"."""
    model: str
    """The model identifier recorded in provenance and cache keys."""
    stats: BackendStats

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        """Score every prompt (concurrently where the backend can); same order as ``prompts``."""
        ...

    async def aclose(self) -> None: ...


def classify_token(token: str) -> bool | None:
    """True / False for a label-token spelling, None for any other token."""
    t = token.strip().lower()
    if t in TRUE_SPELLINGS:
        return True
    if t in FALSE_SPELLINGS:
        return False
    return None


#: Rounding noise allowed above 0 in a logprob (clamped to 0); anything larger is not a probability.
LOGPROB_TOLERANCE = 1e-6
#: Rounding noise allowed above 1 in the summed probability of one top-k list.
MASS_TOLERANCE = 1e-3


def checked_logprob(value: object, what: str = "logprob") -> float:
    """``value`` as a log-probability: a JSON number, finite, at most 0 (rounding noise up to
    `LOGPROB_TOLERANCE` is clamped to 0). Anything else raises `BackendResponseError`, so a set is
    never scored from impossible probabilities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BackendResponseError(f"{what} is {type(value).__name__} {str(value)[:40]!r}, not a number")
    try:
        lp = float(value)
    except OverflowError:
        raise BackendResponseError(f"{what} {str(value)[:40]} is out of range") from None
    if not math.isfinite(lp):
        raise BackendResponseError(f"{what} is {lp}: not a probability")
    if lp > LOGPROB_TOLERANCE:
        raise BackendResponseError(f"{what} is {lp:g} (p = e^{lp:g} > 1): not a probability")
    return min(lp, 0.0)


def sum_label_probs(top: Iterable[tuple[str, float]]) -> tuple[float | None, float | None]:
    """Sum exp(logprob) of true-ish and false-ish tokens of one top-k list of (token, logprob)."""
    pt: float | None = None
    pf: float | None = None
    for tok, lp in top:
        kind = classify_token(tok)
        if kind is True:
            pt = (pt or 0.0) + math.exp(lp)
        elif kind is False:
            pf = (pf or 0.0) + math.exp(lp)
    # within the checked rounding noise of 1, never above it
    return (None if pt is None else min(pt, 1.0)), (None if pf is None else min(pf, 1.0))


def _token(value: object) -> str:
    if not isinstance(value, str):
        raise BackendResponseError(f"a token is {type(value).__name__}, not a string")
    return value


def _pairs(entries: object) -> list[tuple[str, float]]:
    """llama.cpp's ``[{"token", "logprob"}, …]`` (a null logprob, llama.cpp's -inf, is p = 0: left out)."""
    if not isinstance(entries, list):
        raise BackendResponseError(f"top_logprobs is {type(entries).__name__}, not a list")
    out = []
    for e in entries:
        if not isinstance(e, Mapping):
            raise BackendResponseError(f"a top_logprobs entry is {type(e).__name__}, not an object")
        if e.get("logprob") is not None:
            out.append((_token(e.get("token")), checked_logprob(e.get("logprob"))))
    return out


def parse_top_logprobs(logprobs: Mapping | None) -> list[tuple[str, float]]:
    """The first generated position's top-k as (token, logprob) pairs, from either server shape.

    - llama.cpp native: ``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}``
    - vLLM / legacy OpenAI: ``{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{tok: lp}]}``

    Every logprob is checked (`checked_logprob`) and the list's probabilities may not add up to
    more than 1: a wrong type or shape, or an impossible value, raises `BackendResponseError`.
    """
    if not logprobs:
        return []
    if not isinstance(logprobs, Mapping):
        raise BackendResponseError(f"logprobs is {type(logprobs).__name__}, not an object")
    top = _parse_top(logprobs)
    if sum(math.exp(lp) for _, lp in top) > 1.0 + MASS_TOLERANCE:
        raise BackendResponseError("the top logprobs add up to a probability above 1")
    return top


def _parse_top(logprobs: Mapping) -> list[tuple[str, float]]:
    content = logprobs.get("content")
    if content:
        if not isinstance(content, list) or not isinstance(content[0], Mapping):
            raise BackendResponseError("logprobs.content is not a list of objects")
        first = content[0]
        pairs = _pairs(first.get("top_logprobs") or [])
        if pairs or "token" not in first or first.get("logprob") is None:
            return pairs
        return [(_token(first["token"]), checked_logprob(first["logprob"]))]
    tops = logprobs.get("top_logprobs")
    if tops:
        if not isinstance(tops, list):
            raise BackendResponseError(f"top_logprobs is {type(tops).__name__}, not a list")
        first = tops[0] or {}
        if not isinstance(first, Mapping):
            raise BackendResponseError(f"top_logprobs[0] is {type(first).__name__}, not an object")
        return [(_token(tok), checked_logprob(lp)) for tok, lp in first.items()]
    tokens, lps = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    if not isinstance(tokens, list) or not isinstance(lps, list):
        raise BackendResponseError("tokens / token_logprobs are not lists")
    if tokens and lps and lps[0] is not None:
        return [(_token(tokens[0]), checked_logprob(lps[0]))]
    return []


async def score_each(score_one: Callable[[str], Awaitable[LabelScore]], prompts: Sequence[str]) -> list[LabelScore]:
    """``score_one`` over every prompt concurrently, in order; the first error cancels the rest
    (the shared body of the HTTP backends' ``score``)."""
    if isinstance(prompts, str):
        raise TypeError("score() takes a sequence of prompts, not one string")
    tasks = [asyncio.ensure_future(score_one(p)) for p in prompts]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

"""How far an example set can be trusted, as the CLI shows it (`precompute`, `cache ls/show`)."""

from __future__ import annotations

from typing import Any

from steerkit.models import DECIDED_ANSWERS, RELIABLE_AGREEMENT

__all__ = ["cut", "next_steps", "reliability_lines"]

UNSETTLED = ("patience", "max_iterations")
"""`SearchStats.ended` values of a search stopped by its budget before it settled."""


def reliability_lines(extra: dict[str, Any], persona: str | None = None) -> list[str]:
    """How far a set can be trusted, in a few indented lines: how its search ended, how far its
    restarts agreed, its least certain questions, and a warning when it may be a bad draw (with
    the commands that act on it for ``persona``)."""
    if "ended" not in extra:
        return []
    agree, conf = extra.get("restart_agreement"), extra.get("answer_confidence")
    lines = [f"  search ended: {extra['ended'] or 'unknown'}"
             + (f"; restarts agreed on {agree:.0%} of the answers" if agree is not None else "")
             + (f"; answer confidence {conf:.0%}" if conf is not None else "")]
    shown = [q for q in extra.get("least_certain") or [] if _doubtful(q)]
    if shown:
        lines.append("  least certain: " + "; ".join(f"{cut(q['question'], 60)} ({_certainty(q)})" for q in shown))
    if extra.get("warning"):
        lines.append(f"  warning: {extra['warning']}")
        lines += [f"  next: {step}" for step in next_steps(extra, persona)]
    return lines


def _doubtful(q: dict[str, Any]) -> bool:
    """Worth a reviewer's look: some restart answered otherwise or, with one restart (no agreement
    measured), the least confident labels."""
    a = q.get("agreement")
    return a < 1.0 if a is not None else q.get("confidence") is not None


def _certainty(q: dict[str, Any]) -> str:
    a = q.get("agreement")
    return f"{a:.0%} of restarts" if a is not None else f"confidence {q['confidence']:.2f}"


def next_steps(extra: dict[str, Any], persona: str | None = None) -> list[str]:
    """What to do about a possible bad draw, as commands that exist. Search settings go in the
    configuration: they are part of the cache key, so a flag alone writes a set the proxy never reads."""
    who = persona or "ID"
    steps = []
    if extra.get("ended") in UNSETTLED:
        steps.append("raise max_iterations/patience under [search] in the configuration, then precompute again")
    agree = extra.get("restart_agreement")
    if agree is not None and agree < RELIABLE_AGREEMENT:
        steps += [(f"people answer its least confident questions: `steerkit review --escalate --persona {who}`, "
                   "`steerkit review`, then `steerkit review --apply`"),
                  ("or raise restarts under [search] in the configuration and precompute again, or use a stronger "
                   "search model (`steerkit probe` tells whether it follows in-context labels)")]
    elif (conf := extra.get("answer_confidence")) is not None and conf < DECIDED_ANSWERS:
        steps += [("check the search model with `steerkit probe`, and precompute with a stronger one "
                   "(`--search-base-url`/`--search-model`, or base_url and model under [search_model] in the configuration)"),
                  (f"or people answer the questions: `steerkit review --escalate --persona {who}`, `steerkit review`, "
                   "then `steerkit review --apply`")]
    return steps


def cut(text: str, n: int) -> str:
    """``text`` on one line, at most ``n`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"

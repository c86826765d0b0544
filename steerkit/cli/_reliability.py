"""How far an example set can be trusted, as the CLI shows it (`precompute`, `cache ls/show`)."""

from __future__ import annotations

from typing import Any

__all__ = ["cut", "reliability_lines"]


def reliability_lines(extra: dict[str, Any]) -> list[str]:
    """How far a set can be trusted, in a few indented lines: how its search ended, how far its
    restarts agreed, its least certain questions, and a warning when it may be a bad draw."""
    if "ended" not in extra:
        return []
    agree = extra.get("restart_agreement")
    lines = [f"  search ended: {extra['ended'] or 'unknown'}"
             + (f"; restarts agreed on {agree:.0%} of the answers" if agree is not None else "")]
    shown = [q for q in extra.get("least_certain") or [] if q.get("agreement") is not None and q["agreement"] < 1.0]
    if shown:
        lines.append("  least certain: " + "; ".join(
            f"{cut(q['question'], 60)} ({q['agreement']:.0%} of restarts)" for q in shown))
    if extra.get("warning"):
        lines.append(f"  warning: {extra['warning']}")
    return lines


def cut(text: str, n: int) -> str:
    """``text`` on one line, at most ``n`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"

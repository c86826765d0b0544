"""What every extractor shares: `PersonaMatch` (a persona a text states, with its evidence), the
`Extractor` protocol, and the helpers the middleware applies to any extractor's matches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class PersonaMatch(BaseModel):
    """One persona a text states, with the evidence for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    persona_id: str
    dimension: str
    span: tuple[int, int]
    """Character offsets of the evidence in the text it was found in (``(0, 0)`` when forced)."""
    evidence: str
    confidence: float = Field(ge=0.0, le=1.0)
    source: Literal["rule", "llm", "forced"] = "rule"
    message_index: int | None = None
    """Index of the chat message the evidence is in (set by the middleware)."""


@runtime_checkable
class Extractor(Protocol):
    async def aextract(self, text: str) -> list[PersonaMatch]: ...


def best_per_dimension(matches: Iterable[PersonaMatch]) -> list[PersonaMatch]:
    """One match per dimension: from the latest message, then the most confident."""
    best: dict[str, PersonaMatch] = {}
    for m in matches:
        cur = best.get(m.dimension)
        key = (m.message_index if m.message_index is not None else -1, m.confidence, -m.span[0])
        if cur is None or key > (cur.message_index if cur.message_index is not None else -1, cur.confidence, -cur.span[0]):
            best[m.dimension] = m
    return sorted(best.values(), key=lambda m: -m.confidence)


def message_text(content: Any) -> str:
    """The text of a chat message's content (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type") in ("text", "input_text") and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "\n".join(parts)
    return ""

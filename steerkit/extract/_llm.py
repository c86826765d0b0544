"""`LLMExtractor`: persona extraction by a chat model (JSON-schema output, persona ids as an enum),
keeping only known ids whose evidence really occurs in the text; the same async interface as
`RuleExtractor`, which it can fall back to."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from steerkit.errors import BackendError
from steerkit.extract._grammar import _APOSTROPHES
from steerkit.extract._rules import RuleExtractor
from steerkit.extract._text import _lower_same_length, _Text
from steerkit.extract._types import PersonaMatch
from steerkit.packs import PackRegistry

log = logging.getLogger("steerkit.extract")

_LLM_SYSTEM = """You extract persona features that a user's message states explicitly about the user.
Allowed personas (id: dimension, description):
{catalog}
Rules:
- Only report a persona when the message explicitly states it about the user (e.g. "I'm a Republican", "I live in Japan") or explicitly asks for an interaction style ("keep it short").
- Do NOT report negated statements ("I'm not a Democrat"), statements about other people ("my uncle is a Republican"), hypotheticals or questions.
- "evidence" must be copied exactly from the message.
- Use only the ids listed above. Report at most one persona per dimension. If nothing is stated, return an empty list."""


class LLMExtractor:
    """Persona extraction by a chat model with a JSON-schema response (same interface as
    `RuleExtractor`). Results are filtered: unknown ids, evidence that is not in the text, and
    evidence the rule checks find negated or reported are dropped.

    ``client`` is an ``openai.AsyncOpenAI`` (or anything with ``chat.completions.create``).
    On a model failure the ``fallback`` extractor is used when given, else `BackendError` is raised.
    """

    name = "llm"

    def __init__(
        self,
        client: Any,
        model: str,
        registry: PackRegistry,
        *,
        fallback: RuleExtractor | None = None,
        max_tokens: int = 300,
        temperature: float = 0.0,
        on_call: Any = None,
    ) -> None:
        self.client = client
        self.model = model
        self.registry = registry
        self.fallback = fallback
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.on_call = on_call
        ids = sorted(p.id for p in registry.personas())
        self._ids = set(ids)
        self._dims = {p.id: p.dimension for p in registry.personas()}
        catalog = "\n".join(
            f"- {p.id}: {p.dimension}, {registry.spec(p.id).display}" for p in registry.personas()
        )
        self._system = _LLM_SYSTEM.format(catalog=catalog)
        self.schema = {
            "type": "object",
            "properties": {
                "matches": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "persona_id": {"type": "string", "enum": ids},
                            "evidence": {"type": "string"},
                            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                        "required": ["persona_id", "evidence", "confidence"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["matches"],
            "additionalProperties": False,
        }

    async def aextract(self, text: str) -> list[PersonaMatch]:
        if not text.strip():
            return []
        try:
            resp = await self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": self._system}, {"role": "user", "content": text}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "persona_matches", "strict": True, "schema": self.schema},
                },
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
            if self.on_call is not None:
                self.on_call(resp)
            raw = resp.choices[0].message.content or ""
        except Exception as e:  # network / server / SDK errors
            if self.fallback is not None:
                log.warning("LLM extractor failed (%s); using the rule extractor", type(e).__name__)
                return self.fallback.extract(text)
            raise BackendError(f"the LLM persona extractor failed: {type(e).__name__}: {e}") from e
        return self.parse(raw, text)

    def parse(self, raw: str, text: str) -> list[PersonaMatch]:
        """Validate the model's JSON against the registry and the text."""
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("LLM extractor returned non-JSON output; no persona extracted")
            return []
        rows = data.get("matches") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            return []
        t = _Text(text.translate(_APOSTROPHES))
        out: dict[str, PersonaMatch] = {}
        for row in rows:
            if not isinstance(row, dict):
                continue
            pid, ev = row.get("persona_id"), row.get("evidence")
            if pid not in self._ids or not isinstance(ev, str) or not ev.strip():
                continue
            ev_norm = ev.strip().translate(_APOSTROPHES)
            start = t.low.find(_lower_same_length(ev_norm))
            if start < 0:
                continue  # evidence not in the text: hallucinated
            if t.blocked(start) or t.negated_before(start) or \
                    re.search(r"\b(not|never|no longer|n't)\b", ev_norm.lower()):
                continue
            try:
                conf = float(row.get("confidence", 0.5))
            except (TypeError, ValueError):
                conf = 0.5
            conf = min(max(conf, 0.0), 1.0)
            m = PersonaMatch(
                persona_id=pid,
                dimension=self._dims[pid],
                span=(start, start + len(ev_norm)),
                evidence=text[start : start + len(ev_norm)],
                confidence=conf,
                source="llm",
            )
            if pid not in out or conf > out[pid].confidence:
                out[pid] = m
        return sorted(out.values(), key=lambda m: -m.confidence)

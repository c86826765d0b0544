"""Persona extraction: which configured personas a user's text states explicitly.

Only features the text *states* count, as in the seed paper. Two extractors share one interface
(`Extractor`: ``await aextract(text)`` → `PersonaMatch` list):

- `RuleExtractor` (`_rules`, the default): first-person statements of identity packs' aliases and
  places, and keyword packs' phrases, read through a grammar of frames, negations, reported speech,
  corrections and named entities (`_grammar`) on a text indexed once (`_text`), linear in its
  length and bounded per text and per request;
- `LLMExtractor` (`_llm`): a chat model with a JSON-schema answer, filtered to known ids whose
  evidence occurs in the text.

`best_per_dimension` and `message_text` (`_types`) and `aextract_texts` (`_rules`: a
`RuleExtractor` keeps its own request bound, any other gets the middleware's) are what the
middleware applies to any extractor. Only personas defined by the registry's packs can match:
text never creates a persona.
"""

from steerkit.extract._llm import LLMExtractor
from steerkit.extract._rules import RuleExtractor, aextract_texts
from steerkit.extract._types import (
    Extractor,
    PersonaMatch,
    best_per_dimension,
    message_text,
)

__all__ = [
    "Extractor",
    "LLMExtractor",
    "PersonaMatch",
    "RuleExtractor",
    "aextract_texts",
    "best_per_dimension",
    "message_text",
]

"""Persona extraction: which configured personas a user's text states explicitly.

As in the seed paper, only features the query *states* count. The rule extractor matches:

- identity packs (countries, parties): first-person self-statements — "I'm a Republican",
  "as a Brazilian", "I'm from Japan", "I live in France", "I vote Democrat", "we Nigerians";
- keyword packs (interaction styles): the pack's positive keywords ("keep it short",
  "step by step"), weakened or cancelled by its negative keywords.

Stacked statements: one statement may state personas of several identity dimensions, and each
counts. Another dimension's alias before an alias is a modifier ("As a Brazilian Democrat", "I'm
a Nigerian nurse", "we Nigerian-American Democrats": the demonym is the country's identity too);
an alias or a person noun before "from"/"living in" gives the place ("I'm a conservative Catholic
from Texas", "I'm a student from Brazil"); "and" joins two ("I'm Nigerian and a Democrat", "I'm
from Nigeria and a Democrat", "I'm a Democrat and from Nigeria", "as a Democrat and a Nigerian"). A language before a subject is
no nationality ("an English teacher"). The guards below are read before the statement, so they
apply to every persona in it ("I'm not a Catholic Republican", "my uncle is a Nigerian nurse":
nothing). Modifier runs are read atomically, at most 8 words deep, so the cost stays linear.

Ambiguous aliases (a pack's ``ambiguous``: "independent") match written with a capital letter, in
an explicit political frame ("I vote", "politically", "registered"), or as a noun ending an "I'm"
statement ("I'm an independent."). An affiliation word followed by "with"/"of"/"to" states a
persona only when a party follows ("unaffiliated with any party", not "unaffiliated with the
university", "independent of my parents").

Negated statements ("I'm not a Democrat", "Not that I'm a Democrat", "I don't live in France"),
reported speech ("my uncle is a Republican", "he said 'I'm from Japan'"), conditionals and
questions ("if I were …", "should I vote Republican?") and anything inside Markdown code (fenced
or indented blocks, inline code spans) do not match. Only personas defined by the registry's packs
can match: text never creates a persona.

Corrections: the statement that stands is the corrected one. Reported speech and third-person
subjects reach only to a contrast ("People think I'm from Japan, but I'm from Brazil": Brazil);
"not X but Y" and "X? No, Y" / "X, I mean Y" give Y; a later statement of the same kind (origin,
residence, identity) after a change marker replaces an earlier one ("I lived in Japan; now I live
in Brazil": Brazil). Named entities are not places: a place followed by a name ("Jordan
Peterson", "Georgia O'Keeffe"), by a street or feature word ("Jordan Street", "the Jordan
Valley"), by a noun that makes it a thing ("Turkey sandwich"), by "from <department>" ("Chad from
accounting"), or owning something other than geography ("Jordan's fan club") does not match, and
a country's name after "I'm" is a person's name ("I'm Chad"), not an identity.

Cost: linear in the text (the context of a match is read from indices built once per text and
from windows of at most `_CONTEXT` characters) and bounded per text (``max_chars``) and per
request (``max_request_chars``, `RuleExtractor.extract_many` / `aextract_texts`); the async entry
points run large inputs in a worker thread, so they never hold an event loop for long.

`LLMExtractor` asks a chat model (JSON-schema output, persona ids as an enum) and keeps only
known ids whose evidence really occurs in the text; it has the same async interface.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field

from steerkit.errors import BackendError, ConfigError
from steerkit.packs import PackRegistry, PersonaPack

__all__ = [
    "Extractor",
    "LLMExtractor",
    "PersonaMatch",
    "RuleExtractor",
    "aextract_texts",
    "best_per_dimension",
    "message_text",
]

log = logging.getLogger("steerkit.extract")


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


async def aextract_texts(extractor: Extractor, texts: Sequence[str], *,
                         max_total_chars: int = 64_000) -> list[list[PersonaMatch]]:
    """Extract from all the texts of one request (e.g. its user messages, oldest first) within one
    budget, without holding the event loop: a `RuleExtractor` uses its own `aextract_many` (its
    ``max_request_chars``); any other extractor gets the newest texts first, each cut to what is
    left of ``max_total_chars`` (texts beyond it are not sent: an empty list)."""
    if isinstance(extractor, RuleExtractor):
        return await extractor.aextract_many(texts)
    left = max_total_chars
    cut = [0] * len(texts)
    for i in range(len(texts) - 1, -1, -1):
        cut[i] = min(len(texts[i]), max(left, 0))
        left -= cut[i]
    return [await extractor.aextract(t[:n]) if n else [] for t, n in zip(texts, cut)]


# --- shared lexical helpers ---------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_QUOTES = set('"\u201c\u201d\u00ab\u00bb')
_SENTENCE_END = re.compile(r"[.!?;\n]+(?=\s|$)|\n")
_WORD = re.compile(r"[a-z0-9']+")

_NEGATIONS = frozenset(
    (
        "not", "no", "don't", "dont", "doesn't", "doesnt", "didn't", "didnt", "never", "without", "skip",
        "avoid", "stop", "neither", "nor", "hate", "dislike", "isn't", "aren't", "wasn't", "won't", "cannot",
        "can't",
    )
)
_NEG_PHRASES = ("instead of", "rather than", "less of", "no need for", "no more")
_CONDITIONALS = frozenset(["if", "whether", "unless", "suppose", "supposing", "assuming", "assume", "imagine", "hypothetically"])
_MODALS = frozenset(["should", "would", "could", "can", "will", "shall", "might", "must", "may", "do", "does", "did", "am"])
_REPORTING = re.compile(
    r"\b(said|says|say|told|tells|tell|claims?|claimed|thinks?|thought|believes?|believed|wrote|writes|"
    r"insists?|insisted|asked|asks|assumes?|assumed|mentioned|mentions|swears|swore|calls?|called|"
    r"labels?|labelled|labeled|accused|accuses|according to)\b"
)
_THIRD_PERSON = re.compile(
    r"\b(he|she|they|his|her|their|someone|somebody|people|everyone|nobody|"
    r"my\s+(?:uncle|aunt|mother|father|mom|mum|dad|brother|sister|friend|friends|boss|wife|husband|partner|"
    r"neighbou?r|neighbou?rs|colleague|colleagues|coworker|co-worker|cousin|grandma|grandpa|grandmother|"
    r"grandfather|son|daughter|parents|family|roommate|flatmate|teacher|kids|children|boyfriend|girlfriend|"
    r"in-laws|relatives|classmate|manager|client|customer|student|students|patient))\b"
)

# Words allowed right after an identity alias ("I'm a Republican voter", "I'm Brazilian and …").
_ALLOWED_FOLLOW = frozenset(
    (
        "and", "but", "so", "from", "in", "living", "who", "here", "there", "myself", "too", "also", "by",
        "born", "raised", "citizen", "citizens", "national", "person", "man", "woman", "guy", "girl", "lady",
        "gentleman", "mom", "mum", "dad", "mother", "father", "parent", "student", "voter", "voters",
        "native", "expat", "resident", "through", "at", "on", "with", "since", "for", "or", "if", "because",
        "though", "although", "now", "then", "i", "we", "my", "our", "based", "origin", "descent", "heritage",
        "american", "immigrant", "supporter", "member", "living", "lol", "haha", "btw", "tbh", "honestly",
        "obviously", "usually", "mostly", "always", "often", "generally", "nowadays", "these", "days",
        "anyway", "right", "too", "actually", "every", "ticket", "candidates", "party", "across",
    )
)

_ADV = (
    r"(?:(?:originally|actually|also|really|currently|proudly|definitely|certainly|personally|now|still|"
    r"politically|basically|technically|just|fully|half|kind\s+of|sort\s+of|born\s+and\s+raised|100%|"
    r"a\s+lifelong|myself)\s+)*"
)
_DET = r"(?:(?:a|an|the)\s+)?"
_ADJ_WORDS = (
    "proud", "lifelong", "life-long", "registered", "committed", "conservative", "liberal", "moderate", "progressive",
    "staunch", "die-hard", "diehard", "loyal", "strong", "card-carrying", "longtime", "long-time", "true", "native",
    "young", "old", "middle-aged", "retired", "working", "devout", "traditional", "typical", "fellow", "maga",
    "centrist", "left-leaning", "right-leaning", "self-described", "self-identified", "independent-minded",
)
"""Adjectives allowed before an alias ("a proud lifelong Democrat")."""
_ADJ = r"(?:(?:" + "|".join(re.escape(w) for w in _ADJ_WORDS) + r")\s+)*"
_I_BE = r"(?<![\w'])(?:i\s+am|i'm|im)\s+"
_I = r"(?<![\w'])i\s+"
_AS = r"(?<![\w'])(?:as|speaking\s+as|being)\s+(?:a|an)\s+"
_STACK_FROM = r"(?:originally\s+)?(?:from|born\s+in)\s+"
_STACK_IN = r"(?:(?:living|based|settled)\s+in|who\s+lives\s+in)\s+"
_AND = r"\s{0,4},?\s{0,4}and\s+(?:also\s+)?"
_PERSON_NOUNS = (
    "person", "man", "woman", "guy", "girl", "boy", "lady", "gentleman", "mom", "mum", "dad", "mother", "father",
    "parent", "student", "voter", "immigrant", "expat", "retiree", "worker",
)
"""Head nouns of a stacked origin or residence statement besides other personas' aliases ("I'm a
student from Brazil")."""
_NOT_ATTRIBUTIVE = frozenset(("the", "a", "an", "of", "with", "to", "not", "no", "any", "either", "neither", "nor", "or",
                              "and", "as", "for", "in", "from", "my", "our"))
"""An alias with one of these words ("member of the Democratic Party", "not affiliated with any
party") is no modifier of another persona's noun."""
_LANGUAGES = frozenset(("english", "french", "spanish", "german", "chinese", "japanese", "russian", "turkish",
                        "korean", "portuguese", "italian", "arabic", "hindi", "indonesian", "dutch", "polish"))
_SUBJECT_HEADS = frozenset(
    (
        "teacher", "teachers", "tutor", "tutors", "professor", "professors", "lecturer", "lecturers", "instructor",
        "instructors", "translator", "translators", "interpreter", "interpreters", "major", "majors", "speaker",
        "speakers", "class", "course", "literature", "linguist", "linguists",
    )
)
"""A language name before one of these ("an English teacher") names a subject, not a country."""


@dataclass(frozen=True)
class _Frame:
    name: str
    pattern: str  # regex text with {A} placeholder for the alias alternation
    target: Literal["alias", "place"]
    confidence: float
    kind: Literal["identity", "origin", "residence"] = "identity"
    """What the statement says: a later statement of the same kind after a change marker replaces it."""
    strong: bool = False  # an explicit political/identity frame: ambiguous aliases may match
    check_subject: bool = False  # reject when a third-person subject precedes in the clause
    check_follow: bool = True  # the word after an alias must not make it an adjective ("English teacher")


_FRAMES: tuple[_Frame, ...] = (
    _Frame("self", _I_BE + _ADV + _DET + r"{M}{A}", "alias", 0.95),
    _Frame(
        "identify",
        _I + _ADV + r"(?:identify|consider\s+myself|describe\s+myself|see\s+myself|think\s+of\s+myself|call\s+myself|"
        r"am\s+registered|registered|(?:always\s+|usually\s+|typically\s+|mostly\s+)?vote[ds]?|tend\s+to\s+vote|lean|"
        r"support|belong\s+to|side\s+with)\s+(?:as\s+|for\s+|with\s+)?" + _DET + r"{M}{A}",
        "alias",
        0.95,
        strong=True,
    ),
    _Frame("as", _AS + r"{M}{A}", "alias", 0.9, check_subject=True),
    _Frame("we", r"(?<![\w'])(?:we|us)\s+(?:fellow\s+|proud\s+)?{M}{A}", "alias", 0.85, check_subject=True,
           check_follow=False),
    _Frame(
        "from",
        _I_BE + _ADV + r"(?:from|a\s+native\s+of|a\s+citizen\s+of|native\s+to|a\s+national\s+of)\s+(?:the\s+)?{A}",
        "place",
        0.92,
        kind="origin",
    ),
    _Frame("living_in", _I_BE + _ADV + r"(?:living\s+in|based\s+in|located\s+in|settled\s+in)\s+(?:the\s+)?{A}", "place", 0.85,
           kind="residence"),
    _Frame("in", _I_BE + _ADV + r"(?:in|writing\s+from|calling\s+from|here\s+in)\s+(?:the\s+)?{A}", "place", 0.7,
           kind="residence"),
    _Frame(
        "i_live",
        _I + _ADV + r"(?:live|lived|reside|have\s+lived|have\s+always\s+lived|moved\s+back|immigrated)\s+"
        r"(?:in|from|to|here\s+in)?\s*(?:the\s+)?{A}",
        "place",
        0.9,
        kind="residence",
    ),
    _Frame(
        "i_origin",
        _I + _ADV + r"(?:grew\s+up|was\s+born|was\s+raised|come|hail)\s+(?:in|from|to|here\s+in)?\s*(?:the\s+)?{A}",
        "place",
        0.9,
        kind="origin",
    ),
    _Frame("here", r"(?<![\w'])(?:here\s+in|back\s+home\s+in|over\s+here\s+in|we\s+in|us\s+in)\s+(?:the\s+)?{A}", "place", 0.75,
           kind="residence", check_subject=True),
    _Frame(
        "my_country",
        r"(?<![\w'])my\s+(?:home\s+)?(?:country|nationality|homeland)\s*(?:is|,|:|-|\()\s*(?:the\s+)?{A}",
        "place",
        0.9,
        kind="origin",
    ),
    _Frame(
        "as_someone",
        r"(?<![\w'])as\s+(?:someone|somebody|a\s+person|a\s+woman|a\s+man|one|a\s+citizen|a\s+resident|a\s+native)\s+"
        r"(?:from|of|in|living\s+in|born\s+in)\s+(?:the\s+)?{A}",
        "place",
        0.9,
        kind="origin",
        check_subject=True,
    ),
    # --- stacked statements: personas of several dimensions in one statement -------------------
    # {M}: adjectives and other dimensions' aliases used as modifiers ("a proud Nigerian …");
    # {H}: a head noun, another dimension's alias or a person noun ("a Democrat from …", "a nurse
    # from …"); {O}: a first conjunct of another dimension ("Nigerian and …", "from Nigeria and …").
    _Frame("stack_from", _I_BE + _ADV + _DET + r"{M}{H}\s+" + _STACK_FROM + r"(?:the\s+)?{A}", "place", 0.88, kind="origin"),
    _Frame("as_stack_from", _AS + r"{M}{H}\s+" + _STACK_FROM + r"(?:the\s+)?{A}", "place", 0.85, kind="origin",
           check_subject=True),
    _Frame("stack_in", _I_BE + _ADV + _DET + r"{M}{H}\s+" + _STACK_IN + r"(?:the\s+)?{A}", "place", 0.82, kind="residence"),
    _Frame("as_stack_in", _AS + r"{M}{H}\s+" + _STACK_IN + r"(?:the\s+)?{A}", "place", 0.8, kind="residence",
           check_subject=True),
    _Frame("and", _I_BE + _ADV + _DET + r"{M}{O}" + _AND + _DET + r"{M}{A}", "alias", 0.9),
    _Frame("as_and", _AS + r"{M}{O}" + _AND + _DET + r"{M}{A}", "alias", 0.88, check_subject=True),
    _Frame("and_from", _I_BE + _ADV + _DET + r"{M}{O}" + _AND + r"(?:originally\s+)?(?:from|a\s+native\s+of)\s+(?:the\s+)?{A}",
           "place", 0.88, kind="origin"),
)
"""First-person frames. ``{A}`` is the pack's alias (or place) alternation; the placeholders of
stacked statements are filled per pack from the other identity packs' aliases and places, so
"As a Nigerian Democrat" is both a Nigerian's and a Democrat's statement, made once: negation,
reported speech, conditionals and questions are read before the frame, for every persona in it."""

# --- corrections ------------------------------------------------------------------------------

_NOT_BUT_FRAMES: tuple[_Frame, ...] = (
    _Frame("not_but", _I_BE + _ADV + r"not\s+" + _ADV + _DET + _ADJ + "{X}", "alias", 0.9),
    _Frame("not_but_from", _I_BE + _ADV + r"not\s+" + _ADV + r"(?:from|a\s+native\s+of|a\s+citizen\s+of|native\s+to)\s+"
           r"(?:the\s+)?{X}", "place", 0.88, kind="origin"),
    _Frame("not_but_in", _I_BE + _ADV + r"not\s+" + _ADV + r"(?:in|living\s+in|based\s+in)\s+(?:the\s+)?{X}", "place", 0.8,
           kind="residence"),
    _Frame("not_but_live", _I + r"(?:don't|dont|do\s+not|didn't|didnt|did\s+not)\s+(?:live|reside)\s+(?:in\s+)?(?:the\s+)?{X}",
           "place", 0.85, kind="residence"),
    _Frame("not_but_come", _I + r"(?:don't|dont|do\s+not|didn't|didnt|did\s+not)\s+(?:come|hail)\s+(?:from\s+)?(?:the\s+)?{X}",
           "place", 0.85, kind="origin"),
)
"""A negated statement corrected in the same breath: "I'm not from Japan but (from) Brazil", "I'm
not a Democrat but a Republican", "I don't live in Japan but in Brazil" (each followed by `_BUT_Y`)."""

_BUT_Y = r"\s{0,4},?\s{0,4}but\s{1,4}(?:rather\s{1,4}|instead\s{1,4})?(?:(?:from|in)\s{1,4})?(?:the\s{1,4})?(?:(?:a|an)\s{1,4})?{M}{A}"
"""After a negated statement: "I'm not from Japan but (from) Brazil", "I'm not a Democrat but a Republican"."""
_REPAIR_Y = (
    r"\s{0,4}(?:\?|!|,|;|:|\.{1,3}|-{1,2}|\u2014|\u2013)?\s{0,4}"
    r"(?:(?:no|nope|nah|sorry|wait|oops|i\s+mean|i\s+meant|actually|or\s+rather|correction)[\s,!.:;\u2014\u2013-]{0,4}){1,3}"
    r"(?:(?:i'm|i\s+am|im)\s{1,4})?(?:(?:from|in)\s{1,4})?(?:the\s{1,4})?(?:(?:a|an)\s{1,4})?{M}{A}"
)
"""Right after a statement: "I'm from Japan? No, Brazil", "I'm from Japan, I mean Brazil"."""
_CONTRAST = re.compile(r"(?<![\w'])(?:but|however|though|although|yet|whereas|actually|in\s+fact)(?![\w'])")
"""Reported speech and third-person subjects before one of these do not reach past it."""
_CHANGE = re.compile(
    r"(?<![\w'])(?:but|now|nowadays|these\s+days|today|anymore|any\s+more|no\s+longer|since|until|then|later|"
    r"moved|switched|changed|became|converted|instead|actually|in\s+fact)(?![\w'])"
)
"""Between two statements of the same kind: the later one replaces the earlier."""
_CHANGE_GAP = 300
"""How far apart (characters) two statements may be for a change marker between them to count."""

# --- named entities ---------------------------------------------------------------------------

_GEO_NOUNS = frozenset(
    (
        "capital", "capitals", "city", "cities", "town", "towns", "village", "villages", "north", "south",
        "east", "west", "northern", "southern", "eastern", "western", "northeast", "northwest", "southeast",
        "southwest", "central", "interior", "coast", "coastal", "coastline", "countryside", "border",
        "borders", "region", "regions", "province", "provinces", "state", "states", "island", "islands",
        "mountains", "mountain", "highlands", "lowlands", "desert", "deserts", "countryside", "heartland",
        "suburbs", "outskirts", "part", "parts", "side", "largest", "biggest", "second", "third", "oldest",
        "rural", "urban",
    )
)
"""After a possessive place ("Japan's north", "Mexico's largest city"): still geography."""
_COMPOUND_HEADS = frozenset(
    (
        "street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "boulevard", "blvd", "drive", "dr",
        "court", "ct", "square", "sq", "place", "terrace", "crescent", "park", "hill", "hills", "valley",
        "river", "lake", "creek", "heights", "county", "township", "borough", "mall", "station", "airport",
        "hotel", "restaurant", "cafe", "diner", "bar", "pub", "club", "fan", "fans", "team", "band",
        "airlines", "airways", "university", "college", "school", "academy", "institute", "hospital",
        "church", "company", "corp", "inc", "ltd", "brand", "store", "shop", "market", "sandwich",
        "sandwiches", "burger", "burgers", "dinner", "leg", "legs", "breast", "bacon", "meat", "roast",
        "gravy", "stuffing", "slices", "slice", "club", "plate", "plates", "cabinet", "set", "doll", "dolls",
        "teapot", "cup", "cups", "pattern", "shoes", "sneakers", "jersey", "syndrome", "mode",
    )
)
"""A word after a place that makes it a named thing ("Jordan Street", "Turkey sandwich")."""
_NAME_OK = frozenset(("city", "i", "i'm", "im", "i've", "i'd"))
"""Capitalised words after a place that do not make it a name ("Mexico City", "… Japan. I …")."""
_FOLLOWING = re.compile(r"(?:\x20|-)([A-Za-z][\w']*)")
"""The word right after a place (one space or a hyphen: a comma or a full stop ends the name)."""
_PLACE_FOLLOW = frozenset(
    (
        "as", "when", "where", "which", "that", "until", "till", "before", "after", "during", "via", "about",
        "right", "this", "these", "next", "last", "today", "tonight", "tomorrow", "yesterday", "originally",
        "currently", "ever", "all", "near", "close", "not", "is", "was", "are", "were", "am", "been", "has",
        "had", "have", "will", "would", "may", "might", "can", "could", "should", "must", "do", "does", "did",
        "until", "where's",
    )
)
"""Words after a place that do not make it part of a name, even capitalised (Title Case text)."""
_POSSESSIVE = re.compile(r"'s?(?![\w])")
_FROM_DEPT = re.compile(r"\s{1,3}from\s{1,3}(?:the\s{1,3})?[a-z]")
"""A place followed by "from <lower-case word>" is a person: "Chad from accounting"."""


def _alt(phrases: Iterable[str], group: str = "A") -> str:
    uniq = sorted({p for p in phrases if p}, key=lambda p: (-len(p), p))
    return f"(?P<{group}>" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in uniq) + r")(?![\w])"


_CONTEXT = 400
"""How far back (characters, within the sentence) a match's context is read: bounded, so each
match costs O(1) and a whole text O(its length)."""

_QUOTE_RE = re.compile("[" + re.escape("".join(sorted(_QUOTES))) + "]")
_CLAUSE_WORD = re.compile(r"(?= (?:but|and) )")
_CLAUSE_MARK = re.compile(r"[;,:]")
_VOTERS = re.compile(r"\s+voters?\b", re.IGNORECASE)
_ARTICLE = re.compile(r"(?<![\w'])an?\s")
_CLAUSE_END = re.compile(r"\s*(?:[.,;:!?)]|$)|\s+(?:and|but|so)(?![\w])")
_AFFILIATION_WORDS = frozenset(("unaffiliated", "affiliated", "independent", "nonpartisan", "non-partisan",
                                "nonaligned", "non-aligned"))
_COMPLEMENT = re.compile(r"\s+(?:with|to|of|from)(?![\w])", re.IGNORECASE)
_PARTY_COMPLEMENT = re.compile(
    r"\s+(?:with|to|of|from)\s+(?:(?:any|either|both|all|the|a|one|no|two|major|main|big|political)\s+){0,3}"
    r"part(?:y|ies)(?![\w])", re.IGNORECASE)
"""An affiliation adjective with a complement is a statement only when the complement is a party:
"unaffiliated with any party", not "unaffiliated with the university"."""
_PLACE_TAIL = re.compile(r"\s+(?:" + _STACK_FROM + "|" + _STACK_IN + ")", re.IGNORECASE)
"""A place stated after a noun ("an independent from Nigeria", "a registered independent living in
Japan"), in the words the stacked place frames read: the noun stands, and the place is read as
its own statement."""
_ID_NEGATIONS = frozenset(
    (
        "not", "no", "never", "neither", "nor", "without", "nobody", "hardly", "isn't", "aren't", "wasn't",
        "weren't", "don't", "dont", "doesn't", "doesnt", "didn't", "didnt", "won't", "cannot", "can't",
    )
)
"""Negations that cancel an identity statement after them in the same clause ("Not that I'm a
Democrat", "it's not like I'm from France"); narrower than `_NEGATIONS` ("I hate that I'm a …")."""

_MD = MarkdownIt("commonmark").disable(
    ["inline", "list", "blockquote", "html_block", "reference", "heading", "lheading", "hr"], ignoreInvalid=True
)  # only code blocks are wanted: the other block rules cost time (nested lists: superlinear)
_MAYBE_BLOCK_CODE = re.compile(r"```|~~~|(?:^|\n)(?: {4}|\t)")
_BACKTICKS = re.compile(r"`+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _lower_same_length(text: str) -> str:
    """``text.lower()``, except characters whose lower case is longer ("İ") stay as they are, so
    offsets into the result are offsets into ``text``."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(lc := c.lower()) != 1 else lc for c in text)


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, disjoint ``(start, end)`` spans of Markdown code in ``text``: fenced and indented
    code blocks (CommonMark, by markdown-it-py) and inline code spans (backtick runs)."""
    spans: list[tuple[int, int]] = []
    if _MAYBE_BLOCK_CODE.search(text):
        starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]  # the parser's line numbering
        for tok in _MD.parse(text):
            if tok.type in ("fence", "code_block") and tok.map:
                a, b = tok.map
                spans.append((starts[a], starts[b] if b < len(starts) else len(text)))
    if "`" in text:
        # CommonMark code spans: a run of N backticks up to the next run of exactly N (linear: the
        # next run of each length is precomputed right to left).
        runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text) if not _in_spans(spans, m.start())]
        nxt: list[int | None] = [None] * len(runs)
        last: dict[int, int] = {}
        for i in range(len(runs) - 1, -1, -1):
            n = runs[i][1] - runs[i][0]
            nxt[i] = last.get(n)
            last[n] = i
        i = 0
        while i < len(runs):
            j = nxt[i]
            if j is None:
                i += 1
                continue
            spans.append((runs[i][0], runs[j][1]))
            i = j + 1
        spans.sort()
    return spans


def _in_spans(spans: list[tuple[int, int]], pos: int) -> bool:
    i = bisect_right(spans, (pos, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= pos < spans[i][1]


class _Text:
    """One (normalised) text prepared for extraction: every index the context checks need is
    built once, in one pass each, so checking a match costs O(1) whatever the text's length
    (the old per-match rescans of the whole prefix made extraction quadratic).

    ``scanned`` counts the characters read: each pass over the text, each bounded window."""

    __slots__ = ("_clause_marks", "_clause_words", "_code", "_contrasts", "_quotes", "_sent_ends", "low", "norm",
                 "scanned")

    def __init__(self, norm: str) -> None:
        self.norm = norm
        self.low = _lower_same_length(norm)
        self._quotes = [m.start() for m in _QUOTE_RE.finditer(norm)]
        self._sent_ends = [m.end() for m in _SENTENCE_END.finditer(norm)]
        self._clause_words = [m.start() for m in _CLAUSE_WORD.finditer(norm)]  # " but " / " and "
        self._clause_marks = [m.start() for m in _CLAUSE_MARK.finditer(norm)]
        self._code = _code_spans(norm)
        self._contrasts = [m.end() for m in _CONTRAST.finditer(self.low)]  # "but", "however", …
        self.scanned = 7 * len(norm)

    def pass_over(self) -> None:
        """Count one full regex pass over the text."""
        self.scanned += len(self.norm)

    def _window(self, start: int, end: int) -> tuple[int, int]:
        self.scanned += end - start
        return start, end

    # --- positions ----------------------------------------------------------------------------
    def sentence_start(self, pos: int) -> int:
        """Where the sentence containing ``pos`` starts (after the last sentence end before it)."""
        if pos > 0 and self.norm[pos - 1] in ".!?;\n":
            return pos  # a sentence end right before pos (as a scan of text[:pos] would see it)
        i = bisect_right(self._sent_ends, pos) - 1
        return self._sent_ends[i] if i >= 0 else 0

    def context_start(self, pos: int) -> int:
        """The start of the context read before ``pos``: its sentence, at most `_CONTEXT` back."""
        return max(self.sentence_start(pos), pos - _CONTEXT)

    def speaker_start(self, pos: int) -> int:
        """Where the speaker's own voice resumes before ``pos``: the context start, or after the last
        contrast ("but", "however", "actually") in it: "People think I'm from Japan, but I'm from
        Brazil" reports the first statement, not the second."""
        a = self.context_start(pos)
        i = bisect_right(self._contrasts, pos) - 1
        return max(a, self._contrasts[i]) if i >= 0 else a

    def clause_start(self, pos: int) -> int:
        s = self.sentence_start(pos)
        cut = -1
        i = bisect_right(self._clause_words, pos - 5) - 1  # " but " / " and " ending by pos
        if i >= 0 and self._clause_words[i] >= s:
            cut = self._clause_words[i]
        i = bisect_right(self._clause_marks, pos - 1) - 1
        if i >= 0 and self._clause_marks[i] >= s:
            cut = max(cut, self._clause_marks[i])
        return cut + 1 if cut >= 0 else s

    def inside_quotes(self, pos: int) -> bool:
        return bisect_left(self._quotes, pos) % 2 == 1

    def in_code(self, pos: int) -> bool:
        return bool(self._code) and _in_spans(self._code, pos)

    # --- context checks -----------------------------------------------------------------------
    def tokens_before(self, end: int, n: int) -> list[str]:
        a, b = self._window(max(0, end - 80), end)
        return _WORD.findall(self.low, a, b)[-n:]

    def reported(self, start: int) -> bool:
        """Reported speech before ``start`` in the same sentence (up to a contrast), unless reported by "I"."""
        a, b = self._window(self.speaker_start(start), start)
        last = None
        for m in _REPORTING.finditer(self.low, a, b):
            last = m
        if last is None:
            return False
        before = _WORD.findall(self.low, a, last.start())
        skip = {"always", "often", "once", "just", "also", "never", "sometimes", "keep", "keeps", "kept", "even"}
        while before and before[-1] in skip:
            before.pop()
        return not (before and before[-1] in ("i", "i've", "i'd"))

    def third_person_before(self, start: int) -> bool:
        a, b = self._window(self.speaker_start(start), start)
        return _THIRD_PERSON.search(self.low, a, b) is not None

    def blocked(self, start: int) -> str | None:
        """Why a first-person frame at ``start`` is not a statement of fact (or None)."""
        if self.in_code(start):
            return "code"
        if self.inside_quotes(start):
            return "quoted"
        if self.reported(start):
            return "reported"
        prev = self.tokens_before(start, 4)
        if prev and prev[-1] in _MODALS:
            return "question"
        if any(t in _CONDITIONALS for t in prev):
            return "conditional"
        if any(t in _ID_NEGATIONS for t in self._clause_tokens(start, 4)):
            return "negated"
        return None

    def named_entity(self, a_start: int, a_end: int) -> bool:
        """Whether the place at ``[a_start, a_end)`` is part of a name or a thing, not a country:
        "Jordan Peterson", "Georgia O'Keeffe", "Jordan Street", "Turkey sandwich", "Chad from
        accounting", "Jordan's fan club" (but "Japan's north", "Mexico City" are geography)."""
        norm = self.norm
        a, b = self._window(a_end, min(len(norm), a_end + 60))
        pos = a
        poss = _POSSESSIVE.match(norm, pos, b)
        if poss is not None and (poss.group(0) == "'s" or norm[a_end - 1] in "sS"):  # not a closing quote
            words = _WORD.findall(self.low, poss.end(), b)[:3]
            return not any(w in _GEO_NOUNS for w in words)
        if _FROM_DEPT.match(norm, pos, b):
            return True
        m = _FOLLOWING.match(norm, pos, b)
        if m is None:
            return False  # end of text or punctuation
        word = m.group(1)
        low = word.lower()
        if low in _COMPOUND_HEADS:
            return True
        is_name = word[0].isupper() and any(c.islower() for c in word)
        return is_name and low not in _NAME_OK and low not in _ALLOWED_FOLLOW and low not in _PLACE_FOLLOW

    def _clause_tokens(self, start: int, n: int) -> list[str]:
        a, b = self._window(max(self.clause_start(start), start - _CONTEXT), start)
        return _WORD.findall(self.low, a, b)[-n:]

    def negated_before(self, start: int, window: int = 6) -> bool:
        toks = self._clause_tokens(start, window)
        if any(t in _NEGATIONS for t in toks):
            return True
        tail = " ".join(toks)
        return any(p in tail for p in _NEG_PHRASES)


def _conf(score: float) -> float:
    return round(min(0.97, 1.0 - math.exp(-score)), 4)


@dataclass(frozen=True)
class _Neighbours:
    """What the identity packs of the other dimensions give one pack's stacked frames: their aliases
    that can modify a noun ("Nigerian", "Catholic", "Democrat"), and their places."""

    modifiers: tuple[str, ...] = ()
    places: tuple[str, ...] = ()

    @classmethod
    def of(cls, pack: PersonaPack, packs: Iterable[PersonaPack]) -> _Neighbours:
        own = {_norm_phrase(p) for spec in pack.specs for p in (*spec.aliases, *spec.places)}
        mods: dict[str, str] = {}
        places: dict[str, str] = {}
        for other in packs:
            if other.extraction != "identity" or other.dimension == pack.dimension:
                continue
            for spec in other.specs:
                for a in spec.aliases:
                    n = _norm_phrase(a)
                    if n and n not in own and not set(n.split()) & _NOT_ATTRIBUTIVE:
                        mods.setdefault(n, a)
                for pl in spec.places:
                    n = _norm_phrase(pl)
                    if n and n not in own:
                        places.setdefault(n, pl)
        return cls(tuple(sorted(mods)), tuple(sorted(places)))


def _plain_alt(phrases: Iterable[str]) -> str:
    """Whole phrases (longest first; spaces match any white space) as one non-capturing group."""
    uniq = sorted({_norm_phrase(p) for p in phrases if p}, key=lambda p: (-len(p), p))
    return "(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in uniq) + r")(?![\w])"


class _CompiledPack:
    def __init__(self, pack: PersonaPack, neighbours: _Neighbours | None = None) -> None:
        self.pack = pack
        nb = neighbours or _Neighbours()
        self.stack_follow: re.Pattern[str] | None = None  # other dimensions' nouns after an alias
        self.kind = pack.extraction
        self.frames: list[tuple[_Frame, re.Pattern[str]]] = []
        self.alias_owner: dict[str, str] = {}
        self.ambiguous: set[str] = set()
        self.place_names: set[str] = set()
        self.repairs: dict[str, re.Pattern[str]] = {}  # target -> "X? No, Y" after a statement
        self.not_but: list[tuple[_Frame, re.Pattern[str]]] = []  # "I'm not X but Y"
        for spec in pack.specs:
            self.ambiguous.update(a.lower() for a in spec.ambiguous)
        if self.kind == "identity":
            aliases, places = [], []
            for spec in pack.specs:
                for a in spec.aliases:
                    self._own(_norm_phrase(a), spec.id)
                    aliases.append(a)
                for p in spec.places:
                    self._own(_norm_phrase(p), spec.id)
                    self.place_names.add(_norm_phrase(p))
                    places.append(p)
            adj = _plain_alt(_ADJ_WORDS)
            fill = {
                # atomic per word, at most 8: a run of modifiers is read once, never re-split
                "{M}": r"(?:(?>" + _plain_alt((*nb.modifiers, *_ADJ_WORDS)) + r")(?:-[a-z]+)?\s+){0,8}",
                "{H}": r"(?>" + _plain_alt((*nb.modifiers, *_PERSON_NOUNS)) + ")",
            }
            firsts = ([_plain_alt(nb.modifiers)] if nb.modifiers else []) + \
                ([r"from\s+(?:the\s+)?" + _plain_alt(nb.places)] if nb.places else [])
            if firsts:
                fill["{O}"] = "(?>" + "|".join(firsts) + ")"
            if nb.modifiers:
                self.stack_follow = re.compile(r"(?:\s+(?:(?>" + adj + r")\s+){0,4}(?>" + _plain_alt(nb.modifiers) + r")){1,4}",
                                               re.IGNORECASE)
            for fr in _FRAMES:
                phrases = aliases if fr.target == "alias" else places
                if not phrases or ("{O}" in fr.pattern and "{O}" not in fill):
                    continue
                pattern = fr.pattern
                for k, v in fill.items():
                    pattern = pattern.replace(k, v)
                self.frames.append((fr, re.compile(pattern.replace("{A}", _alt(phrases)), re.IGNORECASE)))
            by_target = {"alias": aliases, "place": places}
            for target, phrases in by_target.items():
                if phrases:
                    self.repairs[target] = re.compile(_REPAIR_Y.replace("{M}", fill["{M}"] if target == "alias" else "").replace("{A}", _alt(phrases)),
                                                      re.IGNORECASE)
            for fr in _NOT_BUT_FRAMES:
                phrases = by_target[fr.target]
                if phrases:
                    pattern = fr.pattern.replace("{X}", _alt(phrases, "X")) + \
                        _BUT_Y.replace("{M}", fill["{M}"] if fr.target == "alias" else "").replace("{A}", _alt(phrases))
                    self.not_but.append((fr, re.compile(pattern, re.IGNORECASE)))
        else:
            # one alternation per polarity; a phrase may belong to several personas
            self.pos_owner: dict[str, list[tuple[str, float]]] = {}
            self.neg_owner: dict[str, list[tuple[str, float]]] = {}
            for spec in pack.specs:
                for kw in spec.keywords:
                    w = 0.5 if kw.lower() in self.ambiguous else 1.0
                    self.pos_owner.setdefault(_kw_key(kw), []).append((spec.id, w))
                for kw in spec.negative_keywords:
                    self.neg_owner.setdefault(_kw_key(kw), []).append((spec.id, 1.0))
            self.pos_re = _kw_alt(self.pos_owner)
            self.neg_re = _kw_alt(self.neg_owner)

    def _own(self, phrase: str, pid: str) -> None:
        other = self.alias_owner.get(phrase)
        if other is not None and other != pid:
            log.warning("pack %s: phrase %r is a cue of both %s and %s; keeping %s", self.pack.id, phrase, other, pid, other)
            return
        self.alias_owner[phrase] = pid


def _norm_phrase(p: str) -> str:
    return " ".join(p.lower().translate(_APOSTROPHES).split())


def _kw_key(kw: str) -> str:
    """Canonical form of a keyword occurrence: lower case, words joined by single spaces."""
    return " ".join(t for t in re.split(r"[\s\-]+", kw.lower().translate(_APOSTROPHES)) if t)


def _kw_alt(owners: dict[str, list[tuple[str, float]]]) -> re.Pattern[str] | None:
    """All keywords as one regex (longest first): case-insensitive, words separated by spaces or
    hyphens ("step by step" also matches "step-by-step")."""
    if not owners:
        return None
    alts = []
    for key in sorted(owners, key=lambda k: (-len(k), k)):
        alts.append(r"[\s\-]+".join(re.escape(t) for t in key.split(" ")))
    return re.compile(r"(?<![\w])(?:" + "|".join(alts) + r")(?![\w])", re.IGNORECASE)


def _finditer_overlapping(rx: re.Pattern[str], text: str):  # type: ignore[no-untyped-def]
    """Matches starting at every position (so "keep it brief" and "brief" are both seen)."""
    pos = 0
    while True:
        m = rx.search(text, pos)
        if m is None:
            return
        yield m
        pos = m.start() + 1


def _latest_of_each_kind(found: list[tuple[_Frame, PersonaMatch]], t: _Text) -> list[PersonaMatch]:
    """Drop statements a later one of the same kind replaces: "I lived in Japan, but now I live in
    Brazil" keeps Brazil. A later statement replaces the earlier ones of other personas when a
    change marker ("but", "now", "no longer", …) stands between them (at most `_CHANGE_GAP` apart).
    Linear: each statement is kept or dropped once, and each gap read once."""
    found.sort(key=lambda fm: (fm[1].span[0], fm[1].span[1]))
    kept: dict[str, dict[str, list[PersonaMatch]]] = {}  # kind -> persona -> its statements, in order
    last: dict[str, PersonaMatch] = {}  # kind -> the latest statement kept
    dropped: set[int] = set()
    for fr, m in found:
        by_pid = kept.setdefault(fr.kind, {})
        prev = last.get(fr.kind)
        if prev is not None and prev.persona_id != m.persona_id and prev.span[1] <= m.span[0] and \
                m.span[0] - prev.span[1] <= _CHANGE_GAP:
            a, b = t._window(prev.span[1], m.span[0])
            if _CHANGE.search(t.low, a, b):
                for pid in [p for p in by_pid if p != m.persona_id]:
                    dropped.update(id(x) for x in by_pid.pop(pid))
        by_pid.setdefault(m.persona_id, []).append(m)
        last[fr.kind] = m
    return [m for _, m in found if id(m) not in dropped]


class RuleExtractor:
    """Rule-based extraction over the registry's packs; no model calls.

    Work is linear in the text and bounded: a text longer than ``max_chars`` is scanned in its
    first and last ``max_chars // 2`` characters, and `extract_many` (a request's messages)
    scans at most ``max_request_chars`` in all, newest message first. `aextract` and
    `aextract_many` run inputs longer than ``inline_chars`` in a worker thread, so a large request
    never holds the event loop. ``chars_scanned`` counts the characters read (all calls).
    """

    name = "rule"

    def __init__(self, registry: PackRegistry, *, dimensions: Sequence[str] | None = None,
                 max_chars: int = 20_000, max_request_chars: int = 64_000, inline_chars: int = 4_000) -> None:
        if max_chars < 2 or max_request_chars < 2 or inline_chars < 0:
            raise ConfigError(
                f"RuleExtractor: max_chars={max_chars}, max_request_chars={max_request_chars}, "
                f"inline_chars={inline_chars} are out of range",
                hint="use max_chars >= 2, max_request_chars >= 2, inline_chars >= 0",
            )
        self.registry = registry
        self.max_chars = max_chars
        self.max_request_chars = max_request_chars
        self.inline_chars = inline_chars
        self.chars_scanned = 0
        packs = [pk for pk in registry.packs if dimensions is None or pk.dimension in dimensions]
        # stacked statements read every identity pack's aliases, also of dimensions not extracted
        self._packs = [_CompiledPack(pk, _Neighbours.of(pk, registry.packs)) for pk in packs]

    # --- entry points ----------------------------------------------------------------------------
    async def aextract(self, text: str) -> list[PersonaMatch]:
        """`extract`, in a worker thread when the text is longer than ``inline_chars``."""
        if len(text) <= self.inline_chars:
            return self.extract(text)
        return await asyncio.to_thread(self.extract, text)

    async def aextract_many(self, texts: Sequence[str]) -> list[list[PersonaMatch]]:
        """`extract_many`, in a worker thread when it scans more than ``inline_chars``."""
        if sum(self._allot([len(t) for t in texts])) <= self.inline_chars:
            return self.extract_many(texts)
        return await asyncio.to_thread(self.extract_many, list(texts))

    def extract(self, text: str) -> list[PersonaMatch]:
        """Every persona the text states, most confident first (one match per persona)."""
        return self._extract(text, min(self.max_chars, self.max_request_chars))

    def extract_many(self, texts: Sequence[str]) -> list[list[PersonaMatch]]:
        """`extract` for each text of one request (e.g. its user messages, oldest first), within
        one budget of ``max_request_chars``: the newest texts are scanned first, each up to
        ``max_chars``; texts beyond the budget are not scanned (an empty list)."""
        return [self._extract(t, n) if n else [] for t, n in zip(texts, self._allot([len(t) for t in texts]))]

    def _allot(self, lengths: Sequence[int]) -> list[int]:
        """Characters to scan per text: newest (last) first, each at most ``max_chars``, all
        together at most ``max_request_chars``."""
        left = self.max_request_chars
        out = [0] * len(lengths)
        for i in range(len(lengths) - 1, -1, -1):
            n = min(lengths[i], self.max_chars, left)
            out[i] = n if n >= 2 or n == lengths[i] else 0
            left -= out[i]
        return out

    def _extract(self, text: str, limit: int) -> list[PersonaMatch]:
        if not text:
            return []
        if len(text) > limit:  # the head and the tail, each half the limit; spans stay in `text`
            half = limit // 2
            tail_start = len(text) - half
            head = self._extract(text[:half], half)
            tail = [m.model_copy(update={"span": (m.span[0] + tail_start, m.span[1] + tail_start)})
                    for m in self._extract(text[tail_start:], half)]
            best: dict[str, PersonaMatch] = {}
            for m in head + tail:
                if m.persona_id not in best or m.confidence > best[m.persona_id].confidence:
                    best[m.persona_id] = m
            return sorted(best.values(), key=lambda m: (-m.confidence, m.span[0]))
        t = _Text(text.translate(_APOSTROPHES))  # same length: offsets stay valid
        found: dict[str, PersonaMatch] = {}
        try:
            for cp in self._packs:
                ms = self._identity(cp, t, text) if cp.kind == "identity" else self._keywords(cp, t, text)
                for m in ms:
                    cur = found.get(m.persona_id)
                    if cur is None or m.confidence > cur.confidence:
                        found[m.persona_id] = m
        finally:
            self.chars_scanned += t.scanned
        return sorted(found.values(), key=lambda m: (-m.confidence, m.span[0]))

    # identity packs ------------------------------------------------------------------------------
    def _identity(self, cp: _CompiledPack, t: _Text, text: str) -> list[PersonaMatch]:
        found: list[tuple[_Frame, PersonaMatch]] = []
        norm = t.norm
        for fr, rx in cp.frames:
            t.pass_over()
            for m in rx.finditer(norm):
                a_start, a_end = m.span("A")
                alias = _norm_phrase(m.group("A"))
                pid = cp.alias_owner.get(alias)
                if pid is None:
                    continue
                if t.blocked(m.start()):
                    continue
                fixed = self._repaired(cp, fr, t, text, m.start(), a_end)  # "X? No, Y": Y is what stands
                match = fixed or self._statement(cp, fr, t, text, m.start(), a_start, a_end, alias, pid)
                if match is not None:
                    found.append((fr, match))
        for fr, rx in cp.not_but:  # "I'm not X but Y": Y
            t.pass_over()
            for m in rx.finditer(norm):
                a_start, a_end = m.span("A")
                alias = _norm_phrase(m.group("A"))
                pid = cp.alias_owner.get(alias)
                if pid is None or t.blocked(m.start()):
                    continue
                if fr.target == "alias" and not self._follow(cp, t, a_end, alias):  # "… but a Republican senator"
                    continue
                match = self._statement(cp, fr, t, text, m.start(), a_start, a_end, alias, pid)
                if match is not None:
                    found.append((fr, match))
        return _latest_of_each_kind(found, t)

    def _statement(self, cp: _CompiledPack, fr: _Frame, t: _Text, text: str, start: int, a_start: int, a_end: int,
                   alias: str, pid: str) -> PersonaMatch | None:
        """The match of a frame whose context allows it, or None (named entities, third-person
        subjects, adjectives, ambiguous aliases without an explicit frame)."""
        norm = t.norm
        if fr.check_subject and t.third_person_before(start):
            return None
        if fr.target == "alias" and fr.check_follow and not self._follow(cp, t, a_end, alias):
            return None
        if fr.target == "alias" and alias.rsplit(" ", 1)[-1] in _AFFILIATION_WORDS and \
                _COMPLEMENT.match(norm, a_end) and not _PARTY_COMPLEMENT.match(norm, a_end) and \
                not (_PLACE_TAIL.match(norm, a_end) and self._article_before(t, start, a_start)):
            return None  # "unaffiliated with the university", "independent of my parents" (a noun
            # with a place after it stands: "a registered independent from Nigeria")
        if fr.target == "place" and t.named_entity(a_start, a_end):
            return None
        if fr.name == "self" and alias in cp.place_names:
            return None  # "I'm Chad": a person's name, not an identity
        conf = fr.confidence
        if alias in cp.ambiguous:
            strong = fr.strong or "politic" in t.low[max(0, start - 30) : a_end] or \
                "registered" in t.low[start:a_start] or _VOTERS.match(norm, a_end) is not None
            if not strong and not text[a_start].isupper() and not (fr.name in ("self", "and") and self._noun_use(t, start, a_start, a_end)):
                return None
            if not strong:
                conf *= 0.85
        return PersonaMatch(persona_id=pid, dimension=cp.pack.dimension, span=(start, a_end),
                            evidence=text[start:a_end], confidence=round(conf, 4))

    def _repaired(self, cp: _CompiledPack, fr: _Frame, t: _Text, text: str, start: int,
                  a_end: int) -> PersonaMatch | None:
        """The statement a repair right after ``[start, a_end)`` makes instead: "I'm from Japan?
        No, Brazil", "I'm a Democrat, I mean a Republican". The evidence runs from the frame to
        the corrected alias or place."""
        rx = cp.repairs.get(fr.target)
        if rx is None:
            return None
        a, b = t._window(a_end, min(len(t.norm), a_end + 80))
        m = rx.match(t.norm, a, b)
        if m is None:
            return None
        y_start, y_end = m.span("A")
        alias = _norm_phrase(m.group("A"))
        pid = cp.alias_owner.get(alias)
        if pid is None:
            return None
        if fr.target == "alias" and not self._follow(cp, t, y_end, alias):
            return None
        fixed = self._statement(cp, fr, t, text, start, y_start, y_end, alias, pid)
        return None if fixed is None else fixed.model_copy(update={"confidence": round(fixed.confidence * 0.95, 4)})

    def _follow(self, cp: _CompiledPack, t: _Text, end: int, alias: str) -> bool:
        """Whether the words after an alias let it stand: other dimensions' nouns it modifies are
        read past ("a Nigerian nurse", "a Brazilian conservative Democrat"), then `_follow_ok`;
        a language before a subject ("an English teacher") is no nationality."""
        if cp.stack_follow is not None:
            a, b = t._window(end, min(len(t.norm), end + 240))
            m = cp.stack_follow.match(t.norm, a, b)
            if m is not None:
                if alias in _LANGUAGES and m.group(0).split()[-1].lower() in _SUBJECT_HEADS:
                    return False
                return self._follow_ok(t.norm, m.end())
        return self._follow_ok(t.norm, end)

    @staticmethod
    def _noun_use(t: _Text, start: int, a_start: int, a_end: int) -> bool:
        """An ambiguous alias used as a noun that ends its clause in an "I'm …" statement: "I'm an
        independent.", "I'm a Nigerian independent.", "I'm an independent from Nigeria" (not "I'm
        independent", "I'm an independent contractor", "as an independent, I run my shop"). Between a frame's start and its alias
        stand only its own words and modifiers."""
        return RuleExtractor._article_before(t, start, a_start) and (
            _CLAUSE_END.match(t.low, a_end, min(len(t.low), a_end + 12)) is not None
            or _PLACE_TAIL.match(t.low, a_end) is not None)

    @staticmethod
    def _article_before(t: _Text, start: int, a_start: int) -> bool:
        """An article between a frame's start and its alias: the alias is a noun ("an independent")."""
        return _ARTICLE.search(t.low, max(start, a_start - 200), a_start) is not None

    @staticmethod
    def _follow_ok(norm: str, end: int) -> bool:
        rest = norm[end : end + 40]
        m = re.match(r"(-|\s+)([A-Za-z][\w']*)", rest)
        if m is None:
            return True  # end of text, punctuation, digits
        sep, word = m.group(1), m.group(2).lower()
        if sep == "-":
            return word in ("american", "born", "canadian", "british", "australian")
        return word in _ALLOWED_FOLLOW

    # keyword packs -------------------------------------------------------------------------------
    def _keywords(self, cp: _CompiledPack, t: _Text, text: str) -> list[PersonaMatch]:
        norm = t.norm
        pos: dict[str, list[tuple[int, int, float]]] = {}
        neg: dict[str, float] = {}
        # per persona: the starts of its negative phrases (increasing) and the running maximum of
        # their ends, so "is this cue inside one of them" is a binary search, not a rescan
        neg_starts: dict[str, list[int]] = {}
        neg_reach: dict[str, list[int]] = {}
        if cp.neg_re is not None:
            t.pass_over()
            for m in _finditer_overlapping(cp.neg_re, norm):
                if t.in_code(m.start()) or t.negated_before(m.start()) or t.inside_quotes(m.start()):
                    continue
                for pid, w in cp.neg_owner.get(_kw_key(m.group(0)), ()):
                    neg[pid] = neg.get(pid, 0.0) + w
                    reach = neg_reach.setdefault(pid, [])
                    neg_starts.setdefault(pid, []).append(m.start())
                    reach.append(max(m.end(), reach[-1]) if reach else m.end())
        if cp.pos_re is not None:
            t.pass_over()
            for m in _finditer_overlapping(cp.pos_re, norm):
                s, e = m.span()
                owners = cp.pos_owner.get(_kw_key(m.group(0)), ())
                if not owners or t.in_code(s) or t.negated_before(s) or t.inside_quotes(s):
                    continue
                for pid, w in owners:
                    # a positive cue inside one of the same persona's negative phrases ("skip context")
                    i = bisect_right(neg_starts.get(pid, ()), s) - 1
                    if i >= 0 and neg_reach[pid][i] >= e:
                        continue
                    pos.setdefault(pid, []).append((s, e, w))
        out = []
        for pid, hits in pos.items():
            hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
            kept: list[tuple[int, int, float]] = []
            for h in hits:  # overlapping hits count once (the longer one)
                if kept and h[0] < kept[-1][1]:
                    if h[1] - h[0] > kept[-1][1] - kept[-1][0]:
                        kept[-1] = h
                    continue
                kept.append(h)
            score = sum(w for _, _, w in kept) - 0.75 * neg.get(pid, 0.0)
            if score <= 0:
                continue
            best = max(kept, key=lambda h: (h[2], h[1] - h[0]))
            out.append(
                PersonaMatch(
                    persona_id=pid,
                    dimension=cp.pack.dimension,
                    span=(best[0], best[1]),
                    evidence=text[best[0] : best[1]],
                    confidence=_conf(score),
                )
            )
        return out


# --- LLM extractor ------------------------------------------------------------------------------

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

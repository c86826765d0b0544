"""The rule extractor's grammar: the word lists and regular expressions of first-person statements
(the frames of identity, origin and residence, stacked modifiers, corrections, negations, reported
speech) and of what is not a place ("Jordan Peterson", "Turkey sandwich"). Data only: the code that
reads a text with them is in `_text` and `_rules`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

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

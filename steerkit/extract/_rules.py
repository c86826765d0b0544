"""The rule extractor (`RuleExtractor`): which configured personas a user's text states explicitly.

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
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from steerkit.errors import ConfigError
from steerkit.extract._grammar import (
    _ADJ_WORDS,
    _AFFILIATION_WORDS,
    _ALLOWED_FOLLOW,
    _APOSTROPHES,
    _ARTICLE,
    _BUT_Y,
    _CHANGE,
    _CHANGE_GAP,
    _CLAUSE_END,
    _COMPLEMENT,
    _FRAMES,
    _LANGUAGES,
    _NOT_ATTRIBUTIVE,
    _NOT_BUT_FRAMES,
    _PARTY_COMPLEMENT,
    _PERSON_NOUNS,
    _PLACE_TAIL,
    _REPAIR_Y,
    _SUBJECT_HEADS,
    _VOTERS,
    _alt,
    _Frame,
)
from steerkit.extract._text import _Text
from steerkit.extract._types import Extractor, PersonaMatch
from steerkit.packs import PackRegistry, PersonaPack

log = logging.getLogger("steerkit.extract")


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


async def aextract_texts(extractor: Extractor, texts: Sequence[str], *,
                         max_total_chars: int = 64_000) -> list[list[PersonaMatch]]:
    """Extract from all the texts of one request (e.g. its user messages, oldest first) within one
    budget, without holding the event loop: a `RuleExtractor` uses its own `aextract_many` (its
    ``max_request_chars``); any other extractor gets the newest texts first, each cut to what is
    left of ``max_total_chars`` (texts beyond it are not sent: an empty list)."""
    if isinstance(extractor, RuleExtractor):  # not any `aextract_many`: the budget must hold for others
        return await extractor.aextract_many(texts)
    left = max_total_chars
    cut = [0] * len(texts)
    for i in range(len(texts) - 1, -1, -1):
        cut[i] = min(len(texts[i]), max(left, 0))
        left -= cut[i]
    return [await extractor.aextract(t[:n]) if n else [] for t, n in zip(texts, cut)]

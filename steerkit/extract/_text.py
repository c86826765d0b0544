"""One text prepared for the rule extractor (`_Text`): every index its context checks need (sentence
and clause bounds, quotes, Markdown code spans, contrasts) built once, in one pass each, so each
check of a match costs O(1) and a whole text O(its length)."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right

from markdown_it import MarkdownIt

from steerkit.extract._grammar import (
    _ALLOWED_FOLLOW,
    _CLAUSE_MARK,
    _CLAUSE_WORD,
    _COMPOUND_HEADS,
    _CONDITIONALS,
    _CONTEXT,
    _CONTRAST,
    _FOLLOWING,
    _FROM_DEPT,
    _GEO_NOUNS,
    _ID_NEGATIONS,
    _MODALS,
    _NAME_OK,
    _NEG_PHRASES,
    _NEGATIONS,
    _PLACE_FOLLOW,
    _POSSESSIVE,
    _QUOTE_RE,
    _REPORTING,
    _SENTENCE_END,
    _THIRD_PERSON,
    _WORD,
)

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

"""Text measures of a pack's pool that ``steerkit pack check`` reports and ``pack generate`` filters
on: near-duplicate questions, options that are not mutually exclusive, text that names a persona
(an option that names one, or a question that gives the persona away), and discriminativeness
(how far the personas' predicted answers differ).

Word-set measures, not embeddings: they need no model, are the same on every machine, and catch
what matters most in practice (a question asked twice with small rewording, "Yes" beside
"Yes, definitely").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "NEAR_DUPLICATE",
    "near_duplicates",
    "overlapping_options",
    "persona_mentions",
    "question_text",
    "similarity",
    "spread",
    "words",
]

#: Word-set similarity at or above which two questions count as near-duplicates.
NEAR_DUPLICATE = 0.8

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset(
    ["a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "be", "do", "does", "did", "you", "your", "yours", "would", "should", "could", "it", "its", "this", "that", "these", "those", "as", "at", "by", "with", "from", "than", "then", "there", "their", "they", "them", "we", "our", "i", "me", "my"]
)


def words(text: str) -> frozenset[str]:
    """The content words of a text (lower case, stop words dropped; all words when every word is
    a stop word, so "Yes"/"No" and "To a great extent" still compare)."""
    toks = _WORD.findall(text.lower().replace("’", "'"))
    content = frozenset(t for t in toks if t not in _STOP)
    return content or frozenset(toks)


def similarity(a: str | frozenset[str], b: str | frozenset[str]) -> float:
    """Jaccard similarity of two texts' content words (1.0: the same words)."""
    wa = words(a) if isinstance(a, str) else a
    wb = words(b) if isinstance(b, str) else b
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def question_text(question: str, options: Sequence[str] = ()) -> str:
    """What makes a survey question itself: its text and its options (batteries share one stem,
    "Which statement comes closer to your view?", and differ only in their options)."""
    return " / ".join([question, *options])


def near_duplicates(texts: Sequence[str], *, against: Sequence[str] = (),
                    threshold: float = NEAR_DUPLICATE) -> list[tuple[int, int | str, float]]:
    """Pairs of near-duplicate texts (for questions, `question_text`): ``(i, j, similarity)`` for two of ``texts`` (``i < j``), and
    ``(i, "against:k", similarity)`` for a text of ``texts`` and the ``k``-th of ``against`` (e.g.
    new questions against the pool). Quadratic in the count: fine for pools of thousands."""
    sets = [words(t) for t in texts]
    other = [words(t) for t in against]
    out: list[tuple[int, int | str, float]] = []
    for i, j in itertools.combinations(range(len(sets)), 2):
        s = similarity(sets[i], sets[j])
        if s >= threshold:
            out.append((i, j, round(s, 3)))
    for i, wi in enumerate(sets):
        for k, wk in enumerate(other):
            s = similarity(wi, wk)
            if s >= threshold:
                out.append((i, f"against:{k}", round(s, 3)))
    return out


_NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "don't", "doesn't", "isn't", "aren't", "non", "un"})


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower().replace("’", "'")))


def overlapping_options(options: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of options a respondent could both pick: one contains the other as a phrase ("Yes"
    and "Yes, definitely"), unless a negation tells them apart ("Satisfied" and "Not satisfied").
    Options must be mutually exclusive for an ``exactly_one`` group to make sense. (Shared words
    alone do not count: "better at …" and "worse at …" share all but one.)"""
    norm = [_norm(o) for o in options]
    out = []
    for i, j in itertools.combinations(range(len(options)), 2):
        a, b = norm[i], norm[j]
        if not a or not b:
            continue
        differ = set(a.split()) ^ set(b.split())
        if differ & _NEGATIONS:  # "Satisfied" / "Not satisfied", "Agree" / "Neither agree nor disagree"
            continue
        contains = re.search(rf"(?<!\w){re.escape(a)}(?!\w)", b) or re.search(rf"(?<!\w){re.escape(b)}(?!\w)", a)
        if contains:
            out.append((i, j))
    return out


def persona_mentions(text: str, names: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """``(persona id, phrase)`` for each persona whose name, label or alias occurs in the text as
    whole words (case-insensitive). An option that names a persona, or a question that does ("As
    a nurse, …"), tells the model the answer instead of asking for it."""
    t = " " + _norm(text) + " "
    out = []
    for pid, phrases in names.items():
        for ph in phrases:
            n = _norm(ph)
            if n and f" {n} " in t:
                out.append((pid, ph))
                break
    return out


def spread(distributions: Sequence[Sequence[float]]) -> float:
    """Discriminativeness of one question: the mean pairwise total-variation distance between the
    personas' distributions over its options (0: every persona answers alike; 1: no overlap).
    Each distribution is normalised here; one persona alone has no spread (0.0)."""
    norm = []
    for d in distributions:
        total = float(sum(d))
        norm.append([x / total for x in d] if total > 0 else [1.0 / len(d)] * len(d))
    pairs = list(itertools.combinations(norm, 2))
    if not pairs:
        return 0.0
    tv = [0.5 * sum(abs(x - y) for x, y in zip(a, b)) for a, b in pairs]
    return round(sum(tv) / len(tv), 6)

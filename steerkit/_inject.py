"""Retrieval of the examples relevant to a query, and their injection into a chat prompt.

Retrieval is lexical (BM25 over each consistency group's question and options), so it needs no
model call and costs microseconds; the index of an example set is built once per version and
kept in a small LRU. Whole groups are retrieved, so a question's options travel together.

Injection follows the seed paper's two inference modes:

- ``predict`` (discrete-label prediction): the persona description, then labelled claims
  ("Question … Claim … This claim is True/False"), then the target (the user's message);
- ``generate`` (steered open-ended generation): the persona description, then only the answers
  the search selected as representative of the persona (the True-labelled options, the
  preferred response of each pair), then the target.

The block is appended to the app's system message (kept verbatim, first), or becomes the system
message when the app sent none.
"""

from __future__ import annotations

import math
import re
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from steerkit.models import ExampleSet, Item, Label, Persona
from steerkit.packs import PackTemplates

__all__ = ["BM25", "PersonaBlock", "answer_confidence_of", "inject_block", "render_block", "select_examples", "tokenize",
           "version_of"]

Mode = Literal["generate", "predict"]

_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your yours
    yourself yourselves think answer question would also get tell please want know""".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stop words, with a light plural/-ing stemmer."""
    out = []
    for t in _TOKEN.findall(text.lower()):
        if t in _STOP or len(t) < 2:
            continue
        if len(t) > 4 and t.endswith("ies"):
            t = t[:-3] + "y"
        elif len(t) > 5 and t.endswith("ing"):
            t = t[:-3]
        elif len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


class BM25:
    """Okapi BM25 over a fixed list of documents (k1=1.2, b=0.75)."""

    def __init__(self, docs: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        toks = [tokenize(d) for d in docs]
        self.n = len(toks)
        self.lengths = [len(t) for t in toks]
        self.avgdl = (sum(self.lengths) / self.n) if self.n else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, t in enumerate(toks):
            for term, tf in Counter(t).items():
                self.postings.setdefault(term, []).append((i, tf))
        self.idf = {
            term: math.log(1.0 + (self.n - len(p) + 0.5) / (len(p) + 0.5)) for term, p in self.postings.items()
        }

    def scores(self, query: str) -> list[float]:
        out = [0.0] * self.n
        if not self.n:
            return out
        k1, b, avg = self.k1, self.b, self.avgdl or 1.0
        for term in set(tokenize(query)):
            post = self.postings.get(term)
            if not post:
                continue
            idf = self.idf[term]
            for i, tf in post:
                out[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * self.lengths[i] / avg))
        return out


@dataclass(frozen=True)
class _Unit:
    key: str
    item_ids: tuple[str, ...]
    confidence: float


@dataclass(frozen=True)
class _Index:
    units: tuple[_Unit, ...]
    bm25: BM25


_INDEX_CACHE: OrderedDict[tuple[str, str], _Index] = OrderedDict()
_INDEX_CACHE_SIZE = 256
_FACTS: dict[int, tuple[weakref.ref[ExampleSet], str, float | None]] = {}


def version_of(es: ExampleSet) -> str:
    """``es.version``, memoised per object (computing it hashes every label). Example sets are
    treated as immutable once stored, as everywhere in steerkit."""
    return _facts(es)[0]


def answer_confidence_of(es: ExampleSet) -> float | None:
    """``es.answer_confidence()``, memoised per object like `version_of`."""
    return _facts(es)[1]


def _facts(es: ExampleSet) -> tuple[str, float | None]:
    k = id(es)
    hit = _FACTS.get(k)
    if hit is not None and hit[0]() is es:
        return hit[1], hit[2]
    v, c = es.version, es.answer_confidence()
    _FACTS[k] = (weakref.ref(es, lambda _r, k=k: _FACTS.pop(k, None)), v, c)
    return v, c


def _unit_text(items: Sequence[Item]) -> str:
    first = items[0]
    parts = [first.question]
    for it in items:
        parts.extend(x for x in (it.option, it.choice_1) if x)
    return " ".join(parts)


def _index(es: ExampleSet) -> _Index:
    cache_key = (es.persona.id, version_of(es))
    idx = _INDEX_CACHE.get(cache_key)
    if idx is not None:
        _INDEX_CACHE.move_to_end(cache_key)
        return idx
    by_id = {it.id: it for it in es.items}
    groups: dict[str, list[Item]] = {}
    order: list[str] = []
    for it in es.items:
        if it.id not in es.labels:
            continue
        key = it.group or it.id
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(it)
    units = []
    texts = []
    for key in order:
        members = groups[key]
        conf = es.group_confidence.get(key)
        if conf is None:
            conf = min(es.labels[m.id].confidence for m in members)
        units.append(_Unit(key=key, item_ids=tuple(m.id for m in members), confidence=conf))
        texts.append(_unit_text([by_id[m.id] for m in members]))
    idx = _Index(units=tuple(units), bm25=BM25(texts))
    _INDEX_CACHE[cache_key] = idx
    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        _INDEX_CACHE.popitem(last=False)
    return idx


def select_examples(es: ExampleSet, query: str, k: int, mode: Mode = "generate") -> list[tuple[Item, Label]]:
    """The up-to-``k`` examples most relevant to ``query``.

    Groups are ranked by BM25 against the query, ties (and a query sharing no word with the
    pool) broken by the group's confidence, then by pool order. ``predict`` takes every labelled
    member of a group (True and False claims); ``generate`` only the True ones (the
    representative answers). A group is never split unless it alone exceeds ``k``.
    """
    if k <= 0 or not es.labels:
        return []
    idx = _index(es)
    scores = idx.bm25.scores(query) if query else [0.0] * len(idx.units)
    order = sorted(range(len(idx.units)), key=lambda i: (-scores[i], -idx.units[i].confidence, i))
    by_id = {it.id: it for it in es.items}
    out: list[tuple[Item, Label]] = []
    for i in order:
        unit = idx.units[i]
        members = [(by_id[m], es.labels[m]) for m in unit.item_ids]
        if mode == "generate":
            members = [(it, lb) for it, lb in members if lb.value]
        if not members:
            continue
        room = k - len(out)
        if len(members) > room:
            if out:
                continue  # a smaller relevant group may still fit
            members = members[:room]
        out.extend(members)
        if len(out) >= k:
            break
    return out


# --- rendering ----------------------------------------------------------------------------------


def _clean(text: str | None) -> str:
    return " ".join(str(text or "").split())


@dataclass(frozen=True)
class PersonaBlock:
    """One persona's part of the injected text."""

    persona: Persona
    label: str
    templates: PackTemplates
    examples: tuple[tuple[Item, Label], ...]


def _fmt(template: str, **kw: Any) -> str:
    return template.format(**kw)


def _render_predict(pb: PersonaBlock, item: Item, label: Label) -> str:
    t, name, lab = pb.templates, pb.persona.name, pb.label
    q = _clean(item.question)
    verdict = "True" if label.value else "False"
    if item.kind == "claim":
        claim = _fmt(t.claim, name=name, label=lab, option=_clean(item.option), question=q)
        return f"Question: {q}\nClaim: {claim}\nThis claim is {verdict}."
    if item.kind == "preference":
        claim = _fmt(t.preference, name=name, label=lab, question=q)
        return (f"Question: {q}\nChoice 1: {_clean(item.choice_1)}\nChoice 2: {_clean(item.choice_2)}\n"
                f"Claim: {claim}\nThis claim is {verdict}.")
    claim = _fmt(t.answer, name=name, label=lab, option=_clean(item.option), question=q)
    return f"Question: {q}\nAnswer: {_clean(item.option)}\nClaim: {claim}\nThis claim is {verdict}."


def _render_generate(pb: PersonaBlock, item: Item, label: Label) -> str:
    q = _clean(item.question)
    if item.kind == "preference":
        return f"Question: {q}\nPreferred response: {_clean(item.choice_1)}"
    return f"Question: {q}\nRepresentative answer: {_clean(item.option)}"


def render_block(blocks: Sequence[PersonaBlock], mode: Mode = "generate") -> str:
    """The text injected for one or more personas (each with its examples)."""
    parts: list[str] = []
    for pb in blocks:
        p, t = pb.persona, pb.templates
        parts.append(_fmt(t.intro, name=p.name, label=pb.label, description=_clean(p.description),
                          dimension=p.dimension.replace("_", " ")).strip())
        if pb.examples:
            header = t.predict_header if mode == "predict" else t.generate_header
            parts.append(_fmt(header, name=p.name, label=pb.label))
            render = _render_predict if mode == "predict" else _render_generate
            parts.append("\n\n".join(render(pb, it, lb) for it, lb in pb.examples))
    for pb in blocks:
        t = pb.templates
        instr = t.predict_instruction if mode == "predict" else t.generate_instruction
        parts.append(_fmt(instr, name=pb.persona.name, label=pb.label))
    return "\n\n".join(parts)


def inject_block(messages: Sequence[dict[str, Any]], block: str) -> list[dict[str, Any]]:
    """A copy of ``messages`` with ``block`` appended to the leading system (or developer)
    message, whose original text is kept first and verbatim; a new system message otherwise.
    The caller's list and dicts are not modified."""
    out = [dict(m) if isinstance(m, dict) else m for m in messages]
    for i, m in enumerate(out):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer"):
            break
        content = m.get("content")
        if isinstance(content, str):
            out[i] = {**m, "content": (content + "\n\n" + block) if content else block}
            return out
        if isinstance(content, list):
            out[i] = {**m, "content": [*content, {"type": "text", "text": "\n\n" + block}]}
            return out
        if content is None:
            out[i] = {**m, "content": block}
            return out
        break
    return [{"role": "system", "content": block}, *out]

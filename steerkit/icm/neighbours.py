"""The demonstration graph of the sparse search: which consistency groups each group sees.

Sparse mutual predictability scores an item with the labelled items of its *nearest* units (a
consistency group, or a lone item) as demonstrations, not with every labelled item. "Nearest" is
lexical: BM25 (``rank_bm25``) over each unit's question and option text, the same kind of
similarity `steerkit.inject` uses to pick the examples a query sees, so the search optimises the
predictability of the contexts steering will actually show.

The graph is built once per search and never changes:

- a unit's context holds whole units (a question travels with all its options), nearest first,
  while they fit in ``context_k`` demonstrations (the nearest one is always taken);
- no unit sits in more than ``max_in_degree`` contexts. Without that cap a "hub" (a short,
  generic question near everything) would sit in most contexts, and changing its labels would
  re-score most of the pool: the cap is what keeps a proposal's cost flat in N;
- ties in similarity are broken by a hash of the pair, not by pool order, so a pool of
  near-identical texts gets a random-like (expander) graph rather than a chain, and labels can
  agree across the whole pool instead of settling into local domains.

Building costs O(units²) similarity evaluations (numpy, no model calls): ~1 s at 1,000 units.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rank_bm25 import BM25Okapi

from steerkit.icm.consistency import Unit
from steerkit.models import Item

__all__ = ["NeighbourGraph", "build_graph", "unit_text_tokens"]

_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a about after all also am an and any are as at be been but by can could did do does for from had
    has have he her his how i if in into is it its me more most my no not of on or our she so some than
    that the their them then there these they this those to too was we were what when which who why will
    with would you your""".split()
)


def unit_text_tokens(items: Sequence[Item]) -> list[str]:
    """Lower-cased word tokens (stop words dropped) of a unit's question and option texts."""
    parts: list[str] = []
    seen_q: set[str] = set()
    for it in items:
        if it.question not in seen_q:
            seen_q.add(it.question)
            parts.append(it.question)
        parts.extend(x for x in (it.option, it.choice_1, it.choice_2) if x)
    return [t for t in _TOKEN.findall(" ".join(parts).lower()) if t not in _STOP]


def _ties(u: int, n: int) -> np.ndarray:
    """A fixed pseudo-random tie-break for every pair (u, v), symmetric in u and v."""
    v = np.arange(n, dtype=np.uint64)
    lo = np.minimum(v, np.uint64(u))
    hi = np.maximum(v, np.uint64(u))
    x = (lo * np.uint64(0x9E3779B1) + hi * np.uint64(0x85EBCA77) + np.uint64(0x632BE5AB)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(12)
    return x


@dataclass(frozen=True)
class NeighbourGraph:
    """``context[u]``: unit indices whose items are u's demonstrations (ascending index, i.e. the
    search's fixed order, so prompts of units with overlapping contexts share prefixes);
    ``readers[u]``: the units whose context holds u (who must be re-scored when u's labels change)."""

    context: tuple[tuple[int, ...], ...]
    readers: tuple[tuple[int, ...], ...]
    max_in_degree: int

    def demonstrations(self, u: int, sizes: Sequence[int]) -> int:
        return sum(sizes[v] for v in self.context[u])


def build_graph(units: Sequence[Unit], items: dict[str, Item], context_k: int, max_in_degree: int | None = None) -> NeighbourGraph:
    """The sparse search's static demonstration graph over ``units`` (in the search's order)."""
    n = len(units)
    if n <= 1:
        return NeighbourGraph(context=((),) * n, readers=((),) * n, max_in_degree=0)
    sizes = [len(u.item_ids) for u in units]
    mean_size = sum(sizes) / n
    out_degree = max(1.0, context_k / mean_size)
    cap = max_in_degree if max_in_degree is not None else max(2, math.ceil(2 * out_degree))
    docs = [unit_text_tokens([items[i] for i in u.item_ids]) or ["_"] for u in units]
    bm25 = BM25Okapi(docs)
    # candidates per unit, best first: enough to fill a context even when the nearest are capped
    depth = min(n - 1, max(16, 4 * math.ceil(out_degree) + cap))
    ranked: list[list[int]] = []
    for u in range(n):
        scores = np.asarray(bm25.get_scores(docs[u]), dtype=float)
        scores[u] = -np.inf
        order = np.lexsort((_ties(u, n), -scores))  # by score descending, then the tie-break
        ranked.append([int(v) for v in order[:depth]])
    # fill contexts round-robin (one unit per turn), so no unit takes all the best neighbours first
    context: list[list[int]] = [[] for _ in range(n)]
    used = [0] * n
    in_degree = [0] * n
    pos = [0] * n
    open_units = list(range(n))
    while open_units:
        still: list[int] = []
        for u in open_units:
            cands = ranked[u]
            while pos[u] < len(cands):
                v = cands[pos[u]]
                pos[u] += 1
                if in_degree[v] >= cap:
                    continue
                if used[u] and used[u] + sizes[v] > context_k:
                    continue
                context[u].append(v)
                used[u] += sizes[v]
                in_degree[v] += 1
                break
            if pos[u] < len(cands) and used[u] < context_k:
                still.append(u)
        open_units = still
    readers: list[list[int]] = [[] for _ in range(n)]
    for u in range(n):
        for v in context[u]:
            readers[v].append(u)
    return NeighbourGraph(
        context=tuple(tuple(sorted(c)) for c in context),
        readers=tuple(tuple(r) for r in readers),
        max_in_degree=cap,
    )

"""ConsistencyFix: enumerate the consistent assignments of a consistency group and keep the best.

The reference code fixes one inconsistent *pair* at a time with its two options; steerkit
enumerates every consistent assignment of the whole group (the paper's intent), which is small:

- ``exactly_one`` (a question's options): each member True once, the others False (k options);
- ``asymmetric`` (A>B, B>A): the two orderings (2 options);
- ``keyed`` (candidate answers keyed by equivalence class): each key class True with the others
  False, or none True (#keys + 1 options);
- an item in no group is its own unit: True or False.

Fixed labels are respected: only assignments agreeing with them are produced (none means the fixed
labels themselves violate the constraint). Candidates are scored concurrently (`asyncio.gather`)
and the best by U is kept (ties: the first in enumeration order, which is deterministic).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from steerkit.icm.objective import Evaluation, Objective
from steerkit.models import ConsistencyGroup, Pool

__all__ = ["ConsistencyFix", "Unit", "consistent_assignments", "units_of"]


class Unit:
    """The smallest set of items whose labels are decided together: a group, or a lone item."""

    __slots__ = ("id", "item_ids", "group", "keys")

    def __init__(self, uid: str, item_ids: tuple[str, ...], group: ConsistencyGroup | None, keys: Mapping[str, str | None]):
        self.id = uid
        self.item_ids = item_ids
        self.group = group
        self.keys = {i: keys.get(i) for i in item_ids}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Unit({self.id!r}, {self.item_ids!r})"

    def violations(self, labels: Mapping[str, bool]) -> int:
        if self.group is None:
            return 0
        return self.group.violations(dict(labels), self.keys)


def units_of(pool: Pool, order: Iterable[str]) -> tuple[list[Unit], dict[str, Unit]]:
    """Units in the given item order (a group's unit sits at its first member), and item → unit."""
    group_of = pool.group_of()
    keys = {it.id: it.key for it in pool.items}
    units: list[Unit] = []
    by_item: dict[str, Unit] = {}
    for i in order:
        if i in by_item:
            continue
        g = group_of.get(i)
        u = Unit(i, (i,), None, keys) if g is None else Unit(g.id, tuple(g.item_ids), g, keys)
        units.append(u)
        for m in u.item_ids:
            by_item[m] = u
    return units, by_item


def consistent_assignments(unit: Unit, fixed: Mapping[str, bool] | None = None) -> list[dict[str, bool]]:
    """Every full assignment of the unit's items that satisfies its constraint and agrees with
    ``fixed``, in a deterministic order."""
    ids = unit.item_ids
    g = unit.group
    options = [{ids[0]: True}, {ids[0]: False}] if g is None else g.assignments(unit.keys)
    if fixed:
        options = [o for o in options if all(fixed[m] == v for m, v in o.items() if m in fixed)]
    return options


class ConsistencyFix:
    """Scores candidate assignments of one unit concurrently and keeps the best by U."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    async def best(self, base: Mapping[str, bool], candidates: list[dict[str, bool]]) -> Evaluation:
        """The best of ``base`` updated with each candidate, by U (ties: earliest candidate)."""
        if not candidates:
            raise ValueError("ConsistencyFix needs at least one candidate assignment")
        evals = await asyncio.gather(*(self.objective.evaluate({**base, **c}) for c in candidates))
        best = evals[0]
        for e in evals[1:]:
            if e.u > best.u:
                best = e
        return best

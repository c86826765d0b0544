"""Combined personas: one persona for a person who states several ("I'm a Nigerian Democrat").

Two independent sets with k split between them steer toward each persona on its own; the person
stated the intersection. A combined persona is searched like any other: its id is the members'
ids sorted and joined with ``+`` (``country/nigeria+polparty/democrat``), its claim name is composed
from theirs so the pool's claims are phrased for the combination ("The majority of Democrats from
Nigeria would answer …"), its pool is the members' pools together (gold dropped: a member's gold is
not the intersection's), and its search is warm-started from the members' cached sets where they
agree (`agreed_labels`).

Only the operator creates combinations: `allowed_combinations` reads ``steer.combined_personas``
and ``steer.combined_allow`` and checks every entry against the configured packs; a request can
only pick among them (`plan_combinations`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steerkit.errors import ConfigError, PackError, UnknownPersonaError
from steerkit.models import ConsistencyGroup, ExampleSet, Item, Persona, Pool
from steerkit.packs._model import PackTemplates, _truncate

if TYPE_CHECKING:
    from steerkit.packs._registry import PackRegistry

__all__ = [
    "SEPARATOR",
    "CombinedPersona",
    "agreed_labels",
    "allowed_combinations",
    "combine_personas",
    "combined_id",
    "compose_name",
    "is_combined",
    "members_of",
    "plan_combinations",
]

SEPARATOR = "+"
"""Joins the member ids of a combined persona; no pack persona id may contain it."""


def combined_id(persona_ids: Iterable[str]) -> str:
    """The stable id of a combination: the member ids, sorted, joined with ``+``."""
    ids = sorted({str(p).strip() for p in persona_ids if str(p).strip()})
    return SEPARATOR.join(ids)


def is_combined(persona_id: str) -> bool:
    return SEPARATOR in persona_id


def members_of(persona_id: str) -> tuple[str, ...]:
    """The member ids of a combined id (sorted, as `combined_id` writes them)."""
    return tuple(sorted({p.strip() for p in persona_id.split(SEPARATOR) if p.strip()}))


# --- names --------------------------------------------------------------------------------------

#: Claim names that are a generic head ("people", "U.S. adults") and a qualifier ("from Nigeria",
#: "aged 18-29", "who prefer …"): the qualifier can follow another persona's name.
_HEADS = ("people", "U.S. adults", "adults", "users", "Americans")
_QUALIFIER_STARTS = ("from ", "in ", "aged ", "with ", "without ", "who ", "living ", "born ")


def _split_name(name: str) -> tuple[str, str]:
    """(head, qualifier): ("people", "from Nigeria") for "people from Nigeria"; (name, "") for a
    name that is a noun phrase of its own ("Democrats", "U.S. women")."""
    n = " ".join(name.split())
    for head in _HEADS:
        rest = n[len(head):].lstrip() if n.startswith(head + " ") else ""
        if rest and rest.startswith(_QUALIFIER_STARTS):
            return head, rest
    return n, ""


def compose_name(names: Sequence[str]) -> str:
    """The claim name of a combination, from its members' claim names in member order.

    A name that is a head and a qualifier gives its qualifier to the other names ("Democrats" and
    "people from Nigeria" → "Democrats from Nigeria"); two noun phrases are joined with "who are
    also" ("Democrats who are also U.S. women"); qualifiers alone share one head ("people from
    Nigeria who prefer direct answers").

    >>> compose_name(["people from Nigeria", "Democrats"])
    'Democrats from Nigeria'
    >>> compose_name(["U.S. adults aged 18-29", "people in the U.S. Midwest"])
    'U.S. adults aged 18-29 in the U.S. Midwest'
    """
    nouns: list[str] = []
    heads: list[str] = []
    quals: list[str] = []
    for name in names:
        head, qual = _split_name(name)
        if qual:
            heads.append(head)
            quals.append(qual)
        else:
            nouns.append(head)
    base = nouns[0] if nouns else heads[0]
    if len(nouns) > 1:
        base = f"{base} who are also {' and '.join(nouns[1:])}"
    plain = [q for q in quals if not q.startswith("who ")]
    relative = [q for q in quals if q.startswith("who ")]
    out = " ".join([base, *plain])
    if relative:
        joiner = " and " if len(nouns) > 1 else " "
        out += joiner + " and ".join(relative)
    return out


# --- the combined persona and its pool ----------------------------------------------------------


@dataclass(frozen=True)
class CombinedPersona:
    """A combination of configured personas: what the search, the cache and injection need."""

    id: str
    members: tuple[str, ...]
    persona: Persona
    label: str
    """Short display name ("Nigeria + Democrat")."""
    templates: PackTemplates
    pool: Pool


def combine_personas(registry: PackRegistry, persona_ids: Iterable[str], *, max_items: int | None = None) -> CombinedPersona:
    """The combined persona of ``persona_ids`` (two or more configured personas of different
    dimensions): composed name and description, the members' pools together (their groups taken
    in turn, so a ``max_items`` cut keeps questions of every member; items both pools hold once;
    gold dropped). Raises `UnknownPersonaError` for an unknown member, `ConfigError` for fewer than
    two members or two of one dimension, `PackError` when two pools define one item differently."""
    members = members_of(combined_id(persona_ids))
    cid = SEPARATOR.join(members)
    if len(members) < 2:
        raise ConfigError(f"combined persona {cid!r} needs at least two personas",
                          hint='write it as "country/nigeria+polparty/democrat"')
    personas = [registry.persona(m) for m in members]  # UnknownPersonaError
    dims = [p.dimension for p in personas]
    if len(set(dims)) != len(dims):
        raise ConfigError(f"combined persona {cid!r} names two personas of one dimension ({', '.join(dims)})",
                          hint="a person states one persona per dimension; combine personas of different dimensions")
    specs = [registry.spec(m) for m in members]
    name = compose_name([p.name for p in personas])
    labels = [s.display for s in specs]
    descriptions = [p.description.strip().rstrip(".") for p in personas if p.description.strip()]
    description = f"All of these at once: {'; '.join(descriptions)}." if descriptions else ""
    persona = Persona(id=cid, name=name, dimension=" + ".join(dims), description=description)
    templates = [registry.templates(m) for m in members]
    same = all(t == templates[0] for t in templates)
    pool = _combined_pool(persona, [registry.pool(m, max_items=max_items) for m in members], max_items)
    return CombinedPersona(id=cid, members=members, persona=persona, label=" + ".join(labels),
                           templates=templates[0] if same else PackTemplates(), pool=pool)


def _combined_pool(persona: Persona, pools: Sequence[Pool], max_items: int | None) -> Pool:
    units: list[list[list[Item]]] = []  # per pool: its questions (a group's items, or one item)
    for pool in pools:
        order: dict[str, list[Item]] = {}
        for it in pool.items:
            order.setdefault(it.group or f"\x00{it.id}", []).append(it.model_copy(update={"gold": None}))
        units.append(list(order.values()))
    seen: dict[str, Item] = {}
    items: list[Item] = []
    for turn in range(max(len(u) for u in units)):
        for u in units:
            if turn < len(u):
                for it in u[turn]:
                    prev = seen.get(it.id)
                    if prev is None:
                        seen[it.id] = it
                        items.append(it)
                    elif prev.content() != it.content():
                        raise PackError(f"cannot combine into {persona.id!r}: item {it.id!r} differs between the "
                                        "members' pools", hint="give the packs' items distinct ids")
    kept = _truncate(items, max_items) if max_items is not None else tuple(items)
    kept_ids = {it.id for it in kept}
    groups: dict[str, ConsistencyGroup] = {}
    for pool in pools:
        for g in pool.groups:
            if g.id in groups and groups[g.id] != g:
                raise PackError(f"cannot combine into {persona.id!r}: consistency group {g.id!r} differs between "
                                "the members' pools", hint="give the packs' questions distinct ids")
            if all(i in kept_ids for i in g.item_ids):
                groups[g.id] = g
    return Pool(persona=persona, items=kept, groups=tuple(groups.values()))


def agreed_labels(pool: Pool, member_sets: Sequence[ExampleSet | None]) -> dict[str, bool]:
    """Warm-start labels for a combined pool from its members' cached sets: each item of the pool
    that a set labels, where every set that labels it gives the same value."""
    known = {it.id for it in pool.items}
    votes: dict[str, set[bool]] = {}
    for es in member_sets:
        if es is None:
            continue
        for item_id, label in es.labels.items():
            if item_id in known:
                votes.setdefault(item_id, set()).add(label.value)
    return {i: next(iter(v)) for i, v in votes.items() if len(v) == 1}


# --- what the operator allows, and what a request gets ------------------------------------------


def allowed_combinations(registry: PackRegistry | None, config: Any) -> dict[str, CombinedPersona]:
    """Combined id → `CombinedPersona` (pool cut to ``config.max_pool_items``), for
    ``steer.combined_personas = "allow-list"``; empty when ``off``. Built once, so a bad entry (an
    unknown persona, two of one dimension, pools that clash) fails at start-up, never on a request."""
    if registry is None or getattr(config, "combined_personas", "off") != "allow-list":
        return {}
    out: dict[str, CombinedPersona] = {}
    for entry in getattr(config, "combined_allow", ()) or ():
        try:
            combo = combine_personas(registry, members_of(entry), max_items=getattr(config, "max_pool_items", None))
        except (UnknownPersonaError, ConfigError, PackError) as e:
            raise type(e)(f"steer.combined_allow entry {entry!r}: {e.message}", hint=e.hint) from None
        out[combo.id] = combo
    return out


def plan_combinations(stated: Sequence[str], allowed: Mapping[str, CombinedPersona]) -> list[CombinedPersona]:
    """Which allowed combinations steer a request that stated ``stated`` (persona ids): the
    largest allowed combination whose members were all stated first (ties: by id), then the next
    among the personas left. Only allowed ids can come back."""
    left = set(stated)
    out: list[CombinedPersona] = []
    for combo in sorted(allowed.values(), key=lambda c: (-len(c.members), c.id)):
        if set(combo.members) <= left:
            out.append(combo)
            left -= set(combo.members)
    return out

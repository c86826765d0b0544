"""Persona packs: persona definitions, extraction cues and item pools, loaded from data files.

A pack is one TOML or JSON file (the shipped ones live in the repository's ``personas/`` folder
and are installed as the ``steerkit.personas`` resource package). It holds one persona
*dimension* (``country``, ``political_affiliation``, ``interaction_style`` …), its personas with
the cues the rule extractor matches, the item pool every persona of the pack is searched over,
and the templates used to inject examples into a chat prompt::

    id = "countries"
    dimension = "country"
    extraction = "identity"          # self-statements ("I'm from Brazil"); "keywords" for styles

    [[personas]]
    id = "country/brazil"
    name = "people from Brazil"      # used in claims: "The majority of {name} would answer …"
    label = "Brazil"
    description = "Adults living in Brazil."
    aliases = ["Brazilian"]          # identity words: "I'm Brazilian", "as a Brazilian"
    places = ["Brazil", "Brasil"]    # place names: "I'm from Brazil", "I live in Brazil"

    [[questions]]                    # survey question: one claim per option, exactly one True
    id = "gender_equality"
    question = "Should women have the same rights as men?"
    options = ["Yes", "No"]

    [[preferences]]                  # two responses: items "1 > 2" and "2 > 1", exactly one True
    id = "colours"
    question = "Do colours influence what consumers buy?"
    response_1 = "Yes. Colour shapes first impressions …"
    response_2 = "That's a fascinating question! Let's explore …"

    [[answers]]                      # open-ended candidates: items "this answer represents X"
    id = "dei"
    question = "Should colleges keep their DEI programs?"
    candidates = ["Keep them …", "End them …"]

Items imported from real data (``steerkit.importers``) can be attached with ``items_files``
(JSONL, paths relative to the pack file). Every mistake raises `PackError` naming the file and
the field.

`PackRegistry` holds the configured packs; only personas it defines can ever be matched,
cached or searched.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import string
import tomllib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from steerkit.errors import PackError, UnknownPersonaError
from steerkit.models import ConsistencyGroup, Ident, Item, Persona, PersonaCues, Pool, stable_hash

__all__ = [
    "AnswerSpec",
    "PackTemplates",
    "PersonaPack",
    "PersonaSpec",
    "PreferenceSpec",
    "PackRegistry",
    "QuestionSpec",
    "default_pack_paths",
    "load_pack",
    "pack_from_data",
]

PACK_SUFFIXES = (".toml", ".json")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# --- templates ----------------------------------------------------------------------------------

_TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "intro": frozenset({"name", "label", "description", "dimension"}),
    "claim": frozenset({"name", "label", "option", "question"}),
    "preference": frozenset({"name", "label", "question"}),
    "answer": frozenset({"name", "label", "option", "question"}),
    "predict_header": frozenset({"name", "label"}),
    "generate_header": frozenset({"name", "label"}),
    "predict_instruction": frozenset({"name", "label"}),
    "generate_instruction": frozenset({"name", "label"}),
}


class PackTemplates(_Strict):
    """Text used to inject a persona and its examples into a chat prompt.

    Placeholders: ``{name}`` (the persona's claim name), ``{label}`` (short display name),
    ``{description}``, ``{dimension}``, and per item ``{question}`` / ``{option}``.
    """

    intro: str = "Persona ({dimension}): {label}. {description}"
    claim: str = "The majority of {name} would answer this question as: '{option}'"
    preference: str = "Choice 1 > Choice 2 for {name}"
    answer: str = "This answer represents the views of {name}"
    predict_header: str = "Labelled claims inferred for {name} (True = holds for this persona):"
    generate_header: str = "Answers selected as representative of {name}:"
    predict_instruction: str = (
        "Answer the user's question as {name} would, consistent with the labelled claims above. "
        "When the question has answer options, pick the option {name} would most likely pick."
    )
    generate_instruction: str = (
        "Write your reply so that it reflects the views and preferences of {name}, "
        "consistent with the representative answers above."
    )

    @model_validator(mode="after")
    def _placeholders(self) -> PackTemplates:
        for fname, allowed in _TEMPLATE_FIELDS.items():
            text = getattr(self, fname)
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as e:
                raise ValueError(f"templates.{fname}: malformed braces ({e})") from None
            bad = sorted(u for u in used if u not in allowed)
            if bad:
                raise ValueError(
                    f"templates.{fname}: unknown placeholder(s) {bad}; allowed: {sorted(allowed)}"
                )
        return self


# --- file format --------------------------------------------------------------------------------

def _phrases(v: Sequence[str]) -> tuple[str, ...]:
    out = []
    for p in v:
        p = " ".join(str(p).split())
        if not p:
            raise ValueError("empty phrase")
        out.append(p)
    return tuple(out)


class PersonaSpec(_Strict):
    """One persona as written in a pack file."""

    id: Ident
    name: str = Field(min_length=1)
    """Claim name: "The majority of {name} would answer …" ("people from Brazil", "Democrats")."""
    label: str = ""
    """Short display name ("Brazil", "Democrat"); defaults to ``name``."""
    description: str = ""
    aliases: tuple[str, ...] = ()
    """Identity words a user states about themself: "Republican", "GOP voter", "Brazilian"."""
    places: tuple[str, ...] = ()
    """Place names for "I'm from …" / "I live in …" statements."""
    keywords: tuple[str, ...] = ()
    """Phrases that indicate the persona without a self-statement ("keep it short")."""
    negative_keywords: tuple[str, ...] = ()
    """Phrases that indicate a contrasting persona; they lower or cancel a keyword match."""
    ambiguous: tuple[str, ...] = ()
    """Aliases or keywords with an everyday meaning. An ambiguous alias ("independent") matches
    only when written capitalised or in an explicit frame ("I vote", "I identify as"); an
    ambiguous keyword ("direct", "background") counts half as much as a specific phrase."""
    items_file: str | None = None
    """Optional JSONL item pool for this persona only (e.g. imported with gold labels)."""

    @field_validator("aliases", "places", "keywords", "negative_keywords", "ambiguous", mode="before")
    @classmethod
    def _norm(cls, v: Any) -> Any:
        return _phrases(v) if isinstance(v, (list, tuple)) else v

    @model_validator(mode="after")
    def _cues(self) -> PersonaSpec:
        lower = {a.lower() for a in self.aliases + self.keywords}
        missing = [a for a in self.ambiguous if a.lower() not in lower]
        if missing:
            raise ValueError(f"'ambiguous' entries must also be in 'aliases' or 'keywords': {missing}")
        return self

    def persona(self, dimension: str) -> Persona:
        return Persona(
            id=self.id,
            name=self.name,
            dimension=dimension,
            description=self.description,
            cues=PersonaCues(
                aliases=tuple(dict.fromkeys(self.aliases + self.places)),
                keywords=self.keywords,
                negative_keywords=self.negative_keywords,
            ),
        )

    @property
    def display(self) -> str:
        return self.label or self.name


_LOCAL_ID = r"^[A-Za-z0-9_.\-]+$"


class QuestionSpec(_Strict):
    """A survey question with 2+ answer options; the persona picks exactly one."""

    id: str = Field(pattern=_LOCAL_ID)
    question: str = Field(min_length=1)
    options: tuple[str, ...] = Field(min_length=2)
    topic: str | None = None

    @field_validator("options")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not o.strip() for o in v):
            raise ValueError("options must be non-empty")
        if len({o.strip().lower() for o in v}) != len(v):
            raise ValueError("options must be distinct")
        return tuple(o.strip() for o in v)


class PreferenceSpec(_Strict):
    """Two candidate responses to one question; the persona prefers exactly one."""

    id: str = Field(pattern=_LOCAL_ID)
    question: str = Field(min_length=1)
    response_1: str = Field(min_length=1)
    response_2: str = Field(min_length=1)
    topic: str | None = None

    @model_validator(mode="after")
    def _differ(self) -> PreferenceSpec:
        if self.response_1.strip() == self.response_2.strip():
            raise ValueError("response_1 and response_2 are identical")
        return self


class AnswerSpec(_Strict):
    """Open-ended question with candidate answers; at most one represents the persona."""

    id: str = Field(pattern=_LOCAL_ID)
    question: str = Field(min_length=1)
    candidates: tuple[str, ...] = Field(min_length=2)
    topic: str | None = None


class PackFile(_Strict):
    """The raw structure of a pack file (validated before anything is built from it)."""

    schema_version: Literal[1] = 1
    id: str = Field(pattern=_LOCAL_ID)
    dimension: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    title: str = ""
    description: str = ""
    extraction: Literal["identity", "keywords"] = "identity"
    templates: PackTemplates = PackTemplates()
    personas: tuple[PersonaSpec, ...] = Field(min_length=1)
    questions: tuple[QuestionSpec, ...] = ()
    preferences: tuple[PreferenceSpec, ...] = ()
    answers: tuple[AnswerSpec, ...] = ()
    items_files: tuple[str, ...] = ()


# --- the validated pack -------------------------------------------------------------------------


class PersonaPack(BaseModel):
    """A loaded, validated persona pack: one dimension, its personas and its item pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    dimension: str
    title: str = ""
    description: str = ""
    extraction: Literal["identity", "keywords"] = "identity"
    templates: PackTemplates = PackTemplates()
    specs: tuple[PersonaSpec, ...]
    items: tuple[Item, ...]
    groups: tuple[ConsistencyGroup, ...] = ()
    persona_items: dict[str, tuple[Item, ...]] = Field(default_factory=dict)
    """Per-persona pools that replace ``items`` for that persona (from ``items_file``)."""
    source: str = "<memory>"

    @property
    def personas(self) -> tuple[Persona, ...]:
        return tuple(s.persona(self.dimension) for s in self.specs)

    def spec(self, persona_id: str) -> PersonaSpec:
        for s in self.specs:
            if s.id == persona_id:
                return s
        raise UnknownPersonaError(f"pack {self.id!r} has no persona {persona_id!r}")

    def pool(self, persona_id: str, *, max_items: int | None = None) -> Pool:
        """The item pool for one persona; ``max_items`` keeps whole groups from the start."""
        persona = self.spec(persona_id).persona(self.dimension)
        items = self.persona_items.get(persona_id, self.items)
        if max_items is not None:
            items = _truncate(items, max_items)
        if persona_id in self.persona_items or max_items is not None:
            return Pool.from_items(persona, list(items))
        return Pool(persona=persona, items=items, groups=self.groups)

    def content_hash(self) -> str:
        return stable_hash(
            {
                "id": self.id,
                "dimension": self.dimension,
                "specs": [s.model_dump() for s in self.specs],
                "items": [it.content() for it in self.items],
                "templates": self.templates.model_dump(),
            }
        )


def _truncate(items: Sequence[Item], max_items: int) -> tuple[Item, ...]:
    """The first ``max_items`` items, never splitting a consistency group (at least one group)."""
    if max_items < 1:
        raise PackError(f"max_items must be >= 1, got {max_items}")
    out: list[Item] = []
    by_group: dict[str, list[Item]] = {}
    order: list[str] = []
    for it in items:
        key = it.group or f"\x00{it.id}"
        if key not in by_group:
            by_group[key] = []
            order.append(key)
        by_group[key].append(it)
    for key in order:
        members = by_group[key]
        if out and len(out) + len(members) > max_items:
            break
        out.extend(members)
        if len(out) >= max_items:
            break
    return tuple(out)


def _expand(pf: PackFile) -> tuple[list[Item], list[ConsistencyGroup]]:
    items: list[Item] = []
    groups: list[ConsistencyGroup] = []
    p = pf.id
    for q in pf.questions:
        gid = f"{p}/{q.id}"
        ids = []
        for n, opt in enumerate(q.options):
            iid = f"{gid}/o{n}"
            ids.append(iid)
            meta = {"topic": q.topic} if q.topic else {}
            items.append(Item(id=iid, kind="claim", question=q.question, option=opt, group=gid, meta=meta))
        groups.append(ConsistencyGroup(id=gid, kind="exactly_one", item_ids=tuple(ids)))
    for pr in pf.preferences:
        gid = f"{p}/{pr.id}"
        meta = {"topic": pr.topic} if pr.topic else {}
        a = Item(id=f"{gid}/12", kind="preference", question=pr.question, choice_1=pr.response_1,
                 choice_2=pr.response_2, group=gid, meta=meta)
        b = Item(id=f"{gid}/21", kind="preference", question=pr.question, choice_1=pr.response_2,
                 choice_2=pr.response_1, group=gid, meta=meta)
        items += [a, b]
        groups.append(ConsistencyGroup(id=gid, kind="asymmetric", item_ids=(a.id, b.id)))
    for an in pf.answers:
        gid = f"{p}/{an.id}"
        ids = []
        meta = {"topic": an.topic} if an.topic else {}
        for n, cand in enumerate(an.candidates):
            iid = f"{gid}/c{n}"
            ids.append(iid)
            items.append(Item(id=iid, kind="answer", question=an.question, option=cand, group=gid, key=f"c{n}", meta=meta))
        groups.append(ConsistencyGroup(id=gid, kind="keyed", item_ids=tuple(ids)))
    return items, groups


def _fmt_loc(loc: Sequence[Any], data: Any) -> str:
    """A readable field path: ``personas[3] (id='country/x').aliases``."""
    parts: list[str] = []
    cur = data
    for el in loc:
        if isinstance(el, int):
            label = ""
            if isinstance(cur, list) and 0 <= el < len(cur) and isinstance(cur[el], dict) and "id" in cur[el]:
                label = f" (id={cur[el]['id']!r})"
            parts.append(f"[{el}]{label}")
            cur = cur[el] if isinstance(cur, list) and 0 <= el < len(cur) else None
        else:
            parts.append(("." if parts else "") + str(el))
            cur = cur.get(el) if isinstance(cur, dict) else None
    return "".join(parts) or "<top level>"


def _raise_validation(source: str, e: ValidationError, data: Any) -> None:
    err = e.errors()[0]
    loc = [x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-"))]
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {e.error_count() - 1} more error(s))" if e.error_count() > 1 else ""
    raise PackError(f"{source}: field {_fmt_loc(loc, data)}: {msg}{more}",
                    hint="fix the pack file; see steerkit/packs.py for the format") from None


def _read_items_jsonl(path: Path, source: str) -> list[Item]:
    from steerkit.importers import import_jsonl

    if not path.is_file():
        raise PackError(f"{source}: items file {str(path)!r} does not exist")
    try:
        return import_jsonl(path)
    except Exception as e:  # DatasetImportError or validation
        raise PackError(f"{source}: items file {str(path)!r}: {e}") from e


def pack_from_data(data: dict[str, Any], *, source: str = "<memory>", base_dir: Path | None = None) -> PersonaPack:
    """Validate a pack given as a dict (what a TOML/JSON pack file parses to)."""
    if not isinstance(data, dict):
        raise PackError(f"{source}: a pack file must contain a table/object at the top level")
    try:
        pf = PackFile.model_validate(data)
    except ValidationError as e:
        _raise_validation(source, e, data)
        raise  # unreachable
    ids = [s.id for s in pf.personas]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise PackError(f"{source}: field personas: duplicate persona id(s) {dup}")
    for kind, specs in (("questions", pf.questions), ("preferences", pf.preferences), ("answers", pf.answers)):
        qids = [s.id for s in specs]
        d = sorted({i for i in qids if qids.count(i) > 1})
        if d:
            raise PackError(f"{source}: field {kind}: duplicate id(s) {d}")
    if pf.extraction == "identity":
        for n, s in enumerate(pf.personas):
            if not (s.aliases or s.places):
                raise PackError(f"{source}: field personas[{n}] (id={s.id!r}).aliases: an identity pack's persona "
                                "needs 'aliases' or 'places' so a user can state it")
    else:
        for n, s in enumerate(pf.personas):
            if not s.keywords:
                raise PackError(f"{source}: field personas[{n}] (id={s.id!r}).keywords: a keywords pack's persona "
                                "needs 'keywords'")
    try:
        items, groups = _expand(pf)
    except ValidationError as e:
        raise PackError(f"{source}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    base = base_dir or Path(".")
    for rel in pf.items_files:
        extra = _read_items_jsonl(base / rel, source)
        items.extend(extra)
    persona_items: dict[str, tuple[Item, ...]] = {}
    for s in pf.personas:
        if s.items_file:
            persona_items[s.id] = tuple(_read_items_jsonl(base / s.items_file, source))
    if not items and not persona_items:
        raise PackError(f"{source}: field questions: the pack has no items (add questions, preferences, answers "
                        "or items_files)")
    # Validate the pool structure once (duplicate ids, group membership) with the first persona.
    try:
        if items:
            extra_groups = _groups_for_loose(items, groups)
            Pool(persona=pf.personas[0].persona(pf.dimension), items=tuple(items), groups=tuple(groups + extra_groups))
            groups = groups + extra_groups
        for pid, its in persona_items.items():
            Pool.from_items(Persona(id=pid, name=pid, dimension=pf.dimension), list(its))
    except Exception as e:
        raise PackError(f"{source}: the item pool is invalid: {e}") from e
    return PersonaPack(
        id=pf.id,
        dimension=pf.dimension,
        title=pf.title,
        description=pf.description,
        extraction=pf.extraction,
        templates=pf.templates,
        specs=pf.personas,
        items=tuple(items),
        groups=tuple(groups),
        persona_items=persona_items,
        source=source,
    )


def _groups_for_loose(items: list[Item], groups: list[ConsistencyGroup]) -> list[ConsistencyGroup]:
    """Groups for imported items that name a ``group`` the pack did not define."""
    known = {g.id for g in groups}
    members: dict[str, list[Item]] = {}
    for it in items:
        if it.group is not None and it.group not in known:
            members.setdefault(it.group, []).append(it)
    default = {"claim": "exactly_one", "preference": "asymmetric", "answer": "keyed"}
    return [
        ConsistencyGroup(id=g, kind=default[its[0].kind], item_ids=tuple(i.id for i in its))  # type: ignore[arg-type]
        for g, its in members.items()
    ]


def load_pack(path: str | Path) -> PersonaPack:
    """Load and validate one pack file (``.toml`` or ``.json``)."""
    p = Path(path).expanduser()
    source = str(p)
    if p.suffix not in PACK_SUFFIXES:
        raise PackError(f"{source}: a pack file must end in .toml or .json")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise PackError(f"{source}: cannot read the pack file ({e.strerror})") from None
    return _parse(raw, p.suffix, source, p.parent)


def _parse(raw: bytes, suffix: str, source: str, base_dir: Path | None) -> PersonaPack:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"{source}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PackError(f"{source}: invalid TOML: {e}") from None
    except json.JSONDecodeError as e:
        raise PackError(f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise PackError(f"{source}: nested too deeply to parse (a pack is a few levels deep)") from None
    return pack_from_data(data, source=source, base_dir=base_dir)


# --- shipped packs ------------------------------------------------------------------------------


def _personas_root():  # -> Traversable
    """The shipped packs: the ``steerkit.personas`` resource package (wheel / fresh editable
    install), or the repository's top-level ``personas/`` folder in a source checkout."""
    try:
        root = importlib.resources.files("steerkit.personas")
        if root.is_dir() and any(c.name.endswith(PACK_SUFFIXES) for c in root.iterdir()):
            return root
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    here = Path(__file__).resolve().parent.parent / "personas"
    if here.is_dir():
        return here
    raise PackError("the shipped persona packs are missing from this installation",
                    hint="reinstall steerkit; the wheel must contain steerkit/personas/*.toml")


def default_pack_paths() -> list[str]:
    """Names of the shipped pack files."""
    root = _personas_root()
    return sorted(c.name for c in root.iterdir() if c.name.endswith(PACK_SUFFIXES))


@lru_cache(maxsize=1)
def _default_packs() -> tuple[PersonaPack, ...]:
    root = _personas_root()
    packs = []
    for c in sorted(root.iterdir(), key=lambda c: c.name):
        if c.name.endswith(PACK_SUFFIXES):
            suffix = ".toml" if c.name.endswith(".toml") else ".json"
            source = str(c) if isinstance(c, Path) else f"steerkit.personas/{c.name}"
            base = c.parent if isinstance(c, Path) else None
            packs.append(_parse(c.read_bytes(), suffix, source, base))
    return tuple(packs)


# --- registry -----------------------------------------------------------------------------------


class PackRegistry:
    """The configured packs. Only personas defined here can be matched, cached or searched."""

    def __init__(self, packs: Iterable[PersonaPack]) -> None:
        self._packs: tuple[PersonaPack, ...] = tuple(packs)
        if not self._packs:
            raise PackError("no persona packs configured", hint="use PackRegistry.default() or give pack paths")
        self._by_persona: dict[str, PersonaPack] = {}
        pack_ids: dict[str, str] = {}
        for pk in self._packs:
            if pk.id in pack_ids:
                raise PackError(f"{pk.source}: field id: pack id {pk.id!r} is also used by {pack_ids[pk.id]}")
            pack_ids[pk.id] = pk.source
            for s in pk.specs:
                if s.id in self._by_persona:
                    other = self._by_persona[s.id].source
                    raise PackError(f"{pk.source}: field personas: persona id {s.id!r} is also defined in {other}")
                self._by_persona[s.id] = pk
        self._pools: dict[tuple[str, int | None], Pool] = {}
        self._personas: dict[str, Persona] = {pid: pk.spec(pid).persona(pk.dimension) for pid, pk in self._by_persona.items()}

    # constructors
    @classmethod
    def default(cls) -> PackRegistry:
        """The packs shipped with steerkit (countries, political affiliation, interaction styles)."""
        return cls(_default_packs())

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], *, include_default: bool = False) -> PackRegistry:
        """Packs from files or folders (a folder contributes every ``*.toml``/``*.json`` in it,
        recursively). ``include_default`` adds the shipped packs."""
        packs: list[PersonaPack] = list(_default_packs()) if include_default else []
        for path in paths:
            p = Path(path).expanduser()
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in PACK_SUFFIXES)
                if not files:
                    raise PackError(f"{p}: the folder holds no .toml or .json pack files")
                packs.extend(load_pack(f) for f in files)
            elif p.exists():
                packs.append(load_pack(p))
            else:
                raise PackError(f"{p}: no such pack file or folder")
        return cls(packs)

    # lookups
    @property
    def packs(self) -> tuple[PersonaPack, ...]:
        return self._packs

    def __contains__(self, persona_id: object) -> bool:
        return persona_id in self._by_persona

    def persona(self, persona_id: str) -> Persona:
        try:
            return self._personas[persona_id]
        except (KeyError, TypeError):
            raise self._unknown(persona_id) from None

    def personas(self, dimension: str | None = None) -> list[Persona]:
        return [p for p in self._personas.values() if dimension is None or p.dimension == dimension]

    def resolve(self, name: str) -> str:
        """The persona id a user means by ``name``: an id (``country/nigeria``), or a short name the
        packs give it: the id's last part (``nigeria``), its display name, an alias or a place
        (``Nigerian``, ``Democrats``), case-insensitively. An unknown or ambiguous name raises
        `UnknownPersonaError` with "did you mean" candidates.

        >>> PackRegistry.default().resolve("nigeria")
        'country/nigeria'
        >>> PackRegistry.default().resolve("Democrats")
        'polparty/democrat'
        """
        if name in self._by_persona:
            return name
        key = " ".join(str(name).split()).casefold()
        found = list(dict.fromkeys(pid for n, pids in self._names().items() if n == key for pid in pids))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UnknownPersonaError(f"{name!r} names several personas: {', '.join(found)}", hint="give the full persona id")
        raise self._unknown(name)

    def _names(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for pid in self._by_persona:
            spec = self.spec(pid)
            words = [pid, pid.rsplit("/", 1)[-1], self._personas[pid].name, *spec.aliases, *getattr(spec, "places", ())]
            for w in words:
                names.setdefault(" ".join(str(w).split()).casefold(), []).append(pid)
        return names

    def dimensions(self) -> list[str]:
        return list(dict.fromkeys(pk.dimension for pk in self._packs))

    def pack_of(self, persona_id: str) -> PersonaPack:
        try:
            return self._by_persona[persona_id]
        except (KeyError, TypeError):
            raise self._unknown(persona_id) from None

    def spec(self, persona_id: str) -> PersonaSpec:
        return self.pack_of(persona_id).spec(persona_id)

    def templates(self, persona_id: str) -> PackTemplates:
        return self.pack_of(persona_id).templates

    def pool(self, persona_id: str, *, max_items: int | None = None) -> Pool:
        """The item pool the search labels for this persona (built once, then cached)."""
        key = (persona_id, max_items)
        pool = self._pools.get(key)
        if pool is None:
            pool = self.pack_of(persona_id).pool(persona_id, max_items=max_items)
            self._pools[key] = pool
        return pool

    def digest(self) -> str:
        return stable_hash([pk.content_hash() for pk in self._packs])

    def _unknown(self, persona_id: object) -> UnknownPersonaError:
        names = self._names()
        typed = " ".join(str(persona_id).split()).casefold()
        close_names = difflib.get_close_matches(typed, list(names), n=5, cutoff=0.6)
        close = list(dict.fromkeys(pid for n in close_names for pid in names[n]))[:3]
        if not close:
            close = difflib.get_close_matches(str(persona_id), list(self._by_persona), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else (
            f"known personas: {', '.join(sorted(self._by_persona)[:8])}{' …' if len(self._by_persona) > 8 else ''}"
            " (`steerkit cache ls --personas` lists them all)"
        )
        return UnknownPersonaError(f"unknown persona {persona_id!r}: no configured pack defines it", hint=hint)

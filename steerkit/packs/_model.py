"""The pack model: what a pack file may say (`PackFile` and its parts), which format versions this
steerkit reads, and the validated `PersonaPack` built from it (its personas, item pool and
consistency groups). ``personas/FORMAT.md`` is the one-page description of the format.

Every mistake raises `PackError` naming the file and the field.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from steerkit.errors import PackError, UnknownPersonaError
from steerkit.models import (
    ConsistencyGroup,
    Ident,
    Item,
    Persona,
    PersonaCues,
    Pool,
    stable_hash,
)

__all__ = [
    "ANSWER_POOL_FORMAT_VERSION",
    "FORMAT_VERSION",
    "SUPPORTED_FORMAT_VERSIONS",
    "AnswerSpec",
    "PackFile",
    "PackProvenance",
    "PackTemplates",
    "PersonaPack",
    "PersonaSpec",
    "PoolAnswerSpec",
    "PoolQuestionSpec",
    "PreferenceSpec",
    "QuestionSpec",
    "format_version_needed",
    "pack_from_data",
]

#: The newest pack format this steerkit reads and writes. Version 2 is version 1 plus the
#: ``answer_pool`` section; a file is written in the lowest version its content needs
#: (`format_version_needed`), so a pack without an answer pool stays readable by older steerkits.
FORMAT_VERSION = 2
#: The pack formats this steerkit reads. A file without ``format_version`` is version 1, and the
#: earlier spelling ``schema_version`` is read as ``format_version``.
SUPPORTED_FORMAT_VERSIONS = frozenset({1, 2})
#: The first format with an ``answer_pool`` section.
ANSWER_POOL_FORMAT_VERSION = 2
FORMAT_DOC = "personas/FORMAT.md"


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
    spread: float | None = Field(default=None, ge=0.0, le=1.0)
    """Discriminativeness under the base model (written by ``steerkit pack generate``): how far
    the personas' predicted answers differ, the mean pairwise total-variation distance between
    their option distributions (0: every persona answers alike; 1: no two overlap)."""

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


def _norm_text(text: str) -> str:
    return " ".join(text.casefold().split())


class PoolAnswerSpec(_Strict):
    """One candidate free-text answer of an answer-pool question (``[[answer_pool.answers]]``)."""

    id: str = Field(pattern=_LOCAL_ID)
    text: str = Field(min_length=1)
    gold: dict[str, StrictBool] = Field(default_factory=dict)
    """Persona → whether this answer represents it (``true``) or not (``false``); a persona not
    named has no gold for it. Keys: a persona id of this pack or its last part (``democrat``);
    stored under the full id. Evaluation only: the search never sees it."""
    stance: str | None = None
    """Free text: the position the answer takes ("strongly in favour")."""
    source: str | None = None
    """Who wrote it ("pack author", a model name)."""


class PoolQuestionSpec(_Strict):
    """An open-ended question of the pack's answer pool (``[[answer_pool]]``) with 2+ candidate
    answers: the data of ``steerkit eval --task generation``. Not part of the item pool: the
    product's searches and their cache keys never see it."""

    id: str = Field(pattern=_LOCAL_ID)
    question: str = Field(min_length=1)
    topic: str | None = None
    answers: tuple[PoolAnswerSpec, ...] = Field(min_length=2)

    @field_validator("answers")
    @classmethod
    def _distinct(cls, v: tuple[PoolAnswerSpec, ...]) -> tuple[PoolAnswerSpec, ...]:
        ids = [a.id for a in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate answer id(s) {dup}: give each answer of a question its own id")
        seen: dict[str, str] = {}
        for a in v:
            key = _norm_text(a.text)
            if key in seen:
                raise ValueError(f"answers {seen[key]!r} and {a.id!r} have the same text: remove one or reword it")
            seen[key] = a.id
        return v


class PackProvenance(_Strict):
    """One run of a tool that wrote into the pack (``[[provenance]]``): what made the questions."""

    tool: str = Field(min_length=1)
    """The command, e.g. ``steerkit pack generate``, with steerkit's version."""
    date: str = Field(min_length=1)
    """When (ISO 8601)."""
    model: str = ""
    """The chat model that wrote the questions."""
    prompt_version: str = ""
    base_model: str = ""
    """The base model whose scores measured discriminativeness (``spread``)."""
    added: int = Field(default=0, ge=0)
    """Questions this run added to the pool."""
    counts: dict[str, int | float] = Field(default_factory=dict)
    """What the run measured: candidates, each filter's rejections, the pool's mean spread …"""


class PackFile(_Strict):
    """The raw structure of a pack file (validated before anything is built from it)."""

    format_version: int = FORMAT_VERSION
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
    provenance: tuple[PackProvenance, ...] = ()
    answer_pool: tuple[PoolQuestionSpec, ...] = ()


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
    questions: tuple[QuestionSpec, ...] = ()
    """The survey questions as the file wrote them (their ``spread`` when measured)."""
    provenance: tuple[PackProvenance, ...] = ()
    answer_pool: tuple[PoolQuestionSpec, ...] = ()
    """Open-ended questions with candidate answers and gold by persona id (``steerkit eval --task
    generation``); outside the item pool, its hashes and cache keys."""
    format_version: int = FORMAT_VERSION
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
        content: dict[str, Any] = {
            "id": self.id,
            "dimension": self.dimension,
            "specs": [s.model_dump() for s in self.specs],
            "items": [it.content() for it in self.items],
            "templates": self.templates.model_dump(),
        }
        if self.answer_pool:  # a pack without one hashes as before
            content["answer_pool"] = [q.model_dump() for q in self.answer_pool]
        return stable_hash(content)


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
                    hint=f"fix the pack file; {FORMAT_DOC} describes the format") from None


def _read_items_jsonl(path: Path, source: str) -> list[Item]:
    from steerkit.importers import import_jsonl

    if not path.is_file():
        raise PackError(f"{source}: items file {str(path)!r} does not exist")
    try:
        return import_jsonl(path)
    except Exception as e:  # DatasetImportError or validation
        raise PackError(f"{source}: items file {str(path)!r}: {e}") from e


def _versioned(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The data with its ``format_version`` checked (``schema_version``, the earlier spelling,
    renamed); a version this steerkit does not read is a `PackError` saying so."""
    if "schema_version" in data:
        legacy = data["schema_version"]
        if "format_version" in data and data["format_version"] != legacy:
            raise PackError(f"{source}: field format_version: {data['format_version']!r} disagrees with "
                            f"schema_version {legacy!r}", hint="keep only format_version")
        data = {("format_version" if k == "schema_version" else k): v for k, v in data.items()}
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise PackError(f"{source}: field format_version: must be an integer, got {version!r}",
                        hint=f"write format_version = 1 ({ANSWER_POOL_FORMAT_VERSION} with an answer_pool); {FORMAT_DOC} "
                        "describes the format")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        newer = version > max(SUPPORTED_FORMAT_VERSIONS)
        vs = sorted(SUPPORTED_FORMAT_VERSIONS)
        readable = f"formats {vs[0]} to {vs[-1]}" if len(vs) > 1 else f"format {vs[0]}"
        raise PackError(
            f"{source}: field format_version: this steerkit reads pack {readable}, the file is format {version}",
            hint="upgrade steerkit to read it" if newer else f"format {version} does not exist; write format_version = "
            f"1 ({ANSWER_POOL_FORMAT_VERSION} with an answer_pool; {FORMAT_DOC})",
        )
    return data


def format_version_needed(data: dict[str, Any]) -> int:
    """The lowest format a pack's data can be written in: 2 with an ``answer_pool``, else 1."""
    return ANSWER_POOL_FORMAT_VERSION if data.get("answer_pool") else 1


def _resolve_gold(pf: PackFile, source: str, data: dict[str, Any]) -> tuple[PoolQuestionSpec, ...]:
    """The answer pool with every gold key as a full persona id of this pack (a key may be the id's
    last part); an unknown or ambiguous key is a `PackError` naming the field."""
    if not pf.answer_pool:
        return ()
    full = {s.id for s in pf.personas}
    short: dict[str, list[str]] = {}
    for pid in full:
        short.setdefault(pid.rsplit("/", 1)[-1], []).append(pid)
    known = ", ".join(sorted(p.rsplit("/", 1)[-1] for p in full))
    out = []
    for qn, q in enumerate(pf.answer_pool):
        answers = []
        for an, a in enumerate(q.answers):
            gold: dict[str, bool] = {}
            for key, value in a.gold.items():
                where = _fmt_loc(["answer_pool", qn, "answers", an, "gold"], data)
                if key in full:
                    pid = key
                elif len(short.get(key, ())) == 1:
                    pid = short[key][0]
                elif key in short:
                    raise PackError(f"{source}: field {where}: {key!r} names several personas "
                                    f"({', '.join(sorted(short[key]))})", hint="write the persona's full id")
                else:
                    raise PackError(f"{source}: field {where}: unknown persona {key!r}",
                                    hint=f"use a persona of this pack ({known}) or its full id")
                if pid in gold:
                    raise PackError(f"{source}: field {where}: persona {pid!r} is given twice",
                                    hint="keep one key per persona")
                gold[pid] = value
            answers.append(a.model_copy(update={"gold": gold}))
        out.append(q.model_copy(update={"answers": tuple(answers)}))
    return tuple(out)


def pack_from_data(data: dict[str, Any], *, source: str = "<memory>", base_dir: Path | None = None) -> PersonaPack:
    """Validate a pack given as a dict (what a TOML/JSON pack file parses to)."""
    if not isinstance(data, dict):
        raise PackError(f"{source}: a pack file must contain a table/object at the top level")
    data = _versioned(data, source)
    if data.get("answer_pool") and data.get("format_version", 1) < ANSWER_POOL_FORMAT_VERSION:
        raise PackError(f"{source}: field answer_pool: needs format_version = {ANSWER_POOL_FORMAT_VERSION} "
                        f"(the file says {data.get('format_version', 1)})",
                        hint=f"write format_version = {ANSWER_POOL_FORMAT_VERSION} at the top of the file, so that an "
                        f"older steerkit says to upgrade instead of rejecting the section ({FORMAT_DOC})")
    try:
        pf = PackFile.model_validate(data)
    except ValidationError as e:
        _raise_validation(source, e, data)
        raise  # unreachable
    ids = [s.id for s in pf.personas]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise PackError(f"{source}: field personas: duplicate persona id(s) {dup}")
    for kind, specs in (("questions", pf.questions), ("preferences", pf.preferences), ("answers", pf.answers),
                        ("answer_pool", pf.answer_pool)):
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
        questions=pf.questions,
        provenance=pf.provenance,
        answer_pool=_resolve_gold(pf, source, data),
        format_version=pf.format_version,
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



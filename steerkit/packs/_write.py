"""Writing pack files: a new pack's skeleton (``steerkit pack new``), packs built from survey data
(``pack import``), and questions appended to an existing pack (``pack generate``).

Files are TOML written with tomlkit, so appending to a pack the user has edited keeps their
comments and layout. Every file is validated as a pack before it is written, and written
atomically (a temporary file renamed over the target), so a failed or interrupted write never
leaves a pack that does not load.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steerkit.errors import PackError
from steerkit.models import Item
from steerkit.packs._model import (
    ANSWER_POOL_FORMAT_VERSION,
    FORMAT_DOC,
    PackProvenance,
    PersonaPack,
    PoolQuestionSpec,
    QuestionSpec,
    format_version_needed,
    pack_from_data,
)

__all__ = [
    "STARTER_QUESTION_PREFIX",
    "NewPackSpec",
    "NewPersona",
    "append_answer_pool",
    "append_questions",
    "new_pack_document",
    "slug",
    "write_pack_document",
    "write_survey_pack",
]

#: Ids of the example questions a new skeleton starts with; ``pack check`` warns while any is left.
STARTER_QUESTION_PREFIX = "example_"


def slug(text: str) -> str:
    """A local id from free text: ``"Gen Z gamers"`` → ``gen_z_gamers``."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not s:
        raise PackError(f"cannot make an id from {text!r}", hint="give an id of letters and digits")
    return s


class NewPersona(BaseModel):
    """One persona of a new pack, as the user describes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1)
    """Claim name, plural: "Nurses", "first-time home buyers"."""
    label: str = ""
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    places: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    id: str | None = None


class NewPackSpec(BaseModel):
    """What ``steerkit pack new`` needs: a dimension and its personas (a TOML/JSON spec file or flags)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1)
    dimension: str = ""
    title: str = ""
    description: str = ""
    extraction: Literal["identity", "keywords"] = "identity"
    personas: list[NewPersona] = Field(min_length=2)
    questions: list[QuestionSpec] = Field(default_factory=list)


_STARTERS = (
    QuestionSpec(id=f"{STARTER_QUESTION_PREFIX}1", topic="example",
                 question="Which matters more to you when you make a big decision?",
                 options=("What has worked for people like me before", "What experts recommend")),
    QuestionSpec(id=f"{STARTER_QUESTION_PREFIX}2", topic="example",
                 question="How do you prefer to get news about your field?",
                 options=("From colleagues I know", "From official sources", "From social media")),
)


def _question_table(q: QuestionSpec) -> Any:
    t = tomlkit.table()
    t["id"] = q.id
    if q.topic:
        t["topic"] = q.topic
    t["question"] = q.question
    t["options"] = list(q.options)
    if q.spread is not None:
        t["spread"] = q.spread
    return t


def new_pack_document(spec: NewPackSpec) -> tomlkit.TOMLDocument:
    """The skeleton of a pack for ``spec``: header, personas with their cues, and the pool (the
    spec's questions, else two example questions to replace), commented for the user who edits it.
    Raises `PackError` when the result would not load."""
    pack_id = slug(spec.id)
    dimension = slug(spec.dimension or spec.id)
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"steerkit persona pack ({FORMAT_DOC} describes every field)."))
    doc.add(tomlkit.comment("Edit the personas' cues and the questions, then run `steerkit pack check` on this file;"))
    doc.add(tomlkit.comment("`steerkit pack generate` grows the pool with a chat model."))
    doc["format_version"] = format_version_needed({})  # no answer pool: 1
    doc["id"] = pack_id
    doc["dimension"] = dimension
    doc["title"] = spec.title or spec.dimension or spec.id
    doc["description"] = spec.description
    doc["extraction"] = spec.extraction
    personas = tomlkit.aot()
    for p in spec.personas:
        t = tomlkit.table()
        t["id"] = f"{pack_id}/{slug(p.id or p.label or p.name)}"
        t["name"] = p.name
        t["label"] = p.label or p.name
        t["description"] = p.description
        if spec.extraction == "identity":
            t["aliases"] = p.aliases or [p.label or p.name]
            t["aliases"].comment('what a user states: "I\'m a …", "as a …"')
            if p.places:
                t["places"] = p.places
        else:
            t["keywords"] = p.keywords or p.aliases or [p.label or p.name]
            t["keywords"].comment("phrases that indicate this persona")
        personas.append(t)
    doc["personas"] = personas
    questions = spec.questions or list(_STARTERS)
    doc.add(tomlkit.nl())
    doc.add(tomlkit.comment("The item pool: survey questions with 2-4 mutually exclusive options on which the personas"))
    doc.add(tomlkit.comment("differ. Aim for 40 or more; every persona of the pack is searched over the same pool."))
    if not spec.questions:
        doc.add(tomlkit.comment(f"The {STARTER_QUESTION_PREFIX}* questions are placeholders: replace them."))
    aot = tomlkit.aot()
    for q in questions:
        aot.append(_question_table(q))
    doc["questions"] = aot
    _validate(doc, f"<new pack {pack_id}>", None)
    return doc


def _validate(doc: tomlkit.TOMLDocument, source: str, base_dir: Path | None) -> PersonaPack:
    return pack_from_data(tomllib.loads(tomlkit.dumps(doc)), source=source, base_dir=base_dir)


def _mode(path: Path) -> int:
    """The file's own mode when it exists, else what a plain ``open`` would give (0666 less umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _mode(path))  # mkstemp's 0600 would hide a shared pack from its other readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(doc: tomlkit.TOMLDocument, p: Path) -> PersonaPack:
    """Validate ``doc`` as the pack at ``p`` (items files relative to it), then write it there in
    one step; returns the loaded pack."""
    pack = _validate(doc, str(p), p.parent)
    _atomic_write(p, tomlkit.dumps(doc))
    return pack


def _grow(path: str | Path, change: Callable[[tomlkit.TOMLDocument], None]) -> PersonaPack:
    """``change`` the TOML pack file at ``path`` in place, keeping the rest of the file as it is;
    the result is validated before it replaces the file."""
    p = Path(path).expanduser()
    if p.suffix != ".toml":
        raise PackError(f"{p}: only TOML packs can be grown in place", hint="convert the pack to TOML")
    try:
        doc = tomlkit.parse(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise PackError(f"{p}: cannot read the pack file ({e.strerror})") from None
    except tomlkit.exceptions.ParseError as e:
        raise PackError(f"{p}: invalid TOML: {e}") from None
    change(doc)
    return _save(doc, p)


def _array_of_tables(doc: tomlkit.TOMLDocument, key: str, *, blank_line_before: bool = False) -> Any:
    """The ``[[key]]`` array of ``doc``, added at its end when it has none."""
    aot = doc.get(key)
    if aot is None:
        if blank_line_before:
            doc.add(tomlkit.nl())
        aot = tomlkit.aot()
        doc[key] = aot
    return aot


def write_pack_document(doc: tomlkit.TOMLDocument, path: str | Path, *, force: bool = False) -> PersonaPack:
    """Validate ``doc`` as a pack at ``path`` (items files relative to it) and write it there;
    returns the loaded pack. An existing file is replaced only with ``force``."""
    p = Path(path).expanduser()
    if p.suffix != ".toml":
        raise PackError(f"{p}: a written pack file must end in .toml")
    if p.exists() and not force:
        raise PackError(f"{p}: the file exists", hint="choose another path or pass --force to replace it")
    return _save(doc, p)


def append_questions(path: str | Path, questions: Sequence[QuestionSpec],
                     provenance: PackProvenance | None = None) -> PersonaPack:
    """Add questions (and a ``[[provenance]]`` entry) to the pack file at ``path``, keeping the
    rest of the file as it is; the result is validated before it replaces the file."""

    def change(doc: tomlkit.TOMLDocument) -> None:
        if questions:
            aot = _array_of_tables(doc, "questions")
            for q in questions:
                aot.append(_question_table(q))
        if provenance is not None:
            entry = tomlkit.table()
            for k, v in provenance.model_dump(exclude_defaults=True).items():
                entry[k] = v
            _array_of_tables(doc, "provenance").append(entry)

    return _grow(path, change)


def _answer_pool_table(q: PoolQuestionSpec, short: set[str]) -> Any:
    t = tomlkit.table()
    t["id"] = q.id
    if q.topic:
        t["topic"] = q.topic
    t["question"] = q.question
    answers = tomlkit.aot()
    for a in q.answers:
        at = tomlkit.table()
        at["id"] = a.id
        if a.stance:
            at["stance"] = a.stance
        at["text"] = a.text
        if a.gold:
            gold = tomlkit.inline_table()
            for k, v in a.gold.items():
                last = k.rsplit("/", 1)[-1]
                gold[last if last in short else k] = v
            at["gold"] = gold
        if a.source:
            at["source"] = a.source
        answers.append(at)
    t["answers"] = answers
    return t


def append_answer_pool(path: str | Path, questions: Sequence[PoolQuestionSpec]) -> PersonaPack:
    """Add open-ended questions with candidate answers (``[[answer_pool]]``) to the pack file at
    ``path``, keeping the rest of the file as it is; ``format_version`` is raised to
    2 when it was lower (the first format with answer pools). Gold keys are written as the persona
    id's last part where that names one persona. The result is validated before it replaces the file."""

    def change(doc: tomlkit.TOMLDocument) -> None:
        if not questions:
            return
        lasts = [str(t.get("id", "")).rsplit("/", 1)[-1] for t in doc.get("personas", [])]
        short = {x for x in lasts if lasts.count(x) == 1}  # a last part that names one persona
        version = doc.get("format_version", doc.get("schema_version", 1))
        if isinstance(version, int) and version < ANSWER_POOL_FORMAT_VERSION:
            key = "schema_version" if "schema_version" in doc and "format_version" not in doc else "format_version"
            doc[key] = ANSWER_POOL_FORMAT_VERSION
        aot = _array_of_tables(doc, "answer_pool", blank_line_before=True)
        for q in questions:
            aot.append(_answer_pool_table(q, short))

    return _grow(path, change)


def write_survey_pack(path: str | Path, *, pack_id: str, dimension: str, title: str, description: str,
                      personas: Sequence[dict[str, Any]], items: dict[str, Iterable[Item]],
                      header: Sequence[str] = (), force: bool = False) -> PersonaPack:
    """A pack whose personas each have their own imported pool with gold labels: the pack file at
    ``path`` and one JSONL items file per persona beside it (``<stem>_items/<persona>.jsonl``).

    ``personas`` are persona tables (``id``, ``name``, ``label``, ``description``, ``aliases``,
    ``places``, ``ambiguous``); ``items`` maps each persona id to its items."""
    from steerkit.importers import write_jsonl

    p = Path(path).expanduser()
    if p.exists() and not force:
        raise PackError(f"{p}: the file exists", hint="choose another folder or pass --force to replace it")
    items_dir = f"{p.stem}_items"
    doc = tomlkit.document()
    for line in header:
        doc.add(tomlkit.comment(line))
    doc["format_version"] = format_version_needed({})  # no answer pool: 1
    doc["id"] = pack_id
    doc["dimension"] = dimension
    doc["title"] = title
    doc["description"] = description
    doc["extraction"] = "identity"
    aot = tomlkit.aot()
    for spec in personas:
        pid = spec["id"]
        its = list(items.get(pid, ()))
        if not its:
            raise PackError(f"{p}: persona {pid!r} has no items", hint="leave it out of the pack")
        rel = f"{items_dir}/{pid.rsplit('/', 1)[-1]}.jsonl"
        write_jsonl(its, p.parent / rel)
        t = tomlkit.table()
        for k in ("id", "name", "label", "description", "aliases", "places", "ambiguous"):
            if spec.get(k):
                t[k] = spec[k]
        t["items_file"] = rel
        aot.append(t)
    doc["personas"] = aot
    try:
        return write_pack_document(doc, p, force=True)
    except ValidationError as e:  # pragma: no cover - pack_from_data turns these into PackError
        raise PackError(f"{p}: {e}") from None

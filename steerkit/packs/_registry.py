"""Where packs come from: pack files (TOML or JSON), the packs steerkit ships, and the registry of
the configured packs (`PackRegistry`) that everything else asks for personas and pools."""

from __future__ import annotations

import difflib
import importlib.resources
import json
import tomllib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from steerkit.errors import PackError, UnknownPersonaError
from steerkit.models import Persona, Pool, stable_hash
from steerkit.packs._model import (
    PackTemplates,
    PersonaPack,
    PersonaSpec,
    pack_from_data,
)

__all__ = ["PACK_SUFFIXES", "PackRegistry", "default_pack_paths", "load_pack"]

PACK_SUFFIXES = (".toml", ".json")


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
    here = Path(__file__).resolve().parents[2] / "personas"
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

    def pack(self, pack_id: str) -> PersonaPack:
        """A configured pack by its id; an unknown id raises `PackError` listing the known ones."""
        for pk in self._packs:
            if pk.id == pack_id:
                return pk
        raise PackError(f"no configured pack has the id {pack_id!r}",
                        hint=f"configured packs: {', '.join(pk.id for pk in self._packs)}")

    def answer_pool_packs(self) -> list[PersonaPack]:
        """The configured packs that carry an answer pool (``[[answer_pool]]``), in load order."""
        return [pk for pk in self._packs if pk.answer_pool]

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

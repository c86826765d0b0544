"""The versioned example-set cache.

An `ExampleSet` is stored under a `CacheKey` — persona, pool content hash, model, search-config
hash and library version, never an API key — as an immutable *version*; a key's *current*
version is switched atomically by `put`. A request that read version v keeps using v even when
a new version is switched in meanwhile, and `get_version` can still fetch v (the last
``keep_versions`` versions are kept).

`DiskStore` (diskcache, the embedded default) survives restarts and is shared by processes on
one machine; `MemoryStore` is for tests and short-lived processes. Both implement the
`ExampleSetStore` protocol, so a shared backend (Redis, S3, …) can follow.

A corrupt, unreadable or untrustworthy entry is reported with a `CacheCorruptionWarning` and
treated as a miss, never a crash. A set read from disk (or Redis, or an import) is trusted only
when `check_example_set` finds nothing wrong: its items must hash to the key's pool hash (a cache
folder anyone can write must not become a way to put text into steered prompts), it must hold
labels, and its record must be at most ``max_record_bytes`` (`MAX_RECORD_BYTES`, 32 MiB).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steerkit._config import default_cache_dir, default_examples_dir, expand_path
from steerkit._version import __version__
from steerkit.errors import CacheCorruptionWarning, StoreError, UserError
from steerkit.models import ExampleSet, Pool, SearchConfig, stable_hash

__all__ = [
    "EXPORT_FORMAT",
    "MAX_RECORD_BYTES",
    "CacheEntryInfo",
    "CacheKey",
    "DiskStore",
    "ExampleSetStore",
    "MemoryStore",
    "check_example_set",
    "default_cache_dir",
    "export_entries",
    "import_entries",
    "list_entries",
]

log = logging.getLogger("steerkit.store")

# Values that look like credentials never enter a cache key.
_SECRET_RE = re.compile(r"(?i)^(sk-|sk_|pk-|rk-|bearer\s|hf_|gsk_|xai-|key-|api[-_]?key)|(?i:api[-_]?key=)")


#: The largest record a store writes or reads, and the longest line `cache import` takes (bytes):
#: about 30,000 labelled items. A larger record is refused when written and a miss when read.
MAX_RECORD_BYTES = 32 * 2**20


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def encode_blob(text: str) -> str:
    """An example set's stored form (every store): its JSON with a SHA-256 checksum."""
    return json.dumps({"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "json": text})


def record_size(raw: str | bytes) -> int:
    """A record's size in bytes (UTF-8 for text)."""
    return len(raw) if isinstance(raw, (bytes, bytearray)) else len(raw.encode("utf-8", "surrogatepass"))


def decode_blob(raw: str | bytes, max_bytes: int = MAX_RECORD_BYTES) -> ExampleSet:
    """The example set in a stored blob; raises on an oversized record, a checksum mismatch or
    malformed data (it is not yet checked against a key: see `check_example_set`)."""
    n = record_size(raw)
    if n > max_bytes:
        raise ValueError(f"the record is {_mib(n)}, over the {_mib(max_bytes)} limit")
    rec = json.loads(raw)
    text = rec["json"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != rec["sha256"]:
        raise ValueError("checksum mismatch")
    return ExampleSet.from_json(text)

class CacheKey(BaseModel):
    """What an example set depends on. Deliberately has no field for credentials or URLs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    persona_id: str = Field(min_length=1)
    pool_hash: str = Field(min_length=1)
    model: str = Field(min_length=1)
    config_hash: str = Field(min_length=1)
    library_version: str = __version__

    @field_validator("persona_id", "pool_hash", "model", "config_hash", "library_version")
    @classmethod
    def _no_secrets(cls, v: str) -> str:
        if _SECRET_RE.search(v.strip()):
            raise ValueError("looks like a credential; API keys never go into a cache key")
        return v

    @classmethod
    def for_pool(cls, pool: Pool, model: str, config: SearchConfig) -> CacheKey:
        """The key of ``pool``'s example set searched with ``model`` under ``config``."""
        return cls(persona_id=pool.persona.id, pool_hash=pool.content_hash(), model=model,
                   config_hash=config.config_hash())

    @classmethod
    def for_example_set(cls, es: ExampleSet) -> CacheKey:
        """The key of the slot an example set belongs to, read from its provenance."""
        p = es.provenance
        return cls(persona_id=es.persona.id, pool_hash=p.pool_hash, model=p.model,
                   config_hash=p.config.config_hash(), library_version=p.library_version)

    def digest(self) -> str:
        return _digest(self.persona_id, self.pool_hash, self.model, self.config_hash, self.library_version)


@lru_cache(maxsize=4096)
def _digest(persona_id: str, pool_hash: str, model: str, config_hash: str, library_version: str) -> str:
    return stable_hash({"persona_id": persona_id, "pool_hash": pool_hash, "model": model,
                        "config_hash": config_hash, "library_version": library_version})


class CacheEntryInfo(BaseModel):
    """One cached key: its current version and the versions kept."""

    key: CacheKey
    digest: str
    current_version: str | None
    versions: list[str]
    """Oldest first; the current version is among them."""
    updated_at: datetime | None = None
    n_items: int | None = None
    score: float | None = None
    violations: int | None = None


@runtime_checkable
class ExampleSetStore(Protocol):
    async def get(self, key: CacheKey) -> ExampleSet | None:
        """The current version for the key, or None (a miss)."""
        ...

    async def put(self, key: CacheKey, es: ExampleSet) -> str:
        """Store ``es`` and switch the key's current version to it atomically; return the version."""
        ...

    async def get_version(self, key: CacheKey, version: str) -> ExampleSet | None: ...

    async def entries(self) -> list[CacheEntryInfo]: ...

    async def delete(self, key: CacheKey) -> bool: ...


def check_example_set(key: CacheKey, es: ExampleSet) -> str | None:
    """Why ``es`` cannot be trusted under ``key``, or None when it can: it must be for the key's
    persona, hold items and labels (each for one of its items), and its items must hash to the
    key's pool hash and to its provenance's (a set whose text was edited does not)."""
    if es.persona.id != key.persona_id:
        return f"it is for persona {es.persona.id!r} but the key is for {key.persona_id!r}"
    if not es.items:
        return "it holds no items"
    if not es.labels:
        return "it holds no labels"
    ids = {it.id for it in es.items}
    stray = sorted(k for k, lab in es.labels.items() if k != lab.item_id or k not in ids)
    if stray:
        return f"it has labels for items it does not hold ({', '.join(map(repr, stray[:3]))})"
    try:
        pool_hash = es.pool().content_hash()
    except (UserError, ValueError) as e:
        return f"its items do not form a valid pool ({(str(e).splitlines() or [''])[0][:120]})"
    if pool_hash != key.pool_hash:
        return (f"its items hash to pool {pool_hash[:12]}, not the key's pool {key.pool_hash[:12]} "
                "(its text was edited, or it belongs to another pool)")
    if es.provenance.pool_hash != pool_hash:
        return f"its provenance names pool {es.provenance.pool_hash[:12]} but its items hash to {pool_hash[:12]}"
    return None


def _check_put(key: CacheKey, es: ExampleSet) -> None:
    if not isinstance(es, ExampleSet):
        raise StoreError(f"put() needs an ExampleSet, got {type(es).__name__}")
    why = check_example_set(key, es)
    if why is not None:
        raise StoreError(f"refusing to store the example set of {key.persona_id}: {why}",
                         hint="store a set under the key of the pool it was searched on (CacheKey.for_example_set)")


def _check_size(blob: str, limit: int, where: str) -> None:
    n = record_size(blob)
    if n > limit:
        raise StoreError(f"the example set is {_mib(n)}, over the {_mib(limit)} record limit of {where}",
                         hint="search a smaller pool (steer.max_pool_items), or raise the store's max_record_bytes")


# --- memory -------------------------------------------------------------------------------------


class MemoryStore:
    """In-process store (tests, scripts). Same semantics as `DiskStore`, nothing persisted."""

    def __init__(self, *, keep_versions: int = 10) -> None:
        self.keep_versions = max(1, keep_versions)
        self._keys: dict[str, CacheKey] = {}
        self._versions: dict[str, OrderedDict[str, ExampleSet]] = {}
        self._current: dict[str, str] = {}
        self._updated: dict[str, datetime] = {}

    async def get(self, key: CacheKey) -> ExampleSet | None:
        d = key.digest()
        v = self._current.get(d)
        return None if v is None else self._versions[d].get(v)

    async def put(self, key: CacheKey, es: ExampleSet) -> str:
        _check_put(key, es)
        d = key.digest()
        version = es.version
        vs = self._versions.setdefault(d, OrderedDict())
        vs[version] = es
        vs.move_to_end(version)
        while len(vs) > self.keep_versions:
            vs.popitem(last=False)
        self._keys[d] = key
        self._current[d] = version
        self._updated[d] = _utcnow()
        return version

    async def get_version(self, key: CacheKey, version: str) -> ExampleSet | None:
        return self._versions.get(key.digest(), {}).get(version)

    async def entries(self) -> list[CacheEntryInfo]:
        out = []
        for d, key in self._keys.items():
            cur = self._current.get(d)
            es = self._versions[d].get(cur) if cur else None
            out.append(CacheEntryInfo(key=key, digest=d, current_version=cur, versions=list(self._versions[d]),
                                      updated_at=self._updated.get(d), n_items=len(es.items) if es else None,
                                      score=es.score if es else None, violations=es.violations if es else None))
        return out

    async def delete(self, key: CacheKey) -> bool:
        d = key.digest()
        existed = d in self._keys
        for m in (self._keys, self._versions, self._current, self._updated):
            m.pop(d, None)
        return existed


# --- disk ---------------------------------------------------------------------------------------


def _store_hint(e: BaseException, directory: Path) -> str:
    """What to do about an error opening or reading the disk cache, by its cause."""
    import sqlite3

    text = str(e).lower()
    if isinstance(e, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text or "corrupt" in text):
        return (f"the cache database in {directory} is corrupt: move the folder away (or delete it) and "
                "precompute again, or import an export with `steerkit cache import`")
    if isinstance(e, PermissionError) or "readonly" in text or "read-only" in text or "permission" in text:
        return f"the cache folder {directory} is not writable: check its permissions or set STEERKIT_CACHE_DIR"
    if "disk is full" in text or "no space" in text:
        return f"the disk holding {directory} is full: free space or set STEERKIT_CACHE_DIR"
    return "check the cache folder (permissions, free space) or set STEERKIT_CACHE_DIR"


def _warn(msg: str) -> None:
    log.warning(msg)
    warnings.warn(msg, CacheCorruptionWarning, stacklevel=3)


class DiskStore:
    """Example-set cache on disk (diskcache / SQLite). Safe across processes on one machine.

    Layout: ``"es:<digest>:<version>"`` → ``{"sha256", "json"}`` (immutable blobs) and
    ``"meta:<digest>"`` → ``{"key", "current", "versions", "updated_at", …}``. `put` writes the
    blob first, then replaces the meta record in one write: readers see the old or the new
    version, never a mix. Parsed example sets are kept in a small in-memory LRU, so a cache hit
    costs one small SQLite read. A set read from disk is checked against its key
    (`check_example_set`); a record over ``max_record_bytes`` is refused by `put` and a miss when read.
    """

    def __init__(self, directory: str | Path | None = None, *, keep_versions: int = 10, memory_items: int = 64,
                 size_limit: int = 2**30, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        import diskcache  # the embedded default dependency

        self.directory = expand_path(directory) if directory is not None else default_examples_dir()
        self.keep_versions = max(1, keep_versions)
        self.max_record_bytes = max_record_bytes
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(self.directory), size_limit=size_limit, eviction_policy="none")
        except Exception as e:
            raise StoreError(f"cannot open the example-set cache at {self.directory}: {e}",
                             hint=_store_hint(e, self.directory)) from e
        self._memory: OrderedDict[tuple[str, str], ExampleSet] = OrderedDict()
        self._memory_items = memory_items
        self._lock = asyncio.Lock()

    # reading ---------------------------------------------------------------------------------
    def _meta(self, digest: str, *, warn: bool = True) -> dict[str, Any] | None:
        try:
            raw = self._cache.get(f"meta:{digest}")
        except Exception as e:  # noqa: BLE001 - sqlite errors, unpickling errors
            if warn:
                _warn(f"steerkit cache: unreadable index entry {digest} in {self.directory} ({type(e).__name__}: "
                      f"{str(e)[:120]}); treating it as a miss ({_store_hint(e, self.directory)})")
            return None
        if raw is None:
            return None
        try:
            meta = json.loads(raw) if isinstance(raw, (str, bytes)) else None
            if (not isinstance(meta, dict) or not isinstance(meta.get("versions"), list)
                    or not all(isinstance(v, str) for v in meta["versions"])
                    or not isinstance(meta.get("current"), (str, type(None)))):
                raise ValueError("bad structure")
            return meta
        except (ValueError, TypeError, RecursionError):
            if warn:
                _warn(f"steerkit cache: corrupt index entry {digest} in {self.directory}; treating it as a miss")
            return None

    def _load(self, key: CacheKey, version: str, warn_missing: bool = False) -> ExampleSet | None:
        digest = key.digest()
        mk = (digest, version)
        es = self._memory.get(mk)
        if es is not None:
            self._memory.move_to_end(mk)
            return es
        try:
            raw = self._cache.get(f"es:{digest}:{version}")
        except Exception as e:  # noqa: BLE001 - sqlite errors, unpickling errors
            _warn(f"steerkit cache: unreadable entry {digest}/{version} ({type(e).__name__}); treating it as a miss "
                  f"({_store_hint(e, self.directory)})")
            return None
        if raw is None:
            if not warn_missing:  # an old version pruned, or never stored: a plain miss
                return None
            _warn(f"steerkit cache: entry {digest}/{version} is in the index but its data is missing from "
                  f"{self.directory}; treating it as a miss (precompute the persona again)")
            return None
        try:
            es = decode_blob(raw, self.max_record_bytes)
        except Exception as e:  # noqa: BLE001 - a corrupt record may fail in any way: a miss
            _warn(f"steerkit cache: corrupt entry {digest}/{version} in {self.directory} ({type(e).__name__}: "
                  f"{str(e)[:120]}); treating it as a miss")
            return None
        why = check_example_set(key, es)
        if why is not None:
            _warn(f"steerkit cache: untrusted entry {digest}/{version} for {key.persona_id} in {self.directory}: "
                  f"{why}; treating it as a miss (precompute the persona again)")
            return None
        self._memory[mk] = es
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)
        return es

    async def get(self, key: CacheKey) -> ExampleSet | None:
        digest = key.digest()
        meta = self._meta(digest)
        if not meta or not meta.get("current"):
            return None
        version = meta["current"]
        if (digest, version) in self._memory:
            return self._load(key, version)
        return await asyncio.to_thread(self._load, key, version, True)

    async def get_version(self, key: CacheKey, version: str) -> ExampleSet | None:
        return await asyncio.to_thread(self._load, key, version)

    # writing ---------------------------------------------------------------------------------
    def _put_sync(self, key: CacheKey, es: ExampleSet) -> str:
        digest = key.digest()
        version = es.version
        text = es.to_json()
        blob = encode_blob(text)
        _check_size(blob, self.max_record_bytes, f"the cache at {self.directory}")
        try:
            self._cache.set(f"es:{digest}:{version}", blob)
            with self._cache.transact():
                meta = self._meta(digest, warn=False) or {}  # a corrupt index is overwritten
                versions = [v for v in meta.get("versions", []) if v != version] + [version]
                dropped = versions[: -self.keep_versions]
                versions = versions[-self.keep_versions :]
                new_meta = {
                    "key": key.model_dump(),
                    "current": version,
                    "versions": versions,
                    "updated_at": _utcnow().isoformat(),
                    "n_items": len(es.items),
                    "score": es.score,
                    "violations": es.violations,
                }
                self._cache.set(f"meta:{digest}", json.dumps(new_meta))  # the atomic switch
                for v in dropped:
                    self._cache.delete(f"es:{digest}:{v}")
        except Exception as e:
            raise StoreError(f"cannot write to the example-set cache at {self.directory}: {e}",
                             hint=_store_hint(e, self.directory)) from e
        for v in dropped:
            self._memory.pop((digest, v), None)
        self._memory[(digest, version)] = es
        return version

    async def put(self, key: CacheKey, es: ExampleSet) -> str:
        _check_put(key, es)
        async with self._lock:
            return await asyncio.to_thread(self._put_sync, key, es)

    def _entries_sync(self) -> list[CacheEntryInfo]:
        out = []
        for k in list(self._cache.iterkeys()):
            if not (isinstance(k, str) and k.startswith("meta:")):
                continue
            digest = k[len("meta:") :]
            meta = self._meta(digest)
            if meta is None:
                continue
            try:
                out.append(
                    CacheEntryInfo(
                        key=CacheKey.model_validate(meta["key"]),
                        digest=digest,
                        current_version=meta.get("current"),
                        versions=list(meta.get("versions", [])),
                        updated_at=meta.get("updated_at"),
                        n_items=meta.get("n_items"),
                        score=meta.get("score"),
                        violations=meta.get("violations"),
                    )
                )
            except Exception:  # noqa: BLE001 - a corrupt index record: skipped
                _warn(f"steerkit cache: corrupt index entry {digest}; skipped")
        return out

    async def entries(self) -> list[CacheEntryInfo]:
        return await asyncio.to_thread(self._entries_sync)

    def _delete_sync(self, key: CacheKey) -> bool:
        digest = key.digest()
        existed = False
        with self._cache.transact():
            existed = self._cache.delete(f"meta:{digest}")
            for k in list(self._cache.iterkeys()):
                if isinstance(k, str) and k.startswith(f"es:{digest}:"):
                    self._cache.delete(k)
                    existed = True
        for mk in [mk for mk in self._memory if mk[0] == digest]:
            del self._memory[mk]
        return existed

    async def delete(self, key: CacheKey) -> bool:
        async with self._lock:
            return await asyncio.to_thread(self._delete_sync, key)

    def close(self) -> None:
        self._cache.close()


# --- export / import ----------------------------------------------------------------------------

#: The first line of a cache export (JSON lines: a header, then one record per example set).
EXPORT_FORMAT = "steerkit.cache/1"


async def list_entries(store: ExampleSetStore) -> list[tuple[CacheEntryInfo, ExampleSet]]:
    """(entry info, current example set) for every cache entry, newest first."""
    out = []
    for info in await store.entries():
        es = await store.get(info.key)
        if es is not None:
            out.append((info, es))
    out.sort(key=lambda t: t[1].provenance.finished_at, reverse=True)
    return out


async def export_entries(store: ExampleSetStore, personas: list[str] | None = None) -> list[str]:
    """The export's lines (header first): every current example set, or those of ``personas``."""
    lines = [json.dumps({"format": EXPORT_FORMAT, "library_version": __version__, "exported_at": _utcnow().isoformat()})]
    for info, es in await list_entries(store):
        if personas and info.key.persona_id not in personas:
            continue
        lines.append(json.dumps({"key": info.key.model_dump(mode="json"), "version": es.version,
                                 "example_set": json.loads(es.to_json())}))
    return lines


async def _holds(store: ExampleSetStore, key: CacheKey, es: ExampleSet) -> bool:
    current = await store.get(key)
    return current is not None and current.version == es.version


async def import_entries(store: ExampleSetStore, lines: list[str], source: str = "<input>", *,
                         known_personas: Collection[str] | None = None,
                         pool_hash_of: Callable[[str], str] | None = None,
                         max_record_bytes: int = MAX_RECORD_BYTES) -> tuple[int, int]:
    """Put every example set of an export into ``store``; returns (imported, unchanged). The whole
    file is validated first, and a bad file changes nothing: JSON, entries, lines of at most
    ``max_record_bytes``, this library version's keys only (another version never reads them), each
    set against its key (`check_example_set`: its items hash to the key's pool, it holds labels),
    and, given ``known_personas`` / ``pool_hash_of`` (persona id → the configured pack's pool
    hash), personas the configured packs define with the pool they define, unless ``store`` holds
    that very set already (an export of this cache, e.g. with the demo's small-pool set, imports
    back unchanged)."""
    from pydantic import ValidationError

    from steerkit._json import loads_strict
    from steerkit.errors import InvalidRequestError

    bad = "a bad file changes nothing; re-export it"
    if lines and lines[0].startswith("\ufeff"):  # a UTF-8 byte-order mark (an editor's save)
        lines = [lines[0][1:], *lines[1:]]
    if not lines or not lines[0].strip():
        raise UserError(f"{source}: empty file", hint="give a file written by `steerkit cache export`")
    for n, line in enumerate(lines, start=1):
        size = record_size(line)
        if size > max_record_bytes:
            raise UserError(f"{source}: line {n} is {_mib(size)}, over the {_mib(max_record_bytes)} limit of a cache record",
                            hint=f"{bad}; a set that large would not be stored either")
    try:
        header = loads_strict(lines[0])
    except InvalidRequestError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise UserError(f"{source}: line 1: not a steerkit cache export (expected format {EXPORT_FORMAT!r})")
    parsed = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rec = loads_strict(line, what="the line")
            key = CacheKey(**rec["key"])
            es = ExampleSet.model_validate(rec["example_set"])
        except InvalidRequestError as e:
            raise UserError(f"{source}: line {n}: {e.message}", hint=bad) from None
        except (KeyError, TypeError, ValidationError, RecursionError) as e:
            first = (str(e).splitlines() or [""])[0][:200]
            raise UserError(f"{source}: line {n}: not a valid cache entry ({type(e).__name__}: {first})",
                            hint=bad) from None
        if key.library_version != __version__:
            raise UserError(f"{source}: line {n}: the example set of {key.persona_id} was made by steerkit "
                            f"{key.library_version}; this is steerkit {__version__}, which would never use it (the "
                            "library version is part of every cache key)",
                            hint=f"precompute it again with this version, or import it with steerkit {key.library_version}")
        if es.persona.id != key.persona_id:
            raise UserError(f"{source}: line {n}: the key is for persona {key.persona_id!r} but the example set is "
                            f"for {es.persona.id!r}", hint=bad)
        if known_personas is not None and key.persona_id not in known_personas:
            raise UserError(f"{source}: line {n}: persona {key.persona_id!r} is not defined by any configured pack",
                            hint="add its pack (packs_dirs) first; a bad file changes nothing")
        why = check_example_set(key, es)
        if why is not None:
            raise UserError(f"{source}: line {n}: the example set of {key.persona_id} cannot be trusted: {why}",
                            hint=f"{bad} from the cache that computed it")
        expected = pool_hash_of(key.persona_id) if pool_hash_of is not None else None
        if expected is not None and expected != key.pool_hash and not await _holds(store, key, es):
            raise UserError(f"{source}: line {n}: the example set of {key.persona_id} was searched on pool "
                            f"{key.pool_hash[:12]}, but the configured pack gives pool {expected[:12]}: it would never be used",
                            hint="import it where the same pack and steer.max_pool_items are configured, or precompute it "
                                 "here; a bad file changes nothing")
        parsed.append((key, es))
    imported = unchanged = 0
    for key, es in parsed:
        current = await store.get(key)
        if current is not None and current.version == es.version:
            unchanged += 1
            continue
        await store.put(key, es)
        imported += 1
    return imported, unchanged

"""`RedisStore`: the versioned example-set cache in Redis, shared by every replica and machine.

Same semantics as `DiskStore` (the `ExampleSetStore` protocol): an example set is stored under its
`CacheKey`'s digest as an immutable *version*; a key's *current* version is switched atomically by
`put`; the last ``keep_versions`` versions stay readable with `get_version`. A corrupt entry (bad
JSON, a key of the wrong Redis type, a field of the wrong type, the current version's blob deleted,
a record over ``max_record_bytes``, a set that fails `check_example_set` against its key) is
reported with a `CacheCorruptionWarning` and read as a miss; the next `put` overwrites it.

Layout (``prefix`` defaults to ``steerkit``; the digest is a hash of the key's fields, so neither
a URL nor a credential ever appears in a key)::

    <prefix>:es:<digest>:<version>   {"sha256", "json"}      immutable blob
    <prefix>:meta:<digest>           {"key", "current", "versions", …}   switched by one Lua script
    <prefix>:keys                    set of digests          for `entries`
    <prefix>:lock:<digest>           the single-flight lease (redis-py's `Lock`)
    <prefix>:failed:<digest>         the last failed search's error, expiring after ``failure_ttl_s``
    <prefix>:ckpt:<digest>           a running search's checkpoint (precompute on Ray resumes from it)

**Single flight across processes** (`single_flight`): the first replica to miss a key takes a Redis
lock with a lease of ``lease_s`` seconds and renews it every ``lease_s / 3`` while its search runs;
the others poll the store (every ``poll_s``) until the result appears. If the owner dies, its lease
runs out and the next poller takes the lock and searches. If the owner's search fails, the error is
kept for ``failure_ttl_s`` and the waiters raise `SearchError` instead of searching again.
`steerkit.ExampleSets` uses it for every miss whenever the store offers it.

``RedisStore.from_url("redis://:password@host:6379/0?lease_s=30&prefix=steerkit")``: the
``prefix``, ``lease_s``, ``poll_s``, ``keep_versions``, ``failure_ttl_s`` and ``max_record_bytes``
query parameters are this store's; the rest of the URL goes to redis-py unchanged. Needs ``pip install 'steerkit[redis]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from steerkit._store import (
    MAX_RECORD_BYTES,
    CacheEntryInfo,
    CacheKey,
    _check_put,
    _check_size,
    check_example_set,
    decode_blob,
    encode_blob,
)
from steerkit.errors import CacheCorruptionWarning, ConfigError, SearchError, StoreError
from steerkit.models import ExampleSet

__all__ = ["RedisStore", "redact_url"]

log = logging.getLogger("steerkit.store")

_OWN_PARAMS = {"prefix": str, "lease_s": float, "poll_s": float, "keep_versions": int, "failure_ttl_s": float,
               "max_record_bytes": int}

# A blob, read only when it is a string of at most ARGV[1] bytes: nil (missing), its length (too
# large: never sent over the wire), {type} (a key of another Redis type) or the blob itself.
_READ_BLOB_LUA = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return false end
if t ~= 'string' then return {t} end
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return n end
return redis.call('GET', KEYS[1])
"""

# Writes the new version's meta record (the atomic switch) and drops the versions past
# ``keep_versions``, in one step on the server: readers see the old or the new version, never a mix.
_PUT_LUA = """
for i, want in ipairs({'string', 'set'}) do  -- a key of the wrong type (corrupt) is replaced
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want then redis.call('DEL', KEYS[i]) end
end
local versions = {}
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, old = pcall(cjson.decode, raw)
  if ok and type(old) == 'table' and type(old['versions']) == 'table' then
    for _, v in ipairs(old['versions']) do
      if v ~= ARGV[2] then table.insert(versions, v) end
    end
  end
end
table.insert(versions, ARGV[2])
local dropped = {}
while #versions > tonumber(ARGV[3]) do table.insert(dropped, table.remove(versions, 1)) end
local meta = cjson.decode(ARGV[4])
meta['versions'] = versions
redis.call('SET', KEYS[1], cjson.encode(meta))
redis.call('SADD', KEYS[2], ARGV[5])
for _, v in ipairs(dropped) do redis.call('DEL', ARGV[1] .. v) end
return dropped
"""


def redact_url(url: str) -> str:
    """``url`` without its user name, password and query (for errors and logs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparseable redis url>"


def _warn(msg: str) -> None:
    log.warning(msg)
    warnings.warn(msg, CacheCorruptionWarning, stacklevel=3)


class RedisStore:
    """Example-set cache in Redis (redis-py's asyncio client), shared by processes and machines.

    ``url``: a ``redis://``, ``rediss://`` or ``unix://`` URL (the credentials in it go to redis-py
    only: errors and logs show the host alone). ``client``: an existing ``redis.asyncio.Redis``
    instead (not closed by `close`). ``lease_s``: the single-flight lease, renewed while a search
    runs; a dead owner's lease expires after at most this long. ``max_record_bytes``: the largest
    example set `put` writes and a read accepts.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "steerkit",
        keep_versions: int = 10,
        lease_s: float = 30.0,
        poll_s: float = 0.2,
        failure_ttl_s: float = 60.0,
        memory_items: int = 64,
        max_record_bytes: int = MAX_RECORD_BYTES,
        client: Any | None = None,
    ) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigError("RedisStore needs the redis package", hint="pip install 'steerkit[redis]'") from None
        if lease_s <= 0 or poll_s <= 0:
            raise ConfigError("lease_s and poll_s must be positive seconds")
        if not prefix.strip(":").strip():
            raise ConfigError("the Redis store's prefix must be a non-empty string")
        self.where = redact_url(url) if client is None else "<given client>"
        self.prefix = prefix
        self.keep_versions = max(1, keep_versions)
        self.lease_s = float(lease_s)
        self.poll_s = float(poll_s)
        self.failure_ttl_s = float(failure_ttl_s)
        self.max_record_bytes = int(max_record_bytes)
        self._own_client = client is None
        if client is None:
            try:
                client = aioredis.Redis.from_url(url, decode_responses=False)
            except ValueError as e:  # a malformed URL; its text may hold the password, so not shown
                raise ConfigError(f"invalid Redis URL for the example-set store ({self.where}): {type(e).__name__}",
                                  hint="use redis://[:password@]host[:port][/db]") from None
        self._r = client
        self._put_script = self._r.register_script(_PUT_LUA)
        self._read_blob_script = self._r.register_script(_READ_BLOB_LUA)
        self._memory: OrderedDict[tuple[str, str], ExampleSet] = OrderedDict()
        self._memory_items = memory_items
        self._limiter: Any = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisStore:
        """A store from a URL whose query may carry this store's options (``prefix``,
        ``lease_s``, ``poll_s``, ``keep_versions``, ``failure_ttl_s``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"not a Redis URL: scheme {parts.scheme!r}", hint="use redis://host:port/db")
        own: dict[str, Any] = {}
        rest = []
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if k in _OWN_PARAMS:
                try:
                    own[k] = _OWN_PARAMS[k](v)
                except ValueError:
                    raise ConfigError(f"store URL parameter {k}={v!r} is not a {_OWN_PARAMS[k].__name__}") from None
            else:
                rest.append((k, v))
        clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
        return cls(clean, **{**own, **overrides})

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r}, prefix={self.prefix!r})"

    def rate_limiter(self) -> Any:
        """A moving-window rate limiter (`limits`, redis-py storage on this store's connection
        pool) whose counts live in this Redis under ``<prefix>:limits``: the request search limits
        (``searches_per_persona_per_hour``, ``searches_per_hour``) then hold across every replica
        and worker that shares the store, not per process."""
        if self._limiter is None:
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter

            storage = RedisStorage("async+redis://", implementation="redispy", connection_pool=self._r.connection_pool,
                                   key_prefix=f"{self.prefix}:limits")
            self._limiter = MovingWindowRateLimiter(storage)
        return self._limiter

    # keys ----------------------------------------------------------------------------------------
    def _k_meta(self, digest: str) -> str:
        return f"{self.prefix}:meta:{digest}"

    def _k_blob(self, digest: str, version: str = "") -> str:
        return f"{self.prefix}:es:{digest}:{version}"

    def _k_keys(self) -> str:
        return f"{self.prefix}:keys"

    def _k_lock(self, digest: str) -> str:
        return f"{self.prefix}:lock:{digest}"

    def _k_failed(self, digest: str) -> str:
        return f"{self.prefix}:failed:{digest}"

    def _unavailable(self, e: BaseException, doing: str) -> StoreError:
        return StoreError(f"the Redis example-set store at {self.where} failed while {doing}: {type(e).__name__}",
                          hint="check that redis-server is running and reachable, and the store URL (--store)")

    async def _call(self, doing: str, coro: Awaitable[Any], *, wrong_type: str | None = None) -> Any:
        """``await coro``; a Redis failure is a `StoreError` saying what to check. With
        ``wrong_type`` (what was read), a key of the wrong Redis type is a warned miss (None)."""
        from redis.exceptions import RedisError, ResponseError

        try:
            return await coro
        except ResponseError as e:
            if wrong_type is not None and str(e).startswith("WRONGTYPE"):
                _warn(f"steerkit cache: {wrong_type} in Redis ({self.where}) is a key of the wrong type; treating it "
                      "as a miss (the next store of it replaces it)")
                return None
            raise self._unavailable(e, doing) from None
        except (RedisError, OSError) as e:
            raise self._unavailable(e, doing) from None

    # reading -------------------------------------------------------------------------------------
    def _parse_meta(self, digest: str, raw: Any) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
            if (not isinstance(meta, dict) or not isinstance(meta.get("versions"), list)
                    or not all(isinstance(v, str) for v in meta["versions"])
                    or not isinstance(meta.get("current"), str)):
                raise ValueError("bad structure")
            return meta
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
            _warn(f"steerkit cache: corrupt index entry {digest} in Redis ({self.where}); treating it as a miss")
            return None

    def _parse_blob(self, key: CacheKey, version: str, raw: Any, *, current: bool) -> ExampleSet | None:
        digest = key.digest()
        where = f"entry {digest}/{version} for {key.persona_id} in Redis ({self.where})"
        if raw is None:
            if current:  # named by the index, but its blob is gone
                _warn(f"steerkit cache: {where} is in the index but its data is missing; treating it as a miss "
                      "(precompute the persona again)")
            return None
        if isinstance(raw, list):
            kind = raw[0].decode() if raw and isinstance(raw[0], bytes) else "?"
            _warn(f"steerkit cache: {where} is a Redis {kind}, not a string; treating it as a miss")
            return None
        if isinstance(raw, int):
            _warn(f"steerkit cache: {where} is {raw} bytes, over the {self.max_record_bytes} byte record limit; "
                  "treating it as a miss")
            return None
        try:
            es = decode_blob(raw, self.max_record_bytes)
        except Exception as e:  # noqa: BLE001 - a corrupt record may fail in any way: a miss
            _warn(f"steerkit cache: corrupt {where} ({type(e).__name__}: {str(e)[:120]}); treating it as a miss")
            return None
        why = check_example_set(key, es)
        if why is not None:
            _warn(f"steerkit cache: untrusted {where}: {why}; treating it as a miss (precompute the persona again)")
            return None
        self._remember(digest, version, es)
        return es

    def _remember(self, digest: str, version: str, es: ExampleSet) -> None:
        self._memory[(digest, version)] = es
        self._memory.move_to_end((digest, version))
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)

    async def _load(self, key: CacheKey, version: str, *, current: bool = False) -> ExampleSet | None:
        digest = key.digest()
        es = self._memory.get((digest, version))
        if es is not None:
            self._memory.move_to_end((digest, version))
            return es
        raw = await self._call("reading an example set",
                               self._read_blob_script(keys=[self._k_blob(digest, version)], args=[self.max_record_bytes]))
        return self._parse_blob(key, version, raw, current=current)

    async def get(self, key: CacheKey) -> ExampleSet | None:
        """The current version (one round trip when it is in this process's memory, two otherwise)."""
        digest = key.digest()
        raw = await self._call("reading the index", self._r.get(self._k_meta(digest)),
                               wrong_type=f"index entry {digest}")
        meta = self._parse_meta(digest, raw)
        if not meta:
            return None
        return await self._load(key, meta["current"], current=True)

    async def get_version(self, key: CacheKey, version: str) -> ExampleSet | None:
        return await self._load(key, version)

    # writing -------------------------------------------------------------------------------------
    async def put(self, key: CacheKey, es: ExampleSet) -> str:
        """Write the version's blob, then switch the current version in one server-side step."""
        _check_put(key, es)
        digest = key.digest()
        version = es.version
        text = es.to_json()
        blob = encode_blob(text)
        _check_size(blob, self.max_record_bytes, f"the Redis store at {self.where}")
        meta = {"key": key.model_dump(), "current": version, "updated_at": datetime.now(UTC).isoformat(),
                "n_items": len(es.items), "score": es.score, "violations": es.violations}
        await self._call("writing an example set", self._r.set(self._k_blob(digest, version), blob))
        dropped = await self._call(
            "switching the current version",
            self._put_script(keys=[self._k_meta(digest), self._k_keys()],
                             args=[self._k_blob(digest), version, self.keep_versions, json.dumps(meta), digest]),
        )
        for v in dropped or []:
            self._memory.pop((digest, v.decode() if isinstance(v, bytes) else v), None)
        self._remember(digest, version, es)
        return version

    async def entries(self) -> list[CacheEntryInfo]:
        members = await self._call("listing entries", self._r.smembers(self._k_keys()), wrong_type="the list of entries")
        digests = sorted(d.decode() if isinstance(d, bytes) else d for d in members or ())
        if not digests:
            return []
        raws = await self._call("listing entries", self._r.mget([self._k_meta(d) for d in digests]))
        out = []
        for digest, raw in zip(digests, raws):
            meta = self._parse_meta(digest, raw)
            if meta is None:
                continue
            try:
                out.append(CacheEntryInfo(key=CacheKey.model_validate(meta["key"]), digest=digest,
                                          current_version=meta.get("current"), versions=list(meta["versions"]),
                                          updated_at=meta.get("updated_at"), n_items=meta.get("n_items"),
                                          score=meta.get("score"), violations=meta.get("violations")))
            except Exception:  # noqa: BLE001 - a corrupt index record: skipped
                _warn(f"steerkit cache: corrupt index entry {digest} in Redis ({self.where}); skipped")
        return out

    async def delete(self, key: CacheKey) -> bool:
        digest = key.digest()
        async def blob_keys() -> list[Any]:
            return [k async for k in self._r.scan_iter(match=self._k_blob(digest) + "*", count=100)]

        blobs = await self._call("deleting an entry", blob_keys())
        n = await self._call("deleting an entry", self._r.delete(self._k_meta(digest), *blobs))
        await self._call("deleting an entry", self._r.srem(self._k_keys(), digest))
        for mk in [mk for mk in self._memory if mk[0] == digest]:
            del self._memory[mk]
        return bool(n)

    async def ping(self) -> None:
        """Raise `StoreError` (saying what to check) unless the server answers."""
        await self._call("connecting", self._r.ping())

    async def close(self) -> None:
        if self._own_client:
            with contextlib.suppress(Exception):
                await self._r.aclose()

    aclose = close

    # single flight across processes --------------------------------------------------------------
    async def last_failure(self, key: CacheKey) -> str | None:
        """The error of the key's last failed search while it is younger than ``failure_ttl_s``."""
        raw = await self._call("reading a failure", self._r.get(self._k_failed(key.digest())),
                               wrong_type=f"the failure record of {key.persona_id}")
        return None if raw is None else raw.decode("utf-8", "replace")

    async def single_flight(self, key: CacheKey, compute: Callable[[], Awaitable[ExampleSet]]) -> ExampleSet:
        """``compute()`` in exactly one process among all sharing this Redis; the others wait for
        its stored result. See the module docstring for leases, dead owners and failures."""
        from redis.exceptions import LockError, RedisError

        digest = key.digest()
        while True:
            es = await self.get(key)
            if es is not None:
                return es
            failed = await self.last_failure(key)
            if failed is not None:
                raise SearchError(f"the search for {key.persona_id} failed in another replica: {failed}",
                                  hint=f"it is retried after {self.failure_ttl_s:g}s; check that replica's log")
            lock = self._r.lock(self._k_lock(digest), timeout=self.lease_s, blocking=False, thread_local=False)
            if await self._call("taking the search lease", lock.acquire()):
                try:
                    es = await self.get(key)  # finished between our miss and the lock
                    if es is not None:
                        return es
                    return await self._leased(lock, key, compute)
                finally:  # a store gone away must not hide the search's own outcome
                    with contextlib.suppress(LockError, RedisError, StoreError, OSError):
                        await lock.release()
            await asyncio.sleep(self.poll_s)

    async def _leased(self, lock: Any, key: CacheKey, compute: Callable[[], Awaitable[ExampleSet]]) -> ExampleSet:
        from redis.exceptions import LockError, RedisError

        stop = asyncio.Event()

        async def renew() -> None:  # stopped between renewals, never cancelled in the middle of one
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.lease_s / 3)
                if stop.is_set():
                    return
                try:
                    await lock.reacquire()
                except LockError:
                    log.warning("search lease for %s was lost (another replica may search it too)", key.persona_id)
                    return
                except (RedisError, OSError) as e:
                    log.warning("could not renew the search lease for %s: %s", key.persona_id, type(e).__name__)

        renewer = asyncio.ensure_future(renew())
        try:
            return await compute()
        except Exception as e:
            with contextlib.suppress(Exception):
                await self._r.set(self._k_failed(key.digest()), f"{type(e).__name__}: {e}"[:500],
                                  px=max(1, int(self.failure_ttl_s * 1000)))
            raise
        finally:
            stop.set()
            done, _ = await asyncio.wait({renewer}, timeout=self.lease_s)
            if not done:
                renewer.cancel()

    # search checkpoints, shared (`steerkit precompute --ray` resumes a persona on any machine) --------
    def _k_ckpt(self, digest: str) -> str:
        return f"{self.prefix}:ckpt:{digest}"

    async def save_checkpoint(self, key: CacheKey, data: bytes) -> None:
        """Keep a search checkpoint (the search's own JSON file) for the key."""
        await self._call("saving a checkpoint", self._r.set(self._k_ckpt(key.digest()), data))

    async def load_checkpoint(self, key: CacheKey) -> bytes | None:
        return await self._call("reading a checkpoint", self._r.get(self._k_ckpt(key.digest())))

    async def drop_checkpoint(self, key: CacheKey) -> None:
        await self._call("dropping a checkpoint", self._r.delete(self._k_ckpt(key.digest())))

    async def lock_owner_ttl(self, key: CacheKey) -> float | None:
        """Seconds left on the key's search lease (None when nobody holds it): for tests and ops."""
        ms = await self._call("reading the lease", self._r.pttl(self._k_lock(key.digest())))
        return None if ms is None or ms < 0 else ms / 1000.0

"""Persona searches on Ray: `precompute_on_ray` (``steerkit precompute --all --ray [ADDRESS]``).

Each persona's search is one Ray task, and each task runs it through the one compute owner,
`ExampleSets.precompute` (cache check, limits, counters, checkpoints, storing the new version):
nothing here searches by itself. A task gets its `ExampleSets` from a *factory*: a picklable
callable returning an async context manager that yields one (`FromSettings` for the command line:
the same runtime, store and keys as ``steerkit precompute``). A worker process keeps what a factory
opened (the model, the store's connection) for its next tasks when the factory has a ``cache_key``.

Results go to the factory's store; for a cluster that is a shared one (`RedisStore`). Searches are
resumable per persona: with a store that keeps checkpoints (`RedisStore.save_checkpoint`), a task
mirrors its search's checkpoint file into the store while the search runs, and a retried task (the
worker died: Ray retries it up to ``max_retries`` times) or a later run starts from it, on any
machine. With a `DiskStore` the checkpoints folder is the machine's own, as without Ray.

Progress: every task reports its status and search progress to a small Ray actor; the driver
drains it every ``poll_s`` and calls ``on_status(persona, status)`` / ``on_progress(persona,
SearchProgress)`` — the command line shows them in one rich view. Ray is an optional extra
(``pip install 'steerkit[ray]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerkit._compute import PrecomputeResult
from steerkit.errors import ConfigError, SearchError

if TYPE_CHECKING:
    from steerkit._compute import ExampleSets
    from steerkit._config import Settings

__all__ = ["ExampleSetsFactory", "FromSettings", "precompute_on_ray"]

log = logging.getLogger("steerkit.compute.ray")

ExampleSetsFactory = Callable[[], AbstractAsyncContextManager["ExampleSets"]]


@dataclass(frozen=True)
class FromSettings:
    """A factory that opens the `ExampleSets` of ``steerkit precompute`` from settings in a worker
    (packs, store, search backend; no chat model). The settings travel with their secrets to the
    cluster's workers, as they would in the workers' environment."""

    settings_json: str

    @classmethod
    def of(cls, settings: Settings) -> FromSettings:
        return cls(settings.to_json())

    @property
    def cache_key(self) -> str:
        return hashlib.sha256(self.settings_json.encode()).hexdigest()

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[ExampleSets]:
        from steerkit._config import Settings
        from steerkit._runtime import Runtime

        settings = Settings.model_validate_json(self.settings_json)
        async with await Runtime.open(settings, chat=False) as rt:
            assert rt.steerer is not None
            yield rt.steerer.example_sets


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("precompute on Ray needs the ray package", hint="pip install 'steerkit[ray]'") from None
    return ray


# --- in a worker -------------------------------------------------------------------------------

_LOOP: asyncio.AbstractEventLoop | None = None
_OPEN: dict[str, tuple[Any, AsyncExitStack]] = {}


def _worker_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker process, kept across tasks (what a factory opened is bound to it)."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def _search_task(factory: ExampleSetsFactory, persona_id: str, force: bool, fresh: bool, hub: Any) -> PrecomputeResult:
    """The Ray task: one persona's search through `ExampleSets.precompute`."""
    return _worker_loop().run_until_complete(_search_one(factory, persona_id, force, fresh, hub))


async def _open(factory: ExampleSetsFactory) -> tuple[Any, AsyncExitStack | None]:
    key = getattr(factory, "cache_key", None)
    if key is not None and key in _OPEN:
        return _OPEN[key][0], None
    stack = AsyncExitStack()
    sets = await stack.enter_async_context(factory())
    if key is not None:
        _OPEN[key] = (sets, stack)
        return sets, None
    return sets, stack


def _has_shared_checkpoints(store: Any) -> bool:
    return all(callable(getattr(store, n, None)) for n in ("save_checkpoint", "load_checkpoint", "drop_checkpoint"))


async def _mirror(store: Any, key: Any, path: Path, stop: asyncio.Event, every: float = 0.2) -> None:
    """Copy the search's checkpoint file into the store whenever it changes, until ``stop`` is set
    (it is stopped between writes, never cancelled in the middle of one)."""
    seen: float | None = None
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            continue
        if mtime != seen:
            data = path.read_bytes()
            await store.save_checkpoint(key, data)
            seen = mtime


async def _search_one(factory: ExampleSetsFactory, pid: str, force: bool, fresh: bool, hub: Any) -> PrecomputeResult:
    sets, stack = await _open(factory)
    last: dict[str, float] = {}

    def status(p: str, s: str) -> None:
        hub.report.remote(p, "status", f"{s} (pid {os.getpid()})" if s in ("searching", "resuming") else s)

    def progress(p: str, pr: Any) -> None:
        now = time.monotonic()
        if getattr(pr, "phase", "") == "done" or now - last.get(p, 0.0) >= 0.2:
            last[p] = now
            hub.report.remote(p, "progress", pr)

    mirror: asyncio.Task[None] | None = None
    stop = asyncio.Event()

    async def stop_mirror() -> None:
        nonlocal mirror
        if mirror is not None:
            stop.set()
            done, _ = await asyncio.wait({mirror}, timeout=60)
            if not done:
                log.warning("the checkpoint copy of %s did not stop; leaving it", pid)
            mirror = None

    try:
        key = sets.cache_key(pid)
        store = sets.store
        shared = _has_shared_checkpoints(store) and sets.checkpoints_dir is not None
        if shared:
            path = sets.checkpoint_path(key)
            if fresh:
                await store.drop_checkpoint(key)
                path.unlink(missing_ok=True)
            elif not path.exists():
                data = await store.load_checkpoint(key)
                if data:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".part")
                    tmp.write_bytes(data)
                    os.replace(tmp, path)
                    log.info("resuming %s from the store's checkpoint", pid)
            mirror = asyncio.ensure_future(_mirror(store, key, path, stop))
        [result] = await sets.precompute([pid], force=force, fresh=fresh, on_progress=progress, on_status=status)
        if mirror is not None:
            await stop_mirror()
            await store.drop_checkpoint(key)
        return result
    finally:
        with contextlib.suppress(Exception):
            await stop_mirror()
        if stack is not None:
            await stack.aclose()


class _Hub:
    """The progress mailbox (a Ray actor): tasks report, the driver drains."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def report(self, pid: str, kind: str, payload: Any) -> None:
        self.events.append((pid, kind, payload))

    def drain(self) -> list[tuple[str, str, Any]]:
        out, self.events = self.events, []
        return out


# --- the driver --------------------------------------------------------------------------------


async def precompute_on_ray(
    factory: ExampleSetsFactory,
    persona_ids: Sequence[str],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    force: bool = False,
    fresh: bool = False,
    max_retries: int = 3,
    task_cpus: float = 1.0,
    on_progress: Callable[[str, Any], None] | None = None,
    on_status: Callable[[str, str], None] | None = None,
    poll_s: float = 0.25,
    raise_on_failure: bool = True,
) -> list[PrecomputeResult]:
    """Search each persona as a Ray task (see the module docstring); results in ``persona_ids``' order.

    Ray: the running instance when ``ray.init`` was called already; else ``address`` (a cluster,
    e.g. ``ray://head:10001`` or ``auto``), else a new local instance with ``num_cpus`` CPUs (not
    another Ray that happens to run on this machine), shut down at the end. ``max_retries``: how often a task whose worker died is retried (it resumes from its
    checkpoint). A persona whose search failed is reported with status ``failed``; with
    ``raise_on_failure`` a `SearchError` names them after every task has finished.
    """
    ray = _import_ray()
    if not persona_ids:
        return []
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:  # "local": a new instance of our own, never another Ray found running on this machine
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        except Exception as e:
            raise ConfigError(f"could not start or reach Ray{f' at {address}' if address else ''}: {type(e).__name__}: {e}",
                              hint="check the address (ray://host:10001 or auto) and that the cluster runs") from None
        started = True
    hub = ray.remote(num_cpus=0)(_Hub).remote()
    task = ray.remote(max_retries=max_retries, num_cpus=task_cpus)(_search_task)
    results: dict[str, PrecomputeResult] = {}
    try:
        futures = {asyncio.wrap_future(task.remote(factory, pid, force, fresh, hub).future()): pid for pid in persona_ids}
        pending = set(futures)

        async def drain() -> None:
            for pid, kind, payload in await hub.drain.remote():
                if kind == "status" and on_status is not None:
                    on_status(pid, payload)
                elif kind == "progress" and on_progress is not None:
                    on_progress(pid, payload)

        while pending:
            done, pending = await asyncio.wait(pending, timeout=poll_s)
            await drain()
            for f in done:
                pid = futures[f]
                try:
                    results[pid] = f.result()
                except Exception as e:
                    cause = getattr(e, "cause", None) or e
                    err = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
                    results[pid] = PrecomputeResult(pid, "failed", extra={"error": err})
                    if on_status is not None:
                        on_status(pid, "failed")
        await drain()
    finally:
        with contextlib.suppress(Exception):
            ray.kill(hub)
        if started:
            ray.shutdown()
    out = [results[p] for p in persona_ids]
    failed = [r for r in out if r.status == "failed"]
    if failed and raise_on_failure:
        raise SearchError(
            f"{len(failed)} of {len(out)} persona searches failed on Ray: "
            + "; ".join(f"{r.persona}: {r.extra['error']}" for r in failed),
            hint="the others are stored; run the same command again to retry the failed ones (they resume from their checkpoints)",
        )
    return out

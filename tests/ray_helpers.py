"""Factories the Ray precompute tests send to Ray workers (helpers only, no tests here).

They must be importable in a worker process: the tests put this folder on the workers' PYTHONPATH.

- `FakeFactory`: the shipped packs, a *fake* scorer (no model: P(True) is a hash of the prompt),
  a `RedisStore` (or a `DiskStore` folder) and a checkpoints folder of the worker's own (so a
  retried task can only resume from the store's copy). It writes each scoring process's pid to
  ``<root>/pids/`` so a test can kill the worker mid-search; with ``hold_first_worker_at`` the
  first worker's scorer stops answering (held, until killed) once its checkpoint holds that many
  iterations, so the search cannot finish before the test kills it.
- `EmbeddedFactory`: the same with the real embedded model (one thread, small context) and the
  sparse search; a worker keeps its model loaded across tasks (``cache_key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerkit import DiskStore, ExampleSets, PackRegistry, SearchConfig, SteerConfig
from steerkit._redis_store import RedisStore
from steerkit.testing import FakeScorer, unit_rand


def _store(url: str) -> Any:
    return RedisStore.from_url(url) if url.startswith("redis") else DiskStore(url)


def hashed_p_true(prompt: str) -> float:
    """A fake model: P(True) from a hash of the prompt."""
    return 0.15 + 0.7 * unit_rand(prompt)


class PidScorer(FakeScorer):
    """The fake scorer, recording which process scores (and, optionally, slowed down or held)."""

    def __init__(self, root: str, delay: float, hold_at: int = 0) -> None:
        super().__init__(hashed_p_true, model="fake-ray", delay=delay)
        self.pid_file = Path(root) / "pids" / str(os.getpid())
        self.checkpoints = Path(root) / f"ckpt-{os.getpid()}"
        self.hold_at = hold_at
        self.first_worker: bool | None = None

    def _checkpointed_iterations(self) -> int:
        n = 0
        for f in self.checkpoints.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                n = max(n, sum(r["iteration"] for r in json.loads(f.read_text())["restarts"]))
        return n

    async def score(self, prompts):  # type: ignore[no-untyped-def]
        if not self.pid_file.exists():
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            if self.first_worker is None:
                self.first_worker = not any(self.pid_file.parent.iterdir())
            self.pid_file.write_text("")
        if self.hold_at and self.first_worker and self._checkpointed_iterations() >= self.hold_at:
            await asyncio.Event().wait()  # held: this worker is killed here, mid-search
        return await super().score(prompts)


@dataclass(frozen=True)
class FakeFactory:
    store_url: str
    root: str
    delay: float = 0.0
    max_items: int = 12
    max_iterations: int = 60
    hold_first_worker_at: int = 0
    """Hold the first worker's scorer once its checkpoint holds this many iterations (0: never)."""

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[ExampleSets]:
        store = _store(self.store_url)
        config = SteerConfig(max_pool_items=self.max_items,
                             search=SearchConfig(mode="exact", max_iterations=self.max_iterations, patience=1000, restarts=1))
        scorer = PidScorer(self.root, self.delay, self.hold_first_worker_at)
        sets = ExampleSets(PackRegistry.default(), store, scorer, config,
                           checkpoints_dir=Path(self.root) / f"ckpt-{os.getpid()}")
        try:
            yield sets
        finally:
            await sets.aclose()
            close = store.close()
            if close is not None:
                await close


@dataclass(frozen=True)
class EmbeddedFactory:
    store_url: str
    root: str
    max_items: int = 6
    max_iterations: int = 12

    @property
    def cache_key(self) -> str:
        return f"embedded:{self.store_url}:{self.root}"

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[ExampleSets]:
        from steerkit.backends import EmbeddedBackend

        backend = EmbeddedBackend(n_ctx=2048, n_parallel=1, n_threads=1)
        await backend.start()
        store = _store(self.store_url)
        config = SteerConfig(max_pool_items=self.max_items,
                             search=SearchConfig(mode="sparse", max_iterations=self.max_iterations, restarts=1))
        sets = ExampleSets(PackRegistry.default(), store, backend, config, checkpoints_dir=Path(self.root) / "ckpt")
        try:
            yield sets
        finally:
            await sets.aclose()
            await store.close()
            await backend.aclose()

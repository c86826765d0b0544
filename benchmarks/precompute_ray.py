"""Wall time of precomputing 8 personas: sequential (`ExampleSets.precompute`, one process) vs
persona searches as tasks on a local Ray instance (`precompute_on_ray`, ``--cpus`` CPUs).

Two scorers, each run both ways into its own prefix of one ``redis-server`` (started here, loopback):

- **fake**: the *fake* scorer (P(True) from a hash of the prompt, no model) with ``--delay`` s per
  scoring call standing in for a model server's latency;
- **embedded**: the packaged GGUF model in-process (one thread), sparse search, a tiny pool; on
  Ray every worker loads its own copy (included in the wall time).

Ray's start-up is measured apart (``ray_init_s``) and not included in the Ray wall time. Prints JSON
with the speed-up (sequential / Ray) of each, measured in the same run. Usage::

    python benchmarks/precompute_ray.py [--personas 8] [--cpus 2] [--delay 0.01] [--skip-embedded]
    python benchmarks/precompute_ray.py --quick   # seconds after Ray starts: 2 personas, fake only (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Factory:
    """Opens an `ExampleSets` in a worker (or here): fake or embedded scorer, a RedisStore."""

    kind: str
    store_url: str
    root: str
    delay: float
    max_items: int
    max_iterations: int

    @property
    def cache_key(self) -> str:  # a Ray worker keeps what it opened (the model) for its next persona
        return f"{self.kind}:{self.store_url}"

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Any]:
        from steerkit import ExampleSets, PackRegistry, SearchConfig, SteerConfig
        from steerkit._redis_store import RedisStore
        from steerkit.testing import FakeScorer, unit_rand

        store = RedisStore.from_url(self.store_url)
        backend: Any
        if self.kind == "fake":
            backend = FakeScorer(lambda p: 0.15 + 0.7 * unit_rand(p), model="fake-bench", delay=self.delay)
            search = SearchConfig(mode="exact", max_iterations=self.max_iterations, patience=1000, restarts=1)
        else:
            from steerkit.backends import EmbeddedBackend

            backend = await EmbeddedBackend(n_ctx=2048, n_parallel=1, n_threads=1).start()
            search = SearchConfig(mode="sparse", max_iterations=self.max_iterations, restarts=1)
        sets = ExampleSets(PackRegistry.default(), store, backend, SteerConfig(max_pool_items=self.max_items, search=search),
                           checkpoints_dir=Path(self.root) / f"ckpt-{os.getpid()}")
        try:
            yield sets
        finally:
            await sets.aclose()
            await store.close()
            await backend.aclose()


async def _sequential(factory: Factory, personas: list[str]) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    async with factory() as sets:
        res = await sets.precompute(personas)
    return time.perf_counter() - t0, res


async def _on_ray(factory: Factory, personas: list[str]) -> tuple[float, list[Any]]:
    from steerkit._ray_precompute import precompute_on_ray

    t0 = time.perf_counter()
    res = await precompute_on_ray(factory, personas)
    return time.perf_counter() - t0, res


def _summary(wall: float, res: list[Any]) -> dict[str, Any]:
    return {"wall_s": round(wall, 2), "statuses": sorted({r.status for r in res}),
            "scoring_calls": sum(r.calls for r in res), "versions": [r.version for r in res]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--personas", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    ap.add_argument("--delay", type=float, default=0.01, help="fake scorer: seconds per scoring call")
    ap.add_argument("--fake-items", type=int, default=16)
    ap.add_argument("--fake-iterations", type=int, default=80)
    ap.add_argument("--embedded-items", type=int, default=6)
    ap.add_argument("--embedded-iterations", type=int, default=12)
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--quick", action="store_true", help="seconds after Ray starts (CI): 2 personas, 6 items, 10 iterations, fake only")
    args = ap.parse_args()
    if args.quick:
        args.personas, args.fake_items, args.fake_iterations, args.delay, args.skip_embedded = 2, 6, 10, 0.001, True
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    import ray

    from steerkit import PackRegistry

    personas = [p.id for p in PackRegistry.default().personas()][: args.personas]
    t_start = time.perf_counter()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="steerkit-ray-bench-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        redis = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            t0 = time.perf_counter()
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            ray_init = time.perf_counter() - t0
            kinds = [("fake", args.fake_items, args.fake_iterations)]
            if not args.skip_embedded:
                kinds.append(("embedded", args.embedded_items, args.embedded_iterations))
            for kind, items, iters in kinds:
                res = {}
                for how, run in (("sequential", _sequential), ("ray", _on_ray)):
                    f = Factory(kind, f"redis://127.0.0.1:{port}/0?prefix={kind}-{how}", tmp, args.delay, items, iters)
                    res[how] = _summary(*asyncio.run(run(f, personas)))
                same = res["sequential"].pop("versions") == res["ray"].pop("versions")
                out[kind] = {**res, "same_example_sets": same,
                             "speedup": round(res["sequential"]["wall_s"] / res["ray"]["wall_s"], 2),
                             "pool_items": items, "max_iterations": iters}
            ray.shutdown()
        finally:
            redis.terminate()
            redis.wait(10)
    print(json.dumps({
        "benchmark": "precompute_ray",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"quick": args.quick, "personas": personas, "ray_cpus": args.cpus, "fake_delay_s": args.delay},
        "note": "speedup = sequential wall / Ray wall (Ray start-up excluded, reported as ray_init_s); the embedded "
        "Ray figure includes each worker loading the model; both runs share this machine's cores",
        "ray_init_s": round(ray_init, 2),
        **out,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()

"""How the ICM search's cost grows with the pool, per scoring mode, and what the fast modes cost in
coherence. Prints JSON (and writes it, with a log-log PNG of evaluated tokens against N).

Pools:

- ``democrat-N`` (N = 16, 32, 64, 128 claims): OpinionQA Democrat, built exactly as in
  ``benchmarks/icm_cost.py`` (two-option questions sorted by key, one claim per option);
- ``country``: one shipped persona's whole pool (``country/nigeria``: 46 questions, 107 claims);
- ``fake-N`` (N = 128, 512, 2048): the planted fake scorer (`steerkit.testing.planted_claims`,
  never a model): a hidden coherent labelling the search must recover. Its tokens are counted
  as if each prompt were real (words, no prompt cache).

Per mode, pool and seed: calls, prompt tokens sent and evaluated, wall seconds, seconds to the
first complete labelling (``first_complete_s``: the any-time answer a waiting request gets), iterations,
accepted changes, the search's own U, and (``--exact-u``, for N ≤ 64) U of the final labels
under the **exact** objective (one exact leave-one-out pass over them, its calls not counted in
the search's cost; ``--exact-u-max``); label accuracy against gold; agreement with the exact search's labels for
the same seed; agreement across seeds; recovery of the planted labelling (fake pools).

Examples (2-core machine, embedded Gemma 3 270M, 1 llama.cpp thread):

    python benchmarks/search_scaling.py --pools fake-128 fake-512 fake-2048           # ~1 min
    python benchmarks/search_scaling.py --pools democrat-32 --modes exact sparse sparse-k4 --exact-u   # hours: exact
    python benchmarks/search_scaling.py --pools democrat-16 democrat-32 democrat-64 democrat-128 country
    python benchmarks/search_scaling.py --pools country --modes sparse --seeds 1   # country/nigeria cold: minutes
    python benchmarks/search_scaling.py --quick   # seconds: fake-32 (exact, sparse), fake-128 (sparse), 2 seeds (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from icm_cost import DEFAULT_DATA, agreement, democrat_pool

from steerkit.icm import Objective, search
from steerkit.models import Pool, SearchConfig
from steerkit.packs import PackRegistry
from steerkit.testing import planted_claims

MODES: dict[str, dict[str, Any]] = {
    "exact": {"mode": "exact"},
    "sparse": {"mode": "sparse"},  # context_k = 8, the default
    "sparse-k4": {"mode": "sparse", "context_k": 4},
    "sparse-k16": {"mode": "sparse", "context_k": 16},
}


def budget(pool: Pool, mode: str, scale: float) -> dict[str, int]:
    """Iterations sized to the pool: every unit needs one to be labelled; exact ICM gets the
    budget ``icm_cost.py`` measured it with (one per unit), the sparse modes three more per unit
    (they stop by themselves at a fixed point, usually far earlier)."""
    units = len(pool.groups) + sum(1 for it in pool.items if it.group is None)
    if mode == "exact":
        return {"max_iterations": max(1, int(units * scale)), "patience": max(3, units // 2)}
    return {"max_iterations": int(units * (1 + 3 * scale)), "patience": max(8, units)}


async def exact_u(pool: Pool, backend: Any, labels: dict[str, bool], base: SearchConfig) -> dict[str, Any]:
    """U of ``labels`` under the exact objective: one leave-one-out pass (not counted as search cost)."""
    obj = Objective(pool, backend, base.model_copy(update={"mode": "exact"}))
    ev = await obj.evaluate(labels)
    return {"u": round(ev.u, 4), "calls": obj.counters.model_calls}


async def run(name: str, pool: Pool, backend: Any, modes: list[str], seeds: list[int], args: argparse.Namespace, fake: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"pool": name, "items": len(pool.items), "questions": len(pool.groups), "modes": {}}
    exact_labels: dict[int, dict[str, bool]] = {}
    gold = {it.id: it.gold for it in pool.items}
    for mode in modes:
        runs = []
        label_sets = []
        for seed in seeds:
            cfg = SearchConfig(seed=seed, **MODES[mode], **budget(pool, MODES[mode]["mode"], args.scale))
            t0 = time.monotonic()
            es = await search(pool, backend, cfg)
            wall = time.monotonic() - t0
            values = es.label_values()
            label_sets.append(values)
            s = es.stats
            evaluated = s.prompt_tokens if fake else s.evaluated_tokens
            r: dict[str, Any] = {
                "seed": seed,
                "calls": s.model_calls,
                "prompt_tokens": s.prompt_tokens,
                "evaluated_tokens": evaluated,
                "wall_seconds": round(wall, 2),
                "first_complete_s": None if s.first_complete_s is None else round(s.first_complete_s, 2),
                "iterations": s.iterations,
                "accepted": s.accepted,
                "evaluated_per_accepted": round(evaluated / max(1, s.accepted), 1) if evaluated is not None else None,
                "u": round(es.score, 4),
                "violations": pool.violations(values),
            }
            if all(g is not None for g in gold.values()):
                acc = sum(values[i] == gold[i] for i in values) / len(values)
                r["label_accuracy"] = round(acc, 4)
                if fake:
                    r["recovered"] = round(max(acc, 1 - acc), 4)
            if mode == "exact":
                exact_labels[seed] = values
            elif seed in exact_labels:
                ref = exact_labels[seed]
                r["agreement_with_exact"] = round(sum(values[i] == ref[i] for i in values) / len(values), 4)
            if args.exact_u and len(pool.items) <= args.exact_u_max and not fake:
                r["exact_u"] = es.score if mode == "exact" else (await exact_u(pool, backend, values, cfg))["u"]
            runs.append(r)
            print(json.dumps({"pool": name, "mode": mode, **r}), file=sys.stderr, flush=True)
        summary: dict[str, Any] = {"runs": runs, "agreement_across_seeds": agreement(label_sets)}
        for key in ("evaluated_tokens", "wall_seconds", "first_complete_s", "exact_u", "label_accuracy", "recovered", "evaluated_per_accepted", "calls"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            if vals:
                summary[key] = {
                    "mean": round(statistics.fmean(vals), 4),
                    "min": min(vals),
                    "max": max(vals),
                    "sd": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                }
        out["modes"][mode] = summary
    ex = out["modes"].get("exact", {}).get("evaluated_tokens")
    for mode, summary in out["modes"].items():
        if ex and mode != "exact" and summary.get("evaluated_tokens"):
            summary["evaluated_tokens_ratio_exact_over_mode"] = round(ex["mean"] / summary["evaluated_tokens"]["mean"], 2)
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    series: dict[str, list[tuple[int, float]]] = {}
    for p in report["pools"]:
        for mode, s in p["modes"].items():
            if s.get("evaluated_tokens"):
                kind = "fake" if p["pool"].startswith("fake") else "model"
                series.setdefault(f"{mode} ({kind})", []).append((p["items"], s["evaluated_tokens"]["mean"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items in the pool (N)")
    ax.set_ylabel("evaluated prompt tokens per search")
    ax.set_title("ICM search cost by scoring mode")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", nargs="*", default=["fake-128", "fake-512", "fake-2048"])
    ap.add_argument("--modes", nargs="*", default=None, help=f"of {list(MODES)} (default: exact and sparse; sparse only above N=32 or on fakes above 512)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--scale", type=float, default=1.0, help="budget multiplier (see budget())")
    ap.add_argument("--exact-u", action="store_true", help="score final labels under the exact objective")
    ap.add_argument("--exact-u-max", type=int, default=64, help="only on pools of at most this many items")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--persona", default="country/nigeria")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("search_scaling.json"))
    ap.add_argument("--png", type=Path, default=Path("search_scaling.png"))
    ap.add_argument("--quick", action="store_true", help="seconds (CI): fake-32 (exact and sparse) and fake-128 (sparse), 2 seeds")
    args = ap.parse_args(argv)
    if args.quick:
        args.pools, args.seeds = ["fake-32", "fake-128"], [1, 2]

    report: dict[str, Any] = {"benchmark": "search_scaling", "quick": args.quick, "seeds": args.seeds, "pools": []}
    model_pools = [p for p in args.pools if not p.startswith("fake-")]
    backend = None
    if model_pools:
        from steerkit.backends import EmbeddedBackend

        backend = EmbeddedBackend(n_threads=args.threads, n_parallel=args.parallel)
        await backend.__aenter__()
        report["model"] = backend.model
    t0 = time.monotonic()
    try:
        for name in args.pools:
            if name.startswith("fake-"):
                pool, fake = planted_claims(int(name.split("-")[1]) // 2)
                be, is_fake = fake, True
            elif name.startswith("democrat-"):
                pool, be, is_fake = democrat_pool(args.data, int(name.split("-")[1]) // 2), backend, False
            elif name == "country":
                pool, be, is_fake = PackRegistry.default().pool(args.persona), backend, False
            else:
                ap.error(f"unknown pool {name!r}")
            exact_max = 32 if args.quick or not is_fake else 512
            modes = args.modes or (["exact", "sparse"] if len(pool.items) <= exact_max else ["sparse"])
            report["pools"].append(await run(name, pool, be, modes, args.seeds, args, is_fake))
            args.out.write_text(json.dumps(report, indent=2))
    finally:
        if backend is not None:
            await backend.__aexit__(None, None, None)
    report["total_wall_seconds"] = round(time.monotonic() - t0, 1)
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.png)
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))

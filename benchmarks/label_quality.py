"""Are the search's labels *right*, from every seed? Label accuracy on pools whose answers are known.

The persona pools steerkit ships have no ground truth a model can know (a party's opinions), so a
search there can only be judged by its own objective. This benchmark asks the product's question
on general-knowledge pools that the project writes (``benchmarks/label_quality_data/``: capitals,
units, science, arithmetic, dates; never shipped in a pack), where gold is known and the packaged
models know a little:

- ``two-N``: the first N questions of ``two_option.jsonl`` (2 claims each), N = 10, 30, 100;
- ``multi-N``: the first N of ``multi_option.jsonl`` (3-4 claims each).

Every question is an ``exactly_one`` group of claims "The majority of well-informed adults would
answer this question as: '<option>'"; a claim's gold is whether its option is the right answer.

Per pool x configuration x model x seed it records: label accuracy against gold (claims; a mirrored
labelling gets no credit) and question accuracy (every claim of the question right); the model's
zero-shot accuracy on the same claims (each claim alone: what it knows without context) and its
zero-shot *consistent* accuracy (per question the option it scores highest); U under the search's
objective and, where affordable (``--exact-u-max`` claims), under exact leave-one-out; calls,
prompt and evaluated tokens, iterations; how the search ended; how far its restarts agreed. Per
configuration: mean, min, max and spread (max - min) of accuracy across seeds, and Spearman's rank
correlation between U and accuracy across seeds (does the objective rank seeds as accuracy does?).

Configurations (``--configs``):

- ``default``: the library's `SearchConfig()` (sparse, restarts settled by consensus);
- ``single``: the previous default: one sparse restart from 8 random seed labels, paper
  annealing, 200 iterations, patience 40, no polarity move;
- ``exact``: exact leave-one-out ICM with the issue's budget (2 iterations per question), the
  reference whose best seed the default must match.

Models (``--models``): ``fake`` (the *weak* planted fake scorer, `steerkit.testing.WEAK_SIGNAL`:
never a model; its signal strength and noise are ``--fake-k``, ``--fake-prior``, ``--fake-noise``,
``--fake-context-noise``), ``gemma`` (embedded Gemma 3 270M), ``smollm2`` (SmolLM2-135M-Instruct).

Model scores are kept in a disk cache (``--score-cache``), so a re-run or a new seed repeats no
model work; evaluated tokens of a replayed prompt are those the engine reported when it scored it.
Targets (``--targets``, checked against the ``exact`` runs of the same pool and model): the
default's mean accuracy within 0.05 of exact's best seed; its spread at most 0.1; its evaluated
tokens at most 1/10 of exact's; settled (``fixed_point`` / ``converged``) on at least 90% of runs.

Examples (2-core machine)::

    python benchmarks/label_quality.py --quick                    # fake only, ~30 s (CI runs this)
    python benchmarks/label_quality.py --models fake --pools two-10 two-30 two-100 multi-10 multi-30 multi-100
    python benchmarks/label_quality.py --models gemma smollm2 --pools two-10 multi-10 --configs default exact
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

from scipy.stats import spearmanr

from steerkit.icm import Objective, search
from steerkit.icm.sparse import SETTLED
from steerkit.models import Item, Persona, Pool, SearchConfig
from steerkit.testing import WEAK_SIGNAL, FakeScorer, planted_fn

DATA = Path(__file__).resolve().parent / "label_quality_data"
PERSONA = Persona(id="knowledge/informed", name="well-informed adults", dimension="knowledge")
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "answer": {"proposals": "answer"},
    "single": {"restarts": 1, "restart_choice": "u", "schedule": "paper", "polarity_move": False,
               "max_iterations": 200, "patience": 40, "num_seed": 8},
    "exact": {"mode": "exact", "restarts": 1, "restart_choice": "u", "schedule": "paper"},
}


def knowledge_pool(name: str) -> Pool:
    """``two-N`` / ``multi-N``: the first N questions of the benchmark's own data as claims."""
    kind, n = name.rsplit("-", 1)
    path = DATA / {"two": "two_option.jsonl", "multi": "multi_option.jsonl"}[kind]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][: int(n)]
    items = [
        Item(id=f"{r['id']}.{k}", kind="claim", question=r["question"], option=opt, group=r["id"],
             gold=k == r["answer"], meta={"topic": r["topic"]})
        for r in rows
        for k, opt in enumerate(r["options"])
    ]
    return Pool.from_items(PERSONA, items)


def fake_backend(pool: Pool, args: argparse.Namespace) -> FakeScorer:
    """The weak planted fake scorer over this pool's gold (keyed by option text, as `planted_fn` reads)."""
    gold: dict[str, bool] = {}
    for it in pool.items:
        gold[it.option or ""] = gold.get(it.option or "", False) or bool(it.gold)
    # option texts repeat across questions ("Four"): make them unique so the fake reads one gold each
    sig = {"k": args.fake_k, "prior": args.fake_prior, "noise": args.fake_noise, "context_noise": args.fake_context_noise,
           "bias": WEAK_SIGNAL["bias"]}
    return FakeScorer(planted_fn(gold, **sig), model="fake-weak")


def unique_options(pool: Pool) -> Pool:
    """The pool with each option prefixed by its question id (the fake keys gold by option text)."""
    items = [it.model_copy(update={"option": f"{it.group}: {it.option}"}) for it in pool.items]
    return Pool(persona=pool.persona, items=tuple(items), groups=pool.groups)


def accuracy(pool: Pool, labels: dict[str, bool]) -> tuple[float, float]:
    claims = sum(labels[it.id] == it.gold for it in pool.items) / len(pool.items)
    by_q: dict[str, bool] = {}
    for it in pool.items:
        by_q[it.group or it.id] = by_q.get(it.group or it.id, True) and labels[it.id] == it.gold
    return claims, sum(by_q.values()) / len(by_q)


async def zero_shot(pool: Pool, backend: Any) -> dict[str, float]:
    """What the model knows alone: each claim without context, and per question its top option."""
    obj = Objective(pool, backend, SearchConfig())
    scores = await obj.score_prompts([obj.zero_shot_prompt(it.id) for it in pool.items])
    lo = {it.id: s.logodds() for it, s in zip(pool.items, scores)}
    claims = sum((lo[it.id] > 0) == it.gold for it in pool.items) / len(pool.items)
    groups: dict[str, list[Item]] = {}
    for it in pool.items:
        groups.setdefault(it.group or it.id, []).append(it)
    consistent = sum(bool(max(m, key=lambda it: lo[it.id]).gold) for m in groups.values()) / len(groups)
    return {"zero_shot_claim_accuracy": round(claims, 4), "zero_shot_question_accuracy": round(consistent, 4)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in ("label_accuracy", "question_accuracy", "evaluated_tokens", "calls", "iterations", "u", "exact_u", "restart_agreement",
                "answer_confidence"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[key] = {"mean": round(statistics.fmean(vals), 4), "min": min(vals), "max": max(vals),
                        "spread": round(max(vals) - min(vals), 4)}
    out["settled_share"] = round(sum(r["ended"] in SETTLED for r in runs) / len(runs), 4)
    out["ended"] = {e: sum(r["ended"] == e for r in runs) for e in sorted({str(r["ended"]) for r in runs})}
    for key in ("u", "exact_u"):
        xs = [(r[key], r["label_accuracy"]) for r in runs if r.get(key) is not None]
        if len(xs) >= 3 and len({x for x, _ in xs}) > 1 and len({y for _, y in xs}) > 1:
            rho = spearmanr([x for x, _ in xs], [y for _, y in xs]).statistic
            out[f"spearman_{key}_vs_accuracy"] = round(float(rho), 4)
    return out


def check_targets(entry: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for one pool and model, where the runs to judge them exist."""
    confs = entry["configs"]
    d, ex = confs.get("default"), confs.get("exact")
    if d is None:
        return {}
    t: dict[str, Any] = {"default_spread": d["label_accuracy"]["spread"], "spread_ok": d["label_accuracy"]["spread"] <= 0.1,
                         "settled_share": d["settled_share"], "settled_ok": d["settled_share"] >= 0.9}
    if ex is not None:
        best = ex["label_accuracy"]["max"]
        t.update({"exact_best_seed": best, "default_mean": d["label_accuracy"]["mean"],
                  "accuracy_ok": d["label_accuracy"]["mean"] >= best - 0.05})
        if ex.get("evaluated_tokens") and d.get("evaluated_tokens"):
            ratio = ex["evaluated_tokens"]["mean"] / d["evaluated_tokens"]["mean"]
            t["exact_over_default_tokens"] = round(ratio, 2)  # the token targets are set at N = 60 and 200
    return t


def extrapolate_exact(report: dict[str, Any]) -> None:
    """Where exact ICM was not run (too costly), its tokens extrapolated from the smallest pool of
    the same model where it was: a pass costs O(N^2) tokens and a search O(N) passes, so N^3. The
    token targets: at most 1/10 of exact's at N = 60 claims, 1/30 at N = 200."""
    for e in report["results"]:
        measured = [x for x in report["results"] if x["model"] == e["model"] and "exact" in x["configs"]
                    and x["configs"]["exact"].get("evaluated_tokens")]
        d = e["configs"].get("default")
        if not measured or d is None or not d.get("evaluated_tokens") or "exact" in e["configs"]:
            continue
        ref = min(measured, key=lambda x: x["claims"])
        exact = ref["configs"]["exact"]["evaluated_tokens"]["mean"] * (e["claims"] / ref["claims"]) ** 3
        ratio = exact / d["evaluated_tokens"]["mean"]
        e["targets"].update({"exact_tokens_extrapolated": round(exact), "extrapolated_from": ref["pool"],
                             "exact_over_default_tokens": round(ratio, 2)})
        need = 30 if e["claims"] >= 200 else 10 if e["claims"] >= 60 else None
        if need is not None:
            e["targets"].update({"tokens_needed": need, "tokens_ok": ratio >= need})


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({e["model"] for e in report["results"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.4), squeeze=False)
    markers = {"default": "o", "single": "s", "exact": "^"}
    for ax, model in zip(axes[0], models):
        entries = [e for e in report["results"] if e["model"] == model]
        colours = {e["pool"]: f"C{k}" for k, e in enumerate(entries)}
        for e in entries:
            for conf, runs in e["runs"].items():
                xs = [max(1, r["evaluated_tokens"] or r["prompt_tokens"]) for r in runs]
                ys = [r["label_accuracy"] for r in runs]
                ax.scatter(xs, ys, marker=markers.get(conf, "x"), color=colours[e["pool"]], alpha=0.7,
                           label=f"{e['pool']} {conf}")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("evaluated prompt tokens per search (log)")
        ax.set_ylabel("label accuracy against gold")
        ax.set_title(f"{model}: every seed")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def open_backend(model: str, args: argparse.Namespace) -> tuple[Any, Any]:
    from steerkit._scorecache import CachedBackend, ScoreCache
    from steerkit.backends import EmbeddedBackend
    from steerkit.backends._models import gemma3_270m_path, smollm2_path

    path = {"gemma": gemma3_270m_path, "smollm2": smollm2_path}[model]()
    be = EmbeddedBackend(path, n_threads=args.threads, n_parallel=args.parallel)
    await be.__aenter__()
    cache = ScoreCache(args.score_cache)
    return CachedBackend(be, cache), (be, cache)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["fake"], choices=["fake", "gemma", "smollm2"])
    ap.add_argument("--pools", nargs="*", default=["two-10", "two-30", "two-100", "multi-10", "multi-30", "multi-100"])
    ap.add_argument("--configs", nargs="*", default=["default", "single", "exact"], choices=list(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="*", default=list(range(1, 9)))
    ap.add_argument("--exact-seeds", type=int, nargs="*", default=None, help="seeds of the exact configuration (default: --seeds)")
    ap.add_argument("--exact-max", type=int, default=60, help="run the exact configuration on pools of at most this many claims")
    ap.add_argument("--exact-u-max", type=int, default=40, help="score results under exact LOO on pools of at most this many claims")
    ap.add_argument("--fake-k", type=float, default=WEAK_SIGNAL["k"], help="the fake's coherence signal")
    ap.add_argument("--fake-prior", type=float, default=WEAK_SIGNAL["prior"], help="the fake's knowledge of gold")
    ap.add_argument("--fake-noise", type=float, default=WEAK_SIGNAL["noise"], help="the fake's per-claim noise")
    ap.add_argument("--fake-context-noise", type=float, default=WEAK_SIGNAL["context_noise"], help="the fake's per-prompt noise")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--score-cache", type=Path, default=Path("label_quality_scores"))
    ap.add_argument("--quick", action="store_true", help="fake only, two-10 and multi-10, 3 seeds (CI)")
    ap.add_argument("--out", type=Path, default=Path("label_quality.json"))
    ap.add_argument("--png", type=Path, default=Path("label_quality.png"))
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.pools, args.seeds, args.exact_max = ["fake"], ["two-10", "multi-10"], [1, 2, 3], 20

    report: dict[str, Any] = {"seeds": args.seeds, "fake_signal": {"k": args.fake_k, "prior": args.fake_prior,
                              "noise": args.fake_noise, "context_noise": args.fake_context_noise}, "results": []}
    t_start = time.monotonic()
    for model in args.models:
        handle = None
        backend: Any = None
        if model != "fake":
            backend, handle = await open_backend(model, args)
        try:
            for name in args.pools:
                pool = knowledge_pool(name)
                be = backend
                if model == "fake":
                    pool = unique_options(pool)
                    be = fake_backend(pool, args)
                entry: dict[str, Any] = {"model": model, "pool": name, "claims": len(pool.items),
                                         "questions": len(pool.groups), **await zero_shot(pool, be), "configs": {}, "runs": {}}
                for conf in args.configs:
                    if conf == "exact" and len(pool.items) > args.exact_max:
                        continue
                    runs = []
                    for seed in (args.exact_seeds or args.seeds) if conf == "exact" else args.seeds:
                        extra = dict(CONFIGS[conf])
                        if conf == "exact":
                            extra.update(max_iterations=2 * len(pool.groups), patience=len(pool.groups))
                        cfg = SearchConfig(seed=seed, **extra)
                        if model == "fake":
                            be = fake_backend(pool, args)  # fresh counters; the fake has no prompt cache
                        t0 = time.monotonic()
                        es = await search(pool, be, cfg)
                        labels = es.label_values()
                        acc, qacc = accuracy(pool, labels)
                        s = es.stats
                        r: dict[str, Any] = {
                            "seed": seed, "label_accuracy": round(acc, 4), "question_accuracy": round(qacc, 4),
                            "u": round(es.score, 4), "calls": s.model_calls, "prompt_tokens": s.prompt_tokens,
                            "evaluated_tokens": s.prompt_tokens if model == "fake" else s.evaluated_tokens,
                            "iterations": s.iterations, "ended": s.ended, "restarts_ended": s.restarts_ended,
                            "restart_agreement": s.restart_agreement, "answer_confidence": es.answer_confidence(),
                            "wall_seconds": round(time.monotonic() - t0, 2),
                        }
                        if len(pool.items) <= args.exact_u_max:
                            if conf == "exact":
                                r["exact_u"] = r["u"]
                            else:
                                ev = await Objective(pool, be, cfg.model_copy(update={"mode": "exact"})).evaluate(labels)
                                r["exact_u"] = round(ev.u, 4)
                        runs.append(r)
                        print(json.dumps({"model": model, "pool": name, "config": conf, **r}), file=sys.stderr, flush=True)
                    entry["runs"][conf] = runs
                    entry["configs"][conf] = summarise(runs)
                entry["targets"] = check_targets(entry)
                report["results"].append(entry)
                args.out.write_text(json.dumps(report, indent=2))
        finally:
            if handle is not None:
                be_real, cache = handle
                await be_real.__aexit__(None, None, None)
                cache.close()
    extrapolate_exact(report)
    report["wall_seconds"] = round(time.monotonic() - t_start, 1)
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.png)
    brief = [{"model": e["model"], "pool": e["pool"], "zero_shot": e["zero_shot_claim_accuracy"],
              **{c: {k: v for k, v in s.items() if k in ("label_accuracy", "settled_share", "evaluated_tokens")}
                 for c, s in e["configs"].items()}, "targets": e["targets"]} for e in report["results"]]
    print(json.dumps(brief, indent=1))
    return report


if __name__ == "__main__":
    asyncio.run(main())

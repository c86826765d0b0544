"""Cost and quality of the ICM search on the embedded model; prints JSON.

Pools (built the same way every run, so figures are comparable across changes):

- ``democrat-8`` / ``democrat-16`` / ``democrat-32``: persona Democrat; from every wave's
  ``POLPARTY_data.json`` of the tatsu-lab OpinionQA copy, the questions whose answer options minus
  "Refused" are exactly two, sorted by question key, the first 4 / 8 / 16; two claims per question
  (one per option); gold = the option more Democrats chose.
- ``facts-32``: 16 plain-fact questions written here (true option vs a wrong one, the true option
  first or second alternately), two claims each, persona "well-informed people"; ``facts-8`` and
  ``facts-16`` are its first 4 and 8 questions.

Per pool and seed: model calls (prompts sent), prompt tokens sent and evaluated (after llama.cpp's
prompt cache), wall seconds, labelled items, constraint violations, final U, label accuracy against
gold, label-token probability mass; per pool: zero-shot accuracy of the same model on the same
items (no demonstrations; question level: the option with the higher P(True)), and agreement of
the labels across the seeds.

Cost: one exact leave-one-out pass over N labelled claims sends N prompts of ~N claim blocks each;
with the prompt cache about N²/2 blocks are evaluated (~50 tokens per OpinionQA block). On the
2-core development machine (shared with other work, 1 llama.cpp thread) the default Gemma 3 270M
evaluated ~220 prompt tokens/s: a 16-claim pass takes ~25-30 s, a 32-claim pass ~2 min. Measured
wall times of the modes there:

    python benchmarks/icm_cost.py            # democrat-8, democrat-16, facts-16; 3 seeds: ~22 min
    python benchmarks/icm_cost.py --small    # democrat-8, facts-8; 3 seeds: ~2 min
    python benchmarks/icm_cost.py --quick    # facts-8 on a *fake* scorer (no model, no data); 2 seeds: seconds (CI)
    python benchmarks/icm_cost.py --full     # democrat-8/16/32 and facts-32: several hours
                                             # (democrat-32 alone: ~25-30 min per seed)

Budget per pool: ``max_iterations`` = questions (default, small and quick) or 2 x questions
(full); every question needs one iteration to be labelled, the rest are annealing moves.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from steerkit.icm import SearchProgress, render_prompt, search
from steerkit.models import Item, Persona, Pool, SearchConfig
from steerkit.testing import FakeScorer, planted_fn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(  # OpinionQA's human_resp folder: $STEERKIT_OPINIONQA_DIR, else beside the checkout
    os.environ.get("STEERKIT_OPINIONQA_DIR") or ROOT.parent / "shared" / "data" / "opinionqa" / "tatsu-lab_opinions_qa" / "data" / "human_resp"
)

FACTS: list[tuple[str, str, str]] = [
    ("What is the capital of France?", "Paris", "Madrid"),
    ("What is the capital of Japan?", "Tokyo", "Beijing"),
    ("What is the capital of Italy?", "Rome", "Athens"),
    ("What is the capital of Germany?", "Berlin", "Vienna"),
    ("What is the capital of Canada?", "Ottawa", "Toronto"),
    ("What is the capital of Spain?", "Madrid", "Lisbon"),
    ("What is the capital of Egypt?", "Cairo", "Nairobi"),
    ("What is the capital of Russia?", "Moscow", "Warsaw"),
    ("How many legs does a spider have?", "Eight", "Six"),
    ("At what temperature does water boil at sea level?", "100 degrees Celsius", "50 degrees Celsius"),
    ("Which planet is closest to the Sun?", "Mercury", "Jupiter"),
    ("What is the largest ocean on Earth?", "The Pacific Ocean", "The Indian Ocean"),
    ("Which gas do plants take from the air for photosynthesis?", "Carbon dioxide", "Helium"),
    ("What is the chemical symbol for gold?", "Au", "Fe"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare", "Charles Dickens"),
    ("How many days are there in a week?", "Seven", "Five"),
]


def democrat_questions(data_dir: Path) -> list[tuple[str, str, list[str], dict[str, float]]]:
    """(key, question text, the two options, Democrat counts), sorted by question key."""
    out = []
    for path in sorted(data_dir.glob("*/POLPARTY_data.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for key, q in data.items():
            options = [o for o in q["MC_options"] if o != "Refused"]
            if len(options) != 2:
                continue
            out.append((key, q["question_text"], options, q.get("Democrat") or {}))
    out.sort(key=lambda t: t[0])
    return out


def democrat_pool(data_dir: Path, n_questions: int) -> Pool:
    persona = Persona(id="polparty/democrat", name="Democrats", dimension="political_affiliation")
    items = []
    for key, text, options, counts in democrat_questions(data_dir)[:n_questions]:
        best = max(options, key=lambda o: counts.get(o, 0.0))
        for k, opt in enumerate(options):
            items.append(Item(id=f"{key}:{k}", kind="claim", question=text, option=opt, group=key, gold=opt == best))
    return Pool.from_items(persona, items)


def facts_pool(n_questions: int = 16) -> Pool:
    persona = Persona(id="bench/informed", name="well-informed people", dimension="knowledge")
    items = []
    for q, (text, right, wrong) in enumerate(FACTS[:n_questions]):
        options = [(right, True), (wrong, False)] if q % 2 == 0 else [(wrong, False), (right, True)]
        for k, (opt, gold) in enumerate(options):
            items.append(Item(id=f"fact{q:02d}:{k}", kind="claim", question=text, option=opt, group=f"fact{q:02d}", gold=gold))
    return Pool.from_items(persona, items)


def fake_facts_scorer(pool: Pool) -> FakeScorer:
    """A *fake* scorer (no model) whose coherent labelling is the facts pool's gold, keyed by option
    text (unique among facts-8's options): for the quick mode that CI runs."""
    gold = {it.option: bool(it.gold) for it in pool.items}
    if len(gold) != len(pool.items):
        raise SystemExit("the fake scorer needs distinct option texts: use facts-8 with --quick")
    return FakeScorer(planted_fn(gold), model="fake-planted")


def question_accuracy(pool: Pool, p_true: dict[str, float]) -> float:
    """Share of questions whose option with the highest P(True) is the gold one."""
    hits = 0
    for g in pool.groups:
        pick = max(g.item_ids, key=lambda i: p_true[i])
        hits += bool(pool.item(pick).gold)
    return hits / len(pool.groups)


async def zero_shot(pool: Pool, backend: Any, config: SearchConfig) -> dict[str, Any]:
    prompts = [render_prompt(pool.persona, it, config) for it in pool.items]
    scores = await backend.score(prompts)
    p_true = {it.id: s.prob_true() for it, s in zip(pool.items, scores)}
    claim_acc = sum((p_true[it.id] > 0.5) == it.gold for it in pool.items) / len(pool.items)
    return {
        "question_accuracy": round(question_accuracy(pool, p_true), 4),
        "claim_accuracy": round(claim_acc, 4),
        "label_token_mass": round(sum(s.label_mass for s in scores) / len(scores), 4),
    }


def agreement(label_sets: list[dict[str, bool]]) -> dict[str, float]:
    if len(label_sets) < 2:
        return {}
    ids = list(label_sets[0])
    pairs = list(itertools.combinations(label_sets, 2))
    pairwise = sum(sum(a[i] == b[i] for i in ids) / len(ids) for a, b in pairs) / len(pairs)
    unanimous = sum(all(ls[i] == label_sets[0][i] for ls in label_sets) for i in ids) / len(ids)
    return {"pairwise": round(pairwise, 4), "unanimous": round(unanimous, 4)}


async def run_pool(name: str, pool: Pool, backend: Any, config: SearchConfig, seeds: list[int], verbose: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pool": name,
        "items": len(pool.items),
        "questions": len(pool.groups),
        "max_iterations": config.max_iterations,
        "patience": config.patience,
        "config": config.model_dump(exclude={"seed"}),
        "runs": [],
    }
    out["zero_shot"] = await zero_shot(pool, backend, config)
    label_sets = []
    for seed in seeds:
        cfg = config.model_copy(update={"seed": seed})
        before = backend.stats.calls

        def show(p: SearchProgress, seed: int = seed) -> None:
            if verbose:
                print(
                    f"  [{name} seed={seed}] it={p.iteration} acc={p.accepted} U={p.u:.2f} "
                    f"labelled={p.labelled}/{p.total} calls={p.calls} T={p.temperature:.2f} {p.elapsed_s:.0f}s",
                    file=sys.stderr,
                )

        es = await search(pool, backend, cfg, progress=show)
        values = es.label_values()
        label_sets.append(values)
        gold = {it.id: it.gold for it in pool.items}
        p_true = {i: (lab.confidence if lab.value else 1 - lab.confidence) for i, lab in es.labels.items()}
        s = es.stats
        out["runs"].append(
            {
                "seed": seed,
                "model_calls": s.model_calls,
                "backend_calls": backend.stats.calls - before,
                "prompt_tokens": s.prompt_tokens,
                "evaluated_tokens": s.evaluated_tokens,
                "wall_seconds": round(s.wall_seconds, 2),
                "iterations": s.iterations,
                "accepted": s.accepted,
                "memo_hits": s.memo_hits,
                "labelled_items": len(es.labels),
                "violations": pool.violations(values),
                "final_u": round(es.score, 4),
                "label_accuracy": round(sum(values[i] == gold[i] for i in values) / len(values), 4),
                "question_accuracy_final_pass": round(question_accuracy(pool, p_true), 4),
                "label_token_mass": round(s.label_token_mass or 0.0, 4),
            }
        )
    runs = out["runs"]
    out["agreement_across_seeds"] = agreement(label_sets)
    out["mean_label_accuracy"] = round(sum(r["label_accuracy"] for r in runs) / len(runs), 4)
    out["total_wall_seconds"] = round(sum(r["wall_seconds"] for r in runs), 2)
    return out


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="facts-8 on a fake scorer, 2 seeds: seconds, no model or data (CI)")
    ap.add_argument("--small", action="store_true", help="democrat-8 and facts-8 only, minimal budget (a few minutes)")
    ap.add_argument("--full", action="store_true", help="the issue's pools: democrat-8/16/32 and facts-32 (hours on 2 cores)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: the embedded default model)")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--max-iterations", type=int, default=None)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--pools", nargs="*", default=None, help="democrat-8/16/32, facts-8/16/32")
    ap.add_argument("--template", choices=["natural", "reference"], default="natural")
    ap.add_argument("--objective", choices=["mean_logodds", "sum_logprob"], default="mean_logodds")
    ap.add_argument("--schedule", choices=["paper", "reference"], default="paper")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1: on 2 shared cores 2 threads ran 2-4x slower)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    try:
        from steerkit.backends import EmbeddedBackend  # type: ignore[attr-defined]
    except ImportError:  # the backends stream may not export it yet
        from steerkit.backends.embedded import EmbeddedBackend

    pools: dict[str, Any] = {  # built when chosen: the democrat pools need the OpinionQA data
        "democrat-8": lambda: democrat_pool(args.data, 4),
        "democrat-16": lambda: democrat_pool(args.data, 8),
        "democrat-32": lambda: democrat_pool(args.data, 16),
        "facts-8": lambda: facts_pool(4),
        "facts-16": lambda: facts_pool(8),
        "facts-32": lambda: facts_pool(16),
    }
    # Budgets are per pool: max_iterations = questions + extra (every question must be labelled
    # at least once; the rest are annealing moves), patience as given.
    if args.full:
        mode, names, extra, patience = "full", ["democrat-8", "democrat-16", "democrat-32", "facts-32"], None, None
    elif args.quick:
        mode, names, extra, patience = "quick", ["facts-8"], 0, 2
    elif args.small:
        mode, names, extra, patience = "small", ["democrat-8", "facts-8"], 0, 2
    else:
        mode, names, extra, patience = "default", ["democrat-8", "democrat-16", "facts-16"], 0, 3
    names = args.pools or names
    seeds = args.seeds or ([1, 2] if args.quick else [1, 2, 3])
    unknown = [n for n in names if n not in pools]
    if unknown:
        ap.error(f"unknown pools {unknown}; choose from {list(pools)}")

    def config_for(pool: Pool) -> SearchConfig:
        n_units = len(pool.groups)
        max_it = args.max_iterations
        if max_it is None:
            max_it = 2 * n_units if extra is None else n_units + extra
        pat = args.patience if args.patience is not None else (patience or max(3, n_units // 2))
        return SearchConfig(
            max_iterations=max_it, patience=pat, template=args.template, objective=args.objective, schedule=args.schedule
        )

    t0 = time.monotonic()
    report: dict[str, Any] = {"benchmark": "icm_cost", "mode": mode, "seeds": seeds, "pools": []}
    built = {name: pools[name]() for name in names}
    if args.quick:
        report["model"] = "fake-planted (no model)"
        for name, pool in built.items():
            report["pools"].append(await run_pool(name, pool, fake_facts_scorer(pool), config_for(pool), seeds, args.verbose))
        report["total_wall_seconds"] = round(time.monotonic() - t0, 2)
        return report
    async with EmbeddedBackend(model_path=args.model, n_threads=args.threads, n_parallel=args.parallel) as backend:
        report["model"] = backend.model
        for name, pool in built.items():
            report["pools"].append(await run_pool(name, pool, backend, config_for(pool), seeds, args.verbose))
            if args.verbose:
                print(json.dumps(report["pools"][-1]), file=sys.stderr)
    report["total_wall_seconds"] = round(time.monotonic() - t0, 2)
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))

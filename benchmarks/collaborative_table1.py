"""The shape of the seed paper's Table 1 (collaborative coherence elicitation), on the embedded model.

For each persona (default: Democrat, Republican, Independent of OpinionQA's POLPARTY):

1. ICM labels a train pool of survey questions (one claim per answer option) → example set v0;
2. metrics at k=0: **test accuracy** (predict the persona's answer to held-out questions with v0 as
   few-shot context), **label accuracy** (v0's labels vs the gold plurality labels), **coherence**
   (the search's score U);
3. for each selection policy — ICM confidence (the paper's), random, active learning (the few-shot
   model's own prediction confidence) — an `Escalator` asks k=4 questions through a
   `CallbackAdapter` whose simulated annotator answers with the gold (plurality) option; the answers
   become fixed human labels and the search re-runs warm-started from v0 (`collaborative_rerun`);
   the same three metrics after.

Prints one JSON document: per persona and policy the metrics before/after, the questions asked and
how many of them v0 had wrong, and a ``table`` laid out like the paper's Table 1.

Data: the two-option questions of one OpinionQA wave (default W92) that all three groups answered,
by default only the *contentious* ones (the groups' plurality answers differ), in a seeded shuffle:
the first ``--train`` are the train pool, the next ``--test`` the held-out questions (the same
split for every persona). Gold = the group's plurality option (`steerkit.importers.import_opinionqa`).

Cost: a leave-one-out pass over N claims evaluates ~N²/2 claim blocks (~50 tokens each); on two
CPU cores SmolLM2-135M does ~250 prompt tokens/s unloaded, far less when the cores are shared. The
default (6 train / 6 test questions = 12 claims each, k=4, 4 search iterations, 1 re-run
iteration, 3 personas × 3 policies) is sized for ~15 minutes on two idle cores (measured: 36 min
for 6/2 iterations with the cores shared by other jobs, load ~3). Scale up with ``--train/--test/
--max-iterations/--rerun-iterations/--random-seeds/--restarts``, e.g. ``--train 16 --test 16
--max-iterations 32 --rerun-iterations 32 --random-seeds 5`` (hours on CPU; or point
``--base-url`` at a vLLM server).

    python benchmarks/collaborative_table1.py                      # default
    python benchmarks/collaborative_table1.py --groups Democrat   # one persona, a third of the time
    python benchmarks/collaborative_table1.py --predictor chat     # test accuracy via chat letters
    python benchmarks/collaborative_table1.py --quick              # seconds: a planted pool, a *fake* scorer (CI)

``--quick`` needs neither the data nor a model: one persona over a planted pool
(`steerkit.testing.planted_pool`, 6 train / 4 test questions) scored by the weak planted *fake* scorer,
k=2, the same protocol and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from steerkit import icm
from steerkit.adapters.callback import CallbackAdapter
from steerkit.escalation import (
    ActiveLearningPolicy,
    AnswerMarginPolicy,
    ConfidencePolicy,
    Escalator,
    RandomPolicy,
    SelectionPolicy,
    question_confidence,
)
from steerkit.evaluation import (
    ChatPredictor,
    ClaimPredictor,
    Predictor,
    coherence,
    label_accuracy,
    test_accuracy,
)
from steerkit.importers import import_opinionqa
from steerkit.models import ExampleSet, Item, Persona, Pool, SearchConfig
from steerkit.testing import WEAK_SIGNAL, FakeScorer, planted_fn, planted_pool

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(  # OpinionQA's human_resp folder: $STEERKIT_OPINIONQA_DIR, else beside the checkout
    os.environ.get("STEERKIT_OPINIONQA_DIR") or ROOT.parent / "shared" / "data" / "opinionqa" / "tatsu-lab_opinions_qa" / "data" / "human_resp"
)
NAMES = {"Democrat": "Democrats", "Republican": "Republicans", "Independent": "Independents"}
TABLE_NAMES = {"icm_confidence": "ICM Confidence", "answer_margin": "Answer Margin", "active_learning": "Active Learning",
               "random": "Random Sampling"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_questions(args: argparse.Namespace) -> tuple[list[str], dict[str, dict[str, list[Item]]]]:
    """Question ids of the train+test split and, per group, the items of each question."""
    wave = Path(args.data_dir) / args.wave
    by_group: dict[str, dict[str, list[Item]]] = {}
    # the split is made over the three standard groups whatever --groups says, so runs of
    # different personas use the same questions
    for g in dict.fromkeys([*args.split_groups, *args.groups]):
        qs: dict[str, list[Item]] = defaultdict(list)
        for it in import_opinionqa(wave, args.attribute, g, allowed_options=tuple(args.options)):
            qs[str(it.group)].append(it)
        by_group[g] = dict(qs)
    common = sorted(set.intersection(*(set(q) for q in by_group.values())))
    if args.questions == "contentious":
        common = [q for q in common if len({tuple(bool(i.gold) for i in by_group[g][q]) for g in by_group}) > 1]
    rng = random.Random(args.seed)
    rng.shuffle(common)
    need = args.train + args.test
    if len(common) < need:
        raise SystemExit(
            f"only {len(common)} {args.questions} questions with {args.options} options in {wave}; "
            f"need {need} (lower --train/--test, use --questions all or --options 2 3)"
        )
    return common[:need], by_group


def planted_questions(args: argparse.Namespace) -> tuple[list[str], dict[str, dict[str, list[Item]]], FakeScorer]:
    """The quick mode's data: a planted pool's questions (shuffled as ``load_questions`` does) for
    each of ``--groups``, and the *fake* scorer whose coherent labelling is their gold."""
    pool, gold = planted_pool(args.train + args.test)
    qs: dict[str, list[Item]] = defaultdict(list)
    for it in pool.items:
        qs[str(it.group)].append(it)
    qids = sorted(qs)
    random.Random(args.seed).shuffle(qids)
    return qids, {g: dict(qs) for g in args.groups}, FakeScorer(planted_fn(gold, **WEAK_SIGNAL), model="fake-planted")


def simulated_gold_annotator(pool: Pool):
    """A person who answers every question with the group's plurality answer."""

    async def answer(e):
        for o in e.options:
            if o.true_items and all(pool.item(i).gold for i in o.true_items):
                return o.id
        return None

    return answer


async def metrics(es: ExampleSet, test_pool: Pool, predictor: Predictor) -> dict[str, Any]:
    rep = await test_accuracy(es, test_pool, predictor)
    return {
        "test": round(rep.accuracy, 4),
        "label": round(label_accuracy(es) or 0.0, 4),
        "label_questions": round(label_accuracy(es, per="question") or 0.0, 4),
        "coh": round(coherence(es), 3),
        "test_confidence": round(rep.mean_confidence, 4),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from steerkit.backends import EmbeddedBackend

    t0 = time.monotonic()
    fake = None
    if args.quick:
        qids, by_group, fake = planted_questions(args)
    else:
        qids, by_group = load_questions(args)
    train_q, test_q = qids[: args.train], qids[args.train :]
    cfg = SearchConfig(
        alpha=args.alpha,
        num_seed=args.num_seed,
        max_iterations=args.max_iterations,
        patience=args.patience,
        restarts=args.restarts,
        seed=args.seed,
    )
    rerun_cfg = cfg.model_copy(update={"max_iterations": args.rerun_iterations})
    if fake is not None:
        backend: Any = fake
        model_path = None
    elif args.base_url:
        from steerkit.backends import OpenAIBackend

        backend = OpenAIBackend(args.base_url, args.model or "default")
        model_path = None
    else:
        model_path = args.model_path
        if model_path is None:
            from steerkit.backends import smollm2_path

            model_path = smollm2_path()
        backend = EmbeddedBackend(model_path, n_ctx=args.n_ctx, n_parallel=args.n_parallel, n_threads=args.n_threads)
        await backend.start()
    try:
        if args.predictor == "chat":
            import openai

            base = args.base_url or backend.base_url
            client = openai.AsyncOpenAI(base_url=base, api_key="unused")
            predictor: Predictor = ChatPredictor(client, getattr(backend, "chat_model", None) or args.model or "default")
        else:
            predictor = ClaimPredictor(backend, cfg)
        out: dict[str, Any] = {
            "benchmark": "collaborative_table1",
            "model": backend.model,
            "backend": backend.name,
            "quick": args.quick,
            "data": {"wave": "planted (fake)" if args.quick else args.wave, "attribute": args.attribute, "questions": args.questions, "options": args.options,
                     "train": train_q, "test": test_q},
            "config": {
                "k": args.k, "search": cfg.model_dump(), "rerun_max_iterations": args.rerun_iterations,
                "predictor": args.predictor, "random_seeds": args.random_seeds, "annotator": "simulated gold (plurality)",
            },
            "personas": {},
        }
        for g in args.groups:
            persona = Persona(id=f"{args.attribute.lower()}/{g.lower()}", name=NAMES.get(g, g), dimension=args.attribute.lower())
            train_pool = Pool.from_items(persona, [i for q in train_q for i in by_group[g][q]])
            test_pool = Pool.from_items(persona, [i for q in test_q for i in by_group[g][q]])
            log(f"{g}: ICM on {len(train_pool.items)} claims ({args.train} questions)")
            ts = time.monotonic()
            es0 = await icm.search(train_pool, backend, cfg)
            log(f"{g}: search done in {time.monotonic() - ts:.0f}s, U={es0.score:.2f}, label acc {label_accuracy(es0):.2f}")
            zero = await test_accuracy(None, test_pool, predictor)
            before = await metrics(es0, test_pool, predictor)
            wrong0 = {q for q in train_q if any(es0.labels[i.id].value != i.gold for i in by_group[g][q])}
            entry: dict[str, Any] = {
                "zero_shot_test": round(zero.accuracy, 4),
                "before": before,
                "search_seconds": round(time.monotonic() - ts, 1),
                "search_calls": es0.stats.model_calls,
                "wrong_questions_before": sorted(wrong0),
                "policies": {},
            }
            log(f"{g}: before {before}, zero-shot test {zero.accuracy:.2f}")
            policies: list[tuple[str, SelectionPolicy]] = []
            for name in args.policies:
                if name == "icm_confidence":
                    policies.append((name, ConfidencePolicy()))
                elif name == "answer_margin":
                    policies.append((name, AnswerMarginPolicy()))
                elif name == "active_learning":
                    policies.append((name, ActiveLearningPolicy(predictor)))
                else:
                    policies.extend((name, RandomPolicy(seed=args.seed + s)) for s in range(args.random_seeds))
            runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for name, policy in policies:
                ts = time.monotonic()
                adapter = CallbackAdapter(simulated_gold_annotator(train_pool), annotator="simulated-gold", wait=True)
                esc = Escalator(adapter, policy, k=args.k, budget=args.k, backend=backend, config=rerun_cfg)
                asked = await esc.escalate(es0)
                res = await esc.apply(es0)
                await adapter.aclose()
                if res is None:
                    raise SystemExit(f"{g}/{name}: the simulated annotator gave no answers")
                after = await metrics(res.example_set, test_pool, predictor)
                run_ = {
                    **after,
                    "asked": [e.question_id for e in asked],
                    "asked_policy_score": [round(e.score, 4) for e in asked],
                    "asked_icm_confidence": [round(question_confidence(es0, e.question_id), 4) for e in asked],
                    "asked_wrong_before": sum(e.question_id in wrong0 for e in asked),
                    "seconds": round(time.monotonic() - ts, 1),
                    "rerun_calls": res.example_set.stats.model_calls,
                }
                runs[name].append(run_)
                log(f"{g}/{name}: after {after}, asked {run_['asked']} ({run_['asked_wrong_before']} were wrong)")
            for name, rs in runs.items():
                if len(rs) == 1:
                    entry["policies"][name] = rs[0]
                else:
                    agg = {m: round(statistics.mean(r[m] for r in rs), 4) for m in ("test", "label", "label_questions", "coh", "asked_wrong_before")}
                    agg["runs"] = rs
                    entry["policies"][name] = agg
            out["personas"][g] = entry
        table: dict[str, dict[str, dict[str, float]]] = {"Before (k=0)": {}}
        for g, entry in out["personas"].items():
            table["Before (k=0)"][g] = {m: entry["before"][m] for m in ("test", "label", "coh")}
            for name, r in entry["policies"].items():
                table.setdefault(TABLE_NAMES.get(name, name), {})[g] = {m: r[m] for m in ("test", "label", "coh")}
        out["table"] = table
        out["model_calls"] = backend.stats.calls
        out["prompt_tokens"] = backend.stats.prompt_tokens
        out["wall_seconds"] = round(time.monotonic() - t0, 1)
        return out
    finally:
        await backend.aclose()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="OpinionQA human_resp folder")
    p.add_argument("--wave", default="American_Trends_Panel_W92")
    p.add_argument("--attribute", default="POLPARTY")
    p.add_argument("--groups", nargs="+", default=["Democrat", "Republican", "Independent"])
    p.add_argument("--questions", choices=["contentious", "all"], default="contentious",
                   help="contentious: only questions whose plurality answer differs between the --split-groups")
    p.add_argument("--split-groups", nargs="+", default=["Democrat", "Republican", "Independent"])
    p.add_argument("--options", type=int, nargs="+", default=[2], help="allowed numbers of answer options")
    p.add_argument("--train", type=int, default=6)
    p.add_argument("--test", type=int, default=6)
    p.add_argument("--k", type=int, default=4, help="human labels per persona (one round)")
    p.add_argument("--policies", nargs="+", default=["icm_confidence", "random", "active_learning"],
                   choices=["icm_confidence", "answer_margin", "random", "active_learning"])
    p.add_argument("--random-seeds", type=int, default=1, help="random-policy repetitions (averaged)")
    p.add_argument("--seed", type=int, default=27565976)
    p.add_argument("--alpha", type=float, default=50.0)
    p.add_argument("--num-seed", type=int, default=8)
    p.add_argument("--max-iterations", type=int, default=4)
    p.add_argument("--rerun-iterations", type=int, default=1)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--predictor", choices=["claim", "chat"], default="claim",
                   help="claim: few-shot True/False claim scoring (Table 5 format); chat: lettered options via chat")
    p.add_argument("--model-path", help="GGUF for the embedded backend (default: SmolLM2-135M-Instruct)")
    p.add_argument("--base-url", help="use an OpenAI-compatible server (vLLM) instead of the embedded model")
    p.add_argument("--model", help="model name on --base-url")
    p.add_argument("--n-threads", type=int, default=None)
    p.add_argument("--n-parallel", type=int, default=4)
    p.add_argument("--n-ctx", type=int, default=8192)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--quick", action="store_true",
                   help="seconds (CI): one persona over a planted pool, the fake scorer, 6 train / 4 test questions, k=2")
    args = p.parse_args(argv)
    if args.quick:
        args.groups, args.train, args.test, args.k, args.predictor = ["Fake"], 6, 4, 2, "claim"
        args.max_iterations, args.rerun_iterations, args.num_seed = 6, 2, 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = asyncio.run(run(args))
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

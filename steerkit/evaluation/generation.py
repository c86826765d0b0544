"""The generation task (the seed paper's OvertonBench protocol): do the examples steer what a chat
model *writes* toward a persona?

Protocol. The answer pool's questions (`steerkit.evaluation.answers`) are split once, seeded, into
search questions (``search_fraction``, the paper's 30%) and held-out test questions, the same split
for every persona. For each persona, the search questions' candidate answers are labelled one way
per condition; the answers labelled True (representative) are the in-context examples, the ``k``
most relevant to each test question by BM25 and rendered by the product's own ``generate``
injection (`steerkit._inject.render_block`), so the chat model sees what a steered request sees.
The chat model answers every test question under every condition (temperature 0) and the judge
(`steerkit.evaluation.judge`) rates each answer for the persona, 1–5. Conditions:

- ``zero_shot``: the persona's block without examples;
- ``icm``: the ICM search's labels of the search answers (base model, sparse search);
- ``gold``: the persona's own raters' labels (mean rating ≥ 4), where every search answer has one;
- ``random``: a coin flip per answer; ``inverted``: gold flipped (not run by default);
- ``accuracy_matched``: ICM's labels perturbed to the same accuracy against gold (needs both),
  the mean over ``perturbations``.

The judge's self-check (`steerkit.evaluation.judge.self_check`) runs **first**, on known pairs:
the persona's best-rated against a worst-rated gold answer, else answers in the pool written for
and against it, else such answers written by the chat model for a few search questions. Its
verdict stands beside the scores: a failed judge makes them meaningless and the results say so.

Scores: per persona and condition, the mean over test questions of the judge's score (for
accuracy-matched, each question's mean over perturbations first) ± a bootstrap standard error over
questions; a missing verdict (unparseable after a retry) is left out and counted, never scored 0;
the change against zero-shot per persona, paired by question. Every chat completion and judgement
is kept in the disk cache, so a re-run (or one after a kill) repeats no model call.

**Results** (`GenerationReport.data`, written as ``report.json`` by ``steerkit eval --task
generation``; every key below is always present, NaN is written as null):

```
task            "generation"
scale           {"min": 1, "max": 5, "rubric_version": str, "levels": {"1": str, …}, "missing": str}
personas        [persona id, …]                 persona_labels  {persona id: label}
persona_names   {persona id: name}
conditions      [condition, …]  (those that ran, in table order)
skipped         {condition: {persona id: reason}}  (a condition not run for a persona, and why)
split           {"search_fraction": float, "search_questions": [id], "test_questions": [id]}
judge           {"model", "rubric_version", "self_check": {pairs, score_agreement, position_consistency,
                 pairwise_agreement, missing_share, passed, reasons, thresholds, sources, summary,
                 details: [{persona, question, source, score_better, score_worse, better_first,
                 better_second, consistent, picks_better, missing}]},
                 "scores_meaningful": bool, "judgements", "malformed_replies", "missing"}
summary         {condition: {"per_persona": {persona id: {"mean", "se", "n", "missing"}},
                             "mean": {"mean", "se"}}}
deltas          {condition: {persona id: {"mean", "se", "n"}}}   (condition − zero_shot, paired)
icm_label_accuracy  {persona id: float}  (ICM's labels of the search answers vs gold, where gold exists)
labellings      {persona id: {condition: {"answers": int, "representative": int}}}
questions       [{"persona", "question_id", "question", "condition", "perturbation", "examples":
                  [{"id", "question", "answer"}], "answer", "score", "judge_attempts", "judge_reason"}]
                 (every generated answer with the examples it was shown and its judgement)
notes           [str]  (plain warnings a reader must see: toy-sized models, a failed judge)
usage           {"chat_calls", "chat_cache_hits", "judge_calls", "judge_cache_hits", "wall_seconds",
                 "seconds_per_question", …scoring usage of the search}
provenance      {"library_version", "model", "backend", "chat_model", "judge_model", "rubric_version",
                 "answer_prompt_version", "pool_hash", "pool", "config", "started_at", "finished_at", "python", …}
```
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import random
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steerkit._inject import BM25, PersonaBlock, inject_block, render_block
from steerkit._scorecache import CachedBackend, ScoreCache
from steerkit.backends.base import LogprobBackend
from steerkit.errors import UserError
from steerkit.evaluation._plots import PlotFolder
from steerkit.evaluation.answers import (
    ANSWER_PROMPT_VERSION,
    AnswerPool,
    AnswerQuestion,
    PoolPersona,
    generate_answers,
)
from steerkit.evaluation.chat import CachedChat, ChatModel
from steerkit.evaluation.conditions import DEFAULT_GENERATION_CONDITIONS, GENERATION_CONDITIONS
from steerkit.evaluation.judge import (
    LEVELS,
    RUBRIC_VERSION,
    SCALE,
    Judge,
    KnownPair,
    SelfCheck,
    self_check,
)
from steerkit.evaluation.protocol import (
    Progress,
    accuracy_matched,
    bootstrap_se,
    random_labels,
    run_provenance,
    split_questions,
)
from steerkit.models import Item, Label, Pool, SearchConfig

__all__ = [
    "DEFAULT_GENERATION_CONDITIONS",
    "GENERATION_CONDITIONS",
    "TOY_MODEL_NOTE",
    "GenerationConfig",
    "GenerationReport",
    "generation_messages",
    "is_toy_model",
    "known_pairs",
    "run_generation_eval",
    "write_generation_plots",
]

_TITLES = {"zero_shot": "zero-shot", "icm": "ICM", "gold": "gold", "random": "random",
           "accuracy_matched": "accuracy-matched", "inverted": "inverted"}

#: The note every result from a toy-sized model carries.
TOY_MODEL_NOTE = ("No effect is expected from 135M–270M models: {models} {are} far too small to follow persona "
                  "examples in open-ended answers or to judge them. These numbers show that the protocol runs, "
                  "nothing about steering; run it on a real model (e.g. vLLM) for a result.")

#: The question as the chat model sees it (after the persona block).
ASK = "{question}\n\nAnswer in a few sentences."


@dataclass(frozen=True)
class GenerationConfig:
    conditions: tuple[str, ...] = DEFAULT_GENERATION_CONDITIONS
    search_fraction: float = 0.3
    """Share of the questions whose answers the search labels (the paper: 30%); the rest are test questions."""
    search: SearchConfig = field(default_factory=lambda: SearchConfig(mode="sparse", context_k=8, max_iterations=50, restarts=1))
    k: int = 6
    """Examples (representative answers) injected per test question."""
    perturbations: int = 5
    max_tokens: int = 200
    """Of each generated answer."""
    seed: int = 0
    bootstrap: int = 1000
    """Resamples of the bootstrap over questions."""
    self_check_pairs: int = 6
    """Known pairs per persona in the judge's self-check."""
    judge_retries: int = 1
    judge_max_tokens: int = 200
    min_pairs: int = 4
    min_agreement: float = 0.7
    min_consistency: float = 0.7
    max_missing: float = 0.25

    def __post_init__(self) -> None:
        unknown = set(self.conditions) - set(GENERATION_CONDITIONS)
        if unknown:
            raise UserError(f"unknown generation condition(s) {sorted(unknown)}",
                            hint=f"choose from {', '.join(GENERATION_CONDITIONS)}")
        if not self.conditions:
            raise UserError("no condition to run")
        if self.perturbations < 1 or self.k < 1:
            raise UserError("perturbations and k must be >= 1")


_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([MB])(?![A-Za-z])", re.IGNORECASE)


def is_toy_model(name: str) -> bool:
    """A model whose name gives its size as under 1B parameters ("SmolLM2-135M", "gemma-3-270m")."""
    m = _SIZE.search(name or "")
    if not m:
        return False
    n = float(m.group(1)) * (1 if m.group(2).upper() == "M" else 1000)
    return n < 1000


def generation_messages(persona: PoolPersona, question: str, examples: Sequence[Item], templates: Any = None) -> list[dict[str, Any]]:
    """What the chat model sees: the product's ``generate`` block (the persona, its representative
    answers) as the system message, then the question."""
    from steerkit.packs import PackTemplates

    labels = tuple((it, Label(item_id=it.id, value=True, confidence=1.0)) for it in examples)
    block = render_block([PersonaBlock(persona.persona(), persona.label or persona.name, templates or PackTemplates(),
                                       labels)], "generate")
    return inject_block([{"role": "user", "content": ASK.format(question=question.strip())}], block)


def _choose(items: Sequence[Item], labels: dict[str, bool], question: str, k: int) -> list[Item]:
    """The ``k`` representative (True) answers most relevant to ``question`` (BM25; ties: pool order)."""
    true = [it for it in items if labels.get(it.id)]
    if not true:
        return []
    scores = BM25([f"{it.question} {it.option}" for it in true]).scores(question)
    order = sorted(range(len(true)), key=lambda i: (-scores[i], i))
    return [true[i] for i in order[:k]]


def known_pairs(pool: AnswerPool, persona: PoolPersona, question_ids: Sequence[str], n: int) -> list[KnownPair]:
    """Up to ``n`` pairs of answers whose ranking for ``persona`` the pool knows: per question, its
    best-rated gold-True answer against its worst-rated gold-False one; else an answer written for
    the persona against one written against it."""
    p = persona.persona()
    out: list[KnownPair] = []
    for qid in question_ids:
        q = pool.question(qid)
        good = [a for a in q.answers if a.gold.get(persona.id) is True]
        bad = [a for a in q.answers if a.gold.get(persona.id) is False]
        if good and bad:
            best = max(good, key=lambda a: a.ratings.get(persona.id, 5.0))
            worst = min(bad, key=lambda a: a.ratings.get(persona.id, 1.0))
            out.append(KnownPair(p, q.question, best.text, worst.text, "gold"))
        else:
            pro = [a for a in q.answers if a.written_for == persona.id]
            con = [a for a in q.answers if a.written_against == persona.id]
            if pro and con:
                out.append(KnownPair(p, q.question, pro[0].text, con[0].text, "written"))
        if len(out) >= n:
            break
    return out


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return v


@dataclass
class GenerationReport:
    """Every number of a generation run (``data``, shape in the module docstring)."""

    data: dict[str, Any]

    @property
    def scores_meaningful(self) -> bool:
        return bool(self.data["judge"]["scores_meaningful"])

    def table_rows(self) -> list[tuple[str, ...]]:
        """The paper's Table 8 shape: one row per persona (then the mean), one column per condition."""
        d = self.data
        rows = []
        for pid in d["personas"]:
            rows.append((d["persona_labels"][pid], *(_cell(d["summary"][c]["per_persona"].get(pid)) for c in d["conditions"])))
        rows.append(("mean", *(_cell(d["summary"][c]["mean"]) for c in d["conditions"])))
        return rows

    def header(self) -> list[str]:
        return ["persona", *(_TITLES.get(c, c) for c in self.data["conditions"])]

    def markdown(self) -> str:
        """The table as Markdown, with the judge's self-check and the notes beside it."""
        d = self.data
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.table_rows()]
        lines.append("")
        lines.append(f"Representation score, {SCALE[0]}–{SCALE[1]} (judge {d['judge']['model']}, rubric "
                     f"{d['judge']['rubric_version']}), mean ± bootstrap SE over test questions.")
        summary = d["judge"]["self_check"]["summary"]
        lines.append(summary)
        if d["judge"]["missing"]:
            lines.append(f"{d['judge']['missing']} judgement(s) could not be parsed and are left out (never scored 0).")
        if d["icm_label_accuracy"]:
            lines.append("ICM label accuracy (search answers, vs gold): " + ", ".join(
                f"{d['persona_labels'][p]} {v:.2f}" for p, v in d["icm_label_accuracy"].items()) + ".")
        for c, per in d["skipped"].items():
            for pid, why in per.items():
                lines.append(f"{_TITLES.get(c, c)} not run for {d['persona_labels'].get(pid, pid)}: {why}.")
        lines += [f"**{n}**" for n in d["notes"] if n != summary]
        return "\n".join(lines) + "\n"


def _cell(v: dict[str, Any] | None) -> str:
    if not v or v.get("mean") is None:
        return "—"
    se = v.get("se")
    return f"{v['mean']:.2f}" + (f" ± {se:.2f}" if se is not None and not math.isnan(se) else "")


async def run_generation_eval(
    pool: AnswerPool,
    chat: ChatModel,
    judge_chat: ChatModel,
    config: GenerationConfig | None = None,
    *,
    backend: LogprobBackend | None = None,
    cache_dir: str | Path,
    personas: Sequence[str] | None = None,
    questions: int | None = None,
    templates: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    provenance: dict[str, Any] | None = None,
) -> GenerationReport:
    """Run the generation protocol (module docstring) and return every number.

    ``chat`` writes the answers; ``judge_chat`` judges them (the same model is allowed, and noted:
    a judge may favour its own writing); ``backend`` is the base model of the ICM search (None: the
    ``icm`` and ``accuracy_matched`` conditions are skipped). ``personas`` picks the pool's personas
    by id or label (default all); ``questions`` keeps the pool's first N questions; ``templates``
    (persona id → `steerkit.packs.PackTemplates`) renders a persona as its pack does (default: the
    default templates).
    """
    from steerkit import icm

    cfg = config or GenerationConfig()
    chosen = [pool.persona(k) for k in personas] if personas else list(pool.personas)
    if not chosen:
        raise UserError("the answer pool names no persona", hint="add persona lines to the pool or pass --persona-name")
    qlist = [q for q in pool.questions if q.answers][: questions] if questions else [q for q in pool.questions if q.answers]
    if len(qlist) < 2:
        raise UserError(f"the answer pool has {len(qlist)} question(s) with candidate answers; the protocol needs 2 or more",
                        hint="add questions, or generate candidate answers first (generate_answers)")
    pool = pool.model_copy(update={"questions": qlist})
    search_ids, test_ids = split_questions([q.id for q in qlist], cfg.search_fraction, f"{cfg.seed}/split")
    cache = ScoreCache(Path(cache_dir).expanduser() / "scores")
    writer = CachedChat(chat, cache)
    judge_cached = CachedChat(judge_chat, cache,
                              identity=f"judge:{getattr(judge_chat, 'identity', judge_chat.model)}:{RUBRIC_VERSION}")
    judge = Judge(judge_cached, retries=cfg.judge_retries, max_tokens=cfg.judge_max_tokens)
    scorer = CachedBackend(backend, cache) if backend is not None else None
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.monotonic()
    records: list[dict[str, Any]] = []
    skipped: dict[str, dict[str, str]] = {}
    icm_acc: dict[str, float] = {}
    labelling_counts: dict[str, dict[str, dict[str, int]]] = {}
    total = 1 + len(chosen)
    done = 0

    def tick(what: str) -> None:
        if progress is not None:
            progress(what, done, total)

    try:
        # 1. the judge's self-check, before anything is scored
        tick("judge self-check")
        pairs: list[KnownPair] = []
        for pp in chosen:
            found = known_pairs(pool, pp, [*search_ids, *test_ids], cfg.self_check_pairs)
            if len(found) < cfg.self_check_pairs:
                need = cfg.self_check_pairs - len(found)
                used = {kp.question for kp in found}
                qs = [pool.question(i) for i in search_ids if pool.question(i).question not in used][:need]
                if qs:
                    written = await generate_answers([AnswerQuestion(id=q.id, question=q.question) for q in qs], [pp],
                                                     writer, stances=(), temperature=0.0, seed=cfg.seed)
                    found += known_pairs(written, pp, [q.id for q in qs], need)
            pairs += found
        check: SelfCheck = await self_check(judge, pairs, min_pairs=cfg.min_pairs, min_agreement=cfg.min_agreement,
                                            min_consistency=cfg.min_consistency, max_missing=cfg.max_missing)
        done += 1
        # 2. per persona: labellings of the search answers, then answers and judgements on the test questions
        for pp in chosen:
            tick(f"{pp.label or pp.name}: labelling the search answers")
            persona = pp.persona()
            items = pool.items(pp.id, search_ids)
            has_gold = all(it.gold is not None for it in items)
            labellings: dict[str, list[dict[str, bool] | None]] = {}
            if "zero_shot" in cfg.conditions:
                labellings["zero_shot"] = [None]
            gold = {it.id: bool(it.gold) for it in items} if has_gold else None
            for c in ("gold", "inverted", "accuracy_matched"):
                if c in cfg.conditions and gold is None:
                    skipped.setdefault(c, {})[pp.id] = "no gold labels for every search answer"
            if any(c in cfg.conditions for c in ("icm", "accuracy_matched")):
                if scorer is None:
                    for c in ("icm", "accuracy_matched"):
                        if c in cfg.conditions:
                            skipped.setdefault(c, {}).setdefault(pp.id, "no search model")
                else:
                    search_cfg = cfg.search.model_copy(update={"seed": cfg.search.seed + cfg.seed})
                    es = await icm.search(Pool.from_items(persona, items), scorer, search_cfg)
                    icm_labels = es.label_values()
                    if "icm" in cfg.conditions:
                        labellings["icm"] = [icm_labels]
                    if gold is not None:
                        icm_acc[pp.id] = sum(icm_labels[i] == g for i, g in gold.items()) / len(gold)
                        if "accuracy_matched" in cfg.conditions:
                            singles = [[it] for it in items]
                            labellings["accuracy_matched"] = [
                                accuracy_matched(icm_labels, singles, random.Random(f"{cfg.seed}/{pp.id}/am/{j}"))
                                for j in range(cfg.perturbations)]
            if gold is not None:
                if "gold" in cfg.conditions:
                    labellings["gold"] = [gold]
                if "inverted" in cfg.conditions:
                    labellings["inverted"] = [{k: not v for k, v in gold.items()}]
            if "random" in cfg.conditions:
                labellings["random"] = [random_labels([[it] for it in items], random.Random(f"{cfg.seed}/{pp.id}/random"))]
            labelling_counts[pp.id] = {c: {"answers": len(items), "representative": round(statistics.fmean(
                sum(lab.values()) for lab in labs), 2)} for c, labs in labellings.items() if labs[0] is not None}
            tick(f"{pp.label or pp.name}: answering {len(test_ids)} test questions")

            async def one(qid: str, cond: str, j: int, labels: dict[str, bool] | None, pp: PoolPersona = pp,
                          items: list[Item] = items) -> dict[str, Any]:
                q = pool.question(qid)
                examples = [] if labels is None else _choose(items, labels, q.question, cfg.k)
                msgs = generation_messages(pp, q.question, examples, (templates or {}).get(pp.id))
                answer = await writer.complete(msgs, max_tokens=cfg.max_tokens,
                                               temperature=0.0, seed=cfg.seed)
                answer = answer.strip()
                verdict = await judge.score(pp.persona(), q.question, answer) if answer else None
                return {"persona": pp.id, "question_id": qid, "question": q.question, "condition": cond, "perturbation": j,
                        "examples": [{"id": it.id, "question": it.question, "answer": it.option} for it in examples],
                        "answer": answer, "score": verdict.value if verdict else None,
                        "judge_attempts": verdict.attempts if verdict else 0,
                        "judge_reason": verdict.reason if verdict else "the chat model wrote no answer"}

            jobs = [one(qid, c, j, lab) for c in cfg.conditions if c in labellings
                    for j, lab in enumerate(labellings[c]) for qid in test_ids]
            records += await asyncio.gather(*jobs)
            done += 1
            tick(f"{pp.label or pp.name}: done")
    finally:
        cache.close()

    wall = time.monotonic() - t0
    data = _summarise(chosen, cfg, records, skipped, test_ids)
    notes: list[str] = []
    toy = sorted({m for m in (chat.model, judge_chat.model, getattr(backend, "model", "")) if m and is_toy_model(m)})
    if toy:
        notes.append(TOY_MODEL_NOTE.format(models=", ".join(toy), are="is" if len(toy) == 1 else "are"))
    if not check.passed:
        notes.append(check.summary)
    if judge_chat.model == chat.model:
        notes.append(f"The judge is the model that wrote the answers ({chat.model}); a judge may favour its own "
                     "writing: use another model family as the judge for a result (--judge-base-url, --judge-model).")
    data.update({
        "scale": {"min": SCALE[0], "max": SCALE[1], "rubric_version": RUBRIC_VERSION,
                  "levels": {str(k): v for k, v in LEVELS.items()},
                  "missing": "an unparseable verdict is left out of the mean and counted, never scored 0"},
        "split": {"search_fraction": cfg.search_fraction, "search_questions": search_ids, "test_questions": test_ids},
        "judge": {**judge.stats(), "self_check": check.as_dict(), "scores_meaningful": check.passed},
        "icm_label_accuracy": icm_acc,
        "labellings": labelling_counts,
        "notes": notes,
        "usage": {**(scorer.usage.as_dict() if scorer is not None else {}),
                  "chat_calls": writer.calls, "chat_cache_hits": writer.hits,
                  "judge_calls": judge_cached.calls, "judge_cache_hits": judge_cached.hits,
                  "wall_seconds": round(wall, 1),
                  "seconds_per_question": round(wall / max(1, len(chosen) * len(test_ids)), 2)},
        "provenance": run_provenance(started, **{
            "model": getattr(backend, "model", None), "backend": getattr(backend, "name", None),
            "chat_model": chat.model, "judge_model": judge_chat.model, "rubric_version": RUBRIC_VERSION,
            "answer_prompt_version": ANSWER_PROMPT_VERSION, "pool_hash": pool.content_hash(), "pool": pool.provenance,
            "config": {**{k: v for k, v in asdict(cfg).items() if k != "search"}, "search": cfg.search.model_dump()},
            **(provenance or {}),
        }),
    })
    return GenerationReport(_nan_to_none(data))


def _summarise(personas: Sequence[PoolPersona], cfg: GenerationConfig, records: list[dict[str, Any]],
               skipped: dict[str, dict[str, str]], test_ids: Sequence[str]) -> dict[str, Any]:
    pids = [p.id for p in personas]
    conds = [c for c in cfg.conditions if any(r["condition"] == c for r in records)]
    # one value per (condition, persona, question): the mean over perturbations of parsed scores
    per_q: dict[tuple[str, str, str], float | None] = {}
    for c in conds:
        for pid in pids:
            for qid in test_ids:
                s = [r["score"] for r in records if r["condition"] == c and r["persona"] == pid and r["question_id"] == qid]
                if s:
                    got = [x for x in s if x is not None]
                    per_q[(c, pid, qid)] = statistics.fmean(got) if got else None
    summary: dict[str, Any] = {}
    for c in conds:
        per: dict[str, dict[str, Any]] = {}
        for pid in pids:
            keys = [(c, pid, q) for q in test_ids if (c, pid, q) in per_q]
            if not keys:
                continue
            vals = [per_q[k] for k in keys if per_q[k] is not None]
            per[pid] = {"mean": statistics.fmean(vals) if vals else None,
                        "se": bootstrap_se(vals, resamples=cfg.bootstrap, seed=f"{cfg.seed}/{c}/{pid}") if vals else None,
                        "n": len(vals), "missing": len(keys) - len(vals)}
        means = [v["mean"] for v in per.values() if v["mean"] is not None]
        ses = [v["se"] for v in per.values() if v["mean"] is not None]
        summary[c] = {"per_persona": per, "mean": {
            "mean": statistics.fmean(means) if means else None,
            "se": (math.sqrt(sum(s * s for s in ses)) / len(ses)) if ses and all(s is not None for s in ses) else None}}
    deltas: dict[str, dict[str, Any]] = {}
    if "zero_shot" in conds:
        for c in conds:
            if c == "zero_shot":
                continue
            for pid in pids:
                diffs = [per_q[(c, pid, q)] - per_q[("zero_shot", pid, q)] for q in test_ids  # type: ignore[operator]
                         if per_q.get((c, pid, q)) is not None and per_q.get(("zero_shot", pid, q)) is not None]
                if diffs:
                    deltas.setdefault(c, {})[pid] = {
                        "mean": statistics.fmean(diffs),
                        "se": bootstrap_se(diffs, resamples=cfg.bootstrap, seed=f"{cfg.seed}/delta/{c}/{pid}"),
                        "n": len(diffs)}
    return {
        "task": "generation",
        "personas": pids,
        "persona_labels": {p.id: p.label or p.name for p in personas},
        "persona_names": {p.id: p.name for p in personas},
        "conditions": conds,
        "skipped": skipped,
        "summary": summary,
        "deltas": deltas,
        "questions": records,
    }


def write_generation_plots(report: GenerationReport, directory: str | Path, *, title: str = "") -> list[Path]:
    """Two PNGs: the representation score per persona and condition (± SE; the Table 8 shape) and
    each condition's change against zero-shot. A judge that failed its self-check is in both titles."""
    import numpy as np

    plots = PlotFolder(directory)
    plt = plots.plt
    d = report.data
    warn = "" if d["judge"]["scores_meaningful"] else "\nJUDGE FAILED ITS SELF-CHECK: these scores mean nothing"
    pids, conds = d["personas"], d["conditions"]
    x = np.arange(len(pids))
    width = 0.8 / max(1, len(conds))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, c in enumerate(conds):
        per = d["summary"][c]["per_persona"]
        means = [per[p]["mean"] if p in per and per[p]["mean"] is not None else 0.0 for p in pids]
        ses = [per[p]["se"] if p in per and per[p]["se"] is not None else 0.0 for p in pids]
        ax.bar(x + (k - (len(conds) - 1) / 2) * width, means, width=width, yerr=ses, capsize=3, label=_TITLES.get(c, c))
    ax.set_xticks(x, [d["persona_labels"][p] for p in pids])
    ax.set_ylim(0, SCALE[1])
    ax.set_ylabel(f"representation score ({SCALE[0]}–{SCALE[1]}, ± SE)")
    ax.legend(fontsize=8)
    ax.set_title((title or "representation score by persona") + warn, color="black" if not warn else "darkred")
    plots.save(fig, "representation_by_persona.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    dconds = [c for c in conds if c in d["deltas"]]
    width = 0.8 / max(1, len(dconds))
    for k, c in enumerate(dconds):
        per = d["deltas"][c]
        ax.bar(x + (k - (len(dconds) - 1) / 2) * width, [per[p]["mean"] if p in per else 0.0 for p in pids], width=width,
               yerr=[(per[p]["se"] or 0.0) if p in per else 0.0 for p in pids], capsize=3, label=f"{_TITLES.get(c, c)} − zero-shot",
               hatch="//" if c == "gold" else None)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [d["persona_labels"][p] for p in pids])
    ax.set_ylabel("Δ representation score vs zero-shot")
    if dconds:
        ax.legend(fontsize=8)
    ax.set_title((title or "change against zero-shot") + warn, color="black" if not warn else "darkred")
    plots.save(fig, "delta_vs_zero_shot.png")
    return plots.paths

"""``steerkit eval``: the seed paper's protocol on your model and personas (`steerkit.evaluation`).

``--task classification`` (the default; OpinionQA, GlobalOpinionQA, Persona-Tailoring, JSONL):
k-fold cross-validation stratified by persona; conditions zero-shot (chat and base), random, ICM
(the fast sparse search by default), accuracy-matched (5 perturbations), gold and inverted gold;
per-persona accuracy and mean ± SE, ICM label accuracy, U of each condition's labels, prediction
stability, ECE (15 bins), the n sweep. Writes ``report.json`` (every number and the provenance)
and PNG plots to ``--out``; prints a rich table. Every scored prompt is cached on disk
(``<cache_dir>/eval/scores``): a re-run (more conditions, or after Ctrl-C) repeats no model work.

``--task generation`` (OvertonBench's rows, a JSONL answer pool, or a persona pack's answer pool, the
default when no other answer source is given; `steerkit.evaluation.generation`):
one search/test split; the chat model answers each test question zero-shot and with ICM, gold,
random and accuracy-matched examples; a judge (``--judge-base-url``/``--judge-model``; default the
chat model) rates every answer 1–5 after its self-check. Writes ``report.json`` (Table 8 shape, the
self-check, every generated answer), ``report.md``, ``answers.jsonl`` (one line per generated
answer), plots, and ``answer_pool.jsonl`` when the pool's answers were generated first (a JSONL of
questions only). Chat completions and judgements are cached like the scores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from steerkit.errors import UserError

__all__ = ["add_arguments", "register", "render", "run"]


CLASSIFICATION_DATASETS = ("opinionqa", "globalopinionqa", "jsonl", "persona-tailoring")
GENERATION_DATASETS = ("overtonbench", "answers", "pack")


def register(sub: Any, common: Any, models: Any) -> None:
    p = sub.add_parser("eval", help="the seed paper's evaluation protocol (ICM vs gold vs baselines; "
                                    "--task generation: open-ended answers rated by a judge)")
    common(p)
    models(p)
    add_arguments(p)
    p.set_defaults(func=run)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from steerkit.evaluation.conditions import CONDITIONS, DEFAULT_GENERATION_CONDITIONS, GENERATION_CONDITIONS

    p.add_argument("--task", choices=["classification", "generation"], default="classification",
                   help="classification (pick an option; default) or generation (write an answer, rated by a judge)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=[*CLASSIFICATION_DATASETS, *GENERATION_DATASETS],
                   help="the dataset format of --data (required for classification; generation: overtonbench, answers, "
                        "or pack, the default: a persona pack's answer pool)")
    d.add_argument("--data", metavar="PATH",
                   help="OpinionQA human_resp/ (or a wave) folder; GlobalOpinionQA CSV; JSONL file; Persona-Tailoring data/ "
                        "folder; OvertonBench's parquet (or CSV of its rows); an answer-pool JSONL; --dataset pack: a "
                        "configured pack's id or a pack file (default: the pack of --persona, else the only configured "
                        "pack with an answer pool)")
    d.add_argument("--persona", action="append", metavar="NAME",
                   help="persona(s): party (Democrat), country (Nigeria) or style (dcf); default: the paper's set "
                        "(generation: the pool's personas)")
    d.add_argument("--persona-name", action="append", metavar="TEXT",
                   help="persona name for --dataset jsonl; for --dataset answers, the persona(s) of a pool that declares none")
    d.add_argument("--questions", type=int, metavar="N",
                   help="questions per persona (default 16; generation: every question of the pool)")
    d.add_argument("--wave", default="American_Trends_Panel_W92", help="OpinionQA wave (default W92)")
    d.add_argument("--options", type=_ints, default=(2,), metavar="2,3", help="answer options kept (default 2)")
    d.add_argument("--max-chars", type=int, metavar="N", help="Persona-Tailoring: skip pairs longer than N characters")
    r = p.add_argument_group("protocol")
    r.add_argument("--folds", type=int, default=4, metavar="K", help="cross-validation folds (default 4)")
    r.add_argument("--conditions", help=f"comma-separated subset of {','.join(CONDITIONS)} (default all); generation: "
                                        f"of {','.join(GENERATION_CONDITIONS)} (default {','.join(DEFAULT_GENERATION_CONDITIONS)})")
    r.add_argument("--perturbations", type=int, default=5, metavar="N", help="accuracy-matched perturbations (default 5)")
    r.add_argument("--n-sweep", type=_ints, default=(1, 2, 4, 8, 16), metavar="1,2,4", help="in-context question counts")
    r.add_argument("--coherence-folds", type=int, default=1, metavar="N",
                   help="folds per persona whose labellings get an exact U (default 1; 0: none)")
    r.add_argument("--max-demos", type=int, metavar="N", help="at most N train questions in context (default: all)")
    r.add_argument("--predictor", choices=["base", "chat"], default="base",
                   help="few-shot predictions by the base model's claim scores (default) or the chat model's option letter (the paper)")
    r.add_argument("--seed", type=int, default=0, help="random seed of folds and searches (default 0)")
    s = p.add_argument_group("ICM search")
    s.add_argument("--search-mode", choices=["sparse", "exact"], default="sparse", help="default sparse (exact costs hours)")
    s.add_argument("--context-k", type=int, default=8, metavar="K", help="sparse mode: demonstrations per prompt (default 8)")
    s.add_argument("--max-iterations", type=int, default=50, metavar="N", help="search iteration budget per fold (default 50)")
    s.add_argument("--restarts", type=int, default=1, metavar="N", help="search restarts per fold (default 1)")
    g = p.add_argument_group("generation (--task generation)")
    g.add_argument("--judge-base-url", metavar="URL",
                   help="OpenAI-compatible server of the judge (default: the chat model's; key from STEERKIT_JUDGE_API_KEY)")
    g.add_argument("--judge-model", metavar="NAME", help="judge model name (default: the chat model)")
    g.add_argument("--search-fraction", type=float, default=0.3, metavar="F",
                   help="share of questions whose answers the search labels; the rest are test questions (default 0.3)")
    g.add_argument("--k", type=int, default=6, metavar="K", help="representative answers injected per test question (default 6)")
    g.add_argument("--max-tokens", type=int, default=200, metavar="N", help="tokens per generated answer (default 200)")
    g.add_argument("--self-check-pairs", type=int, default=6, metavar="N", help="known answer pairs per persona for the judge's self-check (default 6)")
    g.add_argument("--judge-retries", type=int, default=1, metavar="N", help="re-asks after a malformed verdict before it counts as missing (default 1)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="report.json and plots (default ./steerkit-eval/<dataset>-<model>)")
    o.add_argument("--no-plots", action="store_true", help="write no plot files")
    o.add_argument("--report", metavar="HTML", help="--task generation: also write one self-contained HTML page a person "
                                                     "reads (tables, plots, every answer beside the unsteered one)")
    o.add_argument("--no-chat", action="store_true", help="skip the zero-shot chat condition")
    o.add_argument("--no-progress", action="store_true", help="no live progress display")
    o.add_argument("--json", action="store_true", help="print report.json on stdout")
    o.add_argument("--markdown", action="store_true", help="print the table as Markdown on stdout")
    o.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads of the embedded models")


def run(args: argparse.Namespace) -> int:
    from steerkit.cli.probe_cmd import settings_for
    from steerkit.evaluation import CONDITIONS, EvalConfig, load_dataset, write_plots
    from steerkit.models import SearchConfig

    if args.task == "generation" or args.dataset in GENERATION_DATASETS:
        return _run_generation(args)
    if args.dataset is None or args.data is None:
        raise UserError("the classification task needs --dataset and --data",
                        hint=f"--dataset {'|'.join(CLASSIFICATION_DATASETS)} --data PATH (or --task generation, "
                             "which defaults to a pack's answer pool)")
    if args.dataset not in CLASSIFICATION_DATASETS:
        raise UserError(f"--dataset {args.dataset} is not a classification dataset", hint="pass --task generation")
    if args.report:
        raise UserError("--report renders --task generation results", hint="the classification task writes report.md and plots")
    conditions = tuple(c.strip() for c in (args.conditions or ",".join(CONDITIONS)).split(",") if c.strip())
    if args.no_chat:
        conditions = tuple(c for c in conditions if c != "zero_shot_chat")
    search = SearchConfig(mode=args.search_mode, context_k=args.context_k, max_iterations=args.max_iterations,
                          restarts=args.restarts, seed=args.seed)
    cfg = EvalConfig(folds=args.folds, search=search, conditions=conditions, perturbations=args.perturbations,
                     n_sweep=args.n_sweep, coherence_folds=args.coherence_folds, max_demos=args.max_demos, seed=args.seed,
                     predictor=args.predictor)
    personas = load_dataset(args.dataset, args.data, questions=args.questions or 16, personas=args.persona, seed=args.seed,
                            wave=args.wave, options=args.options, max_chars=args.max_chars,
                            persona_name=args.persona_name[0] if args.persona_name else None)
    settings = settings_for(args)
    report = asyncio.run(_main(args, settings, cfg, personas))
    out = Path(args.out) if args.out else Path("steerkit-eval") / f"{args.dataset}-{report.data['provenance']['model']}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.data, indent=1), encoding="utf-8")
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")
    plots = [] if args.no_plots else write_plots(report, out, title=f"{args.dataset}, {report.data['provenance']['model']}")
    if args.json:
        print(json.dumps(report.data, indent=1))
    elif args.markdown:
        print(report.markdown(), end="")
    else:
        render(report)
        print(f"report: {out / 'report.json'}" + (f"; plots: {', '.join(str(p) for p in plots)}" if plots else ""))
    return 0


async def _main(args: argparse.Namespace, settings: Any, cfg: Any, personas: Any) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from steerkit._runtime import Runtime
    from steerkit.evaluation import run_eval

    want_chat = "zero_shot_chat" in cfg.conditions or cfg.predictor == "chat"
    console = Console(stderr=True)
    rt = await Runtime.open(settings, steerer=False, chat=want_chat)
    client = None
    try:
        chat = None
        if want_chat and rt.chat_base_url and rt.chat_model:
            client = rt.chat_client()
            chat = (client, rt.chat_model)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, disable=args.no_progress or not sys.stderr.isatty())
        task = progress.add_task("eval", total=1)

        plain = not args.no_progress and not sys.stderr.isatty()  # a log: one line per step
        t0 = time.monotonic()

        def on_progress(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)
            if plain:
                print(f"[{time.monotonic() - t0:7.1f}s] {done}/{total} {what}", file=sys.stderr, flush=True)

        with progress:
            return await run_eval(personas, rt.backend, cfg, cache_dir=Path(settings.cache_dir) / "eval", chat=chat,
                                  progress=on_progress, provenance={"argv": sys.argv[1:], "data": str(Path(args.data).resolve()),
                                                                    "dataset": args.dataset})
    except KeyboardInterrupt:
        print("eval interrupted; run the same command again: scored prompts are cached", file=sys.stderr)
        raise
    finally:
        if client is not None:
            await client.close()
        await rt.aclose()


def render(report: Any, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    d = report.data
    prov = d["provenance"]
    t = Table(title=f"steerkit eval: {prov.get('dataset', '')} · search model {prov['model']}"
                    + (f" · chat {prov['chat_model']}" if prov.get("chat_model") else ""))
    t.add_column("condition")
    for p in d["personas"]:
        t.add_column(d["persona_labels"][p], justify="right")
    for name in ("mean ± SE", "ECE", "stability", "U"):
        t.add_column(name, justify="right")
    for row in report.table_rows():
        t.add_row(*row)
    console.print(t)
    if d["icm_label_accuracy"]:
        console.print("ICM label accuracy (train, vs gold): " + ", ".join(
            f"{d['persona_labels'][p]} {v:.2f}" for p, v in d["icm_label_accuracy"].items()))
    for c, pts in d["n_sweep"].items():
        console.print(f"n sweep {c}: " + ", ".join(f"n={n} {v['accuracy']:.2f}" for n, v in pts.items()))
    for c, why in d["skipped"].items():
        console.print(f"[yellow]skipped {c}: {why}[/]")
    u = d["usage"]
    console.print(f"[dim]{u['requested']} scored prompts ({u['cache_hits']} from the cache), {u['model_calls']} model calls, "
                  f"{u['prompt_tokens']} prompt tokens sent, {u['evaluated_tokens']} evaluated; chat calls {u['chat_calls']} "
                  f"(+{u['chat_cache_hits']} cached); {u['wall_seconds']}s[/dim]")


# --- --task generation ------------------------------------------------------------------------------


def _load_pool(args: argparse.Namespace, dataset: str, settings: Any) -> tuple[Any, Any, list[str] | None, str]:
    """(the answer pool, its pack or None, the personas to run (None: every persona of the pool),
    where the pool came from)."""
    from steerkit.evaluation import (
        PoolPersona,
        answer_pool_from_pack,
        import_overtonbench,
        pack_with_answer_pool,
        read_answer_pool,
    )

    if dataset == "pack":
        from steerkit._runtime import make_registry

        registry = make_registry(settings)
        pack = pack_with_answer_pool(registry, args.data, args.persona or ())
        personas = None
        if args.persona:  # names the registry knows ("Democrats", "dem"), else the pool's labels
            personas = [registry.resolve(n) if pack.id in {pk.id for pk in registry.packs} else n for n in args.persona]
        return answer_pool_from_pack(pack), pack, personas, pack.source
    if args.data is None:
        raise UserError(f"--dataset {dataset} needs --data", hint="the file to read (or --dataset pack: a pack's answer pool)")
    where = str(Path(args.data).resolve())
    if dataset == "overtonbench":
        return import_overtonbench(args.data, parties=args.persona or ("Democrat", "Republican", "Independent")), None, None, where
    extra = [PoolPersona(id=f"custom/{_slug(n)}", name=n, label=n) for n in (args.persona_name or [])]
    return read_answer_pool(args.data, personas=extra), None, args.persona, where


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "persona"


def _run_generation(args: argparse.Namespace) -> int:
    from steerkit.cli.probe_cmd import settings_for
    from steerkit.evaluation import (
        DEFAULT_GENERATION_CONDITIONS,
        GenerationConfig,
        write_generation_plots,
    )
    from steerkit.models import SearchConfig

    dataset = args.dataset or ("pack" if args.data is None else None)
    if dataset is None:
        raise UserError("--data needs --dataset", hint=f"--dataset {' or '.join(GENERATION_DATASETS)}")
    if dataset not in GENERATION_DATASETS:
        raise UserError(f"--task generation reads --dataset {' or '.join(GENERATION_DATASETS)}, not {dataset}")
    conditions = tuple(c.strip() for c in (args.conditions or ",".join(DEFAULT_GENERATION_CONDITIONS)).split(",") if c.strip())
    search = SearchConfig(mode=args.search_mode, context_k=args.context_k, max_iterations=args.max_iterations,
                          restarts=args.restarts, seed=args.seed)
    cfg = GenerationConfig(conditions=conditions, search_fraction=args.search_fraction, search=search, k=args.k,
                           perturbations=args.perturbations, max_tokens=args.max_tokens, seed=args.seed,
                           self_check_pairs=args.self_check_pairs, judge_retries=args.judge_retries)
    settings = settings_for(args)
    pool, pack, personas, where = _load_pool(args, dataset, settings)
    out = Path(args.out) if args.out else None
    report, generated = asyncio.run(_generation_main(args, settings, cfg, pool, dataset=dataset, pack=pack,
                                                     personas=personas, where=where))
    prov = report.data["provenance"]
    name = f"pack-{pack.id}" if pack is not None else dataset
    out = out or Path("steerkit-eval") / f"{name}-{_slug(prov['chat_model'])}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.data, indent=1, allow_nan=False), encoding="utf-8")
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")
    with (out / "answers.jsonl").open("w", encoding="utf-8") as f:
        for r in report.data["questions"]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    if generated is not None:
        from steerkit.evaluation import write_answer_pool

        write_answer_pool(generated, out / "answer_pool.jsonl")
    title = f"{name}, chat {prov['chat_model']}, judge {prov['judge_model']}"
    plots = [] if args.no_plots else write_generation_plots(report, out, title=title)
    if args.report:  # plots drawn in memory under --no-plots
        from steerkit.evaluation.report import write_html_report

        print(f"HTML report: {write_html_report(report, args.report, plots=plots or None)}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.data, indent=1, allow_nan=False))
    elif args.markdown:
        print(report.markdown(), end="")
    else:
        render_generation(report)
        print(f"report: {out / 'report.json'}; answers: {out / 'answers.jsonl'}"
              + (f"; plots: {', '.join(str(p) for p in plots)}" if plots else ""))
    return 0


async def _generation_main(args: argparse.Namespace, settings: Any, cfg: Any, pool: Any, *, dataset: str, pack: Any,
                           personas: list[str] | None, where: str) -> tuple[Any, Any]:
    from rich.console import Console

    from steerkit._scorecache import ScoreCache
    from steerkit.cli._judged_chat import JudgedChat
    from steerkit.evaluation import (
        CachedChat,
        generate_answers,
        run_generation_eval,
    )

    console = Console(stderr=True)
    need_search = any(c in cfg.conditions for c in ("icm", "accuracy_matched"))
    chat = await JudgedChat.open(args, settings, backend=need_search)
    try:
        rt, writer, judge = chat.runtime, chat.writer, chat.judge
        plain = not args.no_progress
        t0 = time.monotonic()

        def log(what: str, done: int, total: int) -> None:
            if plain:
                print(f"[{time.monotonic() - t0:7.1f}s] {done}/{total} {what}", file=sys.stderr, flush=True)

        generated = None
        if args.questions:
            pool = pool.model_copy(update={"questions": pool.questions[: args.questions]})
        if any(not q.answers for q in pool.questions):
            if not pool.personas:
                raise UserError("the answer pool names no persona", hint="add persona lines or pass --persona-name")
            log("writing candidate answers (the pool has questions without answers)", 0, 1)
            cache = ScoreCache(Path(settings.cache_dir) / "eval" / "scores")
            try:
                generated = await generate_answers(pool.questions, pool.personas, CachedChat(writer, cache), seed=args.seed)
            finally:
                cache.close()
            pool = generated
        if not args.no_progress and sys.stderr.isatty():
            console.print("[dim]the judge's self-check runs first[/dim]")
        templates = {p.id: pack.templates for p in pool.personas} if pack is not None else {
            p.id: rt.registry.templates(p.id) for p in pool.personas if rt.registry and p.id in rt.registry}
        return await run_generation_eval(
            pool, writer, judge, cfg, backend=rt.backend, cache_dir=Path(settings.cache_dir) / "eval",
            personas=personas, questions=args.questions, progress=log, templates=templates,
            provenance={"argv": sys.argv[1:], "data": where, "dataset": dataset, "chat_embedded": rt.chat_embedded,
                        **({"pack": pack.id} if pack is not None else {})},
        ), generated
    except KeyboardInterrupt:
        print("eval interrupted; run the same command again: answers and judgements are cached", file=sys.stderr)
        raise
    finally:
        await chat.aclose()


def render_generation(report: Any, console: Any = None) -> None:
    """The Table 8 shape in the terminal, the judge's self-check beside it, then the notes."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    d = report.data
    prov = d["provenance"]
    t = Table(title=f"steerkit eval --task generation: representation score {d['scale']['min']}–{d['scale']['max']} "
                    f"(mean ± SE over test questions) · chat {prov['chat_model']} · judge {prov['judge_model']}")
    for h in report.header():
        t.add_column(h, justify="left" if h == "persona" else "right")
    for row in report.table_rows():
        t.add_row(*row)
    console.print(t)
    sc = d["judge"]["self_check"]
    console.print(sc["summary"], style="green" if sc["passed"] else "bold red")
    if d["icm_label_accuracy"]:
        console.print("ICM label accuracy (search answers, vs gold): " + ", ".join(
            f"{d['persona_labels'][p]} {v:.2f}" for p, v in d["icm_label_accuracy"].items()))
    for c, per in d["skipped"].items():
        for pid, why in per.items():
            console.print(f"[yellow]{c} not run for {d['persona_labels'].get(pid, pid)}: {why}[/]")
    for n in d["notes"]:
        if n != sc["summary"]:
            console.print(n, style="bold yellow")
    u = d["usage"]
    console.print(f"[dim]{len(d['split']['test_questions'])} test questions × {len(d['personas'])} personas; "
                  f"chat calls {u['chat_calls']} (+{u['chat_cache_hits']} cached), judge calls {u['judge_calls']} "
                  f"(+{u['judge_cache_hits']} cached); {u['wall_seconds']}s, {u['seconds_per_question']}s per question[/dim]")

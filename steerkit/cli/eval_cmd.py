"""``steerkit eval``: the seed paper's protocol on your model and personas (`steerkit.evaluation`).

k-fold cross-validation stratified by persona; conditions zero-shot (chat and base), random, ICM
(the fast sparse search by default), accuracy-matched (5 perturbations), gold and inverted gold;
per-persona accuracy and mean ± SE, ICM label accuracy, U of each condition's labels, prediction
stability, ECE (15 bins), the n sweep. Writes ``report.json`` (every number and the provenance)
and PNG plots to ``--out``; prints a rich table. Every scored prompt is cached on disk
(``<cache_dir>/eval/scores``): a re-run (more conditions, or after Ctrl-C) repeats no model work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "register", "render", "run"]


def register(sub: Any, common: Any, models: Any) -> None:
    p = sub.add_parser("eval", help="the seed paper's evaluation protocol (k-fold; ICM vs gold vs baselines)")
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
    from steerkit.evaluation import CONDITIONS

    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, choices=["opinionqa", "globalopinionqa", "jsonl", "persona-tailoring"],
                   help="the dataset format of --data")
    d.add_argument("--data", required=True, metavar="PATH",
                   help="OpinionQA human_resp/ (or a wave) folder; GlobalOpinionQA CSV; JSONL file; Persona-Tailoring data/ folder")
    d.add_argument("--persona", action="append", metavar="NAME",
                   help="persona(s): party (Democrat), country (Nigeria) or style (dcf); default: the paper's set")
    d.add_argument("--persona-name", metavar="TEXT", help="persona name for --dataset jsonl")
    d.add_argument("--questions", type=int, default=16, metavar="N", help="questions per persona (default 16)")
    d.add_argument("--wave", default="American_Trends_Panel_W92", help="OpinionQA wave (default W92)")
    d.add_argument("--options", type=_ints, default=(2,), metavar="2,3", help="answer options kept (default 2)")
    d.add_argument("--max-chars", type=int, metavar="N", help="Persona-Tailoring: skip pairs longer than N characters")
    r = p.add_argument_group("protocol")
    r.add_argument("--folds", type=int, default=4, metavar="K", help="cross-validation folds (default 4)")
    r.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma-separated subset of {','.join(CONDITIONS)}")
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
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="report.json and plots (default ./steerkit-eval/<dataset>-<model>)")
    o.add_argument("--no-plots", action="store_true", help="write no plot files")
    o.add_argument("--no-chat", action="store_true", help="skip the zero-shot chat condition")
    o.add_argument("--no-progress", action="store_true", help="no live progress display")
    o.add_argument("--json", action="store_true", help="print report.json on stdout")
    o.add_argument("--markdown", action="store_true", help="print the table as Markdown on stdout")
    o.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads of the embedded models")


def run(args: argparse.Namespace) -> int:
    from steerkit.cli.probe_cmd import settings_for
    from steerkit.evaluation import EvalConfig, load_dataset, write_plots
    from steerkit.models import SearchConfig

    conditions = tuple(c.strip() for c in args.conditions.split(",") if c.strip())
    if args.no_chat:
        conditions = tuple(c for c in conditions if c != "zero_shot_chat")
    search = SearchConfig(mode=args.search_mode, context_k=args.context_k, max_iterations=args.max_iterations,
                          restarts=args.restarts, seed=args.seed)
    cfg = EvalConfig(folds=args.folds, search=search, conditions=conditions, perturbations=args.perturbations,
                     n_sweep=args.n_sweep, coherence_folds=args.coherence_folds, max_demos=args.max_demos, seed=args.seed,
                     predictor=args.predictor)
    personas = load_dataset(args.dataset, args.data, questions=args.questions, personas=args.persona, seed=args.seed,
                            wave=args.wave, options=args.options, max_chars=args.max_chars, persona_name=args.persona_name)
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

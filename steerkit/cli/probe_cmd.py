"""``steerkit probe``: can the search model be steered by in-context labels at all? (minutes)

Zero-shot accuracy on gold-labelled questions, then the same held-out questions after gold,
inverted-gold and random-labelled demonstrations, with standard errors and a verdict
(`steerkit.probe`). Default data: built-in two-option fact questions in several domains
(capitals, units, science, arithmetic, dates; ``--domains``), each reported, with a verdict only
where the domains agree; ``--dataset``/``--data`` probe a persona's real questions instead. Then a
default ICM search labels a few of the held-out questions (``--agreement-questions``) and the
report says how far its restarts (one per seed) agreed: low agreement means a set from this model
depends on the seed. Every scored prompt is cached on disk (``<cache_dir>/eval/scores``), so a
re-run, the demo and ``precompute`` reuse the work.

``--task generation`` asks the same of a chat model's *answers* (`steerkit.evaluation.probe_generation`):
on the same domains, does what it writes move toward the persona after gold examples rather than
inverted ones? A judge rates every answer (``--judge-base-url``/``--judge-model``, default the chat
model), after its self-check; beside it, which option each answer names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from steerkit.errors import UserError

__all__ = ["add_arguments", "print_verdict", "register", "resolve_model_path", "run"]


def register(sub: Any, common: Any, models: Any) -> None:
    p = sub.add_parser("probe", help="does the search model follow in-context labels? (verdict in minutes)")
    common(p)
    models(p)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from steerkit.evaluation.facts import DOMAINS

    p.add_argument("--task", choices=["classification", "generation"], default="classification",
                   help="classification (default): the search model's option scores; generation: the chat model's answers, "
                        "rated by a judge")
    d = p.add_argument_group("data (default: built-in two-option fact questions in several domains)")
    d.add_argument("--dataset", choices=["facts", "opinionqa", "globalopinionqa", "jsonl", "persona-tailoring"], default="facts",
                   help="questions to probe with (default: built-in facts)")
    d.add_argument("--domains", type=_domains, default=None, metavar="A,B",
                   help=f"--dataset facts: which domains, comma-separated (default: all of {','.join(DOMAINS)})")
    d.add_argument("--data", metavar="PATH", help="dataset path (see `steerkit eval --help`)")
    d.add_argument("--persona", metavar="NAME", help="which persona of the dataset (default: its first)")
    d.add_argument("--persona-name", metavar="TEXT", help="persona name for --dataset jsonl")
    r = p.add_argument_group("probe")
    r.add_argument("--n-test", type=int, metavar="N", help="held-out questions (per domain; default 12 for facts, 30 for a dataset, 6 for --task generation)")
    r.add_argument("--n-demos", type=int, metavar="N", help="demonstration questions (per domain; default 4 for facts, 8 for a dataset, 3 for --task generation)")
    r.add_argument("--random-seeds", type=int, metavar="N", help="random labellings (default 2 for facts, 3 for a dataset)")
    r.add_argument("--seed", type=int, default=0, help="random seed of the question split and labellings (default 0)")
    r.add_argument("--agreement-questions", type=int, default=4, metavar="N",
                   help="held-out questions a default ICM search labels to measure how far its labels depend on the seed "
                        "(default 4: one 16-restart search, ~120 scoring calls, about a minute on the embedded model; 6: ~260 "
                        "calls; 0: skip)")
    r.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads of the embedded model")
    g = p.add_argument_group("generation (--task generation)")
    g.add_argument("--judge-base-url", metavar="URL",
                   help="OpenAI-compatible server of the judge (default: the chat model's; key from STEERKIT_JUDGE_API_KEY)")
    g.add_argument("--judge-model", metavar="NAME", help="judge model name (default: the chat model)")
    g.add_argument("--pairs", type=int, metavar="N", help="known answer pairs per domain for the judge's self-check (default 2)")
    g.add_argument("--max-tokens", type=int, metavar="N", help="tokens per answer (default 48)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")


def _domains(text: str) -> tuple[str, ...]:
    from steerkit.evaluation.facts import DOMAINS

    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in DOMAINS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown domain(s) {', '.join(bad) or repr(text)}: choose from {', '.join(DOMAINS)}")
    return names


def resolve_model_path(args: argparse.Namespace) -> None:
    """``--model-path smollm2`` / ``gemma3-270m``: the packaged GGUF files by name."""
    mp = getattr(args, "model_path", None)
    if mp in ("smollm2", "gemma3-270m"):
        from steerkit.backends import gemma3_270m_path, smollm2_path

        args.model_path = str(smollm2_path() if mp == "smollm2" else gemma3_270m_path())


def settings_for(args: argparse.Namespace) -> Any:
    from steerkit.cli import load_settings

    resolve_model_path(args)
    settings = load_settings(args)
    if getattr(args, "threads", None):
        settings = settings.model_copy(update={"search_model": settings.search_model.model_copy(update={"n_threads": args.threads})})
    return settings


def probe_config(args: argparse.Namespace) -> Any:
    """The per-domain `ProbeConfig` of the flags: the facts defaults (`DOMAIN_CONFIG`: a few
    questions per domain) or a dataset's (30 held out, 8 demonstrations, 3 random labellings)."""
    from steerkit.evaluation.probe import DOMAIN_CONFIG, ProbeConfig

    base = DOMAIN_CONFIG if args.dataset == "facts" else ProbeConfig()
    n_test = args.n_test if args.n_test is not None else base.n_test
    return ProbeConfig(n_test=n_test, n_demos=args.n_demos if args.n_demos is not None else base.n_demos,
                       random_seeds=args.random_seeds if args.random_seeds is not None else base.random_seeds,
                       seed=args.seed, agreement_questions=max(0, args.agreement_questions))


def generation_config(args: argparse.Namespace) -> Any:
    """The per-domain `GenerationProbeConfig` of the flags (defaults: `GENERATION_CONFIG`)."""
    from dataclasses import replace

    from steerkit.evaluation.probe_generation import GENERATION_CONFIG

    given = {"n_test": args.n_test, "n_demos": args.n_demos, "pairs": args.pairs, "max_tokens": args.max_tokens}
    return replace(GENERATION_CONFIG, seed=args.seed, **{k: v for k, v in given.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    if args.task == "generation":
        return _run_generation(args)
    cfg = probe_config(args)
    settings = settings_for(args)
    report = asyncio.run(_main(args, settings, cfg))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render(report)
    return 0


def _pools(args: argparse.Namespace) -> dict[str, Any]:
    """The probe's domains: the built-in fact domains, or one persona's questions of a dataset."""
    from steerkit.evaluation import load_dataset
    from steerkit.evaluation.facts import fact_pools
    from steerkit.models import Pool

    if args.dataset == "facts":
        return fact_pools(args.seed, args.domains)
    if args.domains:
        raise UserError("--domains chooses among the built-in fact domains; a --dataset is one domain")
    if not args.data:
        raise UserError(f"--dataset {args.dataset} needs --data PATH")
    eps = load_dataset(args.dataset, args.data, personas=[args.persona] if args.persona else None,
                       persona_name=args.persona_name, seed=args.seed, options=(2, 3))
    ep = eps[0]
    return {ep.persona.id: Pool.from_items(ep.persona, [it for q in ep.questions for it in q])}


async def _main(args: argparse.Namespace, settings: Any, cfg: Any) -> Any:
    from rich.console import Console

    from steerkit._runtime import Runtime
    from steerkit._scorecache import CachedBackend, ScoreCache
    from steerkit.evaluation.probe import probe_domains

    pools = _pools(args)
    console = Console(stderr=True)
    rt = await Runtime.open(settings, steerer=False, chat=False)
    cache = ScoreCache(Path(settings.cache_dir) / "eval" / "scores")
    try:
        with console.status(f"probing {rt.backend.model}…") as st:
            return await probe_domains(pools, CachedBackend(rt.backend, cache), cfg,
                                       progress=lambda d, t: st.update(f"probing {rt.backend.model}: condition {d}/{t}"))
    finally:
        cache.close()
        await rt.aclose()


def render(report: Any, console: Any = None) -> None:
    """The probe's tables: per domain (one row each) when there are several, every condition when
    there is one; then the verdict."""
    from rich.console import Console

    console = console or Console()
    if len(report.domains) == 1:
        _render_conditions(next(iter(report.domains.values())), console)
    else:
        _render_domains(report, console)
    style = "green" if report.steerable else "yellow"
    console.print(f"[bold {style}]verdict: {report.verdict}[/] — {report.summary()}")
    a = report.seed_agreement
    if a:
        console.print(f"[dim]seed-to-seed check: {a['restarts']} restarts on {a['questions']} questions, {a['model_calls']} "
                      f"scoring calls, {a['prompt_tokens']} prompt tokens, {a['seconds']:.0f}s[/dim]")
    u = report.usage
    if u:
        console.print(f"[dim]{u['requested']} prompts, {u['cache_hits']} from the cache, {u['model_calls']} model calls, "
                      f"{u['prompt_tokens']} prompt tokens[/dim]")


def _render_domains(report: Any, console: Any) -> None:
    from rich.table import Table

    from steerkit.evaluation.probe import SHORT_TEXT

    first = next(iter(report.domains.values()))
    t = Table(title=f"steerability probe: {report.model} ({len(report.domains)} domains, {first.n_test} held-out and "
                    f"{first.n_demos} demonstration questions each; accuracy ± SE)")
    for col in ("domain", "zero-shot", "gold demos", "inverted gold", "random labels", "gold − inverted", "demos − zero-shot", "verdict"):
        t.add_column(col, justify="left" if col in ("domain", "verdict") else "right")
    for name, r in report.domains.items():
        c = r.conditions
        lo, hi = r.random_range()
        weak = ", weakly" if "weakly" in r.reason else ""
        t.add_row(name, *(f"{c[k].accuracy:.2f} ± {c[k].se:.2f}" for k in ("zero_shot", "gold", "inverted")),
                  f"{lo:.2f}–{hi:.2f}", str(r.label_effect), str(r.format_effect), SHORT_TEXT[r.verdict] + weak)
    console.print(t)


def _render_conditions(report: Any, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"steerability probe: {report.model} ({report.persona}, {report.n_test} held-out questions)")
    t.add_column("condition")
    t.add_column("accuracy ± SE", justify="right")
    t.add_column("mean P(gold)", justify="right")
    t.add_column("demo labels = gold", justify="right")
    for name, c in report.conditions.items():
        d = c.as_dict()
        agree = "—" if d["agreement_with_gold"] is None else f"{d['agreement_with_gold']:.2f}"
        t.add_row(name, f"{d['accuracy']:.2f} ± {d['se']:.2f}", f"{d['mean_p_gold']:.2f}", agree)
    console.print(t)
    console.print(f"label effect (gold − inverted): {report.label_effect}   format effect (demos − zero-shot): "
                  f"{report.format_effect}   P(gold) shift: {report.label_shift}")


def _run_generation(args: argparse.Namespace) -> int:
    if args.dataset != "facts":
        raise UserError("--task generation probes the built-in fact domains (--domains); a dataset's persona has no "
                        "answers to check", hint="for your own personas, run `steerkit eval --task generation`")
    cfg = generation_config(args)
    settings = settings_for(args)
    report = asyncio.run(_generation_main(args, settings, cfg))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        render_generation(report)
    return 0


async def _generation_main(args: argparse.Namespace, settings: Any, cfg: Any) -> Any:
    from rich.console import Console

    from steerkit.cli._judged_chat import JudgedChat
    from steerkit.evaluation.facts import fact_pools
    from steerkit.evaluation.probe_generation import probe_generation

    pools = fact_pools(args.seed, args.domains)
    console = Console(stderr=True)
    chat = await JudgedChat.open(args, settings)
    try:
        writer = chat.writer
        with console.status(f"probing {writer.model}'s answers: the judge's self-check…") as st:
            return await probe_generation(
                pools, writer, chat.judge, cfg, cache_dir=Path(settings.cache_dir) / "eval",
                progress=lambda d, t: st.update(f"probing {writer.model}'s answers: {d}/{t} (self-check, then each domain)"))
    finally:
        await chat.aclose()


def render_generation(report: Any, console: Any = None) -> None:
    """The generation probe: one row per domain, the judge's self-check, the notes, the verdict."""
    from rich.console import Console
    from rich.table import Table

    from steerkit.evaluation.probe import SHORT_TEXT

    console = console or Console()
    first = next(iter(report.domains.values()))
    t = Table(title=f"generation probe: {report.model}'s answers, judged by {report.judge_model} ({len(report.domains)} "
                    f"domains, {first.n_test} held-out and {first.n_demos} demonstration questions each)")
    for col in ("domain", "judge: zero-shot", "gold examples", "inverted", "gold − inverted", "names true: gold",
                "inverted", "verdict (basis)"):
        t.add_column(col, justify="left" if col in ("domain", "verdict (basis)") else "right")

    def score(c: Any) -> str:
        d = c.as_dict()
        return "—" if d["mean_score"] is None else f"{d['mean_score']:.2f}" + (f" ± {d['se']:.2f}" if d["se"] is not None else "")

    for name, d in report.domains.items():
        c = d.conditions
        t.add_row(name, score(c["zero_shot"]), score(c["gold"]), score(c["inverted"]),
                  "—" if d.label_effect is None else str(d.label_effect),
                  f"{c['gold'].true_share:.2f}", f"{c['inverted'].true_share:.2f}", f"{SHORT_TEXT[d.verdict]} ({d.basis})")
    console.print(t)
    sc = report.self_check
    console.print(sc.summary, style="green" if sc.passed else "bold red")
    for n in report.notes:
        if n != sc.summary:
            console.print(n, style="bold yellow")
    style = "green" if report.steerable else "yellow"
    console.print(f"[bold {style}]verdict: {report.verdict}[/] — {report.summary()}")
    u = report.usage
    console.print(f"[dim]chat calls {u['chat_calls']} (+{u['chat_cache_hits']} cached), judge calls {u['judge_calls']} "
                  f"(+{u['judge_cache_hits']} cached), {u['seconds']}s[/dim]")


async def print_verdict(backend: Any, cache_dir: Any = None, *, console: Any = None) -> Any:
    """For the demo and ``precompute``: the probe verdict of ``backend`` on the built-in fact
    domains (cached: computed once per model), printed as one line on stderr. Returns the report,
    or None when the probe could not run (the command goes on)."""
    from rich.console import Console

    from steerkit.errors import SteerkitError
    from steerkit.evaluation.probe import model_verdict

    console = console or Console(stderr=True)
    try:
        with console.status(f"steerability probe of {backend.model} (once per model, cached)…"):
            report = await model_verdict(backend, Path(cache_dir) / "eval" if cache_dir else None)
    except SteerkitError as e:
        print(f"steerkit: warning: the steerability probe could not run: {e}", file=sys.stderr)
        return None
    style = "green" if report.steerable else "yellow"
    console.print(f"[{style}]probe:[/] {report.summary()}")
    return report


def add_probe_flag(p: argparse.ArgumentParser) -> None:
    """``--probe/--no-probe`` for commands that show the verdict (default: when interactive)."""
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=None,
                   help="show the steerability probe's verdict for the search model (default: when stderr is a terminal)")


def wants_probe(args: argparse.Namespace) -> bool:
    flag = getattr(args, "probe", None)
    return sys.stderr.isatty() if flag is None else bool(flag)

"""``steerkit demo``: the whole flow on the embedded model, no server, in a few minutes.

1. extract a persona from the query (rule-based extractor over the shipped packs);
2. compute its example set by the coherence search over a small item pool, with live progress;
3. answer the query twice with the embedded chat model: unsteered and steered, side by side.

It tells the truth about what it shows: the steerability probe's verdict for the search model
(cached per model; ``--no-probe`` skips it), the examples injected into the steered prompt,
complete answers (asked for in a few sentences; an answer cut by ``--max-tokens`` is trimmed to
its last full sentence and says so) and the one line that points it at a real model.

The demo's example set goes to the one cache (``steerkit cache ls`` lists it); its key differs
from a full precompute's (a small pool, a short search), so it never stands in for one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from steerkit.cli import probe_cmd
from steerkit.cli._answers import REAL_MODEL, complete_answer
from steerkit.errors import UserError

__all__ = ["DEFAULT_QUERY", "add_arguments", "run", "run_demo"]

DEFAULT_QUERY = "As a Republican, what do you think the government should do about gun laws?"
#: Both answers are asked for briefly, so they end within the token budget.
BRIEF = "Answer in two or three short sentences."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query", default=DEFAULT_QUERY, help=f"the user's message (default: {DEFAULT_QUERY!r})")
    p.add_argument("--items", type=int, default=8, metavar="N", help="item pool size for the search (default 8)")
    p.add_argument("--max-iterations", type=int, default=8, metavar="N", help="search iterations (default 8)")
    p.add_argument("--max-tokens", type=int, default=160, metavar="N", help="answer length limit in tokens (default 160)")
    p.add_argument("--seed", type=int, default=7, help="search seed (default 7)")
    p.add_argument("--model-path", metavar="GGUF", help="embedded model file (default: the shipped SmolLM2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                   help="show the steerability probe's verdict for the search model (default: yes; cached per model)")


def run(args: argparse.Namespace) -> int:
    from steerkit.cli import load_settings

    if args.items < 2:
        raise UserError("--items must be at least 2")
    if args.max_iterations < 0:
        raise UserError("--max-iterations must be >= 0")
    settings = load_settings(args)
    # the demo always runs on the embedded model, whatever the configuration says about servers
    settings = settings.model_copy(
        update={
            "search_model": settings.search_model.model_copy(update={"base_url": None, "model": None, "api_key": None}),
            "chat_model": settings.chat_model.model_copy(
                update={"base_url": None, "model": None, "api_key": None}
            ),
            "steer": settings.steer.model_copy(update={"max_pool_items": args.items}),
            "search": settings.search.model_copy(
                update={"max_iterations": args.max_iterations, "restarts": 1, "seed": args.seed, "patience": max(4, args.max_iterations // 2)}
            ),
        }
    )
    result = asyncio.run(run_demo(settings, args.query, max_tokens=args.max_tokens, show=not args.json, probe=args.probe))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


async def run_demo(settings: Any, query: str, *, max_tokens: int = 160, show: bool = True, probe: bool = False) -> dict[str, Any]:
    """Run the demo flow; returns what it showed (probe verdict, persona, example set summary, the
    injected examples, both answers)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from steerkit._runtime import Runtime
    from steerkit._config import SteerOptions

    console = Console(quiet=not show)
    t_all = time.perf_counter()
    with console.status("starting the embedded model…"):
        rt = await Runtime.open(settings)
    try:
        base_url, model = rt.require_chat()
        verdict = None
        if probe:  # does this model follow in-context labels at all? (cached per model)
            report = await probe_cmd.print_verdict(rt.backend, settings.cache_dir, console=console)
            if report is not None:
                verdict = {"verdict": report.verdict, "steerable": report.steerable, "summary": report.summary()}
        console.print(f"[bold]1. query[/bold]  {query}")
        messages = [{"role": "user", "content": query}]
        matches = await rt.steerer.extract(messages)
        if not matches:
            raise UserError(
                "no persona found in the query",
                hint="state one explicitly, e.g. 'As a Democrat, …' or 'I'm from Nigeria, …' (see `steerkit cache ls --personas`)",
            )
        m = matches[0]
        persona = rt.registry.persona(m.persona_id)
        console.print(
            f"[bold]2. persona[/bold] {persona.id} ({persona.name}, dimension {persona.dimension}) "
            f"from “{m.evidence}”, confidence {m.confidence:.2f}"
        )

        steerer = rt.steerer
        pool = steerer.pool(persona.id)  # the first `items` items (whole groups), see run()
        config = steerer.config.search
        console.print(f"[bold]3. coherence search[/bold] over {len(pool.items)} items, {len(pool.groups)} groups, model {rt.backend.model}")
        progress = Progress(
            TextColumn("   search"),
            BarColumn(bar_width=30),
            TextColumn("it {task.fields[it]}  accepted {task.fields[acc]}  U {task.fields[u]}  calls {task.fields[calls]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not show,
        )
        task = progress.add_task("search", total=max(1, config.max_iterations), it="-", acc="-", u="-", calls="-")

        def on_progress(pr: Any) -> None:
            progress.update(task, completed=pr.iteration, it=f"{pr.iteration}/{pr.max_iterations}", acc=pr.accepted, u=f"{pr.u:.2f}", calls=pr.calls)

        t0 = time.perf_counter()
        es = await rt.store.get(steerer.cache_key(persona.id))
        cached = es is not None
        if es is None:
            with progress:
                es = await steerer.compute(persona.id, progress=on_progress)  # stores it and runs the hooks
                progress.update(task, completed=max(1, config.max_iterations))
        search_s = time.perf_counter() - t0
        trues = [it for it in es.items if es.labels[it.id].value]
        console.print(
            f"   {'cached' if cached else 'computed'} example set {es.version}: U={es.score:.2f}, "
            f"{len(trues)} of {len(es.items)} claims labelled true, {search_s:.1f}s"
        )
        _print_labels(console, es)

        # the unsteered and the steered request differ only in what steering injects
        base = [{"role": "system", "content": BRIEF}, *messages]
        steered_messages, info = await steerer.prepare(base, SteerOptions(persona=persona.id, miss_policy="wait"))
        injected = _injected_examples(es, steered_messages, base)
        if show:
            console.print(f"[bold]4. injected[/bold] {info.examples_used} labelled examples into the system prompt, e.g.:")
            for line in injected[:6]:
                console.print(f"   [dim]{line}[/dim]")
        client = rt.chat_client()
        try:
            console.print("[bold]5. answers[/bold] (embedded chat model, temperature 0)")
            with console.status("answering…"):
                sampling = {"max_tokens": max_tokens, "temperature": 0, **rt.chat_defaults()}
                plain = await client.chat.completions.create(model=model, messages=base, **sampling)
                steered = await client.chat.completions.create(model=model, messages=steered_messages, **sampling)
        finally:
            await client.close()
        a_plain, cut_plain = complete_answer(plain.choices[0].message.content or "", plain.choices[0].finish_reason, max_tokens)
        a_steered, cut_steered = complete_answer(steered.choices[0].message.content or "", steered.choices[0].finish_reason, max_tokens)
        real = REAL_MODEL.format(query=query)
        if show:
            from rich.columns import Columns
            from rich.panel import Panel

            console.print(
                Columns(
                    [
                        Panel(a_plain, title="unsteered", width=max(40, console.width // 2 - 2)),
                        Panel(a_steered, title=f"steered as {persona.name} ({info.examples_used} examples)", width=max(40, console.width // 2 - 2)),
                    ]
                )
            )
            console.print(
                f"[yellow]note:[/] these are {rt.backend.model} (labels) and a 135M chat model: the labels are near chance "
                "and the steered answer may move either way. The same flow on a real model (one line):"
            )
            console.print(f"   {real}", soft_wrap=True)
            console.print(f"[dim]done in {time.perf_counter() - t_all:.0f}s; the example set is in `steerkit cache ls`; "
                          "try `steerkit chat` and `steerkit serve` next[/dim]")
        return {
            "query": query,
            "persona": persona.id,
            "evidence": m.evidence,
            "example_set": {
                "version": es.version,
                "score": es.score,
                "items": len(es.items),
                "true": len(trues),
                "cached": cached,
                "seconds": round(search_s, 1),
            },
            "steering": {"cache": info.cache, "examples_used": info.examples_used, "version": info.example_set_version},
            "probe": verdict,
            "injected_examples": injected,
            "unsteered": a_plain,
            "steered": a_steered,
            "trimmed": {"unsteered": cut_plain, "steered": cut_steered},
            "sampling": sampling,
            "real_model": real,
        }
    finally:
        await rt.aclose()


def _print_labels(console: Any, es: Any, limit: int = 8) -> None:
    from rich.table import Table

    t = Table("claim", "label", "conf", box=None, padding=(0, 1))
    for it in es.items[:limit]:
        lab = es.labels[it.id]
        text = it.option if it.kind != "preference" else f"{it.choice_1} > {it.choice_2}"
        q = " ".join(it.question.split())
        t.add_row(f"{q[:50]}{'…' if len(q) > 50 else ''} → {text}", "[green]True[/green]" if lab.value else "[red]False[/red]", f"{lab.confidence:.2f}")
    console.print(t)


def _injected_examples(es: Any, steered: list[dict], original: list[dict]) -> list[str]:
    """The labelled claims of ``es`` that steering put into the prompt, as 'claim → True/False'."""
    added = "\n".join(str(m.get("content", "")) for m in steered if m not in original)
    out = []
    for it in es.items:
        q, opt = " ".join(it.question.split()), " ".join(str(it.option or it.choice_1 or "").split())
        if f"Question: {q}" in added and opt in added:
            lab = "True" if es.labels[it.id].value else "False"
            out.append(f"{q[:70]}{'…' if len(q) > 70 else ''} → {opt[:60]} ({lab})")
    return out

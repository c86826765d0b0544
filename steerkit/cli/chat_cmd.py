"""``steerkit chat "…"``: one steered answer in the terminal.

Shows the persona found in the message, the example set used (version, cache outcome), the
examples injected, and the chat model's answer. ``--json`` prints the same as one JSON object.
``--compare`` asks twice, without steering and with it, and shows the two answers side by side
with the examples the steered one was given (JSON: ``{"query", "unsteered", "steered"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any

from steerkit.cli._answers import REAL_MODEL, complete_answer

__all__ = ["add_arguments", "injected_examples", "injected_messages", "render_compare", "run",
           "steered_answer"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("message", help="the user's message")
    p.add_argument("--system", help="a system prompt to send before the message")
    p.add_argument("--persona", metavar="ID", help="use this persona (an id, or a pack's name for it: nigeria, democrat) instead of extracting one from the message")
    p.add_argument("--no-steer", action="store_true", help="answer without steering (for comparison)")
    p.add_argument("--compare", action="store_true",
                   help="answer twice, unsteered and steered, and show the two answers side by side with the examples used")
    p.add_argument("-k", "--examples", type=int, metavar="N", help="number of examples to inject")
    p.add_argument(
        "--miss-policy",
        choices=["wait", "background", "off"],
        default="wait",
        help="when the persona's example set is not cached: compute it now (wait, default), "
        "answer unsteered and compute it in the background, or answer unsteered",
    )
    p.add_argument("--wait-timeout", type=float, default=None, metavar="S",
                   help=f"with --miss-policy wait: after S seconds (default steer.wait_timeout_s, else {CHAT_WAIT_S:g}) answer from the "
                   "search's first complete labelling (provisional) as soon as it exists; the search resumes on the next run")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="answer length limit in tokens (default chat_model.max_tokens: 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: deterministic)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


#: `steerkit chat`'s default any-time budget (seconds) for a cold persona.
CHAT_WAIT_S = 120.0


def injected_messages(original: list[dict], steered: list[dict]) -> list[dict]:
    """The messages steering added or changed (what the chat model sees beyond the user's)."""
    return [m for m in steered if m not in original]


async def steered_answer(
    runtime: Any,
    messages: list[dict],
    options: Any,
    *,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    before_answer: Any = None,
) -> dict[str, Any]:
    """Steer ``messages`` with ``options``, ask the chat model; returns answer and steering info.
    ``before_answer``: an async callable run between steering and the chat call."""
    base_url, model = runtime.require_chat()
    steered, info = await runtime.steerer.prepare(messages, options)
    if before_answer is not None:
        await before_answer()
    client = runtime.chat_client()
    try:
        kw: dict[str, Any] = {"temperature": temperature, **runtime.chat_defaults()}
        if max_tokens is not None:
            kw["max_tokens"] = max_tokens
        resp = await client.chat.completions.create(model=model, messages=steered, **kw)
    except Exception as e:
        import openai

        from steerkit.errors import BackendUnavailableError

        if isinstance(e, openai.APIStatusError):
            raise BackendUnavailableError(f"the chat model at {base_url} answered {e.status_code}: {e.message}") from None
        if isinstance(e, openai.APIError):
            raise BackendUnavailableError(f"the chat model at {base_url} failed: {e.message}") from None
        raise
    finally:
        await client.close()
    answer, trimmed = complete_answer(resp.choices[0].message.content or "", resp.choices[0].finish_reason, max_tokens)
    return {
        "answer": answer,
        "trimmed": trimmed,
        "steered": bool(getattr(options, "enabled", True)),
        "model": model,
        "personas": [_match_dict(m) for m in info.personas],
        "example_set_version": info.example_set_version,
        "cache": info.cache,
        "examples_used": info.examples_used,
        "answer_confidence": info.answer_confidence,
        "added_ms": round(info.added_ms, 1),
        "injected": injected_messages(messages, steered),
    }


def _match_dict(m: Any) -> dict[str, Any]:
    if hasattr(m, "model_dump"):
        return m.model_dump(mode="json")
    return {k: getattr(m, k) for k in ("persona_id", "dimension", "span", "evidence", "confidence") if hasattr(m, k)}


def run(args: argparse.Namespace) -> int:
    from steerkit.cli import load_settings

    settings = load_settings(args)
    return asyncio.run(_main(args, settings))


async def _main(args: argparse.Namespace, settings: Any) -> int:
    from steerkit._config import SteerOptions
    from steerkit._runtime import Runtime, make_registry
    from steerkit.errors import UserError

    if args.compare and args.no_steer:
        raise UserError("--compare already shows the unsteered answer beside the steered one; drop --no-steer")
    persona = make_registry(settings).resolve(args.persona) if args.persona else None  # before the model loads
    options = SteerOptions(
        enabled=not args.no_steer,
        persona=persona,
        k=args.examples,
        miss_policy=args.miss_policy,
    )
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": args.message}]
    async with await Runtime.open(settings) as rt:
        rt.require_chat()
        running = None
        if options.enabled and args.miss_policy == "wait":
            budget = args.wait_timeout if args.wait_timeout is not None else (settings.steer.wait_timeout_s or CHAT_WAIT_S)
            running = await _compute_missing(rt, messages, options, quiet=args.json, budget=budget)
        max_tokens = args.max_tokens or settings.chat_model.max_tokens
        try:
            if running is not None:  # answer from the running search's provisional labelling
                options = options.model_copy(update={"miss_policy": "background"})
                result = await steered_answer(rt, messages, options, max_tokens=max_tokens, temperature=args.temperature,
                                              before_answer=lambda: _stop(running, rt))
            else:
                result = await steered_answer(rt, messages, options, max_tokens=max_tokens, temperature=args.temperature)
        finally:
            if running is not None:
                await _stop(running, rt)
        if args.compare:  # the same query, the same sampling, no steering
            plain = await steered_answer(rt, messages, options.model_copy(update={"enabled": False}), max_tokens=max_tokens,
                                         temperature=args.temperature)
            result = {"query": args.message, "unsteered": plain, "steered": result}
    if rt.chat_embedded:  # tell the truth about what answered
        result["note"] = ("the embedded models are tiny (labels near chance; a 135M chat model): the answer shows the "
                          "flow, not steering that works. On a real model: " + REAL_MODEL.format(query=args.message))
    if running is not None and not args.json:
        import sys

        print(f"steerkit: answered from a provisional example set (the search's first complete labelling); the search "
              f"stopped at its checkpoint: run the same command again, or `steerkit precompute --persona {' --persona '.join(running.personas)}`, "
              "to finish it", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    (render_compare if args.compare else render)(result)
    return 0


class _Running:
    """A search still running when the answer is given from its provisional labelling."""

    def __init__(self, task: asyncio.Task[Any], personas: list[str], view: Any) -> None:
        self.task, self.personas, self.view = task, personas, view
        self.stopped = False


async def _stop(running: _Running, rt: Any) -> None:
    """Stop the running search (its checkpoint stays: a re-run resumes it) and any search the
    answer's steering started, before the chat model runs on the same CPU."""
    if running.stopped:
        return
    running.stopped = True
    if not running.task.done():
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
    running.view.__exit__(None, None, None)
    await rt.steerer.example_sets.aclose()


async def _compute_missing(rt: Any, messages: list[dict], options: Any, *, quiet: bool, budget: float = CHAT_WAIT_S) -> _Running | None:
    """Compute the example sets the answer needs and the cache lacks, as `steerkit precompute`
    does: with progress on stderr and a checkpoint, so Ctrl-C and a re-run resume the search.

    The any-time answer: once ``budget`` seconds have passed and every missing persona's search
    has a complete labelling (its first one comes after about one model call per item), stop
    waiting and return the still-running search (`_Running`); the caller answers from the
    provisional sets and stops it. None when every set was computed (or cached)."""
    import sys

    from steerkit.cli.precompute import _ProgressView, checkpoint_of, precompute

    steerer = rt.steerer
    if options.persona:
        ids = [options.persona]
    else:
        ids = [m.persona_id for m in await steerer.extract(messages)]
    missing = [pid for pid in ids if await rt.store.get(steerer.cache_key(pid)) is None]
    if not missing:
        return
    if not quiet:
        print(
            f"steerkit: no cached example set for {', '.join(missing)}; computing it now, answering after {budget:g}s "
            "from its first complete labelling if it has not finished (`steerkit precompute` does this ahead of time; "
            "Ctrl-C stops, a re-run resumes)",
            file=sys.stderr,
        )
    view = _ProgressView(missing, steerer.config.search, enabled=not quiet and sys.stderr.isatty(), checkpoint_of=checkpoint_of(rt))
    sets = steerer.example_sets
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    view.__enter__()
    task = asyncio.ensure_future(precompute(rt, missing, on_progress=view.on_progress, on_status=view.on_status))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=max(0.05, min(1.0, deadline - loop.time())))
            if not task.done() and loop.time() >= deadline and all(sets.provisional(pid) is not None for pid in missing):
                return _Running(task, missing, view)
        task.result()  # a failed search raises here
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        view.__exit__(None, None, None)
        raise
    view.__exit__(None, None, None)
    return None


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.panel import Panel

    console = Console()
    if result.get("steered") is False:
        console.print("[bold]persona[/bold] steering off (--no-steer)")
    elif result["personas"]:
        for p in result["personas"]:
            console.print(
                f"[bold]persona[/bold] {p.get('persona_id')} ({p.get('dimension')}) "
                f"from [italic]“{p.get('evidence', '')}”[/italic], confidence {p.get('confidence', 0):.2f}"
            )
    else:
        console.print("[bold]persona[/bold] none found (answer unsteered)")
    console.print(
        f"[bold]example set[/bold] version {result['example_set_version'] or '-'}, cache {result['cache']}, "
        f"{result['examples_used']} examples, +{result['added_ms']:.0f} ms" + _confidence(result)
    )
    if (warning := near_ties(result)) is not None:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    for m in result["injected"]:
        console.print(Panel(str(m.get("content", "")), title=f"injected {m.get('role')} message", border_style="dim"))
    console.print(Panel(result["answer"], title=f"answer ({result['model']})", border_style="green"))
    if result.get("note"):
        console.print(f"[yellow]note:[/] {result['note']}", soft_wrap=True)


def _confidence(result: dict[str, Any]) -> str:
    c = result.get("answer_confidence")
    return "" if c is None else f", answer confidence {c:.0%}"


def near_ties(result: dict[str, Any]) -> str | None:
    """What to say when the steering set's answers rest on near-ties (`DECIDED_ANSWERS`)."""
    from steerkit.models import DECIDED_ANSWERS

    c = result.get("answer_confidence")
    if c is None or c >= DECIDED_ANSWERS:
        return None
    who = " ".join(p.get("persona_id", "") for p in result.get("personas") or [])
    return (f"the example set's answers rest on near-ties (answer confidence {c:.0%}: the search model barely preferred "
            f"them), so they say little about the persona; `steerkit cache show {who or 'PERSONA'}` says what to do")


_EXAMPLE = re.compile(r"^Question: (?P<q>.+)\n(?P<kind>Representative answer|Preferred response): (?P<a>.+)$", re.DOTALL)


def injected_examples(injected: list[dict]) -> list[dict[str, str]]:
    """The examples in the injected messages, as ``{"question", "answer"}`` (the ``generate``
    rendering's "Question: …" / "Representative answer: …" blocks), in the order shown."""
    out = []
    for m in injected:
        content = m.get("content")
        text = content if isinstance(content, str) else " ".join(
            str(p.get("text", "")) for p in content or [] if isinstance(p, dict))
        for block in text.split("\n\n"):
            hit = _EXAMPLE.match(block.strip())
            if hit:
                out.append({"question": hit["q"].strip(), "answer": hit["a"].strip()})
    return out


def render_compare(result: dict[str, Any], console: Any = None) -> None:
    """The unsteered and the steered answer side by side, then the examples the steered one was given."""
    from rich.columns import Columns
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = console or Console()
    plain, steered = result["unsteered"], result["steered"]
    console.print(f"[bold]query[/bold] {result['query']}")
    who = ", ".join(str(p.get("persona_id")) for p in steered["personas"]) or "no persona found: not steered"
    console.print(
        f"[bold]steered for[/bold] {who}; example set {steered['example_set_version'] or '-'}, cache {steered['cache']}, "
        f"{steered['examples_used']} examples, +{steered['added_ms']:.0f} ms" + _confidence(steered))
    if (warning := near_ties(steered)) is not None:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    width = max(30, (console.width - 4) // 2)
    console.print(Columns([
        Panel(plain["answer"], title=f"unsteered ({plain['model']})", border_style="blue", width=width),
        Panel(steered["answer"], title=f"steered ({steered['model']}, {steered['examples_used']} examples)",
              border_style="green", width=width),
    ], equal=True, expand=True))
    examples = injected_examples(steered["injected"])
    if examples:
        t = Table(title="examples the steered answer was given", show_lines=True, expand=True)
        t.add_column("#", justify="right")
        t.add_column("question")
        t.add_column("representative answer")
        for k, ex in enumerate(examples, start=1):
            t.add_row(str(k), ex["question"], ex["answer"])
        console.print(t)
    for m in steered["injected"] if not examples else []:
        console.print(Panel(str(m.get("content", "")), title=f"injected {m.get('role')} message", border_style="dim"))
    if not steered["injected"]:
        console.print("[yellow]nothing was injected: the two answers differ only by sampling[/]")
    if result.get("note"):
        console.print(f"[yellow]note:[/] {result['note']}", soft_wrap=True)

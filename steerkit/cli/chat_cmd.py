"""``steerkit chat "…"``: one steered answer in the terminal.

Shows the persona found in the message, the example set used (version, cache outcome), the
examples injected, and the chat model's answer. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

__all__ = ["add_arguments", "injected_messages", "run", "steered_answer"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("message", help="the user's message")
    p.add_argument("--system", help="a system prompt to send before the message")
    p.add_argument("--persona", metavar="ID", help="use this persona (an id, or a pack's name for it: nigeria, democrat) instead of extracting one from the message")
    p.add_argument("--no-steer", action="store_true", help="answer without steering (for comparison)")
    p.add_argument("-k", "--examples", type=int, metavar="N", help="number of examples to inject")
    p.add_argument(
        "--miss-policy",
        choices=["wait", "background", "off"],
        default="wait",
        help="when the persona's example set is not cached: compute it now (wait, default), "
        "answer unsteered and compute it in the background, or answer unsteered",
    )
    p.add_argument("--max-tokens", type=int, default=None, metavar="N", help="answer length limit")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


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
) -> dict[str, Any]:
    """Steer ``messages`` with ``options``, ask the chat model; returns answer and steering info."""
    base_url, model = runtime.require_chat()
    steered, info = await runtime.steerer.prepare(messages, options)
    client = runtime.chat_client()
    try:
        kw: dict[str, Any] = {"temperature": temperature}
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
    return {
        "answer": resp.choices[0].message.content or "",
        "model": model,
        "personas": [_match_dict(m) for m in info.personas],
        "example_set_version": info.example_set_version,
        "cache": info.cache,
        "examples_used": info.examples_used,
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
    from steerkit._runtime import Runtime
    from steerkit._config import SteerOptions

    from steerkit._runtime import make_registry

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
        if options.enabled and args.miss_policy == "wait":
            await _compute_missing(rt, messages, options, quiet=args.json)
        max_tokens = args.max_tokens or settings.chat_model.max_tokens
        result = await steered_answer(rt, messages, options, max_tokens=max_tokens, temperature=args.temperature)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    render(result)
    return 0


async def _compute_missing(rt: Any, messages: list[dict], options: Any, *, quiet: bool) -> None:
    """Compute the example sets the answer needs and the cache lacks, as `steerkit precompute`
    does: with progress on stderr and a checkpoint, so Ctrl-C and a re-run resume the search."""
    import sys

    from steerkit.cli.precompute import _ProgressView, precompute

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
            f"steerkit: no cached example set for {', '.join(missing)}; computing it now "
            "(`steerkit precompute` does this ahead of time; Ctrl-C stops, a re-run resumes)",
            file=sys.stderr,
        )
    view = _ProgressView(missing, steerer.config.search, enabled=not quiet and sys.stderr.isatty())
    with view:
        await precompute(rt, missing, on_progress=view.on_progress, on_status=view.on_status)


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.panel import Panel

    console = Console()
    if result["personas"]:
        for p in result["personas"]:
            console.print(
                f"[bold]persona[/bold] {p.get('persona_id')} ({p.get('dimension')}) "
                f"from [italic]“{p.get('evidence', '')}”[/italic], confidence {p.get('confidence', 0):.2f}"
            )
    else:
        console.print("[bold]persona[/bold] none found (answer unsteered)")
    console.print(
        f"[bold]example set[/bold] version {result['example_set_version'] or '-'}, cache {result['cache']}, "
        f"{result['examples_used']} examples, +{result['added_ms']:.0f} ms"
    )
    for m in result["injected"]:
        console.print(Panel(str(m.get("content", "")), title=f"injected {m.get('role')} message", border_style="dim"))
    console.print(Panel(result["answer"], title=f"answer ({result['model']})", border_style="green"))

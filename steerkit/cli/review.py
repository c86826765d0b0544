"""``steerkit review``: human feedback on the labels steerkit is least sure of.

    steerkit precompute --persona polparty/democrat        # (the cli's command) example sets
    steerkit review --escalate --persona polparty/democrat --k 4   # least certain questions → queue
    steerkit review                      # answer them, least confident first (resumable)
    steerkit review --persona polparty/democrat --limit 5 --annotator alice
    steerkit review --list [--status pending|answered|applied] [--json]
    steerkit review --apply              # answers → fixed labels → re-run → new cached versions

The questions wait in an annotation queue file (default ``<cache_dir>/annotation-queue.sqlite``,
the file an app's `QueueAdapter` / `ConsoleAdapter` writes to). Every answer is saved the moment it
is given; quit at any time (``q``, Ctrl-D) and run the command again to continue.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_review_parser", "default_queue_path", "main", "review_command"]

QUEUE_FILE = "annotation-queue.sqlite"


def add_review_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "review",
        help="answer escalated questions (human feedback), resumable",
        description="Answer the questions steerkit escalated to people, least confident first. "
        "Answers are saved immediately; quit with q or Ctrl-D and run again to resume.",
    )
    _add_arguments(p)
    p.set_defaults(func=review_command)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", metavar="FILE", help=f"annotation queue file (default: <cache_dir>/{QUEUE_FILE})")
    p.add_argument("--persona", metavar="ID", help="only this persona's questions")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N answers")
    p.add_argument("--annotator", metavar="NAME", help="recorded with each answer (default: your user name)")
    p.add_argument("--list", action="store_true", help="list escalations instead of reviewing")
    p.add_argument("--status", choices=["pending", "answered", "applied"], help="with --list: only this status")
    p.add_argument("--json", action="store_true", help="with --list: print JSON lines")
    loop = p.add_argument_group("offline loop (uses the configured cache and search model)")
    loop.add_argument("--escalate", action="store_true",
                      help="add the least certain questions of the cached example sets (--persona, or every cached one) to the queue")
    loop.add_argument("--k", type=int, default=4, metavar="N", help="with --escalate: new questions per persona (default 4)")
    loop.add_argument("--budget", type=int, default=None, metavar="N", help="with --escalate: at most N questions per persona in total")
    loop.add_argument("--policy", choices=["icm_confidence", "answer_margin", "random"], default="icm_confidence",
                      help="with --escalate: how questions are chosen: the search's confidence (default, the paper's), "
                      "how far the model preferred each answer to the next best (finds more wrong answers on a "
                      "model that leans to True or False), or at random")
    loop.add_argument("--apply", action="store_true",
                      help="fold the queue's answers into new example-set versions (re-runs the search with them fixed)")


def default_queue_path(args: argparse.Namespace | None = None) -> Path:
    """``<cache_dir>/annotation-queue.sqlite`` with the cache dir from the configuration."""
    cache_dir: Path | None = None
    if args is not None and getattr(args, "cache_dir", None):
        cache_dir = Path(args.cache_dir).expanduser()
    if cache_dir is None:
        try:
            from steerkit.cli import load_settings

            cache_dir = Path(load_settings(args or argparse.Namespace()).cache_dir)
        except Exception:  # configuration unavailable: the documented default
            from steerkit._config import default_cache_dir

            cache_dir = default_cache_dir()
    return cache_dir / QUEUE_FILE


def review_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steerkit.adapters.console import ConsoleAdapter, pending_table
    from steerkit.adapters.queue import AnnotationQueue

    path = Path(args.queue).expanduser() if getattr(args, "queue", None) else default_queue_path(args)
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if getattr(args, "escalate", False) and getattr(args, "apply", False):
        err.print("steerkit: error: --escalate and --apply are separate steps; run one, then the other")
        return 2
    if getattr(args, "escalate", False):
        if args.k < 1 or (args.budget is not None and args.budget < 0):
            err.print("steerkit: error: --k must be ≥ 1 and --budget ≥ 0")
            return 2
        return asyncio.run(_escalate(args, path, console))
    if not path.exists():
        err.print(
            f"steerkit: error: no annotation queue at {path} (escalate questions with a QueueAdapter "
            "on this file first, or pass --queue FILE)"
        )
        return 2
    if getattr(args, "limit", None) is not None and args.limit < 1:
        err.print("steerkit: error: --limit must be ≥ 1")
        return 2
    if getattr(args, "apply", False):
        return asyncio.run(_apply(args, path, console))
    queue = AnnotationQueue(path)
    try:
        if getattr(args, "list", False):
            entries = queue.entries(persona_id=args.persona, status=args.status)
            if args.json:
                for e in entries:
                    doc: dict[str, Any] = {
                        "id": e.escalation.id,
                        "persona_id": e.escalation.persona_id,
                        "status": e.status,
                        "confidence": e.escalation.suggestion.confidence,
                        "question": e.escalation.question,
                        "answer": e.answer.option if e.answer else None,
                        "annotator": e.answer.annotator if e.answer else None,
                    }
                    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
            else:
                console.print(pending_table(entries))
                c = queue.counts(persona_id=args.persona)
                console.print(f"{c.pending} pending, {c.answered} answered, {c.applied} applied")
            return 0
        annotator = getattr(args, "annotator", None) or _user()
        adapter = ConsoleAdapter(queue, console=console, annotator=annotator)
        if queue.counts(persona_id=args.persona).pending == 0:
            console.print("Nothing to review: no pending questions.")
            return 0
        adapter.review(persona_id=args.persona, limit=args.limit)
        return 0
    finally:
        queue.close()


def _wiring(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(settings, registry, store, steerer) built the way every other command builds them, with the
    search backend constructed but not started (its model name is part of the cache key)."""
    from steerkit import _runtime
    from steerkit.cli import load_settings

    settings = load_settings(args)
    registry = _runtime.make_registry(settings)
    store = _runtime.make_store(settings)
    backend = _runtime.make_backend(settings)
    steerer = _runtime.make_steerer(settings, registry, store, backend)
    return settings, registry, store, steerer


async def _escalate(args: argparse.Namespace, path: Path, console: Any) -> int:
    from steerkit.adapters.queue import QueueAdapter
    from steerkit.escalation import (
        AnswerMarginPolicy,
        ConfidencePolicy,
        Escalator,
        RandomPolicy,
        SelectionPolicy,
    )

    settings, registry, store, steerer = _wiring(args)
    adapter = QueueAdapter(path)
    try:
        policy: SelectionPolicy
        if args.policy == "answer_margin":
            policy = AnswerMarginPolicy()
        elif args.policy == "random":
            policy = RandomPolicy(seed=settings.search.seed)
        else:
            policy = ConfidencePolicy()
        esc = Escalator(adapter, policy, k=args.k, budget=args.budget, steerer=steerer)
        rounds = await esc.escalate_cached(args.persona)
        if not rounds:
            console.print("No cached example set to escalate from: run `steerkit precompute` first.", style="yellow")
            return 2 if args.persona else 0
        for pid, asked in rounds.items():
            version = asked[0].version if asked else "current"
            console.print(f"{pid}: {len(asked)} question(s) queued from version {version}")
            for e in asked:
                console.print(f"  {e.suggestion.confidence:.2f}  {e.question}")
        console.print(f"Queue: {path}. Answer with `steerkit review`.")
        return 0
    finally:
        await adapter.aclose()
        await steerer.aclose()


async def _apply(args: argparse.Namespace, path: Path, console: Any) -> int:
    from steerkit.adapters.queue import QueueAdapter
    from steerkit.escalation import Escalator

    if not path.exists():
        console.print(f"No annotation queue at {path}: nothing to apply.", style="yellow")
        return 2
    settings, registry, store, steerer = _wiring(args)
    adapter = QueueAdapter(path)
    try:
        if not await adapter.answers(persona_id=args.persona):
            console.print("No new answers to apply.")
            return 0
        start = getattr(steerer.backend, "start", None)
        if start is not None:
            await start()
        esc = Escalator(adapter, steerer=steerer)
        results = await esc.apply_pending(args.persona)
        if not results:
            console.print("No new answers to apply.")
            return 0
        for pid, res in results.items():
            if res == "not cached":
                console.print(f"{pid}: no cached example set (was the cache cleared?); answers kept", style="yellow")
                continue
            if isinstance(res, str):
                console.print(f"{pid}: the answers belong to an older pool of this persona; nothing applied", style="yellow")
                continue
            console.print(
                f"{pid}: version {res.parent_version} → {res.version} with {len(res.human_labels)} human label(s) "
                f"({len(res.applied)} new answer(s))"
            )
        return 0
    finally:
        await adapter.aclose()
        await steerer.aclose()
        close = getattr(steerer.backend, "aclose", None)
        if close is not None:
            await close()


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``review`` on its own (``python -m steerkit.cli.review``)."""
    p = argparse.ArgumentParser(prog="steerkit review", description="Answer escalated questions.")
    _add_arguments(p)
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory holding the default queue file")
    return review_command(p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

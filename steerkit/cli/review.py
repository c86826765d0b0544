"""``steerkit review``: answer escalated questions at the terminal (resumable).

    steerkit review                      # walk the pending questions, least confident first
    steerkit review --persona polparty/democrat --limit 5 --annotator alice
    steerkit review --list [--status pending|answered|applied] [--json]

The questions wait in an annotation queue file (default ``<cache_dir>/annotation-queue.sqlite``,
the file an app's `QueueAdapter` / `ConsoleAdapter` writes to). Every answer is saved the moment it
is given; quit at any time (``q``, Ctrl-D) and run the command again to continue.
"""

from __future__ import annotations

import argparse
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
            from steerkit.config import default_cache_dir

            cache_dir = default_cache_dir()
    return cache_dir / QUEUE_FILE


def review_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steerkit.adapters.console import ConsoleAdapter, pending_table
    from steerkit.adapters.queue import AnnotationQueue

    path = Path(args.queue).expanduser() if getattr(args, "queue", None) else default_queue_path(args)
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if not path.exists():
        err.print(
            f"steerkit: error: no annotation queue at {path} (escalate questions with a QueueAdapter "
            "on this file first, or pass --queue FILE)"
        )
        return 2
    if getattr(args, "limit", None) is not None and args.limit < 1:
        err.print("steerkit: error: --limit must be ≥ 1")
        return 2
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

"""Console adapter: a person answers escalations at a terminal (`steerkit review`).

Escalations wait in an `AnnotationQueue` file; `ConsoleAdapter.review` walks the pending ones,
least confident first, shows each with rich (persona, question, options, the model's suggestion and
its confidence) and records every answer the moment it is given. Quitting (``q``, Ctrl-D, Ctrl-C)
or a crash loses nothing: the next `review` resumes with the questions still pending.

Keys at the prompt: an option number; ``a`` accepts the model's suggestion; ``s`` skips (the
question stays pending); ``q`` quits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from steerkit.adapters.queue import AnnotationQueue, QueueAdapter
from steerkit.errors import InvalidAnswerError
from steerkit.escalation import Answer, Escalation

__all__ = ["ConsoleAdapter", "ReviewSummary"]


@dataclass
class ReviewSummary:
    answered: list[str] = field(default_factory=list)
    """Escalation ids answered in this session."""
    skipped: list[str] = field(default_factory=list)
    remaining: int = 0
    """Pending escalations left in the queue (for the persona filter) when the session ended."""
    quit: bool = False


class ConsoleAdapter(QueueAdapter):
    """`FeedbackAdapter` whose answers come from a person at a console.

    ``input`` is the stream answers are read from (default: the console's own input, i.e. stdin);
    ``console`` is where prompts are drawn (default: a rich Console on stdout).
    """

    name = "console"

    def __init__(
        self,
        queue: AnnotationQueue | str | Path,
        *,
        console: Console | None = None,
        input: TextIO | None = None,
        annotator: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(queue, name=name)
        self.console = console or Console(highlight=False)
        self.input = input
        self.annotator = annotator

    # --- interactive session -------------------------------------------------------------------

    def review(
        self,
        *,
        persona_id: str | None = None,
        limit: int | None = None,
    ) -> ReviewSummary:
        """Ask about pending escalations until none is left, ``limit`` are answered, or the person quits."""
        summary = ReviewSummary()
        skipped: set[str] = set()
        total = self.queue.counts(persona_id=persona_id).pending
        shown = 0
        while limit is None or len(summary.answered) < limit:
            entry = next(
                (e for e in self.queue.entries(persona_id=persona_id, status="pending") if e.escalation.id not in skipped),
                None,
            )
            if entry is None:
                break
            shown += 1
            esc = entry.escalation
            self._show(esc, shown, total)
            choice = self._ask(esc)
            if choice is None:
                summary.quit = True
                break
            if choice == "s":
                skipped.add(esc.id)
                summary.skipped.append(esc.id)
                continue
            ans = Answer(escalation_id=esc.id, option=choice, version=esc.version, annotator=self.annotator)
            try:
                self.queue.receive(ans, adapter=self.name)
            except InvalidAnswerError as e:
                # e.g. the question was re-submitted with a new version while it was on screen
                self.console.print(f"[yellow]Not recorded:[/] {e}. Showing the current version again.")
                shown -= 1
                continue
            summary.answered.append(esc.id)
            self.console.print(f"[green]Recorded[/] {esc.id}: {esc.option(choice).text}")
        summary.remaining = self.queue.counts(persona_id=persona_id).pending
        self.console.print(
            f"{len(summary.answered)} answered, {len(summary.skipped)} skipped, {summary.remaining} pending."
        )
        return summary

    async def areview(self, *, persona_id: str | None = None, limit: int | None = None) -> ReviewSummary:
        """`review` in a worker thread (for use from async code)."""
        return await asyncio.to_thread(self.review, persona_id=persona_id, limit=limit)

    # --- rendering and input -------------------------------------------------------------------

    def _show(self, esc: Escalation, n: int, total: int) -> None:
        sug = esc.suggestion
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(justify="right", style="bold")
        table.add_column()
        table.add_column(style="cyan")
        for i, o in enumerate(esc.options, 1):
            mark = f"← model suggests ({sug.confidence:.2f})" if o.id == sug.option else ""
            table.add_row(f"{i}.", Text(o.text), mark)
        body = Table.grid()
        body.add_row(Text(esc.question, style="bold"))
        if esc.context:
            body.add_row(Text(esc.context, style="dim"))
        body.add_row(table)
        title = f"[{n}/{max(total, n)}] {esc.persona_name} ({esc.dimension or esc.persona_id})"
        sub = f"confidence {sug.confidence:.2f} · {esc.policy or 'escalated'} · {esc.id}"
        self.console.print(Panel(body, title=title, subtitle=sub, title_align="left", subtitle_align="left"))

    def _readline(self, prompt: str) -> str | None:
        try:
            if self.input is None:
                return self.console.input(prompt)
            self.console.print(prompt, end="")
            line = self.input.readline()
        except (EOFError, KeyboardInterrupt):
            return None
        if line == "":
            return None  # end of input
        return line.rstrip("\r\n")

    def _ask(self, esc: Escalation) -> str | None:
        """An option id, "s" (skip) or None (quit / end of input)."""
        n = len(esc.options)
        keys = f"1-{n}" + (", a = accept suggestion" if esc.suggestion.option else "") + ", s = skip, q = quit"
        while True:
            line = self._readline(f"Answer [{keys}]: ")
            if line is None:
                return None
            t = line.strip().lower()
            if t in ("q", "quit", "exit"):
                return None
            if t in ("s", "skip"):
                return "s"
            if t in ("a", "accept") and esc.suggestion.option:
                return esc.suggestion.option
            if t.isdigit() and 1 <= int(t) <= n:
                return esc.options[int(t) - 1].id
            ids = [o.id for o in esc.options]
            if line.strip() in ids:
                return line.strip()
            self.console.print(f"[red]Not an option:[/] {line.strip()!r}. Type a number from 1 to {n}.")


def pending_table(entries: Sequence[object]) -> Table:
    """A rich table of queue entries (used by `steerkit review --list`)."""
    t = Table(title="Escalations")
    for col in ("id", "persona", "status", "confidence", "question", "answer"):
        t.add_column(col)
    for e in entries:
        esc = e.escalation  # type: ignore[attr-defined]
        ans = e.answer  # type: ignore[attr-defined]
        t.add_row(
            esc.id,
            esc.persona_id,
            e.status,  # type: ignore[attr-defined]
            f"{esc.suggestion.confidence:.2f}",
            esc.question if len(esc.question) < 70 else esc.question[:69] + "…",
            "" if ans is None else esc.option(ans.option).text if any(o.id == ans.option for o in esc.options) else ans.option,
        )
    return t

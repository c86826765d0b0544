"""Callback adapter: any Python coroutine answers escalations (a Slack bot, a ticket system, a test).

```python
async def ask(esc: Escalation) -> str | Answer | None:
    return await my_team_chat.ask(esc.question, [o.text for o in esc.options])  # an option id

adapter = CallbackAdapter(ask, annotator="team-chat")
await adapter.submit(escalations)   # returns at once; `ask` runs in background tasks
await adapter.join()                # optional: wait for the outstanding callbacks
answers = await adapter.answers()
```

The coroutine returns an option id (str), a full `Answer`, or None (no answer for now: the
escalation stays pending). Its answer is validated and recorded like any pushed answer; an invalid
one, or an exception, is kept in ``errors`` and leaves the escalation pending. Re-submitting an
escalation that is still waiting for its callback does not call the coroutine twice; a changed
escalation (new version) is asked again once the first call has finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from steerkit.adapters.queue import AnnotationQueue, QueueAdapter
from steerkit.errors import FeedbackError
from steerkit.escalation import Answer, Escalation, SubmitResult

__all__ = ["CallbackAdapter", "AnswerFn"]

log = logging.getLogger("steerkit.adapters.callback")

AnswerFn = Callable[[Escalation], Awaitable["str | Answer | None"]]


class CallbackAdapter(QueueAdapter):
    """A `FeedbackAdapter` that hands each new or changed escalation to ``fn``.

    State lives in an `AnnotationQueue` (in memory by default; pass a path to make it durable).
    ``concurrency`` bounds how many callbacks run at once. With ``wait=True`` ``submit`` returns only
    after the callbacks for that submit have finished.
    """

    name = "callback"

    def __init__(
        self,
        fn: AnswerFn,
        *,
        queue: AnnotationQueue | str | Path = ":memory:",
        annotator: str | None = None,
        concurrency: int = 4,
        wait: bool = False,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise FeedbackError("CallbackAdapter needs a coroutine function", hint="pass `async def fn(escalation)`")
        if concurrency < 1:
            raise FeedbackError(f"concurrency must be ≥ 1, got {concurrency}")
        super().__init__(queue, name=name)
        self.fn = fn
        self.annotator = annotator
        self.wait = wait
        self.errors: list[tuple[str, BaseException]] = []
        self.calls = 0
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, str] = {}  # escalation id -> content hash being asked

    async def submit(self, escalations: Sequence[Escalation]) -> SubmitResult:
        res = await super().submit(escalations)
        changed = set(res.created) | set(res.updated)
        started = []
        for e in escalations:
            if e.id in changed and self._running.get(e.id) != e.content_hash():
                started.append(self._start(e))
        if self.wait and started:
            await asyncio.gather(*started, return_exceptions=True)
        return res

    def _start(self, e: Escalation) -> asyncio.Task[None]:
        self._running[e.id] = e.content_hash()
        task = asyncio.ensure_future(self._ask(e))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _ask(self, e: Escalation) -> None:
        try:
            async with self._sem:
                self.calls += 1
                out = await self.fn(e)
            if out is None:
                return
            if isinstance(out, str):
                ans = Answer(escalation_id=e.id, option=out, version=e.version, annotator=self.annotator)
            elif isinstance(out, Answer):
                ans = out
            else:
                raise FeedbackError(
                    f"callback returned {type(out).__name__} for {e.id}",
                    hint="return an option id (str), an Answer, or None",
                )
            await self.receive(ans)
        except Exception as exc:  # the callback is user code: keep the error, keep the escalation pending
            log.warning("callback for escalation %s failed: %s", e.id, exc)
            self.errors.append((e.id, exc))
        finally:
            if self._running.get(e.id) == e.content_hash():
                self._running.pop(e.id, None)

    async def join(self) -> None:
        """Wait until every callback started so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await super().aclose()

"""Single flight: concurrent calls for one key share one computation.

The compute service (`steerkit._compute`) runs one search per example-set key however many
requests miss on it at once (a stampede of misses must not start a search each); a primitive of
its own, since it knows nothing of stores or searches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("steerkit.store")  # where these messages were logged before

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent calls for one key share one computation.

    ``await sf.do(key, fn)`` starts ``fn()`` for the first caller and makes later callers for the
    same key wait on the same task; the result (or exception) goes to all of them, then the key
    is free again. A waiter being cancelled never cancels the shared computation.
    ``sf.start(key, fn)`` starts (or joins) it without waiting (background misses).
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def start(self, key: str, fn: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())  # type: ignore[arg-type]
            self._tasks[key] = task

            def _done(t: asyncio.Task[T], key: str = key) -> None:
                if self._tasks.get(key) is t:
                    del self._tasks[key]
                if not t.cancelled() and t.exception() is not None:
                    log.debug("single-flight %s failed: %r", key, t.exception())

            task.add_done_callback(_done)
        return task

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await asyncio.shield(self.start(key, fn))

    def in_flight(self) -> list[str]:
        return list(self._tasks)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    async def cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001, S110 - cancelled or failed: both are fine here
                pass

"""Operation counts for the tests that a function's work grows linearly (no wall-clock time)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def line_events(fn: Callable[[], Any]) -> int:
    """Python line events executed by ``fn()``: an operation count, not a time, independent of the
    machine (a nested trace function, if one was set, is restored afterwards)."""
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(old)
    return count

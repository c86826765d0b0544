"""JSON from outside the process (a request body, a cache export line), parsed so that it can be
forwarded and stored: every bad input an `InvalidRequestError` with a clear message, never a
crash."""

from __future__ import annotations

import json
from typing import Any

from steerkit.errors import InvalidRequestError

__all__ = ["loads_strict"]

_DEEP_HINT = "send JSON nested at most a few hundred levels deep"


def loads_strict(raw: bytes | str, *, what: str = "the input") -> Any:
    """Parse ``raw``; `InvalidRequestError` for invalid JSON or UTF-8, nesting deeper than the
    parser allows, and lone UTF-16 surrogates (``"\\ud800"``), which no UTF-8 encoder can write
    back out."""
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidRequestError(f"{what} is nested too deeply to parse", hint=_DEEP_HINT) from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f'{what} contains a lone UTF-16 surrogate (e.g. "\\ud800"), which is not valid Unicode',
            hint="encode text as UTF-8, or escape characters outside the BMP as surrogate pairs",
        ) from None
    except RecursionError:
        raise InvalidRequestError(f"{what} is nested too deeply", hint=_DEEP_HINT) from None
    return value

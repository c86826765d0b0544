"""What may leave the process: credentials masked in text, header values made safe.

- `mask_credentials`: ``scheme://user:password@host`` → ``scheme://***@host`` and bearer tokens /
  ``api_key=`` values → ``***``, for log lines, notes and ``steerkit config show``;
- `header_value`: any text → a header value an ASGI server accepts (printable ASCII, no CR/LF or
  other control characters, bounded length).
"""

from __future__ import annotations

import re

__all__ = ["HEADER_VALUE_MAX", "header_value", "mask_credentials"]

#: The longest header value steerkit sends.
HEADER_VALUE_MAX = 200

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_TOKENS = re.compile(r"(?i)(bearer\s+|api[-_]?key[=:]\s*|token[=:]\s*|password[=:]\s*)[^\s&'\",;]+")
_UNSAFE = re.compile(r"[^\x20-\x7e]+")


def mask_credentials(text: str) -> str:
    """``text`` with URL user-info and token-like values replaced by ``***``."""
    return _TOKENS.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))


def header_value(text: str, limit: int = HEADER_VALUE_MAX) -> str:
    """``text`` as a safe header value: credentials masked, every run of control or non-ASCII
    characters (CR and LF included) replaced by one space, at most ``limit`` characters."""
    return _UNSAFE.sub(" ", mask_credentials(text)).strip()[:limit]

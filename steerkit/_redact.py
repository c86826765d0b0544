"""What may leave the process: credentials masked in text, header values made safe.

- `mask_credentials`: ``scheme://user:password@host`` → ``scheme://***@host``; labelled values
  (``Bearer …``, ``api_key=…``, ``"api_key": "…"``, ``Incorrect API key provided: …``, ``key=…``,
  ``token=…``, ``password=…``, ``secret=…``) → ``***``; bare keys of every shape `CacheKey` refuses
  (``sk-…``, ``sk-proj-…``, ``sk_…``, ``pk-…``, ``rk-…``, ``hf_…``, ``gsk_…``, ``xai-…``, ``key-…``) and
  a few more (GitHub, GitLab, Slack) → their prefix and ``***``. For log lines, errors, notes and
  ``steerkit config show``;
- every record of a ``steerkit.*`` logger is masked when it is made (a chained log-record factory,
  installed on import), so no log call can leak a key, whatever it formats — exception text
  included; every `SteerkitError` message is masked when it is raised;
- `header_value`: any text → a header value an ASGI server accepts (printable ASCII, no CR/LF or
  other control characters, bounded length).
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["HEADER_VALUE_MAX", "KEY_PREFIXES", "header_value", "mask_credentials"]

#: The longest header value steerkit sends.
HEADER_VALUE_MAX = 200

_URL_USERINFO = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}://)[^/\s@]*@")
_LABELLED = re.compile(
    r"""(?ix)
    (?=[abkprst])  # every label starts with one of these: a cheap first test at each position
    (   \bauthorization["']?\s{0,8}[=:]\s{0,8}["']?(?:basic\s{1,8}|bearer\s{1,8})?
    |   \b(?:x-)?api[-_\x20]?key(?:\s{1,8}provided)?["']?\s{0,8}[=:]\s{0,8}["']?
    |   (?<![a-z0-9_-])key["']?=["']?              # key=… (a query string); not SQL's "key = ?"
    |   (?<![a-z0-9_-])(?:access[-_]?|auth[-_]?|refresh[-_]?)?token["']?\s{0,8}[=:]\s{0,8}["']?
    |   \b(?:password|passwd|(?:client[-_]?)?secret)["']?\s{0,8}[=:]\s{0,8}["']?
    )
    ((?![<\[{(]|\*\*\*)[^\s&'",;]+)   # not a placeholder such as <key>, not already masked
    """
)
_BEARER = re.compile(r"(?i)(?=[b])\b(bearer\s{1,8})((?![<\[{(]|\*\*\*)[^\s&'\",;]+)")
"""First, so that a label before it ("API key provided: Bearer …") cannot hide it."""
KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "gsk_", "xai-", "key-")
"""Bare-key prefixes `CacheKey` refuses (``sk-`` covers ``sk-proj-`` and ``sk-ant-``); each is masked."""
_BARE_KEY = re.compile(
    r"(?i)(?=[ghkprsx])"  # every prefix starts with one of these: a cheap first test at each position
    r"(?:(?<![a-z0-9_])((?:sk|pk|rk)[-_]|hf_|gsk_|xai-|gh[pousr]_|github_pat_|glpat-|xox[abprs]-)[a-z0-9_*-]{3,}"
    r"|(?<![a-z0-9_-])(key-)[a-z0-9]{16,})"  # Mailgun-style key-<hex>; "key-value" is no key
)
_UNSAFE = re.compile(r"[^\x20-\x7e]+")


def _mask_labelled(m: re.Match[str]) -> str:
    label, value = m.group(1), m.group(2)
    if "=" not in label and ":" in label and value.isalpha() and len(value) < 12:
        return m.group(0)  # prose ("API key: send …"), not a value
    return label + "***"


def mask_credentials(text: str) -> str:
    """``text`` with URL user-info, labelled secrets and bare API keys replaced by ``***``."""
    text = _BEARER.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))
    text = _LABELLED.sub(_mask_labelled, text)
    return _BARE_KEY.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


def _is_ours(name: str) -> bool:
    return name == "steerkit" or name.startswith("steerkit.")


def _mask_record(record: logging.LogRecord) -> None:
    """Mask the record's formatted message, exception text and stack in place (only if they hold
    a credential, so records without one keep their ``msg`` and ``args`` for structured handlers)."""
    try:
        msg = record.getMessage()
    except Exception:  # noqa: BLE001 — a bad format string is logging's to report, not ours
        return
    masked = mask_credentials(msg)
    if masked != msg:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        if (masked := mask_credentials(text)) != text:
            record.exc_text = masked  # formatters use exc_text when it is set
    if record.stack_info:
        record.stack_info = mask_credentials(record.stack_info)


def _install_log_masking() -> None:
    """Chain a log-record factory that masks every ``steerkit.*`` record (idempotent). A factory,
    not a filter: a logger's filters do not see its children's records, and every module names its
    own logger."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_steerkit_masks", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _is_ours(record.name):
            _mask_record(record)
        return record

    factory._steerkit_masks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_log_masking()


def header_value(text: str, limit: int = HEADER_VALUE_MAX) -> str:
    """``text`` as a safe header value: credentials masked, every run of control or non-ASCII
    characters (CR and LF included) replaced by one space, at most ``limit`` characters."""
    return _UNSAFE.sub(" ", mask_credentials(text)).strip()[:limit]

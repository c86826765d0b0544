"""Is the proxy's upstream chat server up? One small state object the proxy consults.

`UpstreamHealth` remembers the last check of the upstream (``GET <base_url>/models``: any HTTP
answer below 500 means a server is there; a connection failure, a timeout or a 5xx means it is
not). The proxy checks at start-up, `/healthz` reports it, a failed upstream call marks it down,
and while it is down a chat request is answered 502 *before* steering, so an unreachable upstream
never starts a persona search that nobody will get an answer from. A down upstream is re-checked
at most every ``recheck_s`` seconds, so it comes back on its own, by one check at a time: under
many clients every request (and every ``/healthz`` probe) that finds the state stale waits for the
one check in flight instead of sending its own.

`public_url` is the upstream's address as it may be shown to clients and in logs: no user-info,
query or fragment (where credentials would hide).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["UpstreamHealth", "public_url"]


def public_url(url: str | None) -> str:
    """``url`` without credentials: user-info, query and fragment dropped.

    >>> public_url("https://user:secret@api.example.com:8443/v1?api_key=x")
    'https://api.example.com:8443/v1'
    """
    if not url:
        return "(none)"
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{p.port}" if p.port else "")
        return urlunsplit((p.scheme, netloc, p.path.rstrip("/"), "", ""))
    except ValueError:
        return "(an invalid URL)"


@dataclass
class UpstreamHealth:
    """The upstream's last known state (``ok`` None: not checked yet)."""

    url: str
    recheck_s: float = 2.0
    timeout_s: float = 3.0
    ok: bool | None = None
    error: str | None = None
    checked_at: float = 0.0
    _checking: asyncio.Future[bool] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def public_url(self) -> str:
        return public_url(self.url)

    def mark_down(self, error: str) -> None:
        self.ok, self.error, self.checked_at = False, error, time.monotonic()

    def stale(self) -> bool:
        return self.ok is None or time.monotonic() - self.checked_at >= self.recheck_s

    async def check(self, http: Any, headers: Any = None) -> bool:
        """``GET models`` on the upstream client ``http`` (an `httpx.AsyncClient` whose base URL
        is the upstream); records and returns whether a server answered."""
        import httpx

        try:
            resp = await http.get("models", headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as e:
            self.mark_down(f"unreachable ({type(e).__name__})")
            return False
        if resp.status_code >= 500:
            self.mark_down(f"answered {resp.status_code}")
            return False
        self.ok, self.error, self.checked_at = True, None, time.monotonic()
        return True

    async def refresh(self, http: Any, headers: Any = None) -> bool:
        """`check`, shared: while one is in flight, callers wait for its answer (a waiter that is
        cancelled does not cancel it)."""
        if self._checking is None:
            self._checking = asyncio.ensure_future(self.check(http, headers))
            self._checking.add_done_callback(self._checked)
        return await asyncio.shield(self._checking)

    def _checked(self, fut: asyncio.Future[bool]) -> None:
        self._checking = None
        if not fut.cancelled():
            fut.exception()  # retrieved: check() records failures itself

    async def usable(self, http: Any, headers: Any = None) -> bool:
        """False while the upstream is known down (re-checked at most every ``recheck_s``, one
        check at a time)."""
        if self.ok is False and self.stale():
            await self.refresh(http, headers)
        return self.ok is not False

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.public_url, "ok": self.ok, "error": self.error}

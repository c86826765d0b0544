"""A disk cache in front of any scoring call, so evaluation re-runs repeat no model work.

`CachedBackend` wraps a `LogprobBackend`: every prompt's `LabelScore` is kept in a diskcache
(SQLite, safe across processes and after a kill: each entry is committed as soon as it is scored),
keyed by the backend kind, the model and the prompt. A re-run of an evaluation (more conditions, a
different report, or after Ctrl-C) replays the scored prompts from disk and sends only new ones.
Deterministic searches (`steerkit.icm.search` with a seed) replay the same proposals, so they too
resume from the cache.

`ScoreCache.get_json/set_json` keep other scored results (chat predictions) under the same rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steerkit.backends.base import BackendStats, LabelScore, LogprobBackend
from steerkit.errors import StoreError

__all__ = ["CachedBackend", "ScoreCache", "Usage"]


@dataclass
class Usage:
    """What the scoring cost: prompts asked for, served from the disk cache, sent to the model."""

    requested: int = 0
    cache_hits: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    """Prompt tokens sent to the model (cache hits cost none)."""
    evaluated_tokens: int | None = 0
    """Prompt tokens the engine evaluated after its own prompt cache (None when unknown)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScoreCache:
    """A diskcache folder of scored prompts; one per evaluation cache directory."""

    def __init__(self, directory: str | Path) -> None:
        import diskcache

        self.directory = Path(directory).expanduser()
        try:
            self._cache = diskcache.Cache(str(self.directory))
        except Exception as e:  # sqlite/OS errors
            raise StoreError(f"cannot open the score cache at {self.directory}: {e}",
                             hint="pass a writable --cache-dir") from e

    @staticmethod
    def key(*parts: Any) -> str:
        data = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(data.encode("utf-8")).hexdigest()

    def get_json(self, key: str) -> Any | None:
        return self._cache.get(key)

    def set_json(self, key: str, value: Any) -> None:
        self._cache.set(key, value)

    def close(self) -> None:
        self._cache.close()


class CachedBackend:
    """A `LogprobBackend` that serves known prompts from a `ScoreCache` and scores the rest with
    ``backend`` (in one ``score`` call per batch, so the backend still batches and caches prefixes).

    ``identity`` distinguishes models that share a name (default: the backend kind and model).
    """

    def __init__(self, backend: LogprobBackend, cache: ScoreCache, *, identity: str | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.name = backend.name
        self.model = backend.model
        self.identity = identity or f"{backend.name}:{backend.model}"
        self.stats = BackendStats()
        self.usage = Usage()

    def _key(self, prompt: str) -> str:
        return ScoreCache.key("score", self.identity, prompt)

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        keys = [self._key(p) for p in prompts]
        out: list[LabelScore | None] = []
        missing: dict[str, int] = {}
        for k in keys:
            hit = self.cache.get_json(k)
            self.usage.requested += 1
            if hit is not None:
                self.usage.cache_hits += 1
                out.append(LabelScore(**hit))
            else:
                out.append(None)
                missing.setdefault(k, len(missing))
        if missing:
            todo = [prompts[keys.index(k)] for k in missing]
            scores = await self.backend.score(todo)
            for k, s in zip(missing, scores):
                self.cache.set_json(k, {"p_true": s.p_true, "p_false": s.p_false, "prompt_tokens": s.prompt_tokens,
                                        "cached_tokens": s.cached_tokens, "source": s.source})
                self.usage.model_calls += 1
                self.usage.prompt_tokens += s.prompt_tokens
                if s.cached_tokens is None or self.usage.evaluated_tokens is None:
                    self.usage.evaluated_tokens = None
                else:
                    self.usage.evaluated_tokens += max(0, s.prompt_tokens - s.cached_tokens)
                self.stats.record(s.prompt_tokens, s.cached_tokens)
            for n, k in enumerate(keys):
                if out[n] is None:
                    out[n] = scores[missing[k]]
        return [s for s in out if s is not None]

    async def aclose(self) -> None:
        return None  # the wrapped backend belongs to the caller

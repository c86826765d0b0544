"""Test doubles for steerkit users and its own tests.

`FakeScorer` is a *fake* LogprobBackend: it never runs a model. It is for testing search logic,
middleware plumbing and adapters without a model; tests of real scoring use the embedded model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from steerkit.backends.base import BackendStats, LabelScore


class FakeScorer:
    """A fake backend whose P(True) for a prompt is ``fn(prompt)``; counts calls like a real one.

    ``fn`` sees the whole rendered prompt (demonstrations + target), so a fake can plant a coherent
    structure for the search to recover, e.g. by reading the target's last "Claim:" line.
    """

    name = "fake"

    def __init__(self, fn: Callable[[str], float], *, model: str = "fake-scorer", delay: float = 0.0) -> None:
        self.fn = fn
        self.model = model
        self.delay = delay
        self.stats = BackendStats(cached_known=False)
        self.prompts: list[str] = []

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        out = []
        for p in prompts:
            if self.delay:
                await asyncio.sleep(self.delay)
            pt = min(max(float(self.fn(p)), 1e-6), 1 - 1e-6)
            self.prompts.append(p)
            self.stats.calls += 1
            n = len(p.split())
            self.stats.prompt_tokens += n
            out.append(LabelScore(p_true=pt * 0.9, p_false=(1 - pt) * 0.9, prompt_tokens=n))
        return out

    async def aclose(self) -> None:
        return None


def last_claim(prompt: str) -> str:
    """The text after the last "Claim:" in a rendered prompt (the target's claim)."""
    i = prompt.rfind("Claim:")
    if i < 0:
        return ""
    return prompt[i + len("Claim:") :].split("\n", 1)[0].strip()

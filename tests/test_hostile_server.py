"""The search backends against a hostile server (tests/hostile_server.py, on loopback): for each of
its behaviours an `OpenAIBackend` ends with a typed error naming the server, and a `RouterBackend`
with one hostile and one healthy replica fails over, never hangs (small read timeout and deadline,
an asyncio timeout as a safety net) and never returns or stores scores from invalid probabilities."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from hostile_server import BEHAVIOURS, P_FALSE, P_TRUE, HostileServer

from steerkit import ExampleSets, MemoryStore, PackRegistry, SearchConfig, SteerConfig
from steerkit.backends import OpenAIBackend, RetryPolicy
from steerkit.backends.router import RouterBackend
from steerkit.errors import BackendResponseError, BackendUnavailableError, SteerkitError

ASYNC = pytest.mark.asyncio(loop_scope="session")
EXPECTED = {"unavailable": BackendUnavailableError, "response": BackendResponseError}
MAX_RETRY_AFTER = 2.0
RETRY = RetryPolicy(max_retries=1, initial=0.01, max_wait=0.05, max_retry_after=MAX_RETRY_AFTER)
#: For a server that stalls or drips: small bounds, so the file runs in seconds (0.4 s per read,
#: 1 s per request). Every other server gets roomy ones, so a busy test machine cannot turn an
#: unusable answer into a timeout. Answers are capped at 1 MiB.
FAST_FAIL: dict[str, Any] = {"timeout": 0.4, "deadline": 1.0, "max_response_bytes": 1 << 20, "retry": RETRY}
ROOMY: dict[str, Any] = {**FAST_FAIL, "timeout": 10.0, "deadline": 20.0}
SAFETY_NET_S = 60  # far above what any behaviour needs: only a hang reaches it
CLAIM = "Claim: The capital of France is Paris.\nI think this claim is"


class WaitRecorder:
    """The backends' retry sleep, recording each wait instead of sleeping (asyncio.sleep(nan) may
    never return)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    def bounded(self) -> bool:
        return all(math.isfinite(w) and 0 <= w <= MAX_RETRY_AFTER for w in self.waits)


def backend_factory(waits: WaitRecorder, fast_fail: str = "") -> Callable[[str], OpenAIBackend]:
    """`OpenAIBackend`s with the sleep seam; the server at ``fast_fail`` gets the small time bounds."""
    return lambda url: OpenAIBackend(url, "hostile", top_logprobs=5, sleep=waits,
                                     **(FAST_FAIL if url == fast_fail else ROOMY))


def stalls(name: str) -> bool:
    return BEHAVIOURS[name][1] == "unavailable"


def healthy(score: Any) -> bool:
    return score.p_true == pytest.approx(P_TRUE) and score.p_false == pytest.approx(P_FALSE)


@pytest.fixture
async def elsewhere() -> Any:
    """Another origin: where the cross-origin redirect points; it must never be asked."""
    async with HostileServer("healthy") as server:
        yield server


@ASYNC
async def test_the_healthy_server_scores_and_is_asked_for_identity_encoding() -> None:
    async with HostileServer("healthy") as server, backend_factory(WaitRecorder())(server.base_url) as backend:
        [score] = await backend.score([CLAIM])
    assert healthy(score)
    assert server.headers[0]["accept-encoding"] == "identity"


@ASYNC
@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
async def test_openai_backend_ends_with_a_typed_error(name: str, elsewhere: HostileServer) -> None:
    expected = EXPECTED[BEHAVIOURS[name][1]]
    waits = WaitRecorder()
    async with HostileServer(name, elsewhere=elsewhere.base_url) as server:
        fast_fail = server.base_url if stalls(name) else ""
        async with backend_factory(waits, fast_fail)(server.base_url) as backend:
            async with asyncio.timeout(SAFETY_NET_S):
                with pytest.raises(SteerkitError) as info:
                    await backend.score([CLAIM])
    assert isinstance(info.value, expected), f"{type(info.value).__name__}: {info.value}"
    assert server.base_url in str(info.value)  # names the server
    assert waits.bounded(), waits.waits
    assert server.requests and all(h.get("accept-encoding") == "identity" for h in server.headers)
    assert elsewhere.requests == []  # no redirect followed


@ASYNC
@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
async def test_router_fails_over_to_the_healthy_replica(name: str, elsewhere: HostileServer) -> None:
    waits = WaitRecorder()
    async with HostileServer(name, elsewhere=elsewhere.base_url) as bad, HostileServer("healthy") as good:
        fast_fail = bad.base_url if stalls(name) else ""
        router = RouterBackend([bad.base_url, good.base_url], "hostile", backend_factory=backend_factory(waits, fast_fail))
        # prompts whose demonstrations prefer the hostile replica, and one that prefers the healthy one
        prompts = [p for p in (f"Claim: demo {i}.\n\n{CLAIM}" for i in range(64)) if router.order(p)[0].url == bad.base_url][:3]
        prompts.append(next(p for p in (f"Claim: other {i}.\n\n{CLAIM}" for i in range(64))
                            if router.order(p)[0].url == good.base_url))
        async with router:
            async with asyncio.timeout(SAFETY_NET_S):
                scores = await router.score(prompts)
    assert all(healthy(s) for s in scores), scores
    stats = router.endpoint_stats()
    assert stats[bad.base_url]["failures"] >= 1 and stats[bad.base_url]["up"] is False
    assert bad.base_url in stats[bad.base_url]["last_error"]
    assert stats[good.base_url]["failures"] == 0
    assert waits.bounded(), waits.waits
    assert elsewhere.requests == []


def _sets(backend: Any) -> ExampleSets:
    config = SteerConfig(max_pool_items=6, search=SearchConfig(mode="sparse", max_iterations=8, restarts=1))
    return ExampleSets(PackRegistry.default(), MemoryStore(), backend, config)


@ASYNC
async def test_a_search_against_impossible_logprobs_fails_typed_and_stores_nothing() -> None:
    async with HostileServer("logprob_positive") as server, backend_factory(WaitRecorder())(server.base_url) as backend:
        sets = _sets(backend)
        async with asyncio.timeout(SAFETY_NET_S):
            with pytest.raises(BackendResponseError, match="not a probability"):
                await sets.compute("polparty/democrat")
    assert await sets.get("polparty/democrat") is None


@ASYNC
async def test_a_search_over_a_router_fails_over_and_stores_a_valid_set() -> None:
    async with HostileServer("logprob_nan") as bad, HostileServer("healthy") as good:
        router = RouterBackend([bad.base_url, good.base_url], "hostile", backend_factory=backend_factory(WaitRecorder()))
        async with router:
            sets = _sets(router)
            async with asyncio.timeout(SAFETY_NET_S):
                es = await sets.compute("polparty/democrat")
    assert es.labels and router.endpoint_stats()[bad.base_url]["failures"] >= 1
    assert await sets.get("polparty/democrat") is not None

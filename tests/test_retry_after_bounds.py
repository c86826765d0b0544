"""The one retry policy (`steerkit.backends.RetryPolicy`, shared by the search backends and the
webhook adapter) bounds every wait: ``Retry-After``/``retry-after-ms`` that are NaN, infinite,
negative, huge or garbage never become ``asyncio.sleep(nan)`` or a sleep of centuries."""

from __future__ import annotations

import math
from types import SimpleNamespace

import httpx
import pytest
from escalation_helpers import hand_example_set, make_pool
from tenacity.wait import wait_fixed

from steerkit.adapters.webhook import WebhookAdapter
from steerkit.backends import RetryPolicy
from steerkit.backends.openai_compat import retry_after_seconds, wait_retry_after
from steerkit.escalation import build_escalation

ABSURD = [
    ("Retry-After", "nan"), ("Retry-After", "NaN"), ("Retry-After", "inf"), ("Retry-After", "-inf"),
    ("Retry-After", "-1"), ("Retry-After", "1e308"), ("Retry-After", "1e999"), ("Retry-After", "soon"),
    ("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"), ("Retry-After", "Mon, 99 Foo 0000 99:99:99 GMT"),
    ("retry-after-ms", "nan"), ("retry-after-ms", "inf"), ("retry-after-ms", "1e999"), ("retry-after-ms", "-5"),
]
CAP = 3.0
BACKOFF = 0.25


def _outcome(headers: dict[str, str]) -> SimpleNamespace:
    """A tenacity retry state whose last attempt failed with a response carrying ``headers``."""
    exc = SimpleNamespace(response=SimpleNamespace(headers=httpx.Headers(headers)))
    outcome = SimpleNamespace(exception=lambda: exc)
    return SimpleNamespace(outcome=outcome, attempt_number=1)


@pytest.mark.parametrize(("header", "value"), ABSURD)
def test_every_wait_is_finite_and_bounded(header: str, value: str) -> None:
    seconds = retry_after_seconds(_outcome({header: value}).outcome.exception())
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    wait = wait_retry_after(wait_fixed(BACKOFF), CAP)(_outcome({header: value}))  # type: ignore[arg-type]
    assert math.isfinite(wait) and BACKOFF <= wait <= CAP


def test_non_finite_values_fall_back_to_the_backoff_and_huge_ones_to_the_cap() -> None:
    wait = wait_retry_after(wait_fixed(BACKOFF), CAP)
    assert wait(_outcome({"Retry-After": "nan"})) == BACKOFF  # type: ignore[arg-type]
    assert wait(_outcome({"retry-after-ms": "inf", "Retry-After": "2"})) == 2.0  # type: ignore[arg-type]
    assert wait(_outcome({"Retry-After": "1e308"})) == CAP  # type: ignore[arg-type]


def test_a_retry_policy_of_non_finite_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="max_retry_after"):
        RetryPolicy(max_retry_after=math.inf)
    with pytest.raises(ValueError, match="initial"):
        RetryPolicy(initial=math.nan)


class _Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:  # no real sleeping: asyncio.sleep(nan) may never return
        self.waits.append(seconds)


@pytest.mark.parametrize(("header", "value"), [("Retry-After", "nan"), ("Retry-After", "inf"), ("retry-after-ms", "nan"),
                                               ("Retry-After", "1e308")])
async def test_the_webhook_adapter_waits_a_bounded_time(header: str, value: str) -> None:
    calls = 0

    def fake_receiver(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return httpx.Response(503, headers={header: value}, json={"error": "fake overload"})
        return httpx.Response(200, json={})

    adapter = WebhookAdapter("http://receiver.invalid/escalations", "s3cret-for-tests",
                             client=httpx.AsyncClient(transport=httpx.MockTransport(fake_receiver)),
                             retry=RetryPolicy(max_retries=3, initial=0.01, max_wait=0.05, max_retry_after=CAP))
    adapter._sleep = rec = _Recorder()
    es = hand_example_set(make_pool(1), {"q0": 0.4})
    await adapter.submit([build_escalation(es, "q0", policy="icm_confidence")])
    await adapter.aclose()
    assert calls == 3 and len(rec.waits) == 2
    assert all(math.isfinite(w) and 0 <= w <= CAP for w in rec.waits), rec.waits

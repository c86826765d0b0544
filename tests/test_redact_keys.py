"""No API key reaches a log line or an error message: every shape `CacheKey` refuses is masked,
through each logger steerkit writes to (ARCHITECTURE's logger names) and the real code paths that
log a failure."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fake_upstream import _completion
from pydantic import ValidationError

from steerkit import MemoryStore, OpenAIBackend, RetryPolicy, Settings
from steerkit._compute import ExampleSets
from steerkit._middleware import SteerConfig, Steerer
from steerkit._redact import KEY_PREFIXES, mask_credentials
from steerkit._singleflight import SingleFlight
from steerkit._store import CacheKey
from steerkit.errors import BackendError, BackendRequestError, BackendUnavailableError
from steerkit.models import SearchConfig
from steerkit.packs import PackRegistry
from steerkit.testing import FakeScorer, last_claim

BODY = "Zq9Xw7Vt5Rs3Pn1Ml8Kj6Hg4"
"""The secret part of every fake key below: if it shows anywhere, a key leaked."""

FAKE_KEYS = [
    f"sk-{BODY}",
    f"sk-proj-{BODY}",
    f"sk-ant-api03-{BODY}",
    f"sk_live_{BODY}",
    f"pk-{BODY}",
    f"rk-{BODY}",
    f"hf_{BODY}",
    f"gsk_{BODY}",
    f"xai-{BODY}",
    f"key-{BODY.lower()}0123456789",
    f"Bearer {BODY}",
    f"bearer\t{BODY}",
    f"api_key={BODY}",
    f"api-key={BODY}",
    f"APIKEY={BODY}",
]
"""Fake credentials, one per shape `CacheKey` refuses (none is a real key)."""

CONTEXTS = [
    "{}",
    "Incorrect API key provided: {}. You can find your API key at https://platform.example/account.",
    "Error code: 401 - {{'error': {{'message': 'Incorrect API key provided: {}', 'type': 'invalid_request_error'}}}}",
    "GET https://api.example/v1/models?key={}&alt=json",
    "key={}",
    'request failed with {{"api_key": "{}", "model": "m"}}',
    "Authorization: {}",
    "upstream said ({})",
]


def _leaks(text: str) -> bool:
    return BODY in text or BODY.lower() in text


@pytest.mark.parametrize("key", FAKE_KEYS)
def test_every_key_shape_cachekey_refuses_is_masked_in_every_context(key: str) -> None:
    with pytest.raises(ValidationError, match="credential"):
        CacheKey(persona_id=key, pool_hash="p", model="m", config_hash="c")
    for ctx in CONTEXTS:
        text = ctx.format(key)
        masked = mask_credentials(text)
        assert not _leaks(masked), (text, masked)
        assert mask_credentials(masked) == masked  # idempotent: masking twice changes nothing


def test_the_key_prefixes_are_the_ones_cachekey_refuses() -> None:
    for prefix in KEY_PREFIXES:
        with pytest.raises(ValidationError):
            CacheKey(persona_id=prefix + BODY, pool_hash="p", model="m", config_hash="c")
        assert mask_credentials(f"x {prefix}{BODY.lower()}0123456789 y") == f"x {prefix}*** y"


@pytest.mark.parametrize(
    "text",
    [
        "the key-value store is down",
        "risk-free desk_top task-force",
        "neither label token is among the top 5 next tokens; top tokens: ['A', 'B']",
        "search for country/japan finished in 1.2s (40 model calls)",
        "SELECT value FROM meta WHERE key = ?",
        "missing or invalid API key: send 'Authorization: Bearer <key>'",
        "WebhookAdapter needs a non-empty secret",
        "a 429 after 3 retries: RateLimitError",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask_credentials(text) == text


# --- every logger ---------------------------------------------------------------------------------

LOGGERS = [
    "steerkit",
    "steerkit.middleware",
    "steerkit.store",
    "steerkit.server",
    "steerkit.compute",
    "steerkit.compute.ray",
    "steerkit.extract",
    "steerkit.backends.openai",
    "steerkit.backends.router",
    "steerkit.adapters.webhook",
    "steerkit.adapters.label_studio",
    "steerkit.escalation",
    "steerkit.a_logger_added_later",
]


@pytest.mark.parametrize("name", LOGGERS)
def test_every_steerkit_logger_masks_messages_arguments_exceptions_and_stacks(name: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger(name)
    log.debug("upstream said: Incorrect API key provided: sk-proj-%s", BODY)
    log.info("retrying after %r", RuntimeError(f"key=sk-{BODY}"))
    log.warning(f"plain f-string: Bearer {BODY}")
    try:
        raise RuntimeError(f"Incorrect API key provided: hf_{BODY}")
    except RuntimeError:
        log.exception("search failed")
    log.error("with a stack", stack_info=True, extra={"note": "stack frames hold no keys"})
    assert len([r for r in caplog.records if r.name == name]) == 5
    assert not _leaks(caplog.text), caplog.text
    for r in caplog.records:
        assert not _leaks(r.getMessage())
    assert "search failed" in caplog.text and "RuntimeError: Incorrect API key provided: ***" in caplog.text


def test_other_libraries_records_are_untouched(caplog) -> None:
    """The masking is steerkit's: another logger's record keeps its msg and args as logged."""
    caplog.set_level(logging.INFO)
    logging.getLogger("someone.else").info("%s", f"sk-{BODY}")
    [r] = [r for r in caplog.records if r.name == "someone.else"]
    assert r.args == (f"sk-{BODY}",)


def test_records_without_a_key_keep_their_arguments(caplog) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("steerkit.compute").info("search for %s finished", "country/japan")
    [r] = [r for r in caplog.records if r.name == "steerkit.compute"]
    assert r.msg == "search for %s finished" and r.args == ("country/japan",)


# --- the real paths that log a failure -----------------------------------------------------------

SMALL = SearchConfig(max_iterations=6, num_seed=2, patience=3)
LEAKY = f"Incorrect API key provided: sk-proj-{BODY}. You can find your API key at https://platform.example"


class KeyLeakingFakeScorer(FakeScorer):
    """A fake backend whose every call fails with the server's message quoting the API key."""

    async def score(self, prompts: Any) -> Any:
        raise RuntimeError(LEAKY)


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


@pytest.mark.parametrize(("policy", "logger"), [("wait", "steerkit.middleware"), ("background", "steerkit.compute")])
async def test_a_failed_search_is_logged_masked(registry: PackRegistry, caplog, policy: str, logger: str) -> None:
    """``wait``: the middleware logs the failure; ``background``: the compute layer does."""
    caplog.set_level(logging.DEBUG, logger="steerkit")
    st = Steerer(registry, MemoryStore(), KeyLeakingFakeScorer(lambda p: 0.5),
                 SteerConfig(search=SMALL, max_pool_items=10, k=6, miss_policy=policy))
    _, info = await st.prepare([{"role": "user", "content": "I'm a Democrat. Do you favor raising the minimum wage?"}])
    await st.example_sets.drain()
    if policy == "wait":
        assert info.reason == "search_failed"
        assert not _leaks(info.note or "") and "Incorrect API key provided: ***" in (info.note or "")
    assert any(r.name == logger and "failed" in r.getMessage() for r in caplog.records), caplog.text
    assert "Incorrect API key provided" in caplog.text and not _leaks(caplog.text), caplog.text


async def test_a_failing_on_example_set_hook_is_logged_masked(registry: PackRegistry, caplog) -> None:
    caplog.set_level(logging.INFO, logger="steerkit")
    sets = ExampleSets(registry, MemoryStore(), FakeScorer(lambda p: 0.8 if "'Favor" in last_claim(p) else 0.35),
                       SteerConfig(search=SMALL, max_pool_items=10))

    async def hook(persona_id: str, es: Any) -> None:
        raise RuntimeError(f"webhook refused key=sk-{BODY}")

    sets.on_example_set.append(hook)
    assert await sets.compute("polparty/democrat") is not None
    [_r] = [r for r in caplog.records if r.name == "steerkit.compute" and r.exc_info]
    assert "key=***" in caplog.text and not _leaks(caplog.text), caplog.text


async def test_the_store_single_flight_logs_a_failure_masked(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="steerkit.store")
    sf: SingleFlight[None] = SingleFlight()

    async def fail() -> None:
        raise RuntimeError(LEAKY)

    with pytest.raises(RuntimeError):
        await sf.do("k", fail)
    await asyncio.sleep(0)  # the done-callback that logs runs on the next loop turn
    assert any(r.name == "steerkit.store" for r in caplog.records)
    assert not _leaks(caplog.text), caplog.text


class KeyLeakingFakeSteerer:
    """A fake steerer whose steering fails, first with a bare exception quoting an API key, then
    with a steerkit error quoting it."""

    def __init__(self) -> None:
        self.calls = 0

    async def prepare(self, messages: list[dict], options: Any = None) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError(LEAKY)
        raise BackendUnavailableError(f"search server down: {LEAKY}")


async def test_the_proxy_logs_its_upstream_and_steering_failures_masked(tmp_path, caplog) -> None:
    from steerkit._server import create_app

    caplog.set_level(logging.INFO, logger="steerkit")

    def upstream(request: httpx.Request) -> httpx.Response:  # a fake chat upstream
        if request.url.path.endswith("/chat/completions"):
            return httpx.Response(200, content=_completion(), headers={"content-type": "application/json"})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})

    settings = Settings.load(env={"XDG_CONFIG_HOME": str(tmp_path), "STEERKIT_CACHE_DIR": str(tmp_path / "c")},
                             overrides={"server": {"on_steer_error": "passthrough"}})
    app = create_app(settings, steerer=KeyLeakingFakeSteerer(),  # type: ignore[arg-type]
                     upstream_base_url=f"http://upstream.invalid/v1?key=sk-{BODY}",
                     transport=httpx.MockTransport(upstream))
    await app.startup()
    chat = {"model": "m", "messages": [{"role": "user", "content": "As a Democrat, hi"}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://proxy") as h:
            internal = await h.post("/v1/chat/completions", json=chat)  # a bare exception: 500, logged with its traceback
            passed = await h.post("/v1/chat/completions", json=chat)  # a steerkit error: forwarded unsteered
        assert internal.status_code == 500 and passed.status_code == 200
        for r in (internal, passed):
            assert not _leaks(r.text) and not _leaks(str(r.headers))
    finally:
        await app.shutdown()
    server = [r.getMessage() for r in caplog.records if r.name == "steerkit.server"]
    for what in ("internal error", "steering failed", "upstream"):
        assert any(what in m for m in server), (what, server)
    assert "Incorrect API key provided: ***" in caplog.text and not _leaks(caplog.text), caplog.text


async def test_backend_errors_and_retry_logging_are_masked(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="steerkit")
    calls = 0

    def server(request: httpx.Request) -> httpx.Response:  # a fake completions server
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, json={"error": {"message": f"slow down, sk-proj-{BODY}"}})
        return httpx.Response(401, json={"error": {"message": LEAKY, "type": "invalid_request_error",
                                                    "code": "invalid_api_key"}})

    async def no_sleep(seconds: float) -> None:
        pass

    b = OpenAIBackend("http://vllm.invalid/v1", "m", top_logprobs=5, transport=httpx.MockTransport(server),
                      retry=RetryPolicy(max_retries=2, initial=0.01), sleep=no_sleep)
    async with b:
        with pytest.raises(BackendError) as ei:
            await b.score(["Claim: x\nI think this claim is"])
    assert calls == 2 and any(r.name == "steerkit.backends.openai" for r in caplog.records)  # the retry was logged
    assert "Incorrect API key provided" in str(ei.value) and not _leaks(str(ei.value)) and not _leaks(ei.value.message)
    logging.getLogger("steerkit.backends.openai").error("scoring failed: %s", ei.value)
    assert not _leaks(caplog.text), caplog.text


def test_every_steerkit_error_message_is_masked() -> None:
    e = BackendUnavailableError(f"the server at http://user:pw@gpu:8000 kept failing: {LEAKY}")
    assert not _leaks(str(e)) and not _leaks(e.message) and "pw@" not in str(e)
    assert "Incorrect API key provided: ***" in e.message


@pytest.mark.parametrize("key", FAKE_KEYS)
def test_a_rejected_requests_server_message_is_masked(key: str) -> None:
    """A server that echoes the key it was sent in its 4xx body: the error's `server_message` (read
    by callers and logged by apps) is masked like its message; numbers in it stay readable."""
    text = f"Incorrect API key provided: {key}. top_logprobs must be at most 20"
    err = BackendRequestError(f"server said: {text}", status=401, server_message=text)
    assert not _leaks(err.server_message) and not _leaks(str(err))
    assert "at most 20" in err.server_message

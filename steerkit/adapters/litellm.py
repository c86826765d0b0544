"""Steering inside a LiteLLM proxy: a LiteLLM callback, so a LiteLLM user needs no second proxy.

In LiteLLM's ``config.yaml``::

    litellm_settings:
      callbacks: steerkit.adapters.litellm.proxy_handler_instance

The callback steers every chat request (``/chat/completions``) with the same `Steerer`, the same
request options and the same limits as ``steerkit serve``: the ``steerkit`` option at the top level
of the body or in ``metadata`` (parsed by `steerkit._wire`, removed before the call goes upstream),
``X-Steerkit-*`` response headers describing the `SteerInfo` (streaming too), the operator's miss
policy, ``k`` and search limits that a request can only narrow. The `SteerInfo` is also kept in the
request's LiteLLM metadata (``steerkit_info``), where LiteLLM's logging callbacks see it.

``proxy_handler_instance`` reads steerkit's `Settings` (``$STEERKIT_CONFIG``, ``STEERKIT_*``
variables, ``~/.config/steerkit/config.toml``) when LiteLLM loads the config, and opens the cache
and search backend in LiteLLM's event loop. To steer with a `Steerer` of your own, put a file next
to ``config.yaml`` that makes one and name it there instead::

    from steerkit.adapters.litellm import litellm_callback
    proxy_handler_instance = litellm_callback(steerer=my_steerer)

LiteLLM is imported only when the callback is made (it runs inside LiteLLM's process), never by
``import steerkit``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from steerkit._config import Settings
from steerkit._redact import mask_credentials
from steerkit._wire import WireError, record_usage, split_request, steer_headers
from steerkit.errors import SteerkitError, UserError

if TYPE_CHECKING:
    from steerkit._config import SteerOptions
    from steerkit._middleware import Steerer

__all__ = ["LiteLLMSteering", "SteeringRejected", "litellm_callback"]

log = logging.getLogger("steerkit.adapters.litellm")

#: LiteLLM's call types of a chat request (the proxy's route type, and the SDK's).
CHAT_CALL_TYPES = frozenset({"acompletion", "completion"})
#: The metadata key where the request's `SteerInfo` (as JSON) and its headers are kept.
INFO_KEY = "steerkit_info"
_HEADERS_KEY = "steerkit_headers"


class SteeringRejected(Exception):
    """What the LiteLLM callback turns into an HTTP error: ``status`` and an OpenAI-style ``code``."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _buckets(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """LiteLLM's metadata dicts of a request: ``metadata`` (chat routes) and ``litellm_metadata``."""
    return [data[k] for k in ("litellm_metadata", "metadata") if isinstance(data.get(k), dict)]


class LiteLLMSteering:
    """What the LiteLLM callback does, free of LiteLLM's types (tested without LiteLLM).

    ``steerer``: the `Steerer` to use; None builds one from ``settings`` (default `Settings.load()`)
    on first use, as ``steerkit serve`` does. ``on_steer_error`` (default ``server.on_steer_error``):
    when steering fails on a backend error, answer 502 (``fail``) or forward unsteered
    (``passthrough``).
    """

    def __init__(self, steerer: Steerer | None = None, *, settings: Settings | None = None,
                 on_steer_error: str | None = None) -> None:
        self.settings = settings if settings is not None or steerer is not None else Settings.load()
        self.on_steer_error = on_steer_error or (self.settings.server.on_steer_error if self.settings else "fail")
        self._steerer = steerer
        self._runtime: Any = None
        self._opening: asyncio.Task[Steerer] | None = None

    async def steerer(self) -> Steerer:
        """The steerer, opened from the settings on first use (one opening however many ask)."""
        if self._steerer is not None:
            return self._steerer
        opening = self._opening
        if opening is None or opening.cancelled() or opening.get_loop() is not asyncio.get_running_loop():
            self._opening = asyncio.ensure_future(self._open())  # (a start-up task of a loop now gone: anew)
        try:
            return await asyncio.shield(self._opening)
        except BaseException:
            if self._opening.done():
                self._opening = None  # a failed opening is retried by the next request
            raise

    async def _open(self) -> Steerer:
        from steerkit._runtime import Runtime

        assert self.settings is not None
        self._runtime = await Runtime.open(self.settings, chat=False)
        self._steerer = self._runtime.steerer
        log.info("steerkit steering in LiteLLM ready (cache %s)", self.settings.examples_dir)
        return self._steerer  # type: ignore[return-value]

    def start(self) -> None:
        """Begin opening the steerer now when an event loop runs (LiteLLM's start-up), so the first
        request does not wait for it; otherwise the first request opens it."""
        if self._steerer is None and self._opening is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._opening = loop.create_task(self._open())
            self._opening.add_done_callback(_log_failure)

    async def pre_call(self, data: dict[str, Any], call_type: str) -> dict[str, Any]:
        """Steer a chat request's ``data`` in place (LiteLLM's ``async_pre_call_hook``): pop the
        ``steerkit`` option, steer ``messages``, keep the `SteerInfo` and its headers in the
        request's metadata. `SteeringRejected` for a request to refuse."""
        if call_type not in CHAT_CALL_TYPES or not isinstance(data.get("messages"), list):
            return data
        try:
            options = pop_options(data)
        except WireError as e:
            raise SteeringRejected(400, e.message, e.code, e.param) from None
        steerer = await self.steerer()
        try:
            messages, info = await steerer.prepare(data["messages"], options)
        except UserError as e:
            raise SteeringRejected(400, e.message, "steering_rejected") from None
        except SteerkitError as e:
            detail = mask_credentials(str(e))  # the log gets details, the client a stable code
            if self.on_steer_error == "fail":
                log.error("steering failed: %s: %s", type(e).__name__, detail)
                raise SteeringRejected(502, "steering failed (see the proxy's log)", "steering_failed") from None
            log.warning("steering failed, forwarding unsteered: %s: %s", type(e).__name__, detail)
            self._keep(data, None, {"X-Steerkit-Error": type(e).__name__, "X-Steerkit-Note": "steering_failed"})
            return data
        data["messages"] = messages
        self._keep(data, info.model_dump(mode="json"), steer_headers(info))
        return data

    @staticmethod
    def _keep(data: dict[str, Any], info: dict[str, Any] | None, headers: dict[str, str]) -> None:
        buckets = _buckets(data)
        if not buckets:
            data["metadata"] = {}
            buckets = [data["metadata"]]
        for b in buckets:
            b[_HEADERS_KEY] = headers
            if info is not None:
                b[INFO_KEY] = info

    @staticmethod
    def response_headers(data: Mapping[str, Any]) -> dict[str, str] | None:
        """The ``X-Steerkit-*`` headers of a request steered by `pre_call` (None if it was not)."""
        for b in _buckets(data):
            headers = b.get(_HEADERS_KEY)
            if isinstance(headers, dict):
                return dict(headers)
        return None

    async def on_success(self, data: Mapping[str, Any], response: Any) -> None:
        """Count the chat call and its prompt tokens, and put the headers in the response's
        ``additional_headers`` (for LiteLLM versions without the response-headers hook)."""
        headers = self.response_headers(data)
        if headers is None or self._steerer is None:
            return
        self._steerer.count_llm_call(None)
        usage = response.get("usage") if isinstance(response, Mapping) else getattr(response, "usage", None)
        record_usage(self._steerer, usage)
        hidden = getattr(response, "_hidden_params", None)
        if isinstance(hidden, dict):
            extra = hidden.get("additional_headers")
            hidden["additional_headers"] = {**(extra if isinstance(extra, dict) else {}), **headers}

    async def aclose(self) -> None:
        """Close what `steerer` opened from the settings (a steerer passed in stays open)."""
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.aclose()
            self._steerer = None
            self._opening = None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        e = task.exception()
        log.error("steerkit could not open its steerer: %s: %s (requests retry)", type(e).__name__, mask_credentials(str(e)))


def pop_options(data: dict[str, Any]) -> SteerOptions:
    """Pop the ``steerkit`` option from a LiteLLM request (top level, ``metadata`` or
    ``litellm_metadata``), validated exactly as ``steerkit serve`` validates it."""
    probe: dict[str, Any] = {}
    if "steerkit" in data:
        probe["steerkit"] = data["steerkit"]
    holders = [b for b in _buckets(data) if "steerkit" in b]
    if holders:
        probe["metadata"] = {"steerkit": holders[0]["steerkit"]}
    options, _ = split_request(probe)
    data.pop("steerkit", None)
    for b in holders:
        b.pop("steerkit", None)
    return options


@functools.cache
def _callback_class() -> type:
    """The `CustomLogger` subclass, made on first use so LiteLLM is imported only inside LiteLLM.
    LiteLLM runs a hook only when the registered class itself defines it, so all are defined here."""
    from fastapi import HTTPException
    from litellm.integrations.custom_logger import CustomLogger

    class SteerkitCallback(CustomLogger):  # type: ignore[misc, valid-type]
        """steerkit's LiteLLM proxy callback (see `steerkit.adapters.litellm`)."""

        def __init__(self, steering: LiteLLMSteering) -> None:
            super().__init__()
            self.steering = steering

        async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> Any:
            try:
                return await self.steering.pre_call(data, str(call_type))
            except SteeringRejected as e:
                raise HTTPException(status_code=e.status, detail={"error": {
                    "message": e.message, "type": "invalid_request_error" if e.status < 500 else "upstream_error",
                    "code": e.code, "param": e.param}}) from None

        async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
            await self.steering.on_success(data, response)  # in place: the response is not replaced

        async def async_post_call_response_headers_hook(self, data: dict, user_api_key_dict: Any, response: Any,
                                                        request_headers: Any = None, **kwargs: Any) -> Any:
            return self.steering.response_headers(data)

    return SteerkitCallback


def litellm_callback(steerer: Steerer | None = None, *, settings: Settings | None = None,
                     on_steer_error: str | None = None) -> Any:
    """A LiteLLM callback (a ``CustomLogger``) steering with ``steerer``, or with a steerer built
    from ``settings`` (default `Settings.load()`); assign it to a module-level name that LiteLLM's
    ``callbacks`` setting names. Needs LiteLLM (``pip install 'litellm[proxy]'``)."""
    steering = LiteLLMSteering(steerer, settings=settings, on_steer_error=on_steer_error)
    callback = _callback_class()(steering)
    steering.start()
    return callback


def __getattr__(name: str) -> Any:  # PEP 562: the instance is made when LiteLLM asks for it
    if name == "proxy_handler_instance":
        callback = litellm_callback()
        globals()[name] = callback
        return callback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

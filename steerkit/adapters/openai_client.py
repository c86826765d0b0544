"""Drop-in steering for ``openai.AsyncOpenAI`` and a plain async function API for other clients.

    from openai import AsyncOpenAI
    from steerkit import Steerer
    from steerkit.adapters import steer

    client = steer(AsyncOpenAI(base_url=..., api_key=...), Steerer(backend=...))
    resp = await client.chat.completions.create(model="m", messages=[...])   # unchanged call
    resp.steerkit            # SteerInfo: personas, example-set version, cache hit/miss, …

Per-request control rides on arguments the SDK already has: ``extra_body={"steerkit": {...}}``
(or ``metadata={"steerkit": "<json>"}``) — ``{"enabled": false}``, ``{"persona": "country/japan"}``,
``{"k": 10}``, ``{"miss_policy": "wait"}``, ``{"mode": "predict"}``. The field is removed before
the request goes upstream. With ``stream=True`` the returned stream wrapper carries ``.steerkit``.
Everything else on the client (``models``, ``embeddings`` …) passes through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from steerkit._wire import parse_options, record_usage, split_sdk_kwargs
from steerkit._config import SteerOptions
from steerkit.errors import InvalidRequestError
from steerkit._middleware import Steerer, SteerInfo

__all__ = ["SteeredClient", "SteeredStream", "steer", "steered_chat"]

T = TypeVar("T")


def _attach(obj: Any, info: SteerInfo) -> None:
    """Set ``obj.steerkit`` without making it part of the object's serialised fields."""
    try:
        object.__setattr__(obj, "steerkit", info)
    except (AttributeError, TypeError):
        pass  # immutable / slotted result: the info is still returned by steered_chat


class SteeredStream:
    """Wraps the SDK's ``AsyncStream``: same iteration and context-manager use, plus
    ``.steerkit`` (the `SteerInfo`, available before the first chunk)."""

    def __init__(self, stream: Any, info: SteerInfo, steerer: Steerer) -> None:
        self._stream = stream
        self.steerkit = info
        self._steerer = steerer

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        async for chunk in self._stream:
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                record_usage(self._steerer, usage)
            yield chunk

    async def __aenter__(self) -> SteeredStream:
        enter = getattr(self._stream, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        close = getattr(self._stream, "close", None) or getattr(self._stream, "aclose", None)
        if close is not None:
            await close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _SteeredCompletions:
    def __init__(self, inner: Any, steerer: Steerer) -> None:
        self._inner = inner
        self._steerer = steerer

    async def _call(self, method: Callable[..., Awaitable[Any]], messages: Any, kwargs: dict[str, Any]) -> Any:
        if messages is None:
            raise InvalidRequestError("chat.completions.create() needs 'messages'")
        options, kw = split_sdk_kwargs(kwargs)
        steered, info = await self._steerer.prepare(list(messages), options)
        result = await method(messages=steered, **kw)
        self._steerer.count_llm_call(None)
        if kw.get("stream"):
            return SteeredStream(result, info, self._steerer)
        record_usage(self._steerer, getattr(result, "usage", None))
        _attach(result, info)
        return result

    async def create(self, *, messages: Any = None, **kwargs: Any) -> Any:
        return await self._call(self._inner.create, messages, kwargs)

    async def parse(self, *, messages: Any = None, **kwargs: Any) -> Any:
        return await self._call(self._inner.parse, messages, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _SteeredChat:
    def __init__(self, inner: Any, steerer: Steerer) -> None:
        self._inner = inner
        self.completions = _SteeredCompletions(inner.completions, steerer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SteeredClient:
    """An ``openai.AsyncOpenAI`` whose ``chat.completions.create``/``parse`` are steered.
    Every other attribute is the wrapped client's."""

    def __init__(self, client: Any, steerer: Steerer) -> None:
        if not hasattr(client, "chat") or not hasattr(client.chat, "completions"):
            raise InvalidRequestError(
                f"steer() needs an openai.AsyncOpenAI-like client, got {type(client).__name__}",
                hint="for other clients use steerkit.adapters.steered_chat(call, messages, steerer=...)",
            )
        self._client = client
        self.steerer = steerer
        self.chat = _SteeredChat(client.chat, steerer)

    @property
    def unsteered(self) -> Any:
        """The wrapped client itself."""
        return self._client

    def with_options(self, **kwargs: Any) -> SteeredClient:
        return SteeredClient(self._client.with_options(**kwargs), self.steerer)

    copy = with_options

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> SteeredClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def steer(client: Any, steerer: Steerer) -> SteeredClient:
    """Wrap an ``openai.AsyncOpenAI`` so its chat calls are steered by ``steerer``."""
    return SteeredClient(client, steerer)


async def steered_chat(
    call: Callable[..., Awaitable[T]],
    messages: Sequence[dict[str, Any]],
    *,
    steerer: Steerer,
    options: SteerOptions | dict[str, Any] | bool | None = None,
    **kwargs: Any,
) -> tuple[T, SteerInfo]:
    """Steer any async chat function: ``await call(messages=<steered>, **kwargs)``.

    Returns ``(result, info)``; the info is also attached to the result as ``.steerkit`` where
    the result allows it. ``options`` is a `SteerOptions`, its dict form, or False to disable.
    """
    opts = parse_options(options)
    steered, info = await steerer.prepare(list(messages), opts)
    result = await call(messages=steered, **kwargs)
    steerer.count_llm_call(None)
    record_usage(steerer, getattr(result, "usage", None) if not isinstance(result, dict) else result.get("usage"))
    if not isinstance(result, (dict, list, str, bytes, int, float)) and result is not None:
        _attach(result, info)
    return result, info

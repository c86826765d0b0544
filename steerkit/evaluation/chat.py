"""The chat-model seam of the generation task: the model that writes answers and the judge that
rates them are both any OpenAI-compatible chat server (vLLM, llama.cpp, OpenAI).

`ChatModel` is what the task calls: ``complete(messages, …) -> text``. `OpenAIChat` is the one
implementation over an ``openai.AsyncOpenAI`` client (its HTTP client, and so its transport, are the
caller's: tests pass an ``httpx.MockTransport``); it asks for JSON-schema output when a schema is
given and falls back to plain text, once and for good, on a server that rejects it. `CachedChat`
keeps every completion in the evaluation's disk cache (`steerkit._scorecache.ScoreCache`), so a
re-run, or one after a kill, repeats no model call. Fakes for tests implement ``complete``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from steerkit._scorecache import ScoreCache
from steerkit.errors import BackendError, BackendRequestError, BackendUnavailableError

__all__ = ["CachedChat", "ChatModel", "OpenAIChat"]

Messages = Sequence[dict[str, str]]


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: ``model`` names it; ``complete`` returns the reply's text."""

    model: str

    async def complete(self, messages: Messages, *, max_tokens: int, temperature: float = 0.0,
                       seed: int | None = None, json_schema: dict[str, Any] | None = None) -> str: ...


class OpenAIChat:
    """A chat model on an OpenAI-compatible server through ``client`` (an ``openai.AsyncOpenAI``).

    ``json_schema`` asks for structured output (``response_format`` of type ``json_schema``, which
    vLLM and llama.cpp's server honour); a server that answers it with HTTP 400 gets plain requests
    from then on (``structured`` becomes False). Server failures become `BackendError`s.
    """

    def __init__(self, client: Any, model: str, *, max_concurrency: int = 4, params: dict[str, Any] | None = None) -> None:
        self.client = client
        self.model = model
        self.params = dict(params or {})
        """Extra request fields every call sends (e.g. ``frequency_penalty``)."""
        self.structured: bool | None = None
        """None: not tried yet; False: the server rejected JSON-schema output."""
        self._sem = asyncio.Semaphore(max_concurrency)
        self._probe = asyncio.Lock()
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def identity(self) -> str:
        """What a cached completion is keyed by: the model and the extra request fields."""
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"chat:{self.model}" + (f"[{extra}]" if extra else "")

    async def complete(self, messages: Messages, *, max_tokens: int, temperature: float = 0.0,
                       seed: int | None = None, json_schema: dict[str, Any] | None = None) -> str:
        if json_schema is not None and self.structured is None:
            async with self._probe:  # one request finds out whether the server takes a JSON schema
                if self.structured is None:
                    return await self._call(messages, max_tokens, temperature, seed, json_schema)
        return await self._call(messages, max_tokens, temperature, seed, json_schema)

    async def _call(self, messages: Messages, max_tokens: int, temperature: float, seed: int | None,
                    json_schema: dict[str, Any] | None) -> str:
        import openai

        kwargs: dict[str, Any] = {**self.params, "model": self.model, "messages": list(messages),
                                  "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            kwargs["seed"] = seed
        if json_schema is not None and self.structured is not False:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "verdict", "strict": True, "schema": json_schema}}
        async with self._sem:
            try:
                try:
                    resp = await self.client.chat.completions.create(**kwargs)
                except openai.BadRequestError:
                    if "response_format" not in kwargs:
                        raise
                    self.structured = False  # ask in words only from now on
                    kwargs.pop("response_format")
                    resp = await self.client.chat.completions.create(**kwargs)
                else:
                    if "response_format" in kwargs:
                        self.structured = True
            except openai.APIConnectionError as e:
                raise BackendUnavailableError(f"chat model {self.model}: cannot reach the server ({type(e).__name__})") from e
            except openai.APIStatusError as e:
                raise BackendRequestError(f"chat model {self.model}: the server answered HTTP {e.status_code}",
                                          status=e.status_code, server_message=str(e.message)[:500]) from e
            except openai.OpenAIError as e:
                raise BackendError(f"chat model {self.model}: {type(e).__name__}: {e}") from e
        self.calls += 1
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        if not getattr(resp, "choices", None):
            raise BackendError(f"chat model {self.model}: the server returned no choices")
        return resp.choices[0].message.content or ""


class CachedChat:
    """``chat`` with every completion kept in ``cache``, keyed by ``identity`` (default: the chat's
    own ``identity``, else its model name), the messages and the sampling settings. A hit costs no
    call; ``calls`` and ``hits`` count both."""

    def __init__(self, chat: ChatModel, cache: ScoreCache, *, identity: str | None = None) -> None:
        self.chat = chat
        self.cache = cache
        self.model = chat.model
        self.identity = identity or getattr(chat, "identity", None) or f"chat:{chat.model}"
        self.calls = 0
        self.hits = 0

    async def complete(self, messages: Messages, *, max_tokens: int, temperature: float = 0.0,
                       seed: int | None = None, json_schema: dict[str, Any] | None = None) -> str:
        key = ScoreCache.key("chat-completion", self.identity, list(messages), max_tokens, temperature, seed, json_schema)
        hit = self.cache.get_json(key)
        if isinstance(hit, str):
            self.hits += 1
            return hit
        text = await self.chat.complete(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                        json_schema=json_schema)
        self.calls += 1
        self.cache.set_json(key, text)
        return text

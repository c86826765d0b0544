"""The chat model that writes answers and the judge that rates them, for the commands that judge
generated answers (``steerkit eval --task generation``, ``steerkit probe --generation``): both
opened over one runtime from the flags (``--judge-base-url``/``--judge-model``, else the chat
model judges itself: the toy default) and closed together."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from steerkit.errors import UserError

__all__ = ["JudgedChat", "judge_chat"]


def judge_chat(args: argparse.Namespace, rt: Any, writer: Any) -> tuple[Any, Any]:
    """(the judge's chat model, a client to close or None): ``--judge-base-url``/``--judge-model``,
    else the chat model itself (the toy default)."""
    import os

    import openai

    from steerkit.evaluation import OpenAIChat

    if not args.judge_base_url:
        if args.judge_model and args.judge_model != writer.model:
            return OpenAIChat(writer.client, args.judge_model), None
        return writer, None
    if not args.judge_model:
        raise UserError("--judge-base-url needs --judge-model (the judge's model name on that server)")
    key = os.environ.get("STEERKIT_JUDGE_API_KEY") or (
        rt.chat_api_key if args.judge_base_url.rstrip("/") == (rt.chat_base_url or "").rstrip("/") else None)
    client = openai.AsyncOpenAI(base_url=args.judge_base_url, api_key=key or "not-needed",
                                timeout=rt.settings.chat_model.timeout, max_retries=2)
    return OpenAIChat(client, args.judge_model), client


@dataclass
class JudgedChat:
    """``runtime`` (opened with the chat endpoint, and the search backend when asked for),
    ``writer`` (its chat model) and ``judge``; `aclose` closes their clients and the runtime."""

    runtime: Any
    writer: Any = None
    judge: Any = None
    clients: list[Any] = field(default_factory=list)

    @classmethod
    async def open(cls, args: argparse.Namespace, settings: Any, *, backend: bool = False) -> JudgedChat:
        """Open the runtime, the chat model and the judge; what opened is closed again if a later
        step fails (no chat endpoint configured: `UserError`)."""
        from steerkit._runtime import Runtime
        from steerkit.evaluation import OpenAIChat

        chat = cls(await Runtime.open(settings, backend=backend, steerer=False, chat=True))
        try:
            rt = chat.runtime
            rt.require_chat()
            client = rt.chat_client()
            chat.clients.append(client)
            chat.writer = OpenAIChat(client, rt.chat_model or "", params=rt.chat_defaults())
            chat.judge, judge_client = judge_chat(args, rt, chat.writer)
            if judge_client is not None:
                chat.clients.append(judge_client)
        except BaseException:
            await chat.aclose()
            raise
        return chat

    async def aclose(self) -> None:
        try:
            for c in self.clients:
                await c.close()
        finally:
            await self.runtime.aclose()

"""Adapters: chat-client wrappers (this module's lazy exports), the LiteLLM proxy callback
(``steerkit.adapters.litellm``) and human-feedback adapters (``steerkit.adapters.queue``,
``console``, ``callback``, ``webhook``)."""

from __future__ import annotations

from typing import Any

__all__ = ["SteeredClient", "SteeredStream", "steer", "steered_chat"]

_LAZY = {name: "steerkit.adapters.openai_client" for name in __all__}


def __getattr__(name: str) -> Any:  # PEP 562: import the openai wrapper only when used
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'steerkit.adapters' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)

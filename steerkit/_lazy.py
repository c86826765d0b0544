"""Exports imported on first use (PEP 562): a package whose parts pull in heavy dependencies
(openai, llama.cpp, numpy, Starlette) names them here, so ``import steerkit`` and a command's start
pay only for what they use (`benchmarks/cli_startup.py`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: an export (name → the module that defines it) is
    imported on first access and kept in ``namespace`` (the package's ``globals()``), so it costs
    one import, once."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__

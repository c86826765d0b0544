"""The hand-written vLLM-shaped chat responses of tests/fixtures/vllm_chat_*.json, by name
(``answer``, ``verdict``, ``preference``, ``malformed``, ``error_400``): each is
``{"status": …, "response": …}``, what a vLLM server answers /v1/chat/completions with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def vllm_chat(name: str) -> dict[str, Any]:
    """The fixture ``vllm_chat_<name>.json``."""
    return json.loads((FIXTURES / f"vllm_chat_{name}.json").read_text())

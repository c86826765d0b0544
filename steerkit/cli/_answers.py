"""A chat model's answer as the CLI shows it (``steerkit chat`` and ``steerkit demo``).

``complete_answer``: an answer that ends where a sentence ends (one cut by the token limit is
trimmed and says so). ``REAL_MODEL``: the one command line that runs the same flow on a real
model, shown beside the embedded (toy) models' answers.
"""

from __future__ import annotations

import re

__all__ = ["REAL_MODEL", "complete_answer"]

#: How to run the same flow on a real model (``{query}``: the user's message).
REAL_MODEL = ("steerkit chat \"{query}\" --search-base-url http://HOST:8000/v1 --search-model meta-llama/Llama-3.1-8B "
              "--chat-base-url http://HOST:8001/v1 --chat-model meta-llama/Llama-3.1-8B-Instruct")


def complete_answer(text: str, finish_reason: str | None, max_tokens: int | None) -> tuple[str, bool]:
    """An answer that ends where a sentence ends: one cut by the token limit (``finish_reason ==
    "length"``) is trimmed to its last full sentence and marked; returns (text, trimmed).

    >>> complete_answer("One. Two is cut mid", "length", 8)
    ('One. [trimmed: the answer hit --max-tokens 8]', True)
    >>> complete_answer("All done.", "stop", 8)
    ('All done.', False)
    """
    text = text.strip()
    if finish_reason != "length":
        return text, False
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    body = text[: ends[-1]] if ends else text + "…"
    return f"{body} [trimmed: the answer hit --max-tokens {max_tokens}]", True

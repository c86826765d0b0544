"""Reading completion responses: shared by the OpenAI-compatible and the embedded backend.

Both backends receive the same JSON (the embedded one gets llama.cpp's dict in-process): a
``choices[0].logprobs`` in llama.cpp's native ``content[]`` shape or vLLM's legacy
``tokens``/``token_logprobs``/``top_logprobs``/``text_offset`` lists, and a ``usage`` block.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from steerkit.backends.base import LabelScore, parse_top_logprobs, sum_label_probs
from steerkit.errors import BackendError, LabelTokensMissingError

_CONTEXT_RE = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|exceed_context|too many tokens|prompt is too long",
    re.IGNORECASE,
)


def is_context_overflow(message: str) -> bool:
    """Whether a server error message says the prompt does not fit the context window."""
    return bool(_CONTEXT_RE.search(message or ""))


def first_choice(data: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = data.get("choices") or []
    if not choices:
        raise BackendError(f"the server returned a completion without choices: {str(data)[:200]}")
    return choices[0]


def usage_of(data: Mapping[str, Any]) -> tuple[int, int | None]:
    """(prompt_tokens, cached_tokens or None when the server does not say)."""
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    if cached is None:
        timings = data.get("timings") or {}
        cached = timings.get("cache_n") if isinstance(timings, Mapping) else None
    return prompt_tokens, (int(cached) if cached is not None else None)


def top_of(data: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The first generated position's top logprobs, whatever the server's shape."""
    return parse_top_logprobs(first_choice(data).get("logprobs"))


def label_score(data: Mapping[str, Any]) -> tuple[LabelScore, list[tuple[str, float]]]:
    """The top-logprobs LabelScore of a completion (sides missing from the top-k are None)."""
    top = top_of(data)
    pt, pf = sum_label_probs(top)
    pre, cached = usage_of(data)
    return LabelScore(p_true=pt, p_false=pf, prompt_tokens=pre, cached_tokens=cached), top


def has_label(score: LabelScore, top: list[tuple[str, float]], *, top_k: int, fallback_flag: str | None) -> bool:
    """Whether a label token was in the top-k. When not, and the fallback is off (``fallback_flag``
    is None), raise `LabelTokensMissingError` rather than let a caller score it as 0."""
    if score.p_true is not None or score.p_false is not None:
        return True
    if fallback_flag is not None:
        raise LabelTokensMissingError(
            f"neither label token is among the top {top_k} next tokens and the fallback is off "
            f"({fallback_flag}=False); top tokens: {[t for t, _ in top[:5]]}"
        )
    return False


def with_fallback(first: LabelScore, p_true: float | None, p_false: float | None, source: str) -> LabelScore:
    """The top-k score's usage with probabilities from an explicit fallback scoring."""
    return dataclasses.replace(first, p_true=p_true, p_false=p_false, source=source)


def label_continuations(prompt: str) -> tuple[str, str]:
    """The label spellings that naturally continue ``prompt``: " True"/" False" after a word,
    "True"/"False" after trailing whitespace."""
    if prompt[-1:].isspace():
        return "True", "False"
    return " True", " False"


def sampled_token(data: Mapping[str, Any]) -> tuple[str, float] | None:
    """(token, logprob) of the first generated token, from either shape; None if absent."""
    lp = first_choice(data).get("logprobs") or {}
    content = lp.get("content")
    if content:
        first = content[0]
        if "token" in first and first.get("logprob") is not None:
            return str(first["token"]), float(first["logprob"])
        return None
    tokens, lps = lp.get("tokens") or [], lp.get("token_logprobs") or []
    if tokens and lps and lps[0] is not None:
        return str(tokens[0]), float(lps[0])
    return None


def forced_logprob(data: Mapping[str, Any], label: str, top: list[tuple[str, float]]) -> float | None:
    """The raw logprob of ``label`` from a request whose logit bias forced it as the next token.

    llama.cpp reports the sampled token's probability from the unbiased distribution, so forcing a
    label with ``logit_bias`` measures it exactly. Returns None when the server did not sample the
    label or reports a post-bias probability (detected: a token outside the top-k cannot be more
    probable than the least probable top-k entry).
    """
    got = sampled_token(data)
    if got is None or got[0] != label:
        return None
    tok_lp = got[1]
    if top and tok_lp > min(lp for _, lp in top) + 1e-3:
        return None
    return tok_lp


def echo_logprob(data: Mapping[str, Any], prompt: str, continuation: str) -> float | None:
    """Sum of the logprobs of the tokens spelling ``continuation`` after ``prompt`` in an echo reply.

    Needs the legacy shape with the prompt echoed (``tokens``, ``token_logprobs`` and ideally
    ``text_offset``). Returns None when the server did not echo the prompt (echo unsupported).
    Raises LabelTokensMissingError when a token straddles the prompt/continuation boundary, so the
    continuation cannot be isolated.
    """
    choice = first_choice(data)
    lp = choice.get("logprobs") or {}
    tokens = lp.get("tokens") or []
    lps = lp.get("token_logprobs") or []
    full = prompt + continuation
    text = choice.get("text") or ""
    if not tokens or len(tokens) != len(lps) or not text.startswith(full):
        return None
    offsets = lp.get("text_offset")
    if not offsets or len(offsets) != len(tokens):
        offsets, pos = [], 0
        for tok in tokens:
            offsets.append(pos)
            pos += len(tok)
    start, end = len(prompt), len(full)
    total, covered_to = 0.0, None
    for tok, off, tlp in zip(tokens, offsets, lps):
        tok_end = off + len(tok)
        if off < start < tok_end:
            raise LabelTokensMissingError(
                f"the server's tokenizer merges the label {continuation!r} with the end of the prompt; "
                "echo scoring cannot isolate it"
            )
        if start <= off < end:
            if tlp is None:
                return None
            total += float(tlp)
            covered_to = tok_end
    if covered_to is None or covered_to < end:
        return None
    return total


def prob(logprob: float | None) -> float | None:
    return None if logprob is None else math.exp(logprob)

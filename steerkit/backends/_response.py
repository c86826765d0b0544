"""Reading completion responses: shared by the OpenAI-compatible and the embedded backend.

Both backends receive the same JSON (the embedded one gets llama.cpp's dict in-process): a
``choices[0].logprobs`` in llama.cpp's native ``content[]`` shape or vLLM's legacy
``tokens``/``token_logprobs``/``top_logprobs``/``text_offset`` lists, and a ``usage`` block.

A server's answer is not trusted: `parse_completion` reads only a JSON object (no NaN, no infinite
or oversized numbers), and every reader here checks types, shapes and logprobs, raising
`BackendResponseError` (never a bare ``ValueError``/``TypeError``/``KeyError``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from steerkit.backends.base import (
    LabelScore,
    checked_logprob,
    parse_top_logprobs,
    sum_label_probs,
)
from steerkit.errors import BackendResponseError, LabelTokensMissingError

_CONTEXT_RE = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|exceed_context|too many tokens|prompt is too long",
    re.IGNORECASE,
)


def is_context_overflow(message: str) -> bool:
    """Whether a server error message says the prompt does not fit the context window."""
    return bool(_CONTEXT_RE.search(message or ""))


def _no_constant(name: str) -> Any:
    raise BackendResponseError(f"the answer holds {name}, which is not JSON (a NaN or infinite number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BackendResponseError(f"the answer holds the number {text[:40]}, too large for a float")
    return value


def parse_completion(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A completion answer's JSON object: a JSON content type, strict JSON (no ``NaN``/``Infinity``,
    no number that overflows), an object with a non-empty ``choices`` list of objects."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise BackendResponseError(f"the answer is {media or 'without a content type'}, not application/json: "
                                   f"{body[:80]!r}")
    try:
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, an int of too many digits
        raise BackendResponseError(f"the answer is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(data, dict):
        raise BackendResponseError(f"the answer is a JSON {type(data).__name__}, not an object")
    first_choice(data)
    return data


def first_choice(data: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not choices or not isinstance(choices, list):
        raise BackendResponseError(f"the server returned a completion without a list of choices: {str(data)[:200]}")
    if not isinstance(choices[0], Mapping):
        raise BackendResponseError(f"choices[0] is {type(choices[0]).__name__}, not an object")
    return choices[0]


def _count(value: object, what: str) -> int:
    """A token count: a non-negative integer (an integral float is accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BackendResponseError(f"{what} is {type(value).__name__}, not a number")
    if isinstance(value, float) and not value.is_integer():
        raise BackendResponseError(f"{what} is {value}, not a whole number")
    if not 0 <= value < 2**53:
        raise BackendResponseError(f"{what} is {value:.3g}, not a plausible token count")
    return int(value)


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BackendResponseError(f"{what} is {type(value).__name__}, not an object")
    return value


def usage_of(data: Mapping[str, Any]) -> tuple[int, int | None]:
    """(prompt_tokens, cached_tokens or None when the server does not say)."""
    usage = _mapping(data.get("usage"), "usage")
    prompt_tokens = _count(usage.get("prompt_tokens") or 0, "usage.prompt_tokens")
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    if cached is None:
        timings = data.get("timings") or {}
        cached = timings.get("cache_n") if isinstance(timings, Mapping) else None
    return prompt_tokens, (_count(cached, "cached tokens") if cached is not None else None)


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
    lp = _mapping(first_choice(data).get("logprobs"), "logprobs")
    content = lp.get("content")
    if content:
        first = content[0] if isinstance(content, list) else None
        if not isinstance(first, Mapping):
            raise BackendResponseError("logprobs.content is not a list of objects")
        if "token" in first and first.get("logprob") is not None:
            return str(first["token"]), checked_logprob(first["logprob"])
        return None
    tokens, lps = _list(lp.get("tokens"), "tokens"), _list(lp.get("token_logprobs"), "token_logprobs")
    if tokens and lps and lps[0] is not None:
        return str(tokens[0]), checked_logprob(lps[0])
    return None


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BackendResponseError(f"logprobs.{what} is {type(value).__name__}, not a list")
    return value


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
    lp = _mapping(choice.get("logprobs"), "logprobs")
    tokens = _list(lp.get("tokens"), "tokens")
    lps = _list(lp.get("token_logprobs"), "token_logprobs")
    full = prompt + continuation
    text = choice.get("text") or ""
    if not isinstance(text, str) or not all(isinstance(t, str) for t in tokens):
        raise BackendResponseError("an echoed text or token is not a string")
    if not tokens or len(tokens) != len(lps) or not text.startswith(full):
        return None
    offsets = _list(lp.get("text_offset"), "text_offset")
    if not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        raise BackendResponseError("logprobs.text_offset holds something other than whole numbers")
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
            total += checked_logprob(tlp)
            covered_to = tok_end
    if covered_to is None or covered_to < end:
        return None
    return total


def prob(logprob: float | None) -> float | None:
    return None if logprob is None else math.exp(logprob)

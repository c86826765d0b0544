"""The OpenAI wire format, in one place: used by the in-process client wrapper
(`steerkit.adapters.steer`) and by the proxy (`steerkit._server`).

- `parse_options`: a request's ``steerkit`` value (object, JSON string, bool) → `SteerOptions`;
- `split_request`: pop the ``steerkit`` field from a chat request body (top level, i.e. the SDK's
  ``extra_body``, or inside ``metadata``) → (options, the body to forward);
- `split_sdk_kwargs`: the same for the keyword arguments of ``chat.completions.create``;
- `parse_chat_body`: a raw HTTP request body → (options, body), every malformed part an
  `InvalidRequestError` carrying the OpenAI error ``code``/``param``;
- `steer_headers`: the ``X-Steerkit-*`` response headers describing a `SteerInfo` (``-Combined``:
  the combined personas that steered; ``-Answer-Confidence``: the steering sets' lowest answer
  confidence, below 0.60 near-ties; ``-Note``: a reason code, also why personas stated together
  were steered each by its own set);
- `record_usage`: count an upstream answer's prompt tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from steerkit._config import SteerOptions
from steerkit._json import loads_strict as _loads_strict
from steerkit._middleware import SteerInfo, validate_messages
from steerkit._redact import header_value
from steerkit.errors import InvalidRequestError

__all__ = [
    "WireError",
    "loads_strict",
    "parse_chat_body",
    "parse_options",
    "record_usage",
    "split_request",
    "split_sdk_kwargs",
    "steer_headers",
]


class WireError(InvalidRequestError):
    """A malformed chat request, with the OpenAI error ``code`` and ``param`` a proxy answers with."""

    def __init__(self, message: str, *, code: str, param: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.param = param


def parse_options(value: Any) -> SteerOptions:
    """Options from a dict, a JSON string, ``False`` (disable) or ``True``/None (defaults)."""
    if value is None or value is True:
        return SteerOptions()
    if value is False:
        return SteerOptions(enabled=False)
    if isinstance(value, SteerOptions):
        return value
    if isinstance(value, (str, bytes)):
        try:
            value = loads_strict(value, what="the 'steerkit' request field")
        except WireError:
            raise WireError(
                "the 'steerkit' request field is not valid JSON",
                code="invalid_steerkit_options",
                param="steerkit",
                hint='send an object, e.g. extra_body={"steerkit": {"persona": "polparty/democrat"}}',
            ) from None
    if not isinstance(value, Mapping):
        raise WireError(
            f"the 'steerkit' request field must be an object, got {type(value).__name__}",
            code="invalid_steerkit_options",
            param="steerkit",
            hint='e.g. extra_body={"steerkit": {"enabled": false}}',
        )
    try:
        return SteerOptions.model_validate(dict(value))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "steerkit"
        raise WireError(
            f"invalid steerkit option {loc!r}: {err['msg'].removeprefix('Value error, ')}",
            code="invalid_steerkit_options",
            param="steerkit",
            hint=f"allowed options: {', '.join(SteerOptions.model_fields)}",
        ) from None


def split_request(body: Mapping[str, Any]) -> tuple[SteerOptions, dict[str, Any]]:
    """Pop the ``steerkit`` field from a chat request body (top level, i.e. ``extra_body``, or
    inside ``metadata``) and return the options and the body to forward upstream."""
    if not isinstance(body, Mapping):
        raise WireError("the request body must be a JSON object", code="invalid_body")
    out = dict(body)
    raw = out.pop("steerkit", None)
    meta = out.get("metadata")
    if isinstance(meta, Mapping) and "steerkit" in meta:
        meta = dict(meta)
        meta_raw = meta.pop("steerkit")
        if raw is not None:
            raise WireError("steerkit options given twice (top level and metadata)", code="invalid_steerkit_options",
                            param="steerkit", hint="send them in one place")
        raw = meta_raw
        if meta:
            out["metadata"] = meta
        else:
            out.pop("metadata")
    return parse_options(raw), out


def split_sdk_kwargs(kwargs: Mapping[str, Any]) -> tuple[SteerOptions, dict[str, Any]]:
    """Pop steerkit options from ``extra_body`` / ``metadata`` of ``chat.completions.create``
    keyword arguments; returns the options and the keyword arguments to call the SDK with."""
    kw = dict(kwargs)
    body: dict[str, Any] = {}
    extra = kw.get("extra_body")
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise WireError("extra_body must be a dict", code="invalid_body", param="extra_body")
        if "steerkit" in extra:
            body["steerkit"] = extra["steerkit"]
    meta = kw.get("metadata")
    if isinstance(meta, Mapping) and "steerkit" in meta:
        body["metadata"] = meta
    options, rest = split_request(body)
    if extra is not None and "steerkit" in extra:
        extra = {k: v for k, v in extra.items() if k != "steerkit"}
        if extra:
            kw["extra_body"] = extra
        else:
            kw.pop("extra_body")
    if "metadata" in body:
        if "metadata" in rest:
            kw["metadata"] = rest["metadata"]
        else:
            kw.pop("metadata")
    return options, kw


def parse_chat_body(raw: bytes) -> tuple[SteerOptions, dict[str, Any]]:
    """A raw ``POST /v1/chat/completions`` body → (steering options, the body to forward)."""
    body = loads_strict(raw, what="the request body")
    if not isinstance(body, dict):
        raise WireError("the request body must be a JSON object", code="invalid_body")
    messages = body.get("messages")
    if isinstance(messages, list) and not messages:
        raise WireError("'messages' must be a non-empty array of message objects with a 'role'",
                        code="invalid_messages", param="messages")
    try:
        validate_messages(messages)
    except InvalidRequestError as e:
        raise WireError(e.message, code="invalid_messages", param="messages", hint=e.hint or None) from None
    return split_request(body)


def loads_strict(raw: bytes | str, *, what: str = "the input") -> Any:
    """`steerkit._json.loads_strict`, its errors as `WireError` (code ``invalid_json``)."""
    try:
        return _loads_strict(raw, what=what)
    except InvalidRequestError as e:
        raise WireError(e.message, code="invalid_json", hint=e.hint or None) from None


def steer_headers(info: SteerInfo) -> dict[str, str]:
    """The ``X-Steerkit-*`` headers describing what steering did: every value a safe header value
    (`header_value`); ``X-Steerkit-Note`` is the short, stable reason code (details are logged)."""
    out = {
        "X-Steerkit-Persona": header_value(",".join(m.persona_id for m in info.personas)),
        "X-Steerkit-Version": header_value(info.example_set_version or ""),
        "X-Steerkit-Cache": header_value(info.cache),
        "X-Steerkit-Added-Ms": f"{info.added_ms:.3f}",
    }
    if info.answer_confidence is not None:  # below 0.60 the answers shown rest on near-ties
        out["X-Steerkit-Answer-Confidence"] = f"{info.answer_confidence:.2f}"
    if info.combined:  # the combined personas whose own sets steered (X-Steerkit-Persona: those stated)
        out["X-Steerkit-Combined"] = header_value(",".join(info.combined))
    if info.reason or info.note:
        out["X-Steerkit-Note"] = header_value(info.reason or "unspecified")
    return out


def record_usage(steerer: Any, usage: Any) -> None:
    """Count the prompt tokens an upstream answer reports (an SDK object or a dict)."""
    n = getattr(usage, "prompt_tokens", None) if usage is not None else None
    if n is None and isinstance(usage, Mapping):
        n = usage.get("prompt_tokens")
    if isinstance(n, int):
        steerer.metrics.inc("prompt_tokens", n)

"""The one exception tree of steerkit.

Every error says what was wrong and what to do about it. Errors caused by the caller's input
(`UserError` branch) are kept apart from errors raised by a model server (`BackendError` branch),
as pydantic-ai does, so an app can tell "fix your request" from "retry later".
"""

from __future__ import annotations

from steerkit._redact import mask_credentials


class SteerkitError(Exception):
    """Root of every error steerkit raises on purpose. Its message is masked (`mask_credentials`):
    a server's "Incorrect API key provided: sk-…" never reaches a log, a note or a terminal."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = mask_credentials(message) if isinstance(message, str) else message
        if hint is not None:
            self.hint = hint
        super().__init__(f"{self.message}" + (f" ({self.hint})" if self.hint else ""))


# --- caller / configuration mistakes ------------------------------------------------------------


class UserError(SteerkitError):
    """The caller passed something invalid; fixing the input fixes it."""


class ConfigError(UserError):
    """Invalid configuration (file, environment variable or flag)."""

    hint = "check `steerkit config show` and the README's configuration section"


class InvalidPoolError(UserError):
    """An item pool or its consistency groups are malformed (empty pool, duplicate ids, bad group)."""


class PackError(UserError):
    """A persona pack file is malformed; the message names the file and the field."""


class DatasetImportError(UserError):
    """A dataset file given to an importer cannot be read as the format it claims to be."""


class UnknownPersonaError(UserError):
    """A persona id that no configured pack defines (text can never create a persona)."""


class InvalidRequestError(UserError):
    """A malformed chat request or steering option."""


class InvalidAnswerError(UserError):
    """A human answer that names an unknown escalation, an option the question lacks, or a stale version."""


# --- model servers ------------------------------------------------------------------------------


class BackendError(SteerkitError):
    """A model backend failed (server error, timeout, unusable response)."""


class BackendUnavailableError(BackendError):
    """The server could not be reached or kept failing after the retry budget."""

    hint = "check that the server is running and the base_url is right; retries were exhausted"


class BackendRequestError(BackendError):
    """The server rejected a request (an HTTP 4xx other than 404/429); retrying will not help."""

    def __init__(self, message: str, *, status: int | None = None, server_message: str = "",
                 hint: str | None = None) -> None:
        self.status = status
        #: The server's own error text, masked like every steerkit message (a server may echo the
        #: key it was sent: "Incorrect API key provided: sk-…").
        self.server_message = mask_credentials(server_message)
        super().__init__(message, hint=hint)


class BackendResponseError(BackendError):
    """A server answered with something that is not a usable completion: not JSON, the wrong shape,
    impossible logprobs (NaN, infinite, above 0), too large, compressed although asked not to be,
    or a redirect. The message names the server (never its credentials); a router fails over."""

    hint = "check that base_url points at an OpenAI-compatible completions server (vLLM, llama.cpp)"


class ModelNotFoundError(BackendError):
    """The model file or served model name does not exist."""


class LabelTokensMissingError(BackendError):
    """Neither label token was among the returned top logprobs, and no fallback could score them.

    Steerkit never turns this into a silent zero score.
    """

    hint = (
        "end the prompt so ' True'/' False' is a natural next token, raise top_logprobs, "
        "or use a server that supports echo scoring"
    )


class ContextOverflowError(BackendError):
    """A prompt is longer than the model's context window."""

    hint = "use a smaller item pool (split it into batches) or a model with a longer context"


# --- search / cache / feedback ------------------------------------------------------------------


class SearchError(SteerkitError):
    """The ICM search could not run (e.g. inconsistent fixed labels)."""


class CheckpointError(SearchError):
    """A search checkpoint is unreadable or belongs to a different pool/config."""

    hint = "delete the checkpoint file to start the search afresh"


class StoreError(SteerkitError):
    """The example-set cache could not be read or written."""


class StoreWriteError(StoreError):
    """A search finished but the cache could not store its result (full disk, read-only folder,
    corrupt database). ``example_set``: the result, kept in memory by the process that computed it."""

    def __init__(self, message: str, *, example_set: object, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.example_set = example_set


class FeedbackError(SteerkitError):
    """A feedback adapter failed to submit escalations or fetch answers."""


class FeedbackTargetMissingError(FeedbackError):
    """A project or task the feedback adapter relies on was deleted in the annotation tool
    (``kind``: ``project`` or ``task``; ``target_id``: its id there)."""

    def __init__(self, message: str, *, kind: str, target_id: object, hint: str | None = None) -> None:
        self.kind = kind
        self.target_id = target_id
        super().__init__(message, hint=hint)


class WebhookSignatureError(FeedbackError):
    """An inbound webhook request has a missing, malformed, expired or wrong HMAC signature."""

    hint = "sign the raw body as HMAC-SHA256(secret, timestamp + '.' + body) and send X-Steerkit-Timestamp/-Signature"


# --- warnings -----------------------------------------------------------------------------------


class SteerkitWarning(UserWarning):
    """Root of the warnings steerkit emits (filter them with ``warnings.filterwarnings``)."""


class CacheCorruptionWarning(SteerkitWarning):
    """A cache entry could not be read or failed its checksum; it was treated as a miss."""

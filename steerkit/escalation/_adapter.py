"""The seam between steerkit and people: the `FeedbackAdapter` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from steerkit.escalation._types import (
    Answer,
    Escalation,
    EscalationStatus,
    SubmitResult,
)

__all__ = ["FeedbackAdapter"]

# --- the adapter seam ---------------------------------------------------------------------------


@runtime_checkable
class FeedbackAdapter(Protocol):
    """Where escalations go and answers come from (an annotation queue, a person at a console, …).

    Contract every adapter keeps:

    - ``submit`` is an upsert by `Escalation.id`: re-submitting updates, never duplicates; an
      identical re-submit is a no-op. Escalations that already have an answer keep it.
    - ``receive`` (answers pushed by people or tools) validates with `validate_answer`, then records
      the answer durably before returning; an invalid answer raises `InvalidAnswerError` and changes
      nothing; a duplicate (same ``answer_id``) returns False and changes nothing.
    - ``answers`` (polled) lists the latest unacknowledged answer per escalation.
    - ``acknowledge`` marks answers as applied so they are not returned again.
    """

    name: str

    async def submit(self, escalations: Sequence[Escalation]) -> SubmitResult: ...

    async def receive(self, answer: Answer) -> bool: ...

    async def answers(self, *, persona_id: str | None = None) -> list[Answer]: ...

    async def acknowledge(self, answer_ids: Sequence[str]) -> None: ...

    async def escalations(
        self, *, persona_id: str | None = None, status: EscalationStatus | None = None
    ) -> list[Escalation]: ...

    async def aclose(self) -> None: ...

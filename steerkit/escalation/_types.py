"""Escalation value types: what goes to people (`Escalation`) and what comes back (`Answer`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steerkit.errors import InvalidAnswerError
from steerkit.models import stable_hash

__all__ = ["Answer", "Escalation", "EscalationOption", "EscalationStatus", "QuestionKind", "SubmitResult", "Suggestion",
           "validate_answer"]

EscalationStatus = Literal["pending", "answered", "applied"]
"""``pending``: no answer yet; ``answered``: an answer waits to be applied; ``applied``: its latest
answer was acknowledged (folded into an example set)."""

QuestionKind = Literal["exactly_one", "asymmetric", "keyed", "single"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- models -------------------------------------------------------------------------------------


class EscalationOption(BaseModel):
    """One answer a person can give. Choosing it sets ``true_items`` True and every other member of
    the question False."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    """Stable option id: the item id (exactly_one / asymmetric), the key (keyed), "none" (keyed,
    no candidate represents the persona), "true"/"false" (a single claim)."""
    text: str
    true_items: tuple[str, ...] = ()


class Suggestion(BaseModel):
    """What the model currently believes, shown to the person so they correct rather than start cold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    option: str | None
    """The option the current labels amount to (None when they match no single option)."""
    confidence: float = Field(ge=0.0, le=1.0)
    """The question's confidence: its least certain member's P(assigned label)."""
    labels: dict[str, bool] = Field(default_factory=dict)
    item_confidence: dict[str, float] = Field(default_factory=dict)
    model: str = ""
    source: str = "icm"


class Escalation(BaseModel):
    """A question about one persona sent to people. ``id`` is deterministic (see `escalation_id`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    persona_id: str
    persona_name: str
    dimension: str = ""
    pool_hash: str
    question_id: str
    """The consistency group id, or the item id of an item without a group."""
    kind: QuestionKind
    question: str
    """The question as shown to a person: "Which answer would most Democrats give to: …?"."""
    context: str = ""
    """Extra text shown with the question (the two responses of a preference pair, …)."""
    options: tuple[EscalationOption, ...]
    suggestion: Suggestion
    version: str
    """The example-set version this escalation was raised from; an answer must quote it."""
    policy: str = ""
    """The selection policy that picked the question ("icm_confidence", "answer_margin", "random", "active_learning")."""
    score: float = 0.0
    """The policy's score (lower = asked first): the confidence for ICM confidence/active learning, σ(margin) for the answer margin."""

    def option(self, option_id: str) -> EscalationOption:
        for o in self.options:
            if o.id == option_id:
                return o
        raise InvalidAnswerError(
            f"escalation {self.id!r} has no option {option_id!r}",
            hint=f"answer with one of {[o.id for o in self.options]}",
        )

    def item_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for o in self.options:
            for i in o.true_items:
                seen.setdefault(i, None)
        for i in self.suggestion.labels:
            seen.setdefault(i, None)
        return tuple(seen)

    def labels_for(self, option_id: str) -> dict[str, bool]:
        """The labels a person's choice of ``option_id`` means for every member of the question."""
        chosen = set(self.option(option_id).true_items)
        return {i: i in chosen for i in self.item_ids()}

    def content_hash(self) -> str:
        """Hash of everything a person sees plus the version (an update changes it)."""
        return stable_hash(self.model_dump(mode="json"))


class Answer(BaseModel):
    """A person's answer to one escalation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    escalation_id: str = Field(min_length=1)
    option: str = Field(min_length=1)
    version: str = Field(min_length=1)
    """The escalation version the person answered (copy `Escalation.version`); a mismatch is stale."""
    annotator: str | None = None
    adapter: str | None = None
    """Which adapter received it ("queue", "console", "callback", "webhook"); set by the adapter."""
    answered_at: datetime = Field(default_factory=_utcnow)
    comment: str | None = None
    answer_id: str = ""
    """Idempotency key. Defaults to a hash of (escalation, option, version, annotator, answered_at),
    so a redelivered answer is recognised as a duplicate. External tools should pass their own
    response id."""

    @model_validator(mode="after")
    def _default_id(self) -> Answer:
        if self.answered_at.tzinfo is None:  # a naive timestamp from a tool: read it as UTC
            object.__setattr__(self, "answered_at", self.answered_at.replace(tzinfo=timezone.utc))
        if not self.answer_id:
            object.__setattr__(
                self,
                "answer_id",
                "ans_"
                + stable_hash(
                    {
                        "e": self.escalation_id,
                        "o": self.option,
                        "v": self.version,
                        "a": self.annotator,
                        "t": self.answered_at.isoformat(),
                    }
                ),
            )
        return self


class SubmitResult(BaseModel):
    """What a submit did, per escalation id."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [*self.created, *self.updated, *self.unchanged]


def validate_answer(answer: Answer, escalation: Escalation | None) -> EscalationOption:
    """Raise `InvalidAnswerError` unless ``answer`` is a valid answer to ``escalation`` as it is now."""
    if escalation is None:
        raise InvalidAnswerError(
            f"unknown escalation id {answer.escalation_id!r}",
            hint="answer only escalations this adapter submitted (list them with `steerkit review --list`)",
        )
    if answer.escalation_id != escalation.id:
        raise InvalidAnswerError(f"answer names escalation {answer.escalation_id!r}, not {escalation.id!r}")
    opt = escalation.option(answer.option)
    if answer.version != escalation.version:
        raise InvalidAnswerError(
            f"stale answer to {escalation.id!r}: it answers version {answer.version!r}, the escalation is now "
            f"at version {escalation.version!r}",
            hint="the question was re-submitted with a new suggestion; fetch it again and answer the current version",
        )
    return opt

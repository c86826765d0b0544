"""Escalation to people: ask about the least certain questions, fold the answers back in.

This is section 6 of the seed paper ("collaborative coherence elicitation") as a product:

1. an ICM search labels a persona's pool (through the compute service, `Steerer.compute`);
2. a **selection policy** ranks the pool's *questions* (consistency groups; an item without a group
   is its own question) and picks the k least certain ones per round, under a per-persona budget;
3. each pick becomes an `Escalation` with a deterministic id (persona, pool hash, question), so a
   re-submit is an update, never a duplicate; the model's label and confidence travel with it as a
   suggestion;
4. a `FeedbackAdapter` (an annotation queue: `steerkit.adapters.queue`, `.console`, `.callback`,
   `.webhook`) carries escalations to people and `Answer` objects back; answers are validated on
   receipt (unknown id, option not in the question, stale version → `InvalidAnswerError`, nothing
   changes);
5. `collaborative_rerun` turns answers into fixed labels (``fixed_source="human"``), re-runs the
   search warm-started from the previous labels, records an audit trail in
   ``provenance.audit`` and switches the store to the new version atomically.

`Escalator` ties the pieces together and provides the middleware hooks: `Escalator.escalate` after
an offline precompute, and `Escalator.hook` / `Escalator.register` for
``Steerer.on_example_set`` (live traffic; never blocks a request).
"""
from __future__ import annotations

from steerkit._questions import questions
from steerkit.escalation._adapter import FeedbackAdapter
from steerkit.escalation._escalator import Escalator
from steerkit.escalation._policies import (
    ActiveLearningPolicy,
    AnswerMarginPolicy,
    ConfidencePolicy,
    RandomPolicy,
    SelectionPolicy,
    select_questions,
)
from steerkit.escalation._render import (
    answer_labels,
    build_escalation,
    escalation_id,
    question_confidence,
)
from steerkit.escalation._rerun import RerunResult, cache_key_for, collaborative_rerun
from steerkit.escalation._types import (
    Answer,
    Escalation,
    EscalationOption,
    EscalationStatus,
    QuestionKind,
    SubmitResult,
    Suggestion,
    validate_answer,
)

__all__ = [
    "Answer",
    "ActiveLearningPolicy",
    "AnswerMarginPolicy",
    "ConfidencePolicy",
    "Escalation",
    "EscalationOption",
    "EscalationStatus",
    "Escalator",
    "FeedbackAdapter",
    "QuestionKind",
    "RandomPolicy",
    "RerunResult",
    "SelectionPolicy",
    "SubmitResult",
    "Suggestion",
    "answer_labels",
    "build_escalation",
    "cache_key_for",
    "collaborative_rerun",
    "escalation_id",
    "question_confidence",
    "questions",
    "select_questions",
    "validate_answer",
]

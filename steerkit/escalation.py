"""Escalation to people: ask about the least certain questions, fold the answers back in.

This is section 6 of the seed paper ("collaborative coherence elicitation") as a product:

1. an ICM search labels a persona's pool (`steerkit.icm.search`);
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

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steerkit.errors import FeedbackError, InvalidAnswerError, SearchError
from steerkit.models import ExampleSet, Item, Label, Pool, SearchConfig, stable_hash

if TYPE_CHECKING:  # pragma: no cover
    from steerkit.backends.base import LogprobBackend
    from steerkit.evaluation import Predictor

__all__ = [
    "Answer",
    "ActiveLearningPolicy",
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

log = logging.getLogger("steerkit.escalation")

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
    """The selection policy that picked the question ("icm_confidence", "random", "active_learning")."""
    score: float = 0.0
    """The policy's score (lower = asked first): the confidence for ICM confidence/active learning."""

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


# --- questions of an example set ----------------------------------------------------------------


def questions(es: ExampleSet | Pool) -> list[tuple[str, tuple[str, ...]]]:
    """The pool's questions in pool order: (question id, member item ids).

    A consistency group is one question; an item without a group is a question of its own (its id
    is the item id).
    """
    out: list[tuple[str, tuple[str, ...]]] = [(g.id, tuple(g.item_ids)) for g in es.groups]
    grouped = {i for g in es.groups for i in g.item_ids}
    out.extend((it.id, (it.id,)) for it in es.items if it.id not in grouped)
    return out


def question_confidence(es: ExampleSet, question_id: str, members: Sequence[str] | None = None) -> float:
    """The search's confidence in a question: ``group_confidence`` or its least confident member."""
    if question_id in es.group_confidence:
        return float(es.group_confidence[question_id])
    if members is None:
        members = dict(questions(es)).get(question_id, ())
    confs = [es.labels[i].confidence for i in members if i in es.labels]
    if not confs:
        raise SearchError(f"question {question_id!r} has no labelled member in example set {es.version}")
    return float(min(confs))


def _is_fixed(es: ExampleSet, members: Sequence[str]) -> bool:
    return any(es.labels[i].source in ("human", "fixed") for i in members if i in es.labels)


def escalation_id(persona_id: str, pool_hash: str, question_id: str) -> str:
    """Deterministic escalation id: the same question of the same pool for the same persona always
    gets the same id, so re-submitting it is an update."""
    return "esc_" + stable_hash({"persona": persona_id, "pool": pool_hash, "question": question_id})


def _claim_text(it: Item) -> str:
    if it.kind == "preference":
        return f"{it.choice_1} > {it.choice_2}"
    return it.option or ""


def build_escalation(
    es: ExampleSet, question_id: str, *, policy: str = "", score: float | None = None
) -> Escalation:
    """The escalation for one question of ``es`` (the model's labels become the suggestion)."""
    qs = dict(questions(es))
    if question_id not in qs:
        raise InvalidAnswerError(
            f"example set {es.version} has no question {question_id!r}", hint="use a group id or an ungrouped item id"
        )
    members = qs[question_id]
    by_id = {it.id: it for it in es.items}
    items = [by_id[i] for i in members]
    group = next((g for g in es.groups if g.id == question_id), None)
    name = es.persona.name
    labels = {i: es.labels[i].value for i in members if i in es.labels}
    confs = {i: es.labels[i].confidence for i in members if i in es.labels}
    context = ""
    options: list[EscalationOption]
    if group is None:
        it = items[0]
        kind: QuestionKind = "single"
        if it.kind == "preference":
            question = f"Would {name} prefer the first response over the second? {it.question}"
            context = f"First: {it.choice_1}\n\nSecond: {it.choice_2}"
        else:
            question = f"Would most {name} answer this question with {it.option!r}? {it.question}"
        options = [
            EscalationOption(id="true", text="Yes", true_items=(it.id,)),
            EscalationOption(id="false", text="No", true_items=()),
        ]
    elif group.kind == "keyed":
        kind = "keyed"
        question = f"Which answer represents {name}? {items[0].question}"
        by_key: dict[str, list[Item]] = {}
        for it in items:
            by_key.setdefault(str(it.key), []).append(it)
        options = [
            EscalationOption(id=k, text=its[0].option or k, true_items=tuple(i.id for i in its))
            for k, its in by_key.items()
        ]
        options.append(EscalationOption(id="none", text="None of these", true_items=()))
    elif group.kind == "asymmetric":
        kind = "asymmetric"
        question = f"Which response would {name} prefer? {items[0].question}"
        a = items[0]
        context = f"Response 1: {a.choice_1}\n\nResponse 2: {a.choice_2}"
        options = [
            EscalationOption(
                id=it.id,
                text=("Response 1" if it.choice_1 == a.choice_1 else "Response 2") + f" ({_short(it.choice_1)})",
                true_items=(it.id,),
            )
            for it in items
        ]
    else:
        kind = "exactly_one"
        question = f"Which answer would most {name} give? {items[0].question}"
        options = [EscalationOption(id=it.id, text=_claim_text(it), true_items=(it.id,)) for it in items]
    suggested: str | None = None
    for o in options:
        want = {i: i in set(o.true_items) for i in members}
        if labels and all(labels.get(i) == v for i, v in want.items()):
            suggested = o.id
            break
    conf = question_confidence(es, question_id, members)
    return Escalation(
        id=escalation_id(es.persona.id, es.provenance.pool_hash, question_id),
        persona_id=es.persona.id,
        persona_name=name,
        dimension=es.persona.dimension,
        pool_hash=es.provenance.pool_hash,
        question_id=question_id,
        kind=kind,
        question=question,
        context=context,
        options=tuple(options),
        suggestion=Suggestion(
            option=suggested,
            confidence=min(max(conf, 0.0), 1.0),
            labels=labels,
            item_confidence=confs,
            model=es.provenance.model,
        ),
        version=es.version,
        policy=policy,
        score=conf if score is None else float(score),
    )


def _short(text: str | None, n: int = 60) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


# --- selection policies -------------------------------------------------------------------------


@runtime_checkable
class SelectionPolicy(Protocol):
    """Orders candidate questions; the first k are escalated. Lower score = ask first."""

    name: str

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]: ...


class ConfidencePolicy:
    """The paper's policy: the questions whose ICM confidence (mutual predictability) is lowest."""

    name = "icm_confidence"

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        qs = dict(questions(es))
        scored = [(q, question_confidence(es, q, qs[q])) for q in candidates]
        return sorted(scored, key=lambda t: (t[1], t[0]))


class RandomPolicy:
    """Baseline: arbitrary questions, in a seeded order (same seed + persona + pool ⇒ same picks)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        rng = random.Random(stable_hash({"seed": self.seed, "persona": es.persona.id, "pool": es.provenance.pool_hash}))
        order = sorted(candidates)
        rng.shuffle(order)
        n = max(len(order), 1)
        return [(q, i / n) for i, q in enumerate(order)]


class ActiveLearningPolicy:
    """Baseline: the questions where the *chat* model, prompted few-shot with the example set (minus
    the question itself), is least confident in its own prediction of the persona's answer.

    ``predictor`` is a `steerkit.evaluation.Predictor` (`ChatPredictor` for the chat model;
    `ClaimPredictor` for a logprob backend).
    """

    name = "active_learning"

    def __init__(self, predictor: Predictor, *, max_demos: int | None = None) -> None:
        self.predictor = predictor
        self.max_demos = max_demos

    async def rank(self, es: ExampleSet, candidates: Sequence[str]) -> list[tuple[str, float]]:
        from steerkit.evaluation import prediction_confidence

        qs = dict(questions(es))
        by_id = {it.id: it for it in es.items}

        async def one(q: str) -> tuple[str, float]:
            members = set(qs[q])
            demos = [(it, es.labels[it.id].value) for it in es.items if it.id not in members and it.id in es.labels]
            if self.max_demos is not None:
                demos = demos[: self.max_demos]
            probs = await self.predictor.predict(es.persona, demos, [by_id[i] for i in qs[q]])
            return q, prediction_confidence(probs, len(qs[q]))

        scored = await asyncio.gather(*(one(q) for q in candidates))
        return sorted(scored, key=lambda t: (t[1], t[0]))


async def select_questions(
    es: ExampleSet,
    policy: SelectionPolicy,
    k: int,
    *,
    exclude: Sequence[str] = (),
) -> list[tuple[str, float]]:
    """The k questions ``policy`` ranks first, skipping ``exclude`` and questions whose labels are
    already fixed by people (source "human"/"fixed")."""
    if k < 0:
        raise InvalidAnswerError(f"k must be ≥ 0, got {k}")
    skip = set(exclude)
    cands = [q for q, members in questions(es) if q not in skip and not _is_fixed(es, members)]
    if k == 0 or not cands:
        return []
    return (await policy.rank(es, cands))[:k]


# --- answers → labels → re-run ------------------------------------------------------------------


def answer_labels(es: ExampleSet | Pool, answer: Answer) -> tuple[str, dict[str, bool], Escalation | None]:
    """(question id, labels) an answer means for ``es``'s pool; `InvalidAnswerError` if it does not
    belong to this pool or names an option the question lacks."""
    if isinstance(es, ExampleSet):
        persona_id, pool_hash = es.persona.id, es.provenance.pool_hash
    else:
        persona_id, pool_hash = es.persona.id, es.content_hash()
    for q, members in questions(es):
        if escalation_id(persona_id, pool_hash, q) == answer.escalation_id:
            if isinstance(es, ExampleSet):
                esc = build_escalation(es, q)
                return q, esc.labels_for(answer.option), esc
            raise InvalidAnswerError("pass an ExampleSet to map answers to labels")
    raise InvalidAnswerError(
        f"answer {answer.answer_id!r} is for escalation {answer.escalation_id!r}, which was not raised from "
        f"this example set's pool (persona {persona_id!r}, pool {pool_hash})",
        hint="pass only the answers for this persona and pool (Escalator.apply filters them for you)",
    )


class RerunResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    example_set: ExampleSet
    parent_version: str
    version: str
    applied: list[str] = Field(default_factory=list)
    """Answer ids folded into this version."""
    human_labels: dict[str, bool] = Field(default_factory=dict)
    """Every label fixed by people in this version (new and carried over)."""
    stored: bool = False


def cache_key_for(es: ExampleSet) -> Any:
    """The store's `CacheKey` for an example set's slot (persona, pool, model, config, library)."""
    from steerkit.store import CacheKey

    return CacheKey.for_example_set(es)


async def collaborative_rerun(
    es: ExampleSet,
    answers: Sequence[Answer],
    backend: LogprobBackend,
    config: SearchConfig | None = None,
    *,
    adapter: FeedbackAdapter | str | None = None,
    store: Any | None = None,
    key: Any | None = None,
    acknowledge: bool = True,
    checkpoint: Any | None = None,
    progress: Callable[[Any], None] | None = None,
) -> RerunResult:
    """Fold human answers into a new example-set version (the paper's "constrain and re-run").

    - every answer becomes fixed labels for its question's members (``fixed_source="human"``); the
      latest answer wins when one question has several; human labels of ``es`` carry over;
    - `steerkit.icm.search` re-runs on ``es``'s pool, warm-started from ``es``'s labels (with the
      human labels applied), ``parent_version=es.version``;
    - ``provenance.audit`` gets one entry per human label (item, value, annotator, adapter, when
      answered, when applied, escalation, answer id) on top of ``es``'s trail;
    - with ``store``, the new version is put under ``key`` (default: the key of ``es``'s slot, see
      `cache_key_for`): the store switches its current version atomically, readers that already
      hold ``es`` keep it;
    - with an ``adapter`` object and ``acknowledge``, the applied answers are acknowledged after
      the store switch (so a crash in between re-delivers them, which is harmless).
    """
    from steerkit import icm

    config = config or es.provenance.config
    pool = es.pool()
    adapter_name = adapter if isinstance(adapter, str) else getattr(adapter, "name", None)
    now = _utcnow()

    # latest answer per escalation wins
    latest: dict[str, Answer] = {}
    for a in sorted(answers, key=lambda a: a.answered_at):
        latest[a.escalation_id] = a
    fixed: dict[str, bool] = {}
    audit_new: list[dict[str, Any]] = []
    label_meta: dict[str, tuple[str | None, datetime]] = {}
    for a in latest.values():
        q, labels, esc = answer_labels(es, a)
        for item_id, value in labels.items():
            fixed[item_id] = value
            who = a.annotator
            label_meta[item_id] = (f"{a.adapter or adapter_name or 'unknown'}:{who}" if who else (a.adapter or adapter_name), a.answered_at)
            audit_new.append(
                {
                    "event": "human_label",
                    "item_id": item_id,
                    "value": value,
                    "question_id": q,
                    "escalation_id": a.escalation_id,
                    "answer_id": a.answer_id,
                    "option": a.option,
                    "annotator": a.annotator,
                    "adapter": a.adapter or adapter_name,
                    "answered_at": a.answered_at.isoformat(),
                    "applied_at": now.isoformat(),
                    "answered_version": a.version,
                    "parent_version": es.version,
                }
            )
    # human labels of the parent carry over unless a new answer overrides them
    for item_id, lab in es.labels.items():
        if lab.source == "human" and item_id not in fixed:
            fixed[item_id] = lab.value
            label_meta[item_id] = (lab.annotator, lab.labelled_at or now)
    if not fixed:
        raise InvalidAnswerError("no answers to apply", hint="collect at least one answer before re-running")
    bad = pool.violations(fixed)
    if bad:
        raise SearchError(
            f"the human labels violate {bad} consistency constraint(s) of the pool",
            hint="two answers contradict each other; re-ask one of the questions",
        )
    warm = {**es.label_values(), **fixed}
    audit = [*es.provenance.audit, *audit_new]
    new = await icm.search(
        pool,
        backend,
        config,
        fixed=fixed,
        fixed_source="human",
        warm_start=warm,
        checkpoint=checkpoint,
        progress=progress,
        parent_version=es.version,
        audit=audit,
    )
    # make sure the trail and the label metadata are there whatever the search recorded
    labels: dict[str, Label] = {}
    for item_id, lab in new.labels.items():
        if item_id in fixed:
            who, when = label_meta.get(item_id, (None, now))
            if lab.value != fixed[item_id]:
                raise SearchError(f"the search changed human label {item_id!r}; this is a bug in steerkit.icm")
            lab = lab.model_copy(update={"source": "human", "annotator": who or lab.annotator, "labelled_at": when})
        labels[item_id] = lab
    prov = new.provenance
    if prov.parent_version != es.version or prov.audit != audit:
        prov = prov.model_copy(update={"parent_version": es.version, "audit": audit})
    new = new.model_copy(update={"labels": labels, "provenance": prov})
    stored = False
    if store is not None:
        await store.put(key if key is not None else cache_key_for(es), new)
        stored = True
    applied = [latest[e].answer_id for e in latest]
    if acknowledge and adapter is not None and not isinstance(adapter, str):
        await adapter.acknowledge(applied)
    return RerunResult(
        example_set=new,
        parent_version=es.version,
        version=new.version,
        applied=applied,
        human_labels=dict(fixed),
        stored=stored,
    )


# --- the escalator: selection + budget + adapter + middleware hooks ---------------------------


class Escalator:
    """Selects questions, submits them to an adapter, applies answers; middleware hooks.

    - ``k``: new questions per round (per example-set version); ``budget``: at most this many
      questions per persona in total (counted from the adapter, so it survives restarts);
      ``None`` = unlimited.
    - ``refresh_pending``: re-submit questions that are still unanswered with the new version's
      suggestion (an update: same id). Answers quoting the old version are then stale.
    - ``backend``/``store``/``config``: needed by `apply` (the collaborative re-run).
    """

    def __init__(
        self,
        adapter: FeedbackAdapter,
        policy: SelectionPolicy | None = None,
        *,
        k: int = 4,
        budget: int | None = 16,
        refresh_pending: bool = True,
        backend: LogprobBackend | None = None,
        store: Any | None = None,
        config: SearchConfig | None = None,
        auto_apply: bool = False,
    ) -> None:
        if k < 0:
            raise FeedbackError(f"k must be ≥ 0, got {k}")
        if budget is not None and budget < 0:
            raise FeedbackError(f"budget must be ≥ 0 or None, got {budget}")
        self.adapter = adapter
        self.policy = policy or ConfidencePolicy()
        self.k = k
        self.budget = budget
        self.refresh_pending = refresh_pending
        self.backend = backend
        self.store = store
        self.config = config
        self.auto_apply = auto_apply
        self.escalated = 0
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen_versions: set[str] = set()
        self._persona_locks: dict[str, asyncio.Lock] = {}
        self._steerer: Any | None = None

    def _lock(self, persona_id: str) -> asyncio.Lock:
        return self._persona_locks.setdefault(persona_id, asyncio.Lock())

    async def escalate(self, es: ExampleSet) -> list[Escalation]:
        """One round for ``es``: refresh pending questions, then submit up to k new ones within the
        persona's budget. Returns the escalations submitted (new and refreshed)."""
        async with self._lock(es.persona.id):
            existing = await self.adapter.escalations(persona_id=es.persona.id)
            mine = {e.id: e for e in existing if e.pool_hash == es.provenance.pool_hash}
            qids = {escalation_id(es.persona.id, es.provenance.pool_hash, q): q for q, _ in questions(es)}
            already = [qids[i] for i in mine if i in qids]
            left = self.k if self.budget is None else max(0, min(self.k, self.budget - len(existing)))
            picks = await select_questions(es, self.policy, left, exclude=already)
            out = [build_escalation(es, q, policy=self.policy.name, score=s) for q, s in picks]
            if self.refresh_pending:
                pending = {e.id for e in await self.adapter.escalations(persona_id=es.persona.id, status="pending")}
                for eid, old in mine.items():
                    if eid in pending and eid in qids and old.version != es.version:
                        q = qids[eid]
                        members = dict(questions(es))[q]
                        if not _is_fixed(es, members):
                            out.append(build_escalation(es, q, policy=old.policy, score=old.score))
            if out:
                res = await self.adapter.submit(out)
                self.escalated += len(res.created)
            return out

    async def apply(self, es: ExampleSet, *, key: Any | None = None) -> RerunResult | None:
        """Fetch this pool's unacknowledged answers from the adapter and run `collaborative_rerun`
        (None when there is nothing to apply).

        Where the new version goes: under ``key`` in ``store`` when given; else, once `register`-ed,
        through ``steerer.put`` (the Steerer's own cache key, and its ``on_example_set`` hooks run,
        so the next round of questions is chosen from the new version); else under
        `cache_key_for` ``es`` in ``store``; with neither, nowhere (the result is returned).
        """
        backend = self.backend or getattr(self._steerer, "backend", None)
        if backend is None:
            raise FeedbackError("Escalator.apply needs a backend", hint="pass backend= to Escalator (or register a Steerer with one)")
        qids = {escalation_id(es.persona.id, es.provenance.pool_hash, q) for q, _ in questions(es)}
        answers = [a for a in await self.adapter.answers(persona_id=es.persona.id) if a.escalation_id in qids]
        if not answers:
            return None
        async with self._lock(es.persona.id):
            via_steerer = self._steerer is not None and key is None
            store = self.store if not via_steerer else None
            if via_steerer and self.store is not None and self.store is not getattr(self._steerer, "store", None):
                store, via_steerer = self.store, False
            res = await collaborative_rerun(
                es,
                answers,
                backend,
                self.config,
                adapter=self.adapter,
                store=store,
                key=key,
                acknowledge=not via_steerer,
            )
            if via_steerer:
                await self._steerer.put(es.persona.id, res.example_set)
                res.stored = True
                await self.adapter.acknowledge(res.applied)
            return res

    # middleware hooks -------------------------------------------------------------------------

    def hook(self) -> Callable[[str, ExampleSet], Awaitable[None]]:
        """A ``Steerer.on_example_set`` hook: escalates each new example-set version in a background
        task (the request is never blocked; errors are logged and kept in ``errors``). With
        ``auto_apply`` and a backend, pending answers are applied in the background too."""

        async def on_example_set(persona_id: str, es: ExampleSet) -> None:
            if es.version in self._seen_versions:
                return
            self._seen_versions.add(es.version)
            self._spawn(self._background(es))

        return on_example_set

    def register(self, steerer: Any) -> Callable[[str, ExampleSet], Awaitable[None]]:
        """Append `hook` to ``steerer.on_example_set`` (a `steerkit.middleware.Steerer`) and return it.

        Every example set the Steerer stores (a search on a miss, ``steerkit precompute`` through
        ``Steerer.compute``, a re-run) is escalated in the background; `apply` then stores new
        versions through ``steerer.put`` and counts escalations in ``steerer.counters``.
        """
        h = self.hook()
        self._steerer = steerer
        steerer.on_example_set.append(h)
        return h

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, es: ExampleSet) -> None:
        try:
            if self.auto_apply and self.backend is not None:
                res = await self.apply(es)
                if res is not None:
                    es = res.example_set
                    self._seen_versions.add(es.version)
            n0 = self.escalated
            await self.escalate(es)
            counters = getattr(getattr(self, "_steerer", None), "counters", None)
            if counters is not None and hasattr(counters, "escalations") and self.escalated > n0:
                try:
                    counters.escalations += self.escalated - n0
                except Exception:  # pragma: no cover - counters of another shape
                    pass
        except Exception as e:  # never propagate into the request path
            log.warning("escalation for persona %s failed: %s", es.persona.id, e)
            self.errors.append(e)

    async def join(self) -> None:
        """Wait for background escalations started by the hook (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def __repr__(self) -> str:
        return f"Escalator(adapter={getattr(self.adapter, 'name', '?')}, policy={self.policy.name}, k={self.k}, budget={self.budget})"

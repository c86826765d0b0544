"""An example set's questions as escalations: ids, confidence, the rendered question, answers → labels."""

from __future__ import annotations

from collections.abc import Sequence

from steerkit._questions import questions
from steerkit.errors import InvalidAnswerError, SearchError
from steerkit.escalation._types import (
    Answer,
    Escalation,
    EscalationOption,
    QuestionKind,
    Suggestion,
)
from steerkit.models import ExampleSet, Item, Pool, stable_hash

__all__ = ["answer_labels", "build_escalation", "escalation_id", "question_confidence", "questions"]

# --- questions of an example set ----------------------------------------------------------------


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

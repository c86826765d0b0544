"""The collaborative re-run: human answers become fixed labels, the search re-runs through the
compute service (`steerkit.Steerer`'s `ExampleSets`, so it is limited, counted and announced like
every other search), and the new version is stored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from steerkit._compute import ExampleSets
from steerkit.errors import InvalidAnswerError, SearchError
from steerkit.escalation._adapter import FeedbackAdapter
from steerkit.escalation._render import answer_labels
from steerkit.escalation._types import Answer, _utcnow
from steerkit.models import ExampleSet, Label, SearchConfig
from steerkit._store import CacheKey

if TYPE_CHECKING:  # pragma: no cover
    from steerkit.backends.base import LogprobBackend

__all__ = ["RerunResult", "cache_key_for", "collaborative_rerun"]

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


def cache_key_for(es: ExampleSet) -> CacheKey:
    """The store's `CacheKey` for an example set's slot (persona, pool, model, config, library)."""
    return CacheKey.for_example_set(es)


def _compute_service(backend: Any, store: Any | None, config: SearchConfig) -> ExampleSets:
    """The compute service to re-run with: the one given, or a standalone one around a backend."""
    if isinstance(backend, ExampleSets):
        return backend
    steerer_sets = getattr(backend, "example_sets", None)  # a Steerer
    if isinstance(steerer_sets, ExampleSets):
        return steerer_sets
    from steerkit._config import SteerConfig
    from steerkit._store import MemoryStore

    return ExampleSets(None, store if store is not None else MemoryStore(), backend,  # type: ignore[arg-type]
                       SteerConfig(search=config))


async def collaborative_rerun(
    es: ExampleSet,
    answers: Sequence[Answer],
    backend: ExampleSets | LogprobBackend,
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
    - the search re-runs on ``es``'s pool through the compute service (``backend`` is an
      `ExampleSets`, a `Steerer`, or a bare backend wrapped in a standalone service), so it is
      bounded by the search limit, counted and its hooks run; warm-started from ``es``'s labels
      (with the human labels applied), ``parent_version=es.version``;
    - ``provenance.audit`` gets one entry per human label (item, value, annotator, adapter, when
      answered, when applied, escalation, answer id) on top of ``es``'s trail;
    - with ``store``, the new version is put under ``key`` (default: the key of ``es``'s slot, see
      `cache_key_for`): the store switches its current version atomically, readers that already
      hold ``es`` keep it;
    - with an ``adapter`` object and ``acknowledge``, the applied answers are acknowledged after
      the store switch (so a crash in between re-delivers them, which is harmless).
    """
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
    sets = _compute_service(backend, store, config)
    new = await sets.compute(
        pool,
        config=config,
        store=False,
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
        key = key if key is not None else cache_key_for(es)
        if store is sets.store:
            await sets.put(key, new)  # the service's store: its hooks run too
        else:
            await store.put(key, new)
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

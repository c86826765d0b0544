"""`LabelStudioAdapter`: escalations as Label Studio tasks, answers read back from its annotations.

The project (found by ``project_id``, else by ``project_title``, else created with the labelling
config below) holds everything, so several processes can share it and nothing is kept locally:

- **submit** — one task per escalation (its id in ``data.steerkit_id``): the question, the
  context and the options as *dynamic choices*, plus the whole escalation. The model's current
  answer goes in as a *prediction* (``model_version`` = the escalation's version) whose ``score``
  is the suggestion's confidence, so annotators can sort the queue by it. Upsert: re-submitting
  an unchanged escalation does nothing; a changed one updates its task and replaces its
  prediction (its old annotations then answer an older version and are not returned).
- **answers** — polled: per task, the latest annotation (not cancelled) made after the task's
  current version was sent, mapped back to the option's id. Label Studio's webhooks are unsigned,
  so use them, if at all, only to trigger a poll.
- **acknowledge** — the applied answer ids are kept in the task's ``meta``.
- **receive** — an answer from elsewhere is validated and written into Label Studio as an
  annotation (so it is durable there and polled like the others); a redelivered answer is a no-op.

A project or task deleted in Label Studio while steerkit relies on it raises
`FeedbackTargetMissingError` saying which; a server that cannot be reached or refuses the key
raises `FeedbackError`. Needs ``pip install 'steerkit[labelstudio]'`` (label-studio-sdk).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from steerkit.errors import ConfigError, FeedbackError, FeedbackTargetMissingError, InvalidAnswerError
from steerkit.escalation import Answer, Escalation, EscalationStatus, SubmitResult, validate_answer

__all__ = ["LABEL_CONFIG", "LabelStudioAdapter"]

log = logging.getLogger("steerkit.adapters.label_studio")

#: The labelling config of the project steerkit creates (choices come from each task's data).
LABEL_CONFIG = """<View>
  <Header value="$persona_name"/>
  <Text name="question" value="$question"/>
  <Text name="context" value="$context"/>
  <Choices name="answer" toName="question" choice="single" showInline="false" value="$options"/>
  <Header value="The model's current answer is pre-selected; its confidence is the prediction score." size="6"/>
</View>"""

_FROM = "answer"
_TO = "question"


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _dt(v: Any) -> datetime:
    if isinstance(v, datetime):
        d = v
    elif isinstance(v, str) and v:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    else:
        d = datetime.now(timezone.utc)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _choice_values(esc: Escalation) -> list[tuple[str, str]]:
    """(option id, the value shown and returned by Label Studio), values unique within the task."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for o in esc.options:
        v = o.text.strip() or o.id
        if v in seen:
            v = f"{v} [{o.id}]"
        seen.add(v)
        out.append((o.id, v))
    return out


class LabelStudioAdapter:
    """A `FeedbackAdapter` on a Label Studio server (see the module docstring).

    ``url``: the server (``http://host:8080``); ``api_key``: an access token (never shown in
    errors); ``project_id``: an existing project to use (it must exist), else the project titled
    ``project_title`` is found or created. ``client``: an ``AsyncLabelStudio`` instead (tests).
    """

    name = "label_studio"

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        project_id: int | None = None,
        project_title: str = "steerkit escalations",
        timeout: float = 30.0,
        client: Any | None = None,
    ) -> None:
        if client is None:
            try:
                from label_studio_sdk.client import AsyncLabelStudio
            except ImportError:
                raise ConfigError("LabelStudioAdapter needs label-studio-sdk",
                                  hint="pip install 'steerkit[labelstudio]'") from None
            client = AsyncLabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=timeout)
        self.url = url.rstrip("/")
        self.client = client
        self.project_title = project_title
        self.project_id = project_id
        self._explicit = project_id is not None
        self._checked = False

    def __repr__(self) -> str:
        return f"LabelStudioAdapter({self.url!r}, project_id={self.project_id!r})"

    # --- errors ---------------------------------------------------------------------------------
    def _status(self, e: BaseException) -> int | None:
        return getattr(e, "status_code", None)

    def _fail(self, e: BaseException, doing: str) -> FeedbackError:
        status = self._status(e)
        if status in (401, 403):
            return FeedbackError(f"Label Studio at {self.url} refused the access token while {doing} (HTTP {status})",
                                 hint="check the api_key (Account & Settings > Access Token; legacy tokens must be enabled)")
        if status is None:
            return FeedbackError(f"Label Studio at {self.url} could not be reached while {doing}: {type(e).__name__}",
                                 hint="check that the server runs and the URL is right")
        return FeedbackError(f"Label Studio at {self.url} answered HTTP {status} while {doing}: {str(e)[:300]}")

    def _project_gone(self) -> FeedbackTargetMissingError:
        return FeedbackTargetMissingError(
            f"Label Studio project {self.project_id} no longer exists at {self.url}",
            kind="project", target_id=self.project_id,
            hint="restore it, or create a new adapter without project_id to make a new project (its answers are lost)",
        )

    def _task_gone(self, task_id: Any, esc_id: str) -> FeedbackTargetMissingError:
        return FeedbackTargetMissingError(
            f"the Label Studio task {task_id} of escalation {esc_id} was deleted (project {self.project_id})",
            kind="task", target_id=task_id, hint="submit the escalation again to re-create its task",
        )

    # --- the project ----------------------------------------------------------------------------
    async def ensure_project(self) -> int:
        """The project's id: checked once, found by title or created when no id was given."""
        if self.project_id is not None:
            if not self._checked:
                try:
                    await self.client.projects.get(id=self.project_id)
                except Exception as e:
                    if self._status(e) == 404:
                        raise self._project_gone() from None
                    raise self._fail(e, "opening the project") from None
                self._checked = True
            return self.project_id
        try:
            async for p in await self.client.projects.list(title=self.project_title):
                if _get(p, "title") == self.project_title:
                    self.project_id = int(_get(p, "id"))
                    break
            if self.project_id is None:
                p = await self.client.projects.create(title=self.project_title, label_config=LABEL_CONFIG,
                                                      description="Questions steerkit's coherence search is least sure of.")
                self.project_id = int(_get(p, "id"))
                log.info("created Label Studio project %s (%s)", self.project_id, self.project_title)
        except FeedbackError:
            raise
        except Exception as e:
            raise self._fail(e, "finding or creating the project") from None
        self._checked = True
        return self.project_id

    async def _tasks(self) -> dict[str, Any]:
        """Every steerkit task of the project by escalation id (annotations and predictions included)."""
        pid = await self.ensure_project()
        out: dict[str, Any] = {}
        try:
            async for t in await self.client.tasks.list(project=pid, fields="all", page_size=100):
                sid = (_get(t, "data") or {}).get("steerkit_id")
                if sid:
                    out[sid] = t
        except Exception as e:
            if self._status(e) == 404:
                raise self._project_gone() from None
            raise self._fail(e, "listing tasks") from None
        if not out:  # an empty listing may hide a deleted project
            await self._still_there()
        return out

    async def _still_there(self) -> None:
        try:
            await self.client.projects.get(id=self.project_id)
        except Exception as e:
            if self._status(e) == 404:
                raise self._project_gone() from None
            raise self._fail(e, "opening the project") from None

    # --- submit ---------------------------------------------------------------------------------
    def _task_data(self, esc: Escalation) -> dict[str, Any]:
        return {
            "steerkit_id": esc.id,
            "persona_id": esc.persona_id,
            "persona_name": esc.persona_name,
            "question": esc.question,
            "context": esc.context or " ",
            "options": [{"value": v} for _, v in _choice_values(esc)],
            "option_ids": [i for i, _ in _choice_values(esc)],
            "version": esc.version,
            "content_hash": esc.content_hash(),
            "sent_at": datetime.now(timezone.utc).isoformat(),
            "escalation": esc.model_dump_json(),
        }

    def _prediction(self, esc: Escalation) -> list[dict[str, Any]]:
        values = dict(_choice_values(esc))
        opt = esc.suggestion.option
        if opt is None or opt not in values:
            return []
        return [{"from_name": _FROM, "to_name": _TO, "type": "choices", "value": {"choices": [values[opt]]}}]

    async def _predict(self, task_id: int, esc: Escalation) -> None:
        result = self._prediction(esc)
        if result:
            await self.client.predictions.create(task=task_id, result=result, score=float(esc.suggestion.confidence),
                                                 model_version=esc.version)

    async def submit(self, escalations: Sequence[Escalation]) -> SubmitResult:
        """Upsert one task per escalation (see the module docstring)."""
        res = SubmitResult()
        if not escalations:
            return res
        tasks = await self._tasks()
        pid = self.project_id
        for esc in escalations:
            t = tasks.get(esc.id)
            try:
                if t is None:
                    created = await self.client.tasks.create(project=pid, data=self._task_data(esc))
                    await self._predict(int(_get(created, "id")), esc)
                    res.created.append(esc.id)
                elif (_get(t, "data") or {}).get("content_hash") == esc.content_hash():
                    res.unchanged.append(esc.id)
                else:
                    tid = int(_get(t, "id"))
                    try:
                        await self.client.tasks.update(id=str(tid), data=self._task_data(esc))
                    except Exception as e:
                        if self._status(e) == 404:
                            raise self._task_gone(tid, esc.id) from None
                        raise
                    for p in await self.client.predictions.list(task=tid):
                        await self.client.predictions.delete(id=int(_get(p, "id")))
                    await self._predict(tid, esc)
                    res.updated.append(esc.id)
            except FeedbackError:
                raise
            except Exception as e:
                if self._status(e) == 404:
                    await self._still_there()
                raise self._fail(e, f"submitting escalation {esc.id}") from None
        return res

    # --- answers ----------------------------------------------------------------------------------
    def _escalation(self, t: Any) -> Escalation:
        return Escalation.model_validate_json((_get(t, "data") or {})["escalation"])

    def _latest_answer(self, t: Any) -> Answer | None:
        """The task's latest valid annotation for its current version, as an `Answer`."""
        data = _get(t, "data") or {}
        sent = _dt(data.get("sent_at"))
        by_value = {v: i for i, v in zip(data.get("option_ids", []), (o["value"] for o in data.get("options", [])))}
        best: tuple[datetime, Answer] | None = None
        for a in _get(t, "annotations") or []:
            if _get(a, "was_cancelled"):
                continue
            when = _dt(_get(a, "updated_at") or _get(a, "created_at"))
            if when < sent:
                continue  # answers an older version of the question
            choice = None
            for r in _get(a, "result") or []:
                if _get(r, "from_name") == _FROM:
                    cs = (_get(r, "value") or {}).get("choices") or []
                    choice = cs[0] if cs else None
            option = by_value.get(choice) if choice is not None else None
            if option is None:
                continue
            who = _get(a, "completed_by")
            ans = Answer(
                escalation_id=data["steerkit_id"], option=option, version=data["version"],
                annotator=str(_get(who, "email", who)) if who is not None else None, adapter=self.name,
                answered_at=when, answer_id=f"ls:{_get(t, 'id')}:{_get(a, 'id')}:{int(when.timestamp() * 1000)}",
            )
            if best is None or when >= best[0]:
                best = (when, ans)
        return best[1] if best else None

    @staticmethod
    def _acknowledged(t: Any) -> set[str]:
        return set((_get(t, "meta") or {}).get("steerkit_acknowledged", []))

    async def answers(self, *, persona_id: str | None = None) -> list[Answer]:
        """The latest unacknowledged answer per escalation (one poll of the project)."""
        out = []
        for t in (await self._tasks()).values():
            data = _get(t, "data") or {}
            if persona_id is not None and data.get("persona_id") != persona_id:
                continue
            ans = self._latest_answer(t)
            if ans is not None and ans.answer_id not in self._acknowledged(t):
                out.append(ans)
        return out

    async def acknowledge(self, answer_ids: Sequence[str]) -> None:
        """Mark answers applied (kept in their tasks' ``meta``)."""
        by_task: dict[int, list[str]] = {}
        for aid in answer_ids:
            parts = aid.split(":")
            if len(parts) != 4 or parts[0] != "ls" or not parts[1].isdigit():
                raise InvalidAnswerError(f"{aid!r} is not an answer id of this adapter", hint="acknowledge ids from answers()")
            by_task.setdefault(int(parts[1]), []).append(aid)
        for tid, ids in by_task.items():
            try:
                t = await self.client.tasks.get(id=str(tid))
            except Exception as e:
                if self._status(e) == 404:
                    await self._still_there()
                    raise self._task_gone(tid, "?") from None
                raise self._fail(e, "acknowledging answers") from None
            meta = dict(_get(t, "meta") or {})
            meta["steerkit_acknowledged"] = sorted(set(meta.get("steerkit_acknowledged", [])) | set(ids))
            try:
                await self.client.tasks.update(id=str(tid), meta=meta)
            except Exception as e:
                raise self._fail(e, "acknowledging answers") from None

    async def receive(self, answer: Answer) -> bool:
        """Record an answer given outside Label Studio as an annotation there (validated first;
        a redelivered ``answer_id`` returns False and changes nothing)."""
        tasks = await self._tasks()
        t = tasks.get(answer.escalation_id)
        esc = self._escalation(t) if t is not None else None
        validate_answer(answer, esc)
        assert esc is not None and t is not None
        meta = dict(_get(t, "meta") or {})
        received = meta.get("steerkit_received", [])
        if answer.answer_id in received:
            return False
        value = dict(_choice_values(esc))[answer.option]
        tid = int(_get(t, "id"))
        try:
            await self.client.annotations.create(id=tid, result=[{"from_name": _FROM, "to_name": _TO, "type": "choices",
                                                                  "value": {"choices": [value]}}])
            meta["steerkit_received"] = [*received, answer.answer_id]
            await self.client.tasks.update(id=str(tid), meta=meta)
        except Exception as e:
            if self._status(e) == 404:
                raise self._task_gone(tid, answer.escalation_id) from None
            raise self._fail(e, "recording an answer") from None
        return True

    async def escalations(self, *, persona_id: str | None = None,
                          status: EscalationStatus | None = None) -> list[Escalation]:
        out = []
        for t in (await self._tasks()).values():
            esc = self._escalation(t)
            if persona_id is not None and esc.persona_id != persona_id:
                continue
            ans = self._latest_answer(t)
            st: EscalationStatus = "pending" if ans is None else (
                "applied" if ans.answer_id in self._acknowledged(t) else "answered")
            if status is None or st == status:
                out.append(esc)
        return out

    async def get(self, escalation_id: str) -> Escalation | None:
        t = (await self._tasks()).get(escalation_id)
        return None if t is None else self._escalation(t)

    async def aclose(self) -> None:
        wrapper = getattr(self.client, "_client_wrapper", None)
        http = getattr(getattr(wrapper, "httpx_client", None), "httpx_client", None)
        close = getattr(http, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing must not fail a shutdown
                pass

    async def __aenter__(self) -> LabelStudioAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

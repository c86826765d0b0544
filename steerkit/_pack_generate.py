"""``steerkit pack generate``: grow a pack's question pool with a chat model.

Each round asks the chat model (any OpenAI-compatible server; the embedded instruction model by
default) for a batch of topic-diverse survey questions with 2-4 options, as JSON, then filters
them, counting each rejection:

- ``malformed``: not 2-4 distinct non-empty options, or no question;
- ``near_duplicate``: nearly the same words (question and options) as another new question or one
  already in the pool (`steerkit.packs._quality.near_duplicates`);
- ``overlapping_options``: options a respondent could both pick ("Yes" / "Yes, definitely");
- ``option_names_persona``, ``giveaway``: an option, or the question, names a persona;
- ``low_spread``: under the base model (the search backend, scoring the claims the search itself
  scores: "The majority of {name} would answer this question as: '{option}'"), the personas'
  predicted answers barely differ: the mean pairwise total-variation distance between their
  option distributions is below ``min_spread``. ICM can only find a coherent labelling that
  separates the personas on questions where the model already tells them apart.
- ``unscored``: the base model put no probability on either label token for some claim.

Accepted questions are appended to the pack file after every round (with their ``spread``), so an
interrupted run loses at most one round; a state file beside the pack
(``.<name>.generate.json``) keeps the run's counts and the rejected questions, and a re-run
continues toward ``target``. When the run ends, a ``[[provenance]]`` entry (chat model, prompt
version, base model, date, counts) is added to the pack and the state file removed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from steerkit._logodds import sigmoid
from steerkit._version import __version__
from steerkit.errors import PackError
from steerkit.icm.prompts import render_prompt
from steerkit.models import Item, stable_hash
from steerkit.packs import PackProvenance, PersonaPack, QuestionSpec, load_pack
from steerkit.packs._quality import (
    near_duplicates,
    overlapping_options,
    persona_mentions,
    question_text,
    spread,
)
from steerkit.packs._write import append_questions, slug

if TYPE_CHECKING:
    from steerkit._config import Settings
    from steerkit.backends.base import LogprobBackend

__all__ = [
    "PROMPT_VERSION",
    "ChatFn",
    "GenerateConfig",
    "GenerateProgress",
    "GenerateResult",
    "build_prompt",
    "generate",
    "generate_from_settings",
    "parse_questions",
]

#: Bumped whenever the prompt below changes; recorded in the pack's provenance.
PROMPT_VERSION = "pack-generate/1"

#: ``(messages, call number) -> reply text``: the chat model, as a seam (tests pass a fake). The
#: call number counts the calls of the whole run, a resumed one included (it seeds the sampling).
ChatFn = Callable[[list[dict[str, str]], int], Awaitable[str]]

REJECTIONS = ("malformed", "near_duplicate", "overlapping_options", "option_names_persona", "giveaway",
              "unscored", "low_spread")

QUESTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "questions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "topic": {"type": "string"},
                    "question": {"type": "string"},
                    "options": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
                },
                "required": ["topic", "question", "options"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["questions"],
    "additionalProperties": False,
}


class GenerateConfig(BaseModel):
    target: int = Field(default=40, ge=1)
    """Grow the pool to this many questions."""
    batch: int = Field(default=6, ge=1, le=20)
    """Questions asked for per chat call."""
    max_calls: int = Field(default=20, ge=1)
    """Chat calls this run makes at most."""
    min_spread: float = Field(default=0.05, ge=0.0, le=1.0)
    measure_spread: bool = True
    """Score the claims with the base model (the ``low_spread`` filter and each question's spread)."""
    near_duplicate: float = Field(default=0.8, gt=0.0, le=1.0)
    seed: int = 0
    temperature: float = Field(default=0.9, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1500, ge=64)


class GenerateProgress(BaseModel):
    """After each chat call: where the run stands."""

    call: int
    max_calls: int
    pool: int
    target: int
    accepted: int
    rejected: dict[str, int]

    def line(self) -> str:
        rej = ", ".join(f"{k} {v}" for k, v in self.rejected.items() if v) or "none"
        return (f"call {self.call}/{self.max_calls}: pool {self.pool}/{self.target} questions, "
                f"{self.accepted} accepted this run, rejected: {rej}")


class GeneratedQuestion(BaseModel):
    id: str
    question: str
    options: list[str]
    topic: str | None = None
    spread: float | None = None
    verdict: str
    """``accepted`` or the rejection's name."""


class GenerateResult(BaseModel):
    path: str
    chat_model: str
    base_model: str | None
    prompt_version: str = PROMPT_VERSION
    resumed: bool
    calls: int
    candidates: int
    accepted: int
    rejected: dict[str, int]
    pool_before: int
    pool_after: int
    target: int
    spread_mean_accepted: float | None
    spread_mean_scored: float | None
    """Mean spread of every scored candidate (accepted or not): what the filter chose from."""
    pool_spread_mean: float | None
    """Mean spread of the pool's questions that have one, after the run."""
    seconds: float
    questions: list[GeneratedQuestion]

    def summary(self) -> str:
        rej = ", ".join(f"{k} {v}" for k, v in self.rejected.items() if v) or "none"
        sp = "" if self.spread_mean_accepted is None else (
            f"; spread of accepted questions {self.spread_mean_accepted:.3f} (all scored {self.spread_mean_scored:.3f}, "
            f"pool {self.pool_spread_mean:.3f})")
        return (f"{self.path}: pool {self.pool_before} -> {self.pool_after} questions (target {self.target}) in "
                f"{self.calls} chat call(s), {self.seconds:.0f} s; {self.candidates} candidates, {self.accepted} accepted, "
                f"rejected: {rej}{sp}")


def build_prompt(pack: PersonaPack, n: int, recent: Sequence[str], topics: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking for ``n`` new questions for the pack's personas."""
    groups = "\n".join(f"- {s.name}" + (f": {s.description}" if s.description else "") for s in pack.specs)
    avoid_topics = ", ".join(dict.fromkeys(topics)) or "none yet"
    avoid = "\n".join(f"- {q}" for q in recent) or "- (none yet)"
    user = (
        f"Dimension: {pack.title or pack.dimension}" + (f" ({pack.description})" if pack.description else "") + "\n"
        f"Groups:\n{groups}\n\n"
        f"Write {n} new multiple-choice survey questions on which these groups would answer differently.\n"
        "Rules:\n"
        "- Ask about the respondent's own views, habits or preferences, in neutral words. Never mention the groups, "
        "their names or who is answering.\n"
        "- Give 2 to 4 short options that are mutually exclusive. No option names or hints at a group.\n"
        f"- Each question on a different topic. Topics already covered: {avoid_topics}.\n"
        f"- Do not repeat or rephrase these questions:\n{avoid}\n"
        'Answer with JSON only: {"questions": [{"topic": "...", "question": "...", "options": ["...", "..."]}]}'
    )
    return [
        {"role": "system", "content": "You write survey questions for research on how groups of people differ."},
        {"role": "user", "content": user},
    ]


def parse_questions(text: str) -> list[dict[str, Any]] | None:
    """The question objects of a reply (JSON, possibly inside prose or a code fence); None when no
    JSON can be read from it."""
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if start == -1 or end <= start:
            continue
        try:
            val = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            continue
        if isinstance(val, dict):
            val = val.get("questions")
        if isinstance(val, list):
            return [v for v in val if isinstance(v, dict)]
    return None


def _clean_candidate(raw: dict[str, Any]) -> tuple[str, list[str], str | None] | None:
    q = raw.get("question")
    opts = raw.get("options")
    if not isinstance(q, str) or not q.strip() or not isinstance(opts, list):
        return None
    options = [" ".join(str(o).split()) for o in opts if isinstance(o, (str, int, float))]
    if not 2 <= len(options) <= 4 or any(not o for o in options):
        return None
    if len({o.casefold() for o in options}) != len(options):
        return None
    topic = raw.get("topic")
    return " ".join(q.split()), options, (" ".join(topic.split())[:60] or None) if isinstance(topic, str) else None


def _p_true(score: Any) -> float | None:
    if score.p_true is None and score.p_false is None:
        return None
    return sigmoid(score.logodds())


class _State(BaseModel):
    """What a run keeps between rounds (and across an interruption)."""

    pack_id: str
    started: str
    calls: int = 0
    candidates: int = 0
    accepted: int = 0
    rejected: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(REJECTIONS, 0))
    rejected_questions: list[str] = Field(default_factory=list)
    scored_spreads: list[float] = Field(default_factory=list)
    accepted_spreads: list[float] = Field(default_factory=list)
    seconds: float = 0.0


def _state_path(pack_path: Path) -> Path:
    return pack_path.with_name(f".{pack_path.stem}.generate.json")


async def generate(path: str | Path, chat: ChatFn, *, chat_model: str, backend: LogprobBackend | None = None,
                   config: GenerateConfig | None = None,
                   progress: Callable[[GenerateProgress], None] | None = None) -> GenerateResult:
    """Grow the pack at ``path`` toward ``config.target`` questions (see the module docstring).
    ``backend`` scores the spread (None: no spread filter, as ``measure_spread=False``)."""
    cfg = config or GenerateConfig()
    p = Path(path).expanduser()
    pack = load_pack(p)
    if not pack.questions and pack.items:
        raise PackError(f"{p}: the pack's pool is imported items, not [[questions]]; generate grows a [[questions]] pool",
                        hint="start from `steerkit pack new`")
    sp = _state_path(p)
    resumed = sp.is_file()
    state: _State | None = None
    if resumed:
        try:
            state = _State.model_validate_json(sp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
        if state is None or state.pack_id != pack.id:
            state, resumed = None, False
    if state is None:
        state = _State(pack_id=pack.id, started=datetime.now(UTC).isoformat(timespec="seconds"))
    measure = cfg.measure_spread and backend is not None
    names = {s.id: [s.name, s.display, *s.aliases, *s.places] for s in pack.specs}
    personas = pack.personas
    pool_before = len(pack.questions)
    used_ids = {q.id for q in pack.questions}
    out: list[GeneratedQuestion] = []
    calls_this_run = 0
    t0 = time.monotonic()
    try:
        while len(pack.questions) < cfg.target and calls_this_run < cfg.max_calls:
            existing = [question_text(q.question, q.options) for q in pack.questions]
            want = min(cfg.batch, cfg.target - len(pack.questions) + 2)
            recent = [q.question for q in pack.questions[-25:]]
            topics = [q.topic for q in pack.questions if q.topic][-40:]
            reply = await chat(build_prompt(pack, want, recent, topics), state.calls)
            calls_this_run += 1
            state.calls += 1
            raw = parse_questions(reply) or []
            round_q: list[GeneratedQuestion] = []
            for r in raw:
                state.candidates += 1
                c = _clean_candidate(r)
                if c is None:
                    state.rejected["malformed"] += 1
                    out.append(GeneratedQuestion(id="", question=str(r.get("question", ""))[:200],
                                                 options=[str(o) for o in r.get("options", []) or []][:6],
                                                 verdict="malformed"))
                    continue
                q, options, topic = c
                base = f"gen_{slug(topic or ' '.join(q.split()[:4]))[:32]}_{stable_hash([q, options])[:6]}"
                round_q.append(GeneratedQuestion(id=base, question=q, options=options, topic=topic, verdict="accepted"))
            _filter_text(round_q, existing, state.rejected_questions, names, cfg)
            alive = [g for g in round_q if g.verdict == "accepted"]
            if measure and alive:
                await _score(alive, personas, backend)  # type: ignore[arg-type]
                for g in alive:
                    if g.spread is None:
                        g.verdict = "unscored"
                    else:
                        state.scored_spreads.append(g.spread)
                        if g.spread < cfg.min_spread:
                            g.verdict = "low_spread"
            keep: list[QuestionSpec] = []
            for g in round_q:
                if g.verdict != "accepted":
                    state.rejected[g.verdict] += 1
                    state.rejected_questions.append(question_text(g.question, g.options))
                    continue
                if len(pack.questions) + len(keep) >= cfg.target:
                    g.verdict = "surplus"
                    continue
                while g.id in used_ids:
                    g.id += "_"
                used_ids.add(g.id)
                keep.append(QuestionSpec(id=g.id, question=g.question, options=tuple(g.options), topic=g.topic,
                                         spread=g.spread))
                state.accepted += 1
                if g.spread is not None:
                    state.accepted_spreads.append(g.spread)
            out.extend(round_q)
            if keep:
                pack = append_questions(p, keep)
            state.seconds += time.monotonic() - t0
            t0 = time.monotonic()
            sp.write_text(state.model_dump_json(), encoding="utf-8")
            if progress is not None:
                progress(GenerateProgress(call=calls_this_run, max_calls=cfg.max_calls, pool=len(pack.questions),
                                          target=cfg.target, accepted=state.accepted, rejected=dict(state.rejected)))
    finally:
        state.seconds += time.monotonic() - t0
        if state.calls:
            sp.write_text(state.model_dump_json(), encoding="utf-8")
    mean = (lambda xs: round(sum(xs) / len(xs), 4) if xs else None)
    counts: dict[str, int | float] = {"calls": state.calls, "candidates": state.candidates, "accepted": state.accepted,
                                **{f"rejected_{k}": v for k, v in state.rejected.items()},
                                "seconds": round(state.seconds, 1)}
    if state.scored_spreads:
        counts["spread_mean_scored"] = mean(state.scored_spreads) or 0.0
    if state.accepted_spreads:
        counts["spread_mean_accepted"] = mean(state.accepted_spreads) or 0.0
    if measure:
        counts["min_spread"] = cfg.min_spread
    if state.calls:
        prov = PackProvenance(tool=f"steerkit pack generate {__version__}", date=state.started, model=chat_model,
                              prompt_version=PROMPT_VERSION, base_model=backend.model if measure and backend else "",
                              added=state.accepted, counts=counts)
        pack = append_questions(p, [], prov)
        sp.unlink(missing_ok=True)
    pool_spreads = [q.spread for q in pack.questions if q.spread is not None]
    return GenerateResult(
        path=str(p), chat_model=chat_model, base_model=backend.model if measure and backend else None,
        resumed=resumed, calls=state.calls, candidates=state.candidates, accepted=state.accepted,
        rejected=dict(state.rejected), pool_before=pool_before, pool_after=len(pack.questions), target=cfg.target,
        spread_mean_accepted=mean(state.accepted_spreads), spread_mean_scored=mean(state.scored_spreads),
        pool_spread_mean=mean(pool_spreads), seconds=round(state.seconds, 1), questions=out,
    )


def _filter_text(batch: list[GeneratedQuestion], existing: list[str], rejected: list[str],
                 names: dict[str, list[str]], cfg: GenerateConfig) -> None:
    """Set each candidate's verdict by the text filters (in the order the module docstring lists)."""
    texts = [question_text(g.question, g.options) for g in batch]
    dup: set[int] = set()
    for i, j, _ in near_duplicates(texts, against=[*existing, *rejected], threshold=cfg.near_duplicate):
        # two new near-duplicates: keep the first; else a rephrasing of the pool or of a rejected question
        dup.add(j if isinstance(j, int) else i)
    for n, g in enumerate(batch):
        if n in dup:
            g.verdict = "near_duplicate"
        elif overlapping_options(g.options):
            g.verdict = "overlapping_options"
        elif any(persona_mentions(o, names) for o in g.options):
            g.verdict = "option_names_persona"
        elif persona_mentions(g.question, names):
            g.verdict = "giveaway"


async def _score(batch: list[GeneratedQuestion], personas: Sequence[Any], backend: LogprobBackend) -> None:
    """Each candidate's spread: per persona, P(True) of every option's claim, normalised over the
    options; the spread of those distributions."""
    prompts: list[str] = []
    for g in batch:
        for persona in personas:
            for n, opt in enumerate(g.options):
                item = Item(id=f"candidate/{re.sub(r'[^A-Za-z0-9_]', '_', g.id)}/o{n}", kind="claim",
                            question=g.question, option=opt)
                prompts.append(render_prompt(persona, item))
    scores = await backend.score(prompts)
    k = 0
    for g in batch:
        dists = []
        ok = True
        for _ in personas:
            row = []
            for _ in g.options:
                p = _p_true(scores[k])
                k += 1
                ok = ok and p is not None
                row.append(p or 0.0)
            dists.append(row)
        g.spread = spread(dists) if ok else None


async def generate_from_settings(path: str | Path, settings: Settings, config: GenerateConfig,
                                 progress: Callable[[GenerateProgress], None] | None = None) -> GenerateResult:
    """`generate` with the configured chat model (the embedded instruction model by default) and
    the configured search backend as the base model."""
    from steerkit._runtime import Runtime

    async with await Runtime.open(settings, backend=config.measure_spread, steerer=False, chat=True) as rt:
        _, model = rt.require_chat()
        client = rt.chat_client()
        structured = True

        async def chat(messages: list[dict[str, str]], call: int) -> str:
            nonlocal structured
            import openai

            # a different sample every call, the same sequence every run
            kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": config.temperature,
                                      "max_tokens": config.max_tokens, "seed": config.seed + call}
            if structured:
                kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "survey_questions", "strict": True, "schema": QUESTIONS_SCHEMA}}
            try:
                resp = await client.chat.completions.create(**kwargs)
            except openai.BadRequestError:
                if not structured:
                    raise
                structured = False  # a server without JSON-schema output: ask in words only
                kwargs.pop("response_format")
                resp = await client.chat.completions.create(**kwargs)
            return resp.choices[0].message.content or ""

        return await generate(path, chat, chat_model=model, backend=rt.backend if config.measure_spread else None,
                              config=config, progress=progress)

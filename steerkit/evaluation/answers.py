"""Answer pools: open questions, candidate free-text answers, and (where people rated them) which
answers represent which persona — the data of the generation task.

The search sees each (question, candidate answer) as the seed paper's free-text-answer claim,
"The majority of <persona> would answer this question as: '<answer>'" (`AnswerPool.items`, kind
``claim``, one question's answers unconstrained: several may represent a persona). The answers it
labels True become a chat model's in-context examples for other questions.

Four ways to get a pool:

- `import_overtonbench`: OvertonBench's released rows (Poole-Dayan et al. 2025; Hugging Face
  ``elinorpd/overtonbench``, parquet or CSV), one per participant × question × model answer with
  the participant's ``U.s. political affiliation`` and ``representation_rating`` (1–5). A party's
  gold for an answer: its participants' mean rating is at least 4 (the benchmark's coverage
  threshold, "mostly represented"); an answer no participant of the party rated has no gold.
- `read_answer_pool`: a plain JSONL file (format below) for a user's own pool.
- `answer_pool_from_pack`: a persona pack's ``[[answer_pool]]`` (``personas/FORMAT.md``; the
  shipped ``polparty`` pack carries one), its gold written by the pack's author;
  `pack_with_answer_pool` picks the pack (by id or file, by the personas asked for, or the only
  configured pack that carries one).
- `generate_answers`: a chat model writes candidate answers to a user's questions, one per stance
  (`STANCES`, from strongly for to strongly against) plus, per persona, one written for it and one
  written against it (the judge's self-check pairs). ICM can only pick representative answers if
  the pool holds some; a generated pool has no gold.

**JSONL format** (`write_answer_pool` writes it), one JSON object per line, three kinds:

```
{"persona": {"id": "polparty/democrat", "name": "Democrats", "label": "Democrat", "description": "…"}}
{"id": "q1", "question": "Should colleges keep DEI programs?",
 "answers": [{"id": "a1", "text": "Yes: …", "gold": {"polparty/democrat": true}, "source": "gpt-4.1"},
             {"id": "a2", "text": "No: …"}]}
{"provenance": {"source": "…"}}
```

A question line needs ``question``; ``id`` defaults to its line number; without ``answers`` (or
with an empty list) it is a question only, for `generate_answers`. Answer fields: ``text``
(required), ``id`` (default ``a<n>``), ``gold`` (persona id or label → true/false), ``ratings``
(persona → mean rating) and ``raters`` (persona → count), ``source``, ``stance``,
``written_for`` / ``written_against`` (a persona id). Persona lines are optional when the caller
names the personas.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from steerkit.errors import DatasetImportError, UserError
from steerkit.importers import read_jsonl
from steerkit.models import Item, Persona, stable_hash

if TYPE_CHECKING:
    from steerkit.packs import PackRegistry, PersonaPack

__all__ = [
    "ANSWER_PROMPT_VERSION",
    "OVERTONBENCH_COLUMNS",
    "OVERTONBENCH_PARTIES",
    "STANCES",
    "Answer",
    "AnswerPool",
    "AnswerQuestion",
    "PoolPersona",
    "answer_pool_from_pack",
    "generate_answers",
    "import_overtonbench",
    "pack_with_answer_pool",
    "read_answer_pool",
    "write_answer_pool",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolPersona(_Model):
    """A persona of the pool: what the claims, the injected block and the judge need."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    label: str = ""
    description: str = ""
    dimension: str = "custom"

    def persona(self) -> Persona:
        return Persona(id=self.id, name=self.name, dimension=self.dimension, description=self.description)


class Answer(_Model):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    source: str = ""
    """Who wrote it (a model name, ``human``)."""
    gold: dict[str, bool] = Field(default_factory=dict)
    """Persona id → whether the answer represents it (from people's ratings; evaluation only)."""
    ratings: dict[str, float] = Field(default_factory=dict)
    """Persona id → the mean 1–5 rating of its raters."""
    raters: dict[str, int] = Field(default_factory=dict)
    stance: str | None = None
    written_for: str | None = None
    written_against: str | None = None


class AnswerQuestion(_Model):
    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answers: list[Answer] = Field(default_factory=list)


_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]+")


def _safe(text: str) -> str:
    s = _ID_CHARS.sub("_", str(text)).strip("_")
    return s[:80] or stable_hash(text)


class AnswerPool(_Model):
    """Questions with candidate answers, the personas they are judged for, and where they came from."""

    personas: list[PoolPersona] = Field(default_factory=list)
    questions: list[AnswerQuestion]
    provenance: dict[str, Any] = Field(default_factory=dict)

    def persona(self, key: str) -> PoolPersona:
        """A persona by id or label (case-insensitive)."""
        for p in self.personas:
            if key in (p.id, p.label) or key.lower() in (p.id.lower(), p.label.lower(), p.name.lower()):
                return p
        known = ", ".join(p.label or p.id for p in self.personas) or "none"
        raise UserError(f"the answer pool has no persona {key!r}", hint=f"its personas: {known}")

    def items(self, persona_id: str, question_ids: Iterable[str] | None = None) -> list[Item]:
        """The pool's free-text-answer claims for a persona (one per candidate answer, in pool
        order; gold where the pool has it), of ``question_ids`` only when given."""
        keep = None if question_ids is None else set(question_ids)
        out = []
        for q in self.questions:
            if keep is not None and q.id not in keep:
                continue
            for a in q.answers:
                out.append(Item(id=f"{_safe(q.id)}/{_safe(a.id)}", kind="claim", question=q.question, option=a.text,
                                gold=a.gold.get(persona_id), meta={"question_id": q.id, "answer_id": a.id}))
        return out

    def question(self, question_id: str) -> AnswerQuestion:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)

    def content_hash(self) -> str:
        return stable_hash([q.model_dump() for q in self.questions])


# --- JSONL ----------------------------------------------------------------------------------------


def read_answer_pool(path: str | Path, *, personas: Sequence[PoolPersona] = ()) -> AnswerPool:
    """An `AnswerPool` from a JSONL file (module docstring); ``personas`` add to those it declares.
    Gold keys given as a persona's label are stored under its id."""
    p = Path(path).expanduser()
    declared: list[PoolPersona] = list(personas)
    questions: list[AnswerQuestion] = []
    provenance: dict[str, Any] = {}

    def each(row: dict[str, Any], where: str, n: int) -> None:
        if "persona" in row:
            declared.append(PoolPersona.model_validate(row["persona"]))
        elif "provenance" in row:
            provenance.update(row["provenance"] if isinstance(row["provenance"], dict) else {})
        else:
            row = {"id": str(n), **row}
            row["id"] = str(row["id"])
            answers = row.get("answers") or []
            if not isinstance(answers, list):
                raise DatasetImportError(f"{where}: 'answers' must be a list")
            row["answers"] = [{"id": f"a{k}", **a} if isinstance(a, dict) else a for k, a in enumerate(answers, 1)]
            questions.append(AnswerQuestion.model_validate(row))

    read_jsonl(p, each)
    if not questions:
        raise DatasetImportError(f"{p}: no question in the file")
    ids = [q.id for q in questions]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise DatasetImportError(f"{p}: duplicate question id(s) {dups[:5]}")
    for q in questions:
        aids = [a.id for a in q.answers]
        if len(set(aids)) != len(aids):
            raise DatasetImportError(f"{p}: question {q.id!r} lists an answer id twice")
    pool = AnswerPool(personas=_unique(declared), questions=questions, provenance=provenance)
    by_label = {x.label: x.id for x in pool.personas if x.label} | {x.name: x.id for x in pool.personas}
    for q in pool.questions:
        for a in q.answers:
            a.gold = {by_label.get(k, k): v for k, v in a.gold.items()}
    return pool


def _unique(personas: Iterable[PoolPersona]) -> list[PoolPersona]:
    out: dict[str, PoolPersona] = {}
    for p in personas:
        out.setdefault(p.id, p)
    return list(out.values())


def write_answer_pool(pool: AnswerPool, path: str | Path) -> Path:
    """Write ``pool`` as JSONL (module docstring): personas, then questions, then provenance."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for persona in pool.personas:
            f.write(json.dumps({"persona": persona.model_dump()}, ensure_ascii=False) + "\n")
        for q in pool.questions:
            f.write(json.dumps(q.model_dump(exclude_defaults=True), ensure_ascii=False) + "\n")
        if pool.provenance:
            f.write(json.dumps({"provenance": pool.provenance}, ensure_ascii=False, default=str) + "\n")
    return p


# --- persona packs ------------------------------------------------------------------------------------


def answer_pool_from_pack(pack: PersonaPack) -> AnswerPool:
    """The pack's ``[[answer_pool]]`` as an `AnswerPool`: every persona of the pack (label,
    description, dimension as the pack gives them), the questions and answers in file order, gold
    by persona id. A pack without one raises `UserError`."""
    if not pack.answer_pool:
        raise UserError(f"pack {pack.id!r} carries no answer pool ({pack.source})",
                        hint="add [[answer_pool]] questions to it (personas/FORMAT.md), or pass --dataset answers "
                             "or overtonbench with --data")
    personas = [PoolPersona(id=s.id, name=s.name, label=s.display, description=s.description, dimension=pack.dimension)
                for s in pack.specs]
    questions = [AnswerQuestion(id=q.id, question=q.question,
                                answers=[Answer(id=a.id, text=a.text, source=a.source or "", gold=dict(a.gold), stance=a.stance)
                                         for a in q.answers])
                 for q in pack.answer_pool]
    return AnswerPool(personas=personas, questions=questions,
                      provenance={"source": f"persona pack {pack.id!r}", "pack": pack.id, "file": pack.source,
                                  "format_version": pack.format_version,
                                  "gold": "written by the pack's author (personas/FORMAT.md, answer_pool)"})


def pack_with_answer_pool(registry: PackRegistry, source: str | Path | None = None,
                          personas: Sequence[str] = ()) -> PersonaPack:
    """The pack whose answer pool to use: ``source`` (a configured pack's id, or a pack file);
    else the pack of ``personas`` (names `PackRegistry.resolve` knows, all of one pack); else the
    only configured pack that carries an answer pool. Anything else is a `UserError` saying what
    to pass."""
    from steerkit.packs import load_pack

    carrying = registry.answer_pool_packs()
    listed = ", ".join(pk.id for pk in carrying) or "none"
    if source is not None:
        key = str(source)
        pack = next((pk for pk in registry.packs if pk.id == key), None)
        if pack is None:
            path = Path(key).expanduser()
            if not path.is_file():
                raise UserError(f"{key!r} is neither a configured pack's id nor a pack file",
                                hint=f"configured packs with an answer pool: {listed}")
            pack = load_pack(path)
    elif personas:
        packs = {registry.pack_of(registry.resolve(name)).id: registry.pack_of(registry.resolve(name)) for name in personas}
        if len(packs) > 1:
            raise UserError(f"the personas {list(personas)} belong to several packs ({', '.join(packs)})",
                            hint="an answer pool is one pack's: choose personas of one pack")
        pack = next(iter(packs.values()))
    elif len(carrying) == 1:
        pack = carrying[0]
    elif not carrying:
        raise UserError("no configured pack carries an answer pool",
                        hint="pass --dataset answers or overtonbench with --data, or add [[answer_pool]] questions "
                             "to a pack (personas/FORMAT.md)")
    else:
        raise UserError(f"several configured packs carry an answer pool ({listed})", hint="name one: --data PACK_ID")
    if not pack.answer_pool:
        answer_pool_from_pack(pack)  # raises, saying what to do
    return pack


# --- OvertonBench ---------------------------------------------------------------------------------

#: The columns `import_overtonbench` reads (as named by the dataset's consumers; see
#: shared/reference/round3-generation-judges-pools-integrations.md §1.2).
OVERTONBENCH_COLUMNS = ("question_id", "question", "model", "llm_response", "representation_rating",
                        "U.s. political affiliation")

#: Affiliation value (lower case, its start) → the shipped political pack's persona id.
OVERTONBENCH_PARTIES = {"democrat": "polparty/democrat", "republican": "polparty/republican",
                        "independent": "polparty/independent"}


def _party_personas(ids: Sequence[str]) -> list[PoolPersona]:
    from steerkit.packs import PackRegistry

    reg = PackRegistry.default()
    out = []
    for pid in ids:
        p = reg.persona(pid)
        out.append(PoolPersona(id=p.id, name=p.name, label=reg.spec(pid).label or p.name, description=p.description,
                               dimension=p.dimension))
    return out


def _rows(path: Path) -> tuple[list[str], Iterable[dict[str, Any]]]:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DatasetImportError("reading OvertonBench's parquet files needs pyarrow",
                                     hint="pip install 'steerkit[eval]', or pass the rows as CSV") from None
        try:
            table = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DatasetImportError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None
        return list(table.column_names), table.to_pylist()
    if path.suffix.lower() in (".csv", ".tsv"):
        try:
            f = path.open(newline="", encoding="utf-8-sig")
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            rows = list(reader)
            f.close()
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetImportError(f"{path}: cannot read as CSV ({e})") from None
        return list(reader.fieldnames or []), rows
    raise DatasetImportError(f"{path}: expected OvertonBench's .parquet (or a .csv of its rows)")


def _rating(value: Any) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() and 1 <= f <= 5 else None


def import_overtonbench(
    path: str | Path,
    *,
    parties: Sequence[str] = ("Democrat", "Republican", "Independent"),
    threshold: float = 4.0,
    questions: int | None = None,
) -> AnswerPool:
    """An `AnswerPool` from OvertonBench's rows (module docstring).

    ``path``: the ``full`` split's parquet (``data/prolific_with_clusters_kmeans_merged_public.parquet``),
    the folder holding it, or a CSV with the same columns. Each question's candidates are its model
    answers (one per ``model``); each party's gold for one is its participants' mean rating ≥
    ``threshold``. Rows with another or no affiliation, or a rating outside 1–5, are left out and
    counted in the provenance. ``questions``: the first N questions (by id) only.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(p.glob("**/prolific_with_clusters_kmeans_merged_public.parquet")) or sorted(p.glob("**/*.parquet"))
        if not found:
            raise DatasetImportError(f"{p}: no parquet file in the folder", hint="pass OvertonBench's full-split parquet")
        p = found[0]
    if not p.is_file():
        raise DatasetImportError(f"{p}: no such file")
    columns, rows = _rows(p)
    missing = [c for c in OVERTONBENCH_COLUMNS if c not in columns]
    if missing:
        raise DatasetImportError(f"{p}: not OvertonBench's rows: no column(s) {missing}",
                                 hint=f"the file has {columns[:20]}")
    wanted: dict[str, str] = {}
    for party in parties:
        key = party.strip().lower().removesuffix("s")
        if key not in OVERTONBENCH_PARTIES:
            raise UserError(f"unknown OvertonBench party {party!r}", hint="Democrat, Republican or Independent")
        wanted[key] = OVERTONBENCH_PARTIES[key]
    ratings: dict[tuple[str, str], dict[str, list[int]]] = {}
    texts: dict[tuple[str, str], str] = {}
    qtext: dict[str, str] = {}
    dropped = {"other_affiliation": 0, "bad_rating": 0, "no_answer": 0}
    n_rows = 0
    for row in rows:
        n_rows += 1
        qid, model, answer = str(row["question_id"]), str(row["model"] or ""), str(row["llm_response"] or "").strip()
        if not answer or not model:
            dropped["no_answer"] += 1
            continue
        aff = str(row["U.s. political affiliation"] or "").strip().lower()
        party = next((pid for key, pid in wanted.items() if aff.startswith(key)), None)
        if party is None:
            dropped["other_affiliation"] += 1
            continue
        rating = _rating(row["representation_rating"])
        if rating is None:
            dropped["bad_rating"] += 1
            continue
        qtext.setdefault(qid, str(row["question"]).strip())
        texts.setdefault((qid, model), answer)
        ratings.setdefault((qid, model), {}).setdefault(party, []).append(rating)
    if not ratings:
        raise DatasetImportError(f"{p}: no row with a rated answer from the parties {list(parties)}")
    qids = sorted(qtext, key=lambda q: (len(q), q))
    if questions is not None:
        qids = qids[:questions]
    out_q = []
    for qid in qids:
        answers = []
        for (q, model), text in texts.items():
            if q != qid:
                continue
            by_party = ratings[(q, model)]
            means = {pid: statistics.fmean(v) for pid, v in by_party.items()}
            answers.append(Answer(id=_safe(model), text=text, source=model,
                                  gold={pid: m >= threshold for pid, m in means.items()},
                                  ratings={pid: round(m, 4) for pid, m in means.items()},
                                  raters={pid: len(v) for pid, v in by_party.items()}))
        out_q.append(AnswerQuestion(id=_safe(qid), question=qtext[qid], answers=answers))
    return AnswerPool(
        personas=_party_personas(list(wanted.values())),
        questions=out_q,
        provenance={"source": "OvertonBench (Poole-Dayan et al. 2025, elinorpd/overtonbench, CC-BY-4.0)",
                    "file": p.name, "rows": n_rows, "dropped_rows": dropped, "gold_threshold": threshold,
                    "gold": f"a party's mean 1–5 representation rating >= {threshold:g}"},
    )


# --- generated answers ----------------------------------------------------------------------------

#: Bumped whenever the prompts below change; recorded in a generated pool's provenance.
ANSWER_PROMPT_VERSION = "answer-generate/1"

#: The stances every question gets one candidate answer from (persona-neutral).
STANCES = ("strongly in favour", "somewhat in favour", "mixed or undecided", "somewhat against", "strongly against")

_WRITER = ("You write short, plain answers to opinion questions, in the first person, in 2 to 4 sentences. "
           "Write only the answer.")


def _stance_prompt(question: str, stance: str) -> str:
    return (f"Question: {question}\n\nWrite an answer from someone who is {stance} regarding what the question asks "
            "about. Give their view and one reason.")


def _for_prompt(question: str, persona: PoolPersona) -> str:
    desc = f" ({persona.description})" if persona.description else ""
    return f"Question: {question}\n\nWrite the answer most {persona.name}{desc} would give, with their main reason."


def _against_prompt(question: str, persona: PoolPersona) -> str:
    desc = f" ({persona.description})" if persona.description else ""
    return (f"Question: {question}\n\nWrite an answer that most {persona.name}{desc} would strongly disagree with, "
            "with its main reason.")


async def generate_answers(
    questions: Sequence[AnswerQuestion],
    personas: Sequence[PoolPersona],
    chat: Any,
    *,
    stances: Sequence[str] = STANCES,
    for_and_against: bool = True,
    max_tokens: int = 160,
    temperature: float = 0.7,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> AnswerPool:
    """Candidate answers to ``questions`` written by ``chat`` (a `steerkit.evaluation.chat.ChatModel`):
    one per stance and, with ``for_and_against``, one written for and one against each persona.
    Sampling is seeded per answer (the same seed gives the same pool on a server that honours
    seeds); an empty reply is left out. Existing answers of a question are kept first."""
    jobs: list[tuple[int, str, dict[str, Any]]] = []
    for qi, q in enumerate(questions):
        for s in stances:
            jobs.append((qi, _stance_prompt(q.question, s), {"stance": s}))
        if for_and_against:
            for p in personas:
                jobs.append((qi, _for_prompt(q.question, p), {"written_for": p.id}))
                jobs.append((qi, _against_prompt(q.question, p), {"written_against": p.id}))
    done = 0

    async def one(n: int, prompt: str) -> str:
        nonlocal done
        text = await chat.complete([{"role": "system", "content": _WRITER}, {"role": "user", "content": prompt}],
                                   max_tokens=max_tokens, temperature=temperature, seed=seed * 100_003 + n)
        done += 1
        if progress is not None:
            progress(done, len(jobs))
        return " ".join(text.split())

    texts = await asyncio.gather(*(one(n, prompt) for n, (_, prompt, _) in enumerate(jobs)))
    out = [q.model_copy(deep=True) for q in questions]
    for (qi, _, meta), text in zip(jobs, texts):
        if not text:
            continue
        q = out[qi]
        q.answers.append(Answer(id=f"g{len(q.answers) + 1}", text=text, source=getattr(chat, "model", ""), **meta))
    return AnswerPool(
        personas=list(personas),
        questions=out,
        provenance={"source": "generated", "model": getattr(chat, "model", ""), "prompt_version": ANSWER_PROMPT_VERSION,
                    "stances": list(stances), "for_and_against": for_and_against, "seed": seed,
                    "temperature": temperature},
    )

"""``steerkit pack check``: is a pack ready to steer with, beside the other configured packs?

Errors (the pack cannot be used as it is): it does not load, its ids clash with another pack's,
two of its personas claim one phrase (the extractor keeps only the first). Warnings (it works,
but steers worse than it could): a phrase also claimed by another pack's persona (a user who
says it is steered toward both), an alias no user statement extracts in an "I'm …" or "As a …"
frame, a known false-positive frame that does extract ("I'm not a …", "my uncle is a …"), a small
pool, placeholder questions left, options that overlap or name a persona, questions that give
the persona away, near-duplicate questions, gold answers piled on one option position, questions
on which the personas barely differ under the base model (``spread``, when measured). The answer
pool (``[[answer_pool]]``, for ``steerkit eval --task generation``) is counted (questions, answers,
gold per persona) and checked: too few questions to split, near-duplicate questions or answers,
answers or questions that name a persona, personas without gold or without a representative answer.

Extraction is tested through the public extractor (`RuleExtractor`) over the configured packs
with this one added, so what the report says is what a request would get.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from steerkit.errors import PackError
from steerkit.extract import RuleExtractor
from steerkit.models import Item
from steerkit.packs import PackRegistry, PersonaPack, load_pack
from steerkit.packs._quality import (
    near_duplicates,
    overlapping_options,
    persona_mentions,
    question_text,
)
from steerkit.packs._write import STARTER_QUESTION_PREFIX

__all__ = ["LOW_SPREAD", "MIN_POOL", "Finding", "PackReport", "check_pack"]

#: Fewer questions than this in a persona's pool is a warning (the seed paper's pools have 40+).
MIN_POOL = 40
#: A question whose spread is below this barely separates the personas under the base model.
LOW_SPREAD = 0.05
#: Gold answers at one option position above this share (of 20+ questions) is a warning.
POSITION_SKEW = 0.6

Level = Literal["error", "warning", "info"]


class Finding(BaseModel):
    level: Level
    code: str
    """Stable name of the check: ``invalid``, ``id_conflict``, ``alias_conflict``, ``not_extracted`` …"""
    message: str


class PackReport(BaseModel):
    """What ``pack check`` found: findings and the pack's figures."""

    source: str
    pack_id: str | None = None
    dimension: str | None = None
    format_version: int | None = None
    personas: int = 0
    questions: int = 0
    """Questions (consistency groups) in the largest persona pool."""
    items: int = 0
    options: dict[str, int] = Field(default_factory=dict)
    """How many questions have 2, 3, 4 … options."""
    frames_tested: int = 0
    frames_extracted: int = 0
    false_positive_frames: int = 0
    false_positives: int = 0
    near_duplicate_pairs: int = 0
    gold_position_share: list[float] | None = None
    """Share of gold answers at each option position (imported packs with gold)."""
    spread_measured: int = 0
    spread_mean: float | None = None
    spread_min: float | None = None
    answer_pool_questions: int = 0
    """Open-ended questions in the pack's answer pool (``[[answer_pool]]``)."""
    answer_pool_answers: int = 0
    answer_pool_gold: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Persona id → answers gold-labelled ``representative``, ``not_representative``, and ``unlabelled``."""
    findings: list[Finding] = Field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def exit_code(self, *, strict: bool = False) -> int:
        """0 ok, 1 warnings when ``strict``, 2 errors (a CI step can fail on either)."""
        if self.errors:
            return 2
        return 1 if strict and self.warnings else 0

    def add(self, level: Level, code: str, message: str) -> None:
        self.findings.append(Finding(level=level, code=code, message=message))


def _norm(phrase: str) -> str:
    return " ".join(phrase.casefold().replace("’", "'").split())


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _stating(alias: str) -> dict[str, list[str]]:
    art = _article(alias)
    return {
        "I'm …": [f"I'm {art} {alias}.", f"I'm {alias}."],
        "As a …": [f"As {art} {alias}, what do you think about this?", f"As {alias}, what do you think about this?"],
    }


def _false_positive_frames(alias: str) -> list[str]:
    art = _article(alias)
    return [
        f"I'm not {art} {alias}.",
        f"My uncle is {art} {alias}.",
        f"If I were {art} {alias}, what would I think?",
        f'He said: "I\'m {art} {alias}."',
        f"```\nI'm {art} {alias}\n```",
    ]


def _place_frames(place: str) -> tuple[dict[str, list[str]], list[str]]:
    return ({"I'm from …": [f"I'm from {place}."], "I live in …": [f"I live in {place}."]},
            [f"I don't live in {place}.", f"My sister lives in {place}.", f"If I lived in {place}, what would change?"])


def _keyword_frames(kw: str) -> tuple[dict[str, list[str]], list[str]]:
    return ({"request": [f"Please, {kw}.", f"Answer this, {kw}: how do taxes work?"]},
            [f"`{kw}`", f"```\n{kw}\n```"])


def check_pack(path: str | Path | PersonaPack, others: Sequence[PersonaPack] = ()) -> PackReport:
    """Check one pack (a file, or a loaded pack) beside ``others`` (the other configured packs; a
    pack loaded from the same file is left out of them)."""
    source = path.source if isinstance(path, PersonaPack) else str(Path(path).expanduser())
    report = PackReport(source=source)
    try:
        pack = path if isinstance(path, PersonaPack) else load_pack(path)
    except PackError as e:
        report.add("error", "invalid", str(e))
        return report
    report.pack_id, report.dimension, report.format_version = pack.id, pack.dimension, pack.format_version
    report.personas = len(pack.specs)
    here = _same_file(pack.source)
    others = [o for o in others if not (here and _same_file(o.source) == here)]
    try:
        registry = PackRegistry([*others, pack])
    except PackError as e:
        report.add("error", "id_conflict", str(e))
        registry = None
    _alias_conflicts(pack, others, report)
    if registry is not None:
        _extraction(pack, registry, report)
    _pool(pack, report)
    _answer_pool(pack, report)
    return report


def _same_file(source: str) -> Path | None:
    p = Path(source)
    try:
        return p.resolve() if p.is_file() else None
    except OSError:
        return None


def _cues(pack: PersonaPack) -> dict[str, list[str]]:
    """Persona id → the phrases it claims (aliases and places; keywords for a keywords pack)."""
    if pack.extraction == "keywords":
        return {s.id: list(s.keywords) for s in pack.specs}
    return {s.id: [*s.aliases, *s.places] for s in pack.specs}


def _alias_conflicts(pack: PersonaPack, others: Sequence[PersonaPack], report: PackReport) -> None:
    owners: dict[str, set[str]] = defaultdict(set)
    for pid, phrases in _cues(pack).items():
        for ph in phrases:
            owners[_norm(ph)].add(pid)
    for phrase, pids in sorted(owners.items()):
        if len(pids) > 1:
            level: Level = "error" if pack.extraction == "identity" else "warning"
            report.add(level, "alias_conflict",
                       f"{phrase!r} is claimed by {len(pids)} personas of this pack: {', '.join(sorted(pids))} "
                       "(the extractor keeps only one; give it to one persona)")
    theirs: dict[str, set[str]] = defaultdict(set)
    for o in others:
        if o.extraction != pack.extraction:
            continue
        for pid, phrases in _cues(o).items():
            for ph in phrases:
                theirs[_norm(ph)].add(pid)
    for phrase in sorted(owners):
        if phrase in theirs:
            mine = ", ".join(sorted(owners[phrase]))
            report.add("warning", "alias_conflict",
                       f"{phrase!r} states {mine} and also {', '.join(sorted(theirs[phrase]))} of another configured "
                       "pack: a user who says it is steered toward both")


def _extraction(pack: PersonaPack, registry: PackRegistry, report: PackReport) -> None:
    ex = RuleExtractor(registry)

    def states(text: str, pid: str) -> bool:
        return any(m.persona_id == pid for m in ex.extract(text))

    for spec in pack.specs:
        tests: list[tuple[str, dict[str, list[str]], list[str]]] = []
        if pack.extraction == "keywords":
            for kw in spec.keywords:
                ok, bad = _keyword_frames(kw)
                tests.append((kw, ok, bad))
        else:
            tests += [(a, _stating(a), _false_positive_frames(a)) for a in spec.aliases]
            tests += [(p, *_place_frames(p)) for p in spec.places]
        for phrase, frames, false_frames in tests:
            missed = []
            for frame, texts in frames.items():
                report.frames_tested += 1
                if any(states(t, spec.id) for t in texts):
                    report.frames_extracted += 1
                else:
                    missed.append(frame)
            if missed:
                report.add("warning", "not_extracted",
                           f"{spec.id}: {phrase!r} is not extracted in the frame(s) {', '.join(missed)} "
                           f"(e.g. {frames[missed[0]][0]!r}): a user who states it this way is not steered")
            for text in false_frames:
                report.false_positive_frames += 1
                if states(text, spec.id):
                    report.false_positives += 1
                    report.add("warning", "false_positive",
                               f"{spec.id}: {text!r} extracts the persona, but it does not state it")


def _questions(items: Sequence[Item]) -> list[tuple[str, str, list[Item]]]:
    """(group id, question, its items in order) for the claim/answer groups of a pool; an ungrouped
    item is its own question."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group or it.id, []).append(it)
    return [(g, its[0].question, its) for g, its in groups.items()]


def _pool(pack: PersonaPack, report: PackReport) -> None:
    pools = {s.id: pack.persona_items.get(s.id, pack.items) for s in pack.specs}
    sizes = {pid: len(_questions(its)) for pid, its in pools.items()}
    biggest = max(pools, key=lambda pid: sizes[pid])
    items = pools[biggest]
    questions = _questions(items)
    report.questions, report.items = sizes[biggest], len(items)
    small = sorted(pid for pid, n in sizes.items() if n < MIN_POOL)
    if small:
        report.add("warning", "small_pool",
                   f"{len(small)} persona pool(s) have fewer than {MIN_POOL} questions "
                   f"({', '.join(f'{p}: {sizes[p]}' for p in small[:4])}{' …' if len(small) > 4 else ''}); "
                   "a small pool gives ICM little to be coherent over (`steerkit pack generate` grows it)")
    starters = [q.id for q in pack.questions if q.id.startswith(STARTER_QUESTION_PREFIX)]
    if starters:
        report.add("warning", "placeholder", f"the placeholder question(s) {', '.join(starters)} are still in the pool")
    claims = [(g, q, its) for g, q, its in questions if its[0].kind in ("claim", "answer")]
    report.options = {str(k): v for k, v in sorted(Counter(len(its) for _, _, its in claims).items())}
    names = {s.id: [s.name, s.display, *s.aliases, *s.places] for s in pack.specs}
    overlap, naming, giveaway, uneven = [], [], [], []
    for g, q, its in claims:
        opts = [it.option or "" for it in its]
        if overlapping_options(opts):
            overlap.append(g)
        if any(persona_mentions(o, names) for o in opts):
            naming.append(g)
        if persona_mentions(q, names):
            giveaway.append(g)
        lengths = [len(o) for o in opts]
        if min(lengths) and max(lengths) >= 3 * min(lengths) and max(lengths) - min(lengths) >= 40:
            uneven.append(g)
    for code, ids, what in (
        ("overlapping_options", overlap, "have options a respondent could both pick (not mutually exclusive)"),
        ("option_names_persona", naming, "have an option that names a persona (the option gives the answer away)"),
        ("giveaway", giveaway, "name a persona in the question (it tells the model whom it asks)"),
        ("uneven_options", uneven, "have one option three times longer than another (length hints at the answer)"),
    ):
        if ids:
            report.add("warning", code, f"{len(ids)} question(s) {what}: {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}")
    texts = [question_text(q, [it.option or it.choice_1 or "" for it in its]) for _, q, its in questions]
    dups = [(i, j, s) for i, j, s in near_duplicates(texts) if isinstance(j, int)]
    report.near_duplicate_pairs = len(dups)
    if dups:
        shown = "; ".join(f"{questions[i][0]} ~ {questions[j][0]} ({s:.2f})" for i, j, s in dups[:3])  # type: ignore[index]
        report.add("warning", "near_duplicate",
                   f"{len(dups)} pair(s) of near-duplicate questions: {shown}{' …' if len(dups) > 3 else ''}")
    _gold_positions(pools, report)
    spreads = [q.spread for q in pack.questions if q.spread is not None]
    if spreads:
        report.spread_measured = len(spreads)
        report.spread_mean = round(sum(spreads) / len(spreads), 4)
        report.spread_min = round(min(spreads), 4)
        low = [q.id for q in pack.questions if q.spread is not None and q.spread < LOW_SPREAD]
        if low:
            report.add("warning", "low_spread",
                       f"{len(low)} question(s) barely separate the personas under the base model (spread < {LOW_SPREAD}): "
                       f"{', '.join(low[:5])}{' …' if len(low) > 5 else ''}")
    elif pack.questions:
        report.add("info", "spread_unmeasured",
                   "no question has a measured spread (`steerkit pack generate` measures it for the questions it adds)")


def _gold_positions(pools: dict[str, Sequence[Item]], report: PackReport) -> None:
    at: Counter[int] = Counter()
    for items in pools.values():
        for _, _, its in _questions(items):
            for n, it in enumerate(its):
                if it.gold is True:
                    at[n] += 1
    total = sum(at.values())
    if not total:
        return
    shares = [round(at[n] / total, 3) for n in range(max(at) + 1)]
    report.gold_position_share = shares
    top = max(range(len(shares)), key=lambda n: shares[n])
    if total >= 20 and shares[top] > POSITION_SKEW:
        report.add("warning", "gold_position",
                   f"{shares[top]:.0%} of the gold answers are option {top + 1}: a model that prefers that position "
                   "would look right without following the persona")


def _answer_pool(pack: PersonaPack, report: PackReport) -> None:
    """Counts and findings of the pack's answer pool (none when it has no ``[[answer_pool]]``)."""
    aq = pack.answer_pool
    if not aq:
        return
    report.answer_pool_questions = len(aq)
    report.answer_pool_answers = sum(len(q.answers) for q in aq)
    if len(aq) < 2:
        report.add("warning", "answer_pool_small",
                   f"the answer pool has {len(aq)} question: `steerkit eval --task generation` needs 2 or more "
                   "(some for the search, the rest held out); add questions")
    texts = [q.question for q in aq]
    dups = [(i, j, sim) for i, j, sim in near_duplicates(texts) if isinstance(j, int)]
    if dups:
        shown = "; ".join(f"{aq[i].id} ~ {aq[j].id} ({sim:.2f})" for i, j, sim in dups[:3])  # type: ignore[index]
        report.add("warning", "answer_pool_near_duplicate",
                   f"{len(dups)} pair(s) of near-duplicate answer-pool questions: {shown}{' …' if len(dups) > 3 else ''}")
    close = []
    for q in aq:
        for i, j, sim in near_duplicates([a.text for a in q.answers]):
            if isinstance(j, int):
                close.append(f"{q.id}: {q.answers[i].id} ~ {q.answers[j].id} ({sim:.2f})")
    if close:
        report.add("warning", "answer_pool_near_duplicate",
                   f"{len(close)} pair(s) of near-duplicate answers to one question (the judge and ICM cannot tell "
                   f"them apart): {'; '.join(close[:3])}{' …' if len(close) > 3 else ''}")
    names = {s.id: [s.name, s.display, *s.aliases, *s.places] for s in pack.specs}
    naming = sorted({f"{q.id}/{a.id}" for q in aq for a in q.answers if persona_mentions(a.text, names)})
    if naming:
        report.add("warning", "answer_pool_names_persona",
                   f"{len(naming)} answer(s) name a persona (the answer tells the model whom it speaks for): "
                   f"{', '.join(naming[:5])}{' …' if len(naming) > 5 else ''}")
    giveaway = [q.id for q in aq if persona_mentions(q.question, names)]
    if giveaway:
        report.add("warning", "answer_pool_giveaway",
                   f"{len(giveaway)} answer-pool question(s) name a persona: {', '.join(giveaway[:5])}")
    no_gold, partial, none_true = [], [], []
    for spec in pack.specs:
        rep = sum(a.gold.get(spec.id) is True for q in aq for a in q.answers)
        unrep = sum(a.gold.get(spec.id) is False for q in aq for a in q.answers)
        report.answer_pool_gold[spec.id] = {"representative": rep, "not_representative": unrep,
                                            "unlabelled": report.answer_pool_answers - rep - unrep}
        if rep + unrep == 0:
            no_gold.append(spec.id)
        elif rep + unrep < report.answer_pool_answers:
            partial.append(spec.id)
        if rep + unrep:
            missing = [q.id for q in aq if all(a.gold.get(spec.id) is not True for a in q.answers)]
            if missing:
                none_true.append(f"{spec.id}: {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    if partial:
        report.add("warning", "answer_pool_partial_gold",
                   f"{len(partial)} persona(s) have gold for some answers only ({', '.join(partial[:4])}): the gold, "
                   "inverted and accuracy-matched conditions run only where every search answer has gold")
    if none_true:
        report.add("warning", "answer_pool_no_representative",
                   f"no answer represents the persona in some questions ({'; '.join(none_true[:3])}"
                   f"{' …' if len(none_true) > 3 else ''}): gold examples and the judge's self-check have nothing to show there")
    if no_gold:
        report.add("info", "answer_pool_no_gold",
                   f"{len(no_gold)} persona(s) have no gold in the answer pool ({', '.join(no_gold[:4])}"
                   f"{' …' if len(no_gold) > 4 else ''}): their gold conditions are skipped, and the judge's self-check "
                   "uses answers the chat model writes for and against them")

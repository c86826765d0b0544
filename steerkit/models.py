"""Pydantic v2 value types shared by every part of steerkit.

The search (`steerkit.icm`) consumes a `Pool` and produces an `ExampleSet`; everything else
(packs, cache, middleware, escalation) passes these objects around instead of dicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from steerkit._logodds import log_sigmoid, sigmoid
from steerkit._version import __version__
from steerkit.errors import InvalidPoolError

Ident = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-/]+$")]
PersonaIdent = Annotated[str, StringConstraints(min_length=1, max_length=400, pattern=r"^[A-Za-z0-9_.:\-/+]+$")]
"""A persona id: an `Ident`, or a combined persona's member ids joined with ``+`` (packs cannot
define ``+`` in an id, so a combined id never names a pack's persona)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of `obj` (sorted keys), first 16 hex digits."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- personas -----------------------------------------------------------------------------------


class PersonaCues(_Frozen):
    """What a user's text must state for the rule-based extractor to match a persona."""

    aliases: tuple[str, ...] = ()
    """Names and synonyms: "Democrat", "Dem", "democratic party"; for a country also its demonyms."""
    keywords: tuple[str, ...] = ()
    """Phrases that indicate the persona ("keep it short", "step by step")."""
    negative_keywords: tuple[str, ...] = ()
    """Phrases that indicate a contrasting persona; they lower the match confidence."""


class Persona(_Frozen):
    id: PersonaIdent
    """Stable id, unique across all loaded packs, e.g. "polparty/democrat"; a combined persona's is
    its members' ids sorted and joined with ``+`` ("country/nigeria+polparty/democrat")."""
    name: str = Field(min_length=1)
    """Display name used in claims: "The majority of {name} would answer …"."""
    dimension: str = Field(min_length=1)
    """The persona dimension ("country", "political_affiliation", "interaction_style")."""
    description: str = ""
    cues: PersonaCues = PersonaCues()


# --- items and constraints ----------------------------------------------------------------------

ItemKind = Literal["claim", "preference", "answer"]


class Item(_Frozen):
    """One claim whose truth value for a persona the search infers.

    - ``claim``: survey question + one answer option ("The majority of X would answer … as: 'opt'").
    - ``preference``: ``choice_1 > choice_2`` for the persona (the pair swapped is another item).
    - ``answer``: (question, candidate answer); true when the answer represents the persona.
    """

    id: Ident
    kind: ItemKind
    question: str = Field(min_length=1)
    option: str | None = None
    """The answer option (claim) or the candidate answer (answer)."""
    choice_1: str | None = None
    choice_2: str | None = None
    group: str | None = None
    """Id of the consistency group this item belongs to, if any."""
    key: str | None = None
    """Consistency key for ``keyed`` groups (same key ⇒ same label)."""
    gold: bool | None = None
    """A reference label, when the data has one (evaluation only; the search never reads it)."""
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Item:
        if self.kind in ("claim", "answer") and not self.option:
            raise ValueError(f"item {self.id!r}: kind {self.kind!r} needs a non-empty 'option'")
        if self.kind == "preference" and not (self.choice_1 and self.choice_2):
            raise ValueError(f"item {self.id!r}: kind 'preference' needs 'choice_1' and 'choice_2'")
        return self

    def content(self) -> dict[str, Any]:
        """The fields that define the item for hashing (not gold, not meta)."""
        return self.model_dump(include={"id", "kind", "question", "option", "choice_1", "choice_2", "group", "key"})


ConstraintKind = Literal["exactly_one", "asymmetric", "keyed"]


class ConsistencyGroup(_Frozen):
    """A logical constraint over items.

    - ``exactly_one``: exactly one member is True (the persona's answer among a question's options).
    - ``asymmetric``: two items A>B and B>A; exactly one is True (not both true, not both false).
    - ``keyed``: members with the same ``key`` share a label; members with different keys are not
      both True (candidate answers to one question).
    """

    id: Ident
    kind: ConstraintKind
    item_ids: tuple[Ident, ...]

    @model_validator(mode="after")
    def _size(self) -> ConsistencyGroup:
        n = len(self.item_ids)
        if len(set(self.item_ids)) != n:
            raise ValueError(f"group {self.id!r} lists an item twice")
        if self.kind == "exactly_one" and n < 2:
            raise ValueError(f"group {self.id!r}: an 'exactly_one' group needs at least 2 items, got {n}")
        if self.kind == "asymmetric" and n != 2:
            raise ValueError(f"group {self.id!r}: an 'asymmetric' group needs exactly 2 items, got {n}")
        if self.kind == "keyed" and n < 2:
            raise ValueError(f"group {self.id!r}: a 'keyed' group needs at least 2 items, got {n}")
        return self

    def assignments(self, keys: Mapping[str, str | None] | None = None) -> list[dict[str, bool]]:
        """Every assignment of the members that satisfies the constraint, in a fixed order:
        ``exactly_one``/``asymmetric`` each member True once (the others False); ``keyed`` each key
        class True with the others False (members with the same key, ``None`` included, are one
        class), then none True."""
        ids = self.item_ids
        if self.kind in ("exactly_one", "asymmetric"):
            return [{m: (m == t) for m in ids} for t in ids]
        keys = keys or {}
        classes: list[str | None] = []
        for m in ids:
            if keys.get(m) not in classes:
                classes.append(keys.get(m))
        return [*({m: keys.get(m) == c for m in ids} for c in classes), {m: False for m in ids}]

    def violations(self, labels: dict[str, bool], keys: dict[str, str | None] | None = None) -> int:
        """Number of violated constraints among the members that have a label.

        Counted as the reference code does: unordered inconsistent pairs of labelled members;
        an ``exactly_one``/``asymmetric`` group whose members are *all* labelled False counts one more.
        """
        members = [i for i in self.item_ids if i in labels]
        bad = 0
        if self.kind in ("exactly_one", "asymmetric"):
            trues = sum(1 for i in members if labels[i])
            bad += trues * (trues - 1) // 2
            if members and len(members) == len(self.item_ids) and trues == 0:
                bad += 1
        else:
            keys = keys or {}
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    i, j = members[a], members[b]
                    same = keys.get(i) == keys.get(j)
                    if (same and labels[i] != labels[j]) or (not same and labels[i] and labels[j]):
                        bad += 1
        return bad


class Pool(_Frozen):
    """A persona and the items whose labels the search infers, with their constraints.

    Validation rejects what the search cannot work with: an empty pool, duplicate item ids,
    groups naming unknown items, items in two groups, or a group mismatching the items' ``group``.
    """

    persona: Persona
    items: tuple[Item, ...]
    groups: tuple[ConsistencyGroup, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Pool:
        if not self.items:
            raise InvalidPoolError("the item pool is empty", hint="give the search at least one item")
        ids = [it.id for it in self.items]
        seen: set[str] = set()
        dups = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        if dups:
            raise InvalidPoolError(f"duplicate item ids in the pool: {dups[:5]}", hint="item ids must be unique")
        known = set(ids)
        owner: dict[str, str] = {}
        gids: set[str] = set()
        for g in self.groups:
            if g.id in gids:
                raise InvalidPoolError(f"duplicate consistency group id {g.id!r}")
            gids.add(g.id)
            for i in g.item_ids:
                if i not in known:
                    raise InvalidPoolError(f"group {g.id!r} names unknown item {i!r}")
                if i in owner:
                    raise InvalidPoolError(f"item {i!r} is in two groups ({owner[i]!r} and {g.id!r})")
                owner[i] = g.id
            if g.kind == "keyed":
                by_id = {it.id: it for it in self.items}
                missing = [i for i in g.item_ids if by_id[i].key is None]
                if missing:
                    raise InvalidPoolError(f"keyed group {g.id!r}: items without a 'key': {missing[:5]}")
        for it in self.items:
            if it.group is not None and owner.get(it.id) != it.group:
                raise InvalidPoolError(
                    f"item {it.id!r} says group {it.group!r} but the pool's groups put it in {owner.get(it.id)!r}"
                )
        return self

    @classmethod
    def from_items(cls, persona: Persona, items: list[Item] | tuple[Item, ...], kind: ConstraintKind | None = None) -> Pool:
        """Build groups from the items' ``group`` fields.

        The constraint kind defaults by item kind: claims → exactly_one, preferences → asymmetric,
        answers → keyed.
        """
        if not items:
            raise InvalidPoolError("the item pool is empty", hint="give the search at least one item")
        members: dict[str, list[Item]] = {}
        for it in items:
            if it.group is not None:
                members.setdefault(it.group, []).append(it)
        default = {"claim": "exactly_one", "preference": "asymmetric", "answer": "keyed"}
        groups = []
        for gid, its in members.items():
            try:
                groups.append(
                    ConsistencyGroup(id=gid, kind=kind or default[its[0].kind], item_ids=tuple(i.id for i in its))  # type: ignore[arg-type]
                )
            except ValidationError as e:
                raise InvalidPoolError(e.errors()[0]["msg"].removeprefix("Value error, ")) from e
        return cls(persona=persona, items=tuple(items), groups=tuple(groups))

    def content_hash(self) -> str:
        """Hash of what the search sees: persona name, items and constraints (gold excluded)."""
        return stable_hash(
            {
                "persona": self.persona.name,
                "items": [it.content() for it in self.items],
                "groups": [g.model_dump() for g in self.groups],
            }
        )

    def item(self, item_id: str) -> Item:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(item_id)

    def group_of(self) -> dict[str, ConsistencyGroup]:
        """Item id → its group (items without a group are absent)."""
        return {i: g for g in self.groups for i in g.item_ids}

    def violations(self, labels: dict[str, bool]) -> int:
        keys = {it.id: it.key for it in self.items}
        return sum(g.violations(labels, keys) for g in self.groups)


# --- search configuration -----------------------------------------------------------------------


_MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sparse": {"schedule": "greedy", "restarts": 16, "restart_choice": "consensus", "max_iterations": 1000, "patience": 200,
               "num_seed": 0},
    "exact": {"schedule": "paper", "restarts": 1, "restart_choice": "u", "max_iterations": 200, "patience": 40, "num_seed": 8},
}


class SearchConfig(_Frozen):
    """Hyperparameters of the ICM search. Defaults are the seed paper's (α=50, num_seed=8, …).

    Every cost-bearing setting has an upper bound, so a configuration file or a request cannot
    ask for unbounded work.
    """

    mode: Literal["exact", "sparse"] = "sparse"
    """How mutual predictability is scored. ``sparse`` (default): each item with the labelled items
    of its nearest consistency groups (lexical similarity, at most ``context_k`` demonstrations); a
    change re-scores only the groups whose context holds it, so the cost per proposal is flat in N
    (`steerkit.icm.sparse`). ``exact``: leave-one-out with *all* other labelled items as
    demonstrations (the paper; O(N²) tokens per pass, O(N³) per search), the reference the sparse
    mode is measured against. Sparse is the default by measurement: on OpinionQA Democrat pools
    its labels score at least as high under the *exact* objective as the exact search's, at a
    tenth to a hundredth of the tokens (benchmarks/search_scaling.py)."""
    context_k: int = Field(8, ge=1, le=64)
    """``sparse`` mode: the most demonstrations in one prompt (whole groups, nearest first). 8 by
    measurement: with 4, a pool's labels can settle into locally coherent but globally opposed
    domains (planted-fake recovery 0.54–1.0 over seeds; with 8 always 1.0), at about half the cost."""
    alpha: float = Field(50.0, gt=0, le=1e6)
    objective: Literal["mean_logodds", "sum_logprob"] = "mean_logodds"
    """``mean_logodds``: U = α·mean signed log-odds − I (reference code, what the seed paper ran);
    ``sum_logprob``: U = α·Σ log P(yᵢ | xᵢ, D∖i) − I (Wen et al. paper)."""
    num_seed: int = Field(None, ge=0, le=10_000)  # type: ignore[assignment]
    """Items labelled at random before the search starts (default: 8 exact, the paper's; 0 sparse,
    whose completion phase labels each question from its context, the first from the model alone:
    random seed labels were the largest source of seed-to-seed spread on knowledge pools)."""
    beta: float = Field(0.99, gt=0, le=1e3)
    t0: float = Field(10.0, gt=0, le=1e6)
    t_min: float = Field(0.01, gt=0, le=1e6)
    schedule: Literal["paper", "reference", "greedy"] = None  # type: ignore[assignment]
    """``paper``: T = max(T_min, T₀/(1+β·ln n)), n = iteration; ``reference``: T₀/(1+2·ln(1+accepted));
    ``greedy``: T = 0, only changes that raise U are accepted. Default: ``greedy`` sparse (its
    restarts explore; annealing on a weak model's rugged objective only adds seed-to-seed spread),
    ``paper`` exact."""
    max_iterations: int = Field(None, ge=0, le=1_000_000)  # type: ignore[assignment]
    """Most proposals per restart (default: 1000 sparse, 200 exact). A sparse search normally
    stops long before, at a fixed point or once no single change raises U (``SearchStats.ended``)."""
    patience: int = Field(None, ge=1, le=1_000_000)  # type: ignore[assignment]
    """Stop early after this many iterations without an accepted change (once every item is
    labelled; default: 200 sparse, 40 exact)."""
    restarts: int = Field(None, ge=1, le=64)  # type: ignore[assignment]
    """Independent searches from seeds ``seed, seed+1, …``, run concurrently (default: 16 sparse,
    1 exact); ``restart_choice`` makes them one labelling. 16 by measurement: they share one score
    memo, so 16 cost 8–21% more tokens than 8 (the 107-claim Nigeria pool on Gemma 3 270M: 192k
    evaluated tokens against 178k, with the earlier proposal order), and on the knowledge pools of
    ``benchmarks/label_quality.py``, with ``restart_choice="consensus"``, they narrow the seed-to-seed spread of label accuracy to
    at most 0.08 where 8 left up to 0.14 (two-option) and 0.17 (four-option)."""
    proposals: Literal["label", "answer"] = "label"
    """``sparse`` mode: what a proposal changes. ``label`` (default): a label its context
    contradicts (the claim's own prediction, as the reference code proposes); ``answer``: a
    question's answer where its context prefers another consistent answer (its claims scored
    together, so a model's leaning towards "True" or "False" proposes nothing). ``label`` proposes
    first the label whose own question gains most. ``answer`` is cheaper: the 107-claim Nigeria
    pool on Gemma 3 270M took 132k evaluated tokens against ``label``'s 144.5k, and the weak fake's
    knowledge pools 3–38% fewer. Its labels were less right: 0.81 against 0.84 on 100 two-option
    questions, 0.94 against 0.98 on 30 four-option ones, and 0.76–0.79 against 0.81 on 100. So it is
    not the default."""
    polarity_move: bool = True
    """``sparse`` mode: once no single change raises U, try the whole labelling's mirror (every
    two-way unit inverted at once; one pass) and keep it if U rises."""
    restart_choice: Literal["u", "consensus"] = None  # type: ignore[assignment]
    """How ``restarts`` > 1 become one labelling: ``u`` keeps the restart of highest U;
    ``consensus`` takes each unit's most frequent assignment across the restarts and settles it,
    keeping instead a restart that ended with a higher U than the settled vote (sparse; exact keeps
    the restart that agrees most with the others). Default: ``consensus`` sparse, ``u`` exact. U
    alone does not rank single restarts by accuracy on a weak model; the vote does better, and on
    four-option pools, where the vote can split between two nearly equally frequent labellings, U
    tells them apart (benchmarks/label_quality.py)."""
    group_priority: float = Field(100.0, ge=1, le=1e9)
    seed: int = 27565976
    template: Literal["natural", "reference"] = "natural"
    """``natural`` ends prompts with "…this claim is" so the label is one next token (" True");
    ``reference`` keeps the reference code's trailing space."""

    @model_validator(mode="before")
    @classmethod
    def _drop_fix_rounds(cls, data: Any) -> Any:
        # ``fix_rounds`` (the reference code's ConsistencyFix rounds) never did anything here:
        # ConsistencyFix enumerates a group's consistent assignments at once. Accepted and dropped
        # so stored configs and old call sites keep loading; it no longer feeds the cache key.
        if isinstance(data, dict) and "fix_rounds" in data:
            data = {k: v for k, v in data.items() if k != "fix_rounds"}
        # The settings left unset follow the mode: exact is the paper's search, sparse the one
        # tuned on knowledge pools (benchmarks/label_quality.py).
        if isinstance(data, dict):
            mode = data.get("mode", "sparse")
            for key, value in (_MODE_DEFAULTS.get(mode) or {}).items():
                if data.get(key) is None:
                    data = {**data, key: value}
        return data

    def config_hash(self) -> str:
        data = self.model_dump()
        if data["proposals"] == "label":  # added later: the default keeps the keys of sets cached before
            del data["proposals"]
        return stable_hash(data)


# --- results ------------------------------------------------------------------------------------

LabelSource = Literal["icm", "human", "seed", "fixed"]


class Label(_Frozen):
    item_id: Ident
    value: bool
    confidence: float = Field(ge=0.0, le=1.0)
    """Probability of the assigned label under the final mutual-predictability pass."""
    logodds: float = 0.0
    """Signed True-vs-False log-odds of the final pass (positive favours True)."""
    source: LabelSource = "icm"
    annotator: str | None = None
    """For human labels: which adapter/annotator gave it."""
    labelled_at: datetime | None = None


class SearchStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iterations: int = 0
    accepted: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    """Prompt tokens sent."""
    evaluated_tokens: int | None = None
    """Prompt tokens the engine actually evaluated after its prompt cache (None when unknown)."""
    memo_hits: int = 0
    wall_seconds: float = 0.0
    first_complete_s: float | None = None
    """Seconds from the search's start to its first complete, consistent labelling (the any-time
    answer a waiting request can be served); None when it never had one (e.g. resumed finished)."""
    label_token_mass: float | None = None
    """Mean share of next-token probability mass on the label tokens in the final pass."""
    restarts_u: list[float] = Field(default_factory=list)
    resumed_iterations: int = 0
    """Iterations restored from a checkpoint (not redone) when the search resumed."""
    provisional: bool = False
    """An any-time snapshot of a search still running (complete and consistent, not final)."""
    ended: str | None = None
    """How the kept search ended: ``fixed_point`` (no label contradicted by its context),
    ``converged`` (no single change raises U), ``patience`` or ``max_iterations`` (stopped by its
    budget, not settled); None for a provisional set or an older cache entry."""
    restarts_ended: list[str | None] = Field(default_factory=list)
    restart_agreement: float | None = None
    """Mean over questions of the share of restarts that gave the result's answer (1.0: every
    restart agreed; None with one restart). Low agreement means a different seed would give other
    labels: the set may be a bad draw."""
    unit_agreement: dict[str, float] = Field(default_factory=dict)
    """Per question (group id, or item id of an ungrouped item): that share."""


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    backend: str
    config: SearchConfig
    pool_hash: str
    seed: int
    started_at: datetime = Field(default_factory=_utcnow)
    finished_at: datetime = Field(default_factory=_utcnow)
    library_version: str = __version__
    parent_version: str | None = None
    """The example-set version this one was re-run from (collaborative re-run)."""
    audit: list[dict[str, Any]] = Field(default_factory=list)
    """Audit trail entries, e.g. human labels: {item_id, value, annotator, adapter, at}."""


RELIABLE_AGREEMENT = 0.8
"""Below this mean restart agreement a set is reported as a possible bad draw."""

DECIDED_ANSWERS = 0.6
"""Below this mean answer confidence (`ExampleSet.answer_confidence`) a set's answers rest on
near-ties: its model, in context, barely prefers them to the next best answers. Measured: the
packaged 135M and 270M models give 0.50–0.53 on easy fact pools, where their labels are 0.4–0.6
right, and their restarts agree all the same (they share one deterministic score memo)."""


class UncertainQuestion(_Frozen):
    """A question of an example set with how sure the search was of its answer."""

    id: str
    question: str
    agreement: float | None = None
    """Share of the search's restarts that gave the set's answer (None: one restart)."""
    confidence: float | None = None
    """P(assigned label) of the question's least certain claim."""


class ExampleSet(BaseModel):
    """The labelled result of a search: self-contained, so it can be cached and injected."""

    model_config = ConfigDict(extra="forbid")

    persona: Persona
    items: tuple[Item, ...]
    groups: tuple[ConsistencyGroup, ...] = ()
    labels: dict[str, Label]
    score: float
    """The coherence U of the final labels."""
    violations: int = 0
    group_confidence: dict[str, float] = Field(default_factory=dict)
    """Per consistency group: the confidence of its least certain member."""
    provenance: Provenance
    stats: SearchStats = Field(default_factory=SearchStats)

    @property
    def version(self) -> str:
        """Content-derived version id: changes whenever labels or provenance inputs change."""
        return stable_hash(
            {
                "pool": self.provenance.pool_hash,
                "labels": {k: v.value for k, v in sorted(self.labels.items())},
                "sources": {k: v.source for k, v in sorted(self.labels.items())},
                "config": self.provenance.config.config_hash(),
                "model": self.provenance.model,
                "parent": self.provenance.parent_version,
            }
        )

    def pool(self) -> Pool:
        return Pool(persona=self.persona, items=self.items, groups=self.groups)

    def label_values(self) -> dict[str, bool]:
        return {k: v.value for k, v in self.labels.items()}

    def least_certain(self, n: int = 3) -> list[UncertainQuestion]:
        """The ``n`` questions a different seed would most likely answer otherwise: lowest restart
        agreement first, then lowest confidence (what a reviewer should look at first)."""
        questions: dict[str, str] = {}
        for it in self.items:
            questions.setdefault(it.group or it.id, it.question)
        agree = self.stats.unit_agreement
        conf = self.group_confidence
        ranked = sorted(questions, key=lambda k: (agree.get(k, 1.0), conf.get(k, 1.0), k))
        return [UncertainQuestion(id=k, question=questions[k], agreement=agree.get(k), confidence=conf.get(k)) for k in ranked[:n]]

    def answer_margins(self) -> dict[str, float]:
        """Per question (group id, or item id of an ungrouped item) whose labels the search chose:
        the log-odds by which the model, scoring each claim in its final context, prefers the set's
        answer to the best *other* consistent answer (0: a tie; negative: it prefers another).

        An answer's score is the sum of its claims' log P(label); for one-of-n options this is the
        chosen option's log-odds minus the best other's, so a model's leaning to "True" or "False"
        cancels. Questions with a human or fixed label are left out (the model did not choose)."""
        group_of = {i: g for g in self.groups for i in g.item_ids}
        questions: dict[str, tuple[ConsistencyGroup | None, list[Label]]] = {}
        for it in self.items:
            g = group_of.get(it.id)
            questions.setdefault(g.id if g is not None else it.id, (g, []))[1].append(self.labels[it.id])
        keys = {it.id: it.key for it in self.items}
        out: dict[str, float] = {}
        for qid, (g, labs) in questions.items():
            if any(lab.source != "icm" for lab in labs):
                continue
            answers = ([{labs[0].item_id}, set()] if g is None else
                       [{m for m, v in a.items() if v} for a in g.assignments(keys)])

            def score(true: set[str], labs: list[Label] = labs) -> float:
                return sum(log_sigmoid(lab.logodds if lab.item_id in true else -lab.logodds) for lab in labs)

            chosen = {lab.item_id for lab in labs if lab.value}
            others = [score(a) for a in answers if a != chosen]
            if others:
                out[qid] = score(chosen) - max(others)
        return out

    def answer_confidence(self) -> float | None:
        """Mean over the model's questions of σ(answer margin): how sure it was of the set's answers
        against the runner-up (0.5: coin flips, 1.0: certain; None: no question chosen by the model).
        Restart agreement cannot show a weak model's near-ties; this can."""
        margins = self.answer_margins()
        if not margins:
            return None
        return sum(sigmoid(m) for m in margins.values()) / len(margins)

    def reliability_warning(self) -> str | None:
        """Why this set may be a bad draw (a search stopped by its budget, or restarts that
        disagreed), with what to do; None when it looks sound or nothing is known."""
        s = self.stats
        if s.ended in ("patience", "max_iterations"):
            return (f"the search stopped at its {s.ended.replace('_', ' ')} before settling: its labels may change "
                    "with more iterations (raise max_iterations/patience under [search] in the configuration) or another seed")
        if s.restart_agreement is not None and s.restart_agreement < RELIABLE_AGREEMENT:
            return (f"its {len(s.restarts_u)} restarts agreed on only {s.restart_agreement:.0%} of the answers: "
                    "another seed would label it differently (the model's signal is weak); have the least certain "
                    "questions reviewed (`steerkit review --escalate`), use a stronger base model, or raise restarts "
                    "under [search] in the configuration")
        conf = self.answer_confidence()
        if conf is not None and conf < DECIDED_ANSWERS:
            return (f"its answers rest on near-ties: in context the model preferred them to the next best answers by only "
                    f"{conf:.0%} to {1 - conf:.0%} on average, so they say more about the search than about the persona "
                    "(restarts agreeing does not change that); check the model with `steerkit probe` and use a stronger "
                    "base model (tiny models cannot label these pools), or have people answer the questions "
                    "(`steerkit review --escalate`)")
        return None

    def to_json(self) -> str:
        return self.model_dump_json(indent=None)

    @classmethod
    def from_json(cls, data: str | bytes) -> ExampleSet:
        return cls.model_validate_json(data)

"""Predicting a persona's answer to one question with an example set as few-shot context.

- `ClaimPredictor` scores each option's claim as True/False with a logprob backend, as in the
  paper's Table 5 format (`score_claims` is the one scoring call, `normalise` makes the options'
  P(True) a distribution);
- `ChatPredictor` asks an OpenAI-compatible chat model to pick a lettered option and reads its
  first-token logprobs;
- `test_accuracy` is the share of held-out questions a `Predictor` gets right; `question_outcome`
  scores one question's prediction against its gold option.

`prediction_confidence` is the active-learning signal (`steerkit.escalation.ActiveLearningPolicy`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from steerkit._questions import questions
from steerkit.backends.base import LogprobBackend
from steerkit.errors import BackendError, LabelTokensMissingError, UserError
from steerkit.models import ExampleSet, Item, Persona, Pool, SearchConfig

__all__ = [
    "AccuracyReport",
    "ChatPredictor",
    "ClaimPredictor",
    "Predictor",
    "QuestionResult",
    "normalise",
    "prediction_confidence",
    "question_outcome",
    "score_claims",
    "test_accuracy",
]


@runtime_checkable
class Predictor(Protocol):
    """Predicts a persona's answer to one question given labelled demonstrations.

    Returns, per member item of ``question``, the probability that it is True (the persona's
    answer). For a question of several items the probabilities are normalised to sum to 1.
    """

    async def predict(
        self, persona: Persona, demos: Sequence[tuple[Item, bool]], question: Sequence[Item]
    ) -> dict[str, float]: ...


def prediction_confidence(probs: Mapping[str, float], n_members: int | None = None) -> float:
    """How sure a prediction is: the top option's probability (one item: max(p, 1−p))."""
    if not probs:
        raise UserError("no prediction to take the confidence of")
    if (n_members or len(probs)) == 1:
        p = next(iter(probs.values()))
        return max(p, 1.0 - p)
    return max(probs.values())


class ClaimPredictor:
    """Few-shot claim scoring with a `LogprobBackend`: the demonstrations as "<claim> True/False",
    then each option's claim; P(True) per option, normalised over the question's options."""

    def __init__(self, backend: LogprobBackend, config: SearchConfig | None = None) -> None:
        self.backend = backend
        self.config = config or SearchConfig()

    def prompt(self, persona: Persona, demos: Sequence[tuple[Item, bool]], target: Item) -> str:
        from steerkit.icm import render_demonstration, render_prompt

        parts = [render_demonstration(persona, it, v, self.config) for it, v in demos]
        return "".join(parts) + render_prompt(persona, target, self.config)

    async def predict(
        self, persona: Persona, demos: Sequence[tuple[Item, bool]], question: Sequence[Item]
    ) -> dict[str, float]:
        return normalise(await score_claims(self.backend, persona, demos, question, self.config))


async def score_claims(
    backend: LogprobBackend,
    persona: Persona,
    demos: Sequence[tuple[Item, bool]],
    question: Sequence[Item],
    config: SearchConfig | None = None,
) -> dict[str, float]:
    """Each member item's own P(True) (two-way normalised over True/False, *not* across the
    question's options) after the labelled demonstrations, in the search's prompt format."""
    from steerkit.icm import render_demonstration, render_prompt

    prefix = "".join(render_demonstration(persona, it, v, config) for it, v in demos)
    scores = await backend.score([prefix + render_prompt(persona, it, config) for it in question])
    return {it.id: s.prob_true() for it, s in zip(question, scores)}


def normalise(p_true: Mapping[str, float]) -> dict[str, float]:
    """Per-option P(True) of one question → a distribution over its options (one item: as is)."""
    if len(p_true) == 1:
        return dict(p_true)
    total = sum(p_true.values())
    return {k: v / total for k, v in p_true.items()} if total > 0 else {k: 1.0 / len(p_true) for k in p_true}


def question_outcome(items: Sequence[Item], p_true: dict[str, float]) -> tuple[bool, float, float]:
    """(correct, P(gold option), confidence) of one question from each member's own P(True)."""
    probs = normalise(p_true)
    if len(items) == 1:
        it = items[0]
        p = probs[it.id]
        return (p > 0.5) == bool(it.gold), (p if it.gold else 1.0 - p), max(p, 1.0 - p)
    top = max(items, key=lambda it: (probs[it.id], -items.index(it)))
    gold = next(it for it in items if it.gold)
    return top.id == gold.id, probs[gold.id], probs[top.id]


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _option_text(it: Item) -> str:
    if it.kind == "preference":
        return f"{it.choice_1} is better than {it.choice_2}"
    return it.option or ""


class ChatPredictor:
    """The paper's inference mode: an instruction-tuned chat model sees the persona and the example
    set as answered questions, picks a lettered option, and the first token's top logprobs give a
    distribution over the letters.

    ``client`` is an ``openai.AsyncOpenAI`` (e.g. pointed at `EmbeddedBackend.base_url`).
    """

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        top_logprobs: int = 20,
        max_demos: int | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self.client = client
        self.model = model
        self.top_logprobs = top_logprobs
        self.max_demos = max_demos
        self._sem = asyncio.Semaphore(max_concurrency)
        self.calls = 0

    def messages(self, persona: Persona, demos: Sequence[tuple[Item, bool]], question: Sequence[Item]) -> list[dict]:
        name = persona.name
        # demonstrations: each demo question with the option(s) labelled True; single claims as statements
        by_q: dict[str, list[tuple[Item, bool]]] = {}
        order: list[str] = []
        for it, v in demos:
            key = it.group or it.id
            if key not in by_q:
                order.append(key)
            by_q.setdefault(key, []).append((it, v))
        lines: list[str] = []
        for key in order[: self.max_demos] if self.max_demos is not None else order:
            members = by_q[key]
            if len(members) == 1 and members[0][0].group is None:
                it, v = members[0]
                lines.append(f"Q: {it.question}\nClaim: {_option_text(it)}\nA: {'True' if v else 'False'}")
            else:
                chosen = [_option_text(it) for it, v in members if v]
                lines.append(f"Q: {members[0][0].question}\nA: {chosen[0] if chosen else 'none of the options'}")
        desc = f" {persona.description}" if persona.description else ""
        system = (
            f"You predict how most {name} answer survey questions.{desc} "
            "Reply with the letter of one option and nothing else."
        )
        ctx = ("How most " + name + " answered other questions:\n\n" + "\n\n".join(lines) + "\n\n") if lines else ""
        if len(question) == 1 and question[0].group is None:
            opts = ["True", "False"]
            ask = f"Q: {question[0].question}\nClaim: {_option_text(question[0])}"
        else:
            opts = [_option_text(it) for it in question]
            ask = f"Q: {question[0].question}"
        listing = "\n".join(f"{_LETTERS[i]}. {o}" for i, o in enumerate(opts))
        user = f"{ctx}{ask}\nOptions:\n{listing}\nWhich option would most {name} choose? Answer with the letter."
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def predict(
        self, persona: Persona, demos: Sequence[tuple[Item, bool]], question: Sequence[Item]
    ) -> dict[str, float]:
        single = len(question) == 1 and question[0].group is None
        n = 2 if single else len(question)
        if n > len(_LETTERS):
            raise UserError(f"a question with {n} options is too many for lettered prediction")
        async with self._sem:
            self.calls += 1
            try:
                resp = await self.client.chat.completions.create(
                    model=self.model,
                    messages=self.messages(persona, demos, question),
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=True,
                    top_logprobs=self.top_logprobs,
                )
            except Exception as e:  # openai errors → our tree
                raise BackendError(f"chat prediction failed: {type(e).__name__}: {e}") from e
        content = resp.choices[0].logprobs.content if resp.choices and resp.choices[0].logprobs else None
        if not content:
            raise LabelTokensMissingError("the chat server returned no logprobs for the prediction")
        mass = [0.0] * n
        for tl in content[0].top_logprobs or []:
            t = tl.token.strip().strip(".):").upper()
            if len(t) == 1 and t in _LETTERS[:n]:
                mass[_LETTERS.index(t)] += math.exp(tl.logprob)
        total = sum(mass)
        if total <= 0:
            raise LabelTokensMissingError(
                f"no option letter among the chat model's top {self.top_logprobs} first tokens",
                hint="raise top_logprobs or use ClaimPredictor with a logprob backend",
            )
        probs = [m / total for m in mass]
        if single:
            return {question[0].id: probs[0]}
        return {it.id: p for it, p in zip(question, probs)}


# --- metrics ------------------------------------------------------------------------------------


@dataclass
class QuestionResult:
    question_id: str
    predicted: list[str]
    """Item ids predicted True."""
    gold: list[str]
    """Item ids that are True in the gold labels."""
    correct: bool
    confidence: float
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class AccuracyReport:
    accuracy: float
    n: int
    mean_confidence: float
    questions: list[QuestionResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "mean_confidence": self.mean_confidence}


def _demos(source: ExampleSet | Sequence[tuple[Item, bool]] | None) -> list[tuple[Item, bool]]:
    if source is None:
        return []
    if isinstance(source, ExampleSet):
        return [(it, source.labels[it.id].value) for it in source.items if it.id in source.labels]
    return list(source)


async def test_accuracy(
    source: ExampleSet | Sequence[tuple[Item, bool]] | None,
    test_pool: Pool,
    predictor: Predictor,
    *,
    max_demos: int | None = None,
) -> AccuracyReport:
    """Share of ``test_pool``'s questions (with gold labels) whose persona answer ``predictor``
    gets right with ``source``'s labels as few-shot demonstrations (None: zero-shot).

    A multi-option question counts as right when the top option is the gold one; a single claim
    when P(True) > 0.5 matches its gold label.
    """
    demos = _demos(source)
    if max_demos is not None:
        demos = demos[:max_demos]
    by_id = {it.id: it for it in test_pool.items}
    qs = [(q, [by_id[i] for i in m]) for q, m in questions(test_pool)]
    qs = [(q, items) for q, items in qs if all(it.gold is not None for it in items)]
    if not qs:
        raise UserError("the test pool has no question with gold labels", hint="give items a 'gold' value")
    probs_all = await asyncio.gather(*(predictor.predict(test_pool.persona, demos, items) for _, items in qs))
    results: list[QuestionResult] = []
    for (q, items), probs in zip(qs, probs_all):
        gold = [it.id for it in items if it.gold]
        if len(items) == 1:
            p = probs[items[0].id]
            predicted = [items[0].id] if p > 0.5 else []
        else:
            top = max(items, key=lambda it: (probs[it.id], -items.index(it)))
            predicted = [top.id]
        results.append(
            QuestionResult(
                question_id=q,
                predicted=predicted,
                gold=gold,
                correct=sorted(predicted) == sorted(gold),
                confidence=prediction_confidence(probs, len(items)),
                probs=dict(probs),
            )
        )
    n = len(results)
    return AccuracyReport(
        accuracy=sum(r.correct for r in results) / n,
        n=n,
        mean_confidence=sum(r.confidence for r in results) / n,
        questions=results,
    )


test_accuracy.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

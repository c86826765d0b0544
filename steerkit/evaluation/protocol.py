"""What every task of the paper's protocol shares: folds, the labellings its conditions compare,
and the metrics.

- **folds**: `make_folds` (k-fold, stratified by persona: each persona's questions split evenly)
  and `split_questions` (one seeded search/test split, OvertonBench's 30/70);
- **labellings** of the train questions, one per condition: gold, inverted gold, `random_labels`
  (consistent coin flips) and `accuracy_matched` (ICM's labels at the same accuracy against gold,
  less coherent); `gold_questions` keeps the questions a labelling can be scored on;
- **metrics**: `expected_calibration_error`, the standard error of a mean (`se`) and its bootstrap
  over questions (`bootstrap_se`), `label_accuracy` of an example set, its `coherence` U, and
  `mutual_predictability` of any labelling;
- `run_provenance`: the fields every report's provenance carries.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from steerkit._questions import questions as _questions
from steerkit._version import __version__
from steerkit.backends.base import LogprobBackend
from steerkit.errors import UserError
from steerkit.models import ExampleSet, Item, Pool, SearchConfig

__all__ = [
    "Progress",
    "accuracy_matched",
    "bootstrap_se",
    "coherence",
    "expected_calibration_error",
    "gold_questions",
    "is_right",
    "label_accuracy",
    "make_folds",
    "mutual_predictability",
    "random_labels",
    "run_provenance",
    "se",
    "split_questions",
]

#: ``progress(what, done, total)``, called after each unit of work.
Progress = Callable[[str, int, int], None]


# --- folds ----------------------------------------------------------------------------------------


def make_folds(questions: Sequence[Sequence[Item]], k: int, seed: int | str) -> list[list[list[Item]]]:
    """``k`` folds of one persona's questions (seeded shuffle, then round robin: sizes differ by ≤1)."""
    if k < 2:
        raise UserError("cross-validation needs at least 2 folds")
    if len(questions) < k:
        raise UserError(f"{len(questions)} questions cannot make {k} folds", hint="use more questions or fewer --folds")
    qs = [list(q) for q in questions]
    random.Random(seed).shuffle(qs)
    return [qs[i::k] for i in range(k)]


def split_questions(ids: Sequence[str], search_fraction: float, seed: int | str) -> tuple[list[str], list[str]]:
    """One seeded (search, test) split of question ids; at least one question on each side.

    OvertonBench's protocol in the seed paper: 30% of the questions for the search, 70% held out."""
    if not 0.0 < search_fraction < 1.0:
        raise UserError(f"the search fraction must be between 0 and 1, got {search_fraction}")
    if len(ids) < 2:
        raise UserError(f"{len(ids)} question(s) cannot be split into search and test questions",
                        hint="give at least 2 questions")
    order = list(ids)
    random.Random(seed).shuffle(order)
    n = min(len(order) - 1, max(1, round(search_fraction * len(order))))
    return order[:n], order[n:]


# --- labellings -----------------------------------------------------------------------------------


def gold_questions(pool: Pool) -> list[list[Item]]:
    """The pool's questions whose every member has a gold label (and, for a group, exactly one
    member is gold True), in pool order."""
    by_id = {it.id: it for it in pool.items}
    out = []
    for _, members in _questions(pool):
        items = [by_id[i] for i in members]
        if any(it.gold is None for it in items):
            continue
        if len(items) > 1 and sum(bool(it.gold) for it in items) != 1:
            continue
        out.append(items)
    return out


def random_labels(questions: Sequence[Sequence[Item]], rng: random.Random) -> dict[str, bool]:
    """Consistent random labels: one random option True per question (a single claim: a coin flip)."""
    out: dict[str, bool] = {}
    for items in questions:
        if len(items) == 1:
            out[items[0].id] = rng.random() < 0.5
        else:
            win = rng.randrange(len(items))
            out.update({it.id: k == win for k, it in enumerate(items)})
    return out


def is_right(q: Sequence[Item], labels: Mapping[str, bool]) -> bool:
    """Every member of question ``q`` labelled as its gold label."""
    return all(labels[it.id] == bool(it.gold) for it in q)


def accuracy_matched(labels: dict[str, bool], questions: Sequence[Sequence[Item]], rng: random.Random) -> dict[str, bool]:
    """``labels`` perturbed at the same question-level accuracy against gold: for as many pairs as
    possible, one question the labels get right is given a wrong (consistent) answer and one they
    get wrong is given the gold answer. With all right or all wrong, nothing can change (returned as is)."""
    out = dict(labels)
    right = [q for q in questions if is_right(q, labels)]
    wrong = [q for q in questions if not is_right(q, labels)]
    rng.shuffle(right)
    rng.shuffle(wrong)
    for r, w in zip(right, wrong):
        if len(r) == 1:
            out[r[0].id] = not bool(r[0].gold)
        else:
            bad = rng.choice([it for it in r if not it.gold])
            out.update({it.id: it.id == bad.id for it in r})
        out.update({it.id: bool(it.gold) for it in w})
    return out


# --- metrics --------------------------------------------------------------------------------------


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 15) -> float:
    """ECE: Σ_b (n_b / n) · |accuracy_b − mean confidence_b| over ``bins`` equal-width bins of [0, 1]."""
    if not confidence:
        raise UserError("no predictions to calibrate")
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    corr = np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    acc = np.bincount(idx, weights=corr, minlength=bins)
    cs = np.bincount(idx, weights=conf, minlength=bins)
    nz = n > 0
    return float(np.sum(np.abs(acc[nz] - cs[nz])) / len(conf))


def se(values: Sequence[float]) -> float:
    """Standard error of the mean (NaN for fewer than two values)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def bootstrap_se(values: Sequence[float], *, resamples: int = 1000, seed: int | str = 0) -> float:
    """Standard error of the mean by the bootstrap: the standard deviation of the means of
    ``resamples`` resamples (with replacement) of ``values``, one value per question (NaN for fewer
    than two values). OvertonBench's confidence intervals resample questions the same way."""
    if len(values) < 2:
        return float("nan")
    rng = np.random.default_rng(int.from_bytes(str(seed).encode()[:8].ljust(8, b"\0"), "little"))
    arr = np.asarray(values, dtype=float)
    means = arr[rng.integers(0, len(arr), size=(resamples, len(arr)))].mean(axis=1)
    return float(means.std(ddof=1))


def label_accuracy(es: ExampleSet, *, per: str = "item") -> float | None:
    """Share of labels equal to the gold label, over items that have one (None if none has).

    ``per="question"``: a question counts as right when all its members are.
    """
    gold = {it.id: it.gold for it in es.items if it.gold is not None}
    if not gold:
        return None
    if per == "item":
        return sum(es.labels[i].value == g for i, g in gold.items()) / len(gold)
    if per != "question":
        raise UserError(f"per must be 'item' or 'question', got {per!r}")
    qs = [m for _, m in _questions(es) if all(i in gold for i in m)]
    if not qs:
        return None
    return sum(all(es.labels[i].value == gold[i] for i in m) for m in qs) / len(qs)


def coherence(es: ExampleSet) -> float:
    """The example set's coherence: the search's score U of its final labels (Table 1's "Coh.")."""
    return float(es.score)


async def mutual_predictability(
    pool: Pool,
    labels: Mapping[str, bool],
    backend: LogprobBackend,
    config: SearchConfig | None = None,
) -> float:
    """U of any labelling (e.g. the gold labels), by the search's own leave-one-out pass
    (`steerkit.icm.Objective`): comparable with `coherence` of an example set."""
    from steerkit.icm import Objective

    if not labels:
        raise UserError("no labelled item to score")
    ev = await Objective(pool, backend, config or SearchConfig()).evaluate(dict(labels))
    return float(ev.u)


def run_provenance(started: _dt.datetime, **fields: Any) -> dict[str, Any]:
    """The provenance every report carries: library version, Python, start and finish times, and
    ``fields`` (models, configuration, data hashes)."""
    return {
        "library_version": __version__,
        **fields,
        "started_at": started.isoformat(),
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(),
        "python": sys.version.split()[0],
    }

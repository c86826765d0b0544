"""Gold-labelled questions per persona from the paper's datasets (or a user's JSONL), for the
classification and preference tasks and the probe: `load_dataset` → one `EvalPersona` each."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerkit.errors import UserError
from steerkit.evaluation.preference import load_persona_tailoring
from steerkit.evaluation.protocol import gold_questions
from steerkit.models import Item, Persona, Pool

__all__ = ["GQA_COUNTRIES", "OQA_PARTIES", "DatasetKind", "EvalPersona", "load_dataset"]

DatasetKind = Literal["opinionqa", "globalopinionqa", "jsonl", "persona-tailoring"]

OQA_PARTIES = {"Democrat": "Democrats", "Republican": "Republicans", "Independent": "Independents"}
GQA_COUNTRIES = ("Brazil", "Britain", "France", "Germany", "Indonesia", "Japan", "Jordan", "Lebanon", "Mexico",
                 "Nigeria", "Pakistan", "Russia", "Turkey")


@dataclass
class EvalPersona:
    """One persona's evaluation data from `load_dataset`: its gold-labelled questions (each the
    items of one question) and the name its report rows use."""

    persona: Persona
    questions: list[list[Item]]
    label: str = ""


def _sample(qs: list[list[Item]], n: int | None, seed: int | str) -> list[list[Item]]:
    qs = list(qs)
    random.Random(seed).shuffle(qs)
    return qs if n is None else qs[:n]


def _pool(items: Sequence[Item], persona: Persona | None = None) -> Pool:
    return Pool.from_items(persona or Persona(id="x", name="x", dimension="x"), list(items))


def _common_questions(
    items_by_group: dict[str, Iterable[Item]], seed: int, questions: int | None
) -> tuple[dict[str, dict[str, list[Item]]], list[str]]:
    """Each group's questions (by id) that have exactly one gold answer, and the ids every group
    has, shuffled by ``seed`` and cut to ``questions``."""
    by_group: dict[str, dict[str, list[Item]]] = {}
    for g, items in items_by_group.items():
        qs: dict[str, list[Item]] = {}
        for it in items:
            qs.setdefault(str(it.group), []).append(it)
        by_group[g] = {k: v for k, v in qs.items() if len(gold_questions(_pool(v))) == 1}
    common = sorted(set.intersection(*(set(v) for v in by_group.values())))
    random.Random(seed).shuffle(common)
    return by_group, common if questions is None else common[:questions]


def load_dataset(
    kind: DatasetKind,
    path: str | Path,
    *,
    questions: int | None = None,
    personas: Sequence[str] | None = None,
    seed: int = 0,
    wave: str = "American_Trends_Panel_W92",
    options: Sequence[int] = (2,),
    max_chars: int | None = None,
    persona_name: str | None = None,
) -> list[EvalPersona]:
    """Gold-labelled questions per persona, ``questions`` of each (a seeded sample).

    - ``opinionqa``: ``path`` is OpinionQA's ``human_resp`` folder (or one wave folder); personas
      are POLPARTY groups (default the three parties); the same questions for every party.
    - ``globalopinionqa``: ``path`` is the CSV; personas are countries (default the paper's 13),
      questions answered in all of them.
    - ``jsonl``: one persona (``persona_name``) and the file's items with gold labels.
    - ``persona-tailoring``: ``path`` is the release's ``data`` folder; personas are the four Table 2
      styles (``dcf``, ``dec``, ``dms``, ``dsn``); ``max_chars`` skips long pairs.
    """
    from steerkit import importers

    p = Path(path).expanduser()
    out: list[EvalPersona] = []
    if kind == "opinionqa":
        wave_dir = p if (p / "info.csv").is_file() else p / wave
        groups = list(personas or OQA_PARTIES)
        by_group, keep = _common_questions(
            {g: importers.import_opinionqa(wave_dir, "POLPARTY", g, allowed_options=tuple(options)) for g in groups},
            seed, questions,
        )
        for g in groups:
            name = OQA_PARTIES.get(g, g)
            persona = Persona(id=f"polparty/{g.lower()}", name=name, dimension="political_affiliation")
            out.append(EvalPersona(persona, [list(by_group[g][k]) for k in keep], g))
    elif kind == "globalopinionqa":
        countries = list(personas or GQA_COUNTRIES)
        per, keep = _common_questions(
            {c: importers.import_globalopinionqa_csv(p, c, allowed_options=tuple(options), require_countries=countries)
             for c in countries},
            seed, questions,
        )
        for c in countries:
            persona = Persona(id=f"country/{c.lower()}", name=f"people from {c}", dimension="country")
            out.append(EvalPersona(persona, [per[c][k] for k in keep], c))
    elif kind == "jsonl":
        if not persona_name:
            raise UserError("a JSONL dataset needs a persona name", hint="pass --persona-name 'Democrats'")
        items = importers.import_jsonl(p)
        persona = Persona(id="jsonl/persona", name=persona_name, dimension="custom")
        out.append(EvalPersona(persona, _sample(gold_questions(_pool(items, persona)), questions, seed), persona_name))
    elif kind == "persona-tailoring":
        for persona, qs, label in load_persona_tailoring(p, personas=list(personas) if personas else None,
                                                         questions=questions, seed=seed, max_chars=max_chars):
            out.append(EvalPersona(persona, qs, label))
    else:
        raise UserError(f"unknown dataset kind {kind!r}", hint="opinionqa, globalopinionqa, jsonl or persona-tailoring")
    for ep in out:
        if not ep.questions:
            raise UserError(f"persona {ep.persona.id}: no gold-labelled question in the data")
    return out



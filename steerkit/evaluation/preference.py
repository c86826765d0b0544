"""The pairwise-preference task: Persona-Tailoring (Balepur et al. 2025), as the seed paper frames it.

Each item is one ordered pair of responses, "Choice 1 > Choice 2 for <persona>", and the pair
swapped is another item: a claim like any other, so the classification run
(`steerkit.evaluation.classification.run_eval`) scores it. What is particular to the task lives
here: the paper's four interaction-style personas (Table 2, clustered by keywords) and loading them.
"""

from __future__ import annotations

import random
from pathlib import Path

from steerkit.errors import UserError
from steerkit.models import Item, Persona

__all__ = ["PT_NAMES", "load_persona_tailoring"]

#: The paper's four styles: persona id → (table label, persona name).
PT_NAMES = {
    "style/dcf": ("DCF", "users who prefer direct, concise, fact-first answers"),
    "style/dec": ("DEC", "users who prefer dialogic, empathetic, coaching answers"),
    "style/dms": ("DMS", "users who prefer direct, methodical, step-by-step answers"),
    "style/dsn": ("DSN", "users who prefer dialogic, scholarly, nuanced answers"),
}


def load_persona_tailoring(
    path: str | Path,
    *,
    personas: list[str] | tuple[str, ...] | None = None,
    questions: int | None = None,
    seed: int = 0,
    max_chars: int | None = None,
) -> list[tuple[Persona, list[list[Item]], str]]:
    """(persona, its questions — one preference item each —, table label) per style; ``path`` is
    the release's ``data`` folder, ``personas`` the styles (``dcf``, ``dec``, ``dms``, ``dsn``;
    default all four), ``questions`` a seeded sample of each, ``max_chars`` skips long pairs."""
    from steerkit import importers

    by_style = importers.import_persona_tailoring(Path(path).expanduser(), max_chars=max_chars)
    wanted = [f"style/{s.lower().removeprefix('style/')}" for s in (personas or PT_NAMES)]
    out = []
    for sid in wanted:
        if sid not in PT_NAMES:
            raise UserError(f"unknown Persona-Tailoring style {sid!r}", hint="use dcf, dec, dms or dsn")
        label, name = PT_NAMES[sid]
        persona = Persona(id=sid, name=name, dimension="interaction_style")
        qs = [[it] for it in by_style[sid]]
        random.Random(f"{seed}/{sid}").shuffle(qs)
        out.append((persona, qs if questions is None else qs[:questions], label))
    return out

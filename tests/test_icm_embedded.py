"""The ICM search on the real embedded model (small pool, tiny budget)."""

from __future__ import annotations

import pytest

from steerkit.icm import render_prompt, search
from steerkit.models import Item, Persona, Pool, SearchConfig

pytestmark = pytest.mark.llama

PERSONA = Persona(id="bench/informed", name="well-informed people", dimension="knowledge")


def fact_pool() -> Pool:
    facts = [("What is the capital of France?", "Paris", "Madrid"), ("How many legs does a spider have?", "Eight", "Six")]
    items = []
    for q, (text, right, wrong) in enumerate(facts):
        for k, (opt, gold) in enumerate([(right, True), (wrong, False)]):
            items.append(Item(id=f"f{q}:{k}", kind="claim", question=text, option=opt, group=f"f{q}", gold=gold))
    return Pool.from_items(PERSONA, items)


async def test_label_is_one_natural_next_token(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    prompt = render_prompt(PERSONA, fact_pool().items[0])
    tok = await embedded_backend.label_tokenization(prompt)
    assert tok["True"]["single_token"] and tok["False"]["single_token"]


async def test_search_runs_on_the_embedded_model(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    pool = fact_pool()
    calls_before, fallbacks_before = embedded_backend.stats.calls, embedded_backend.stats.fallbacks
    es = await search(pool, embedded_backend, SearchConfig(mode="exact", num_seed=2, max_iterations=3, patience=1, seed=1))
    assert set(es.labels) == {it.id for it in pool.items} and pool.violations(es.label_values()) == 0
    s = es.stats
    # every scored prompt is one request (plus two forced-label requests per fallback)
    fallbacks = embedded_backend.stats.fallbacks - fallbacks_before
    assert s.model_calls + 2 * fallbacks == embedded_backend.stats.calls - calls_before
    assert s.label_token_mass is not None and s.label_token_mass > 0.3  # demonstrations make the labels likely
    assert s.evaluated_tokens is not None and s.evaluated_tokens < s.prompt_tokens  # the prompt cache served prefixes
    assert es.provenance.backend == "embedded" and es.provenance.model == embedded_backend.model


"""Prompt rendering for the ICM search.

Every item is rendered as a short block that ends so that the label is *one natural next token*:
``"…\\nI think this claim is"`` followed by ``" True"`` or ``" False"``. A demonstration is the
block, the label word with its leading space, and a blank line::

    Question: Do you favor X?
    Claim: The majority of Democrats would answer this question as: 'Favor'
    I think this claim is True

The reference code's template ends in ``"…this claim is "`` (with a trailing space) and appends
``"True"``/``"False"`` without a space; with it the small test models put neither label token in
their top 20 (the trailing space becomes its own token and " True" cannot follow it). That
template is kept as ``SearchConfig(template="reference")`` for comparison.
"""

from __future__ import annotations

from steerkit.models import Item, Persona, SearchConfig

__all__ = ["render_prompt", "render_demonstration", "label_word", "QUERY_TAIL"]

QUERY_TAIL = "I think this claim is"


def _clean(text: str) -> str:
    """Collapse whitespace (newlines included) so a field cannot break the block structure."""
    return " ".join(str(text).split())


def _body(persona: Persona, item: Item) -> str:
    q = _clean(item.question)
    name = _clean(persona.name)
    if item.kind == "claim":
        return f"Question: {q}\nClaim: The majority of {name} would answer this question as: '{_clean(item.option or '')}'"
    if item.kind == "preference":
        return (
            f"Question: {q}\nChoice 1: {_clean(item.choice_1 or '')}\nChoice 2: {_clean(item.choice_2 or '')}\n"
            f"Claim: Choice 1 > Choice 2 for {name}"
        )
    # answer
    return f"Question: {q}\nAnswer: {_clean(item.option or '')}\nClaim: This answer represents the views of {name}"


def render_prompt(persona: Persona, item: Item, config: SearchConfig | None = None) -> str:
    """The item's claim block, ending in "…I think this claim is" (natural template, no trailing
    space: the next token is " True"/" False") or "…is " (``template="reference"``)."""
    template = (config or SearchConfig()).template
    tail = QUERY_TAIL + (" " if template == "reference" else "")
    return f"{_body(persona, item)}\n{tail}"


def label_word(value: bool, config: SearchConfig | None = None) -> str:
    """The text appended to a rendered prompt for a label: " True"/" False" (natural) or
    "True"/"False" (reference template, whose prompt already ends in a space)."""
    word = "True" if value else "False"
    return word if (config or SearchConfig()).template == "reference" else " " + word


def render_demonstration(persona: Persona, item: Item, value: bool, config: SearchConfig | None = None) -> str:
    """One in-context demonstration: prompt + label word + blank line."""
    return render_prompt(persona, item, config) + label_word(value, config) + "\n\n"

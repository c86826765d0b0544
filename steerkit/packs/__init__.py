"""Persona packs: persona definitions, extraction cues and item pools, loaded from data files.

A pack is one TOML or JSON file (the shipped ones live in the repository's ``personas/`` folder
and are installed as the ``steerkit.personas`` resource package). It holds one persona
*dimension* (``country``, ``political_affiliation``, ``interaction_style`` …), its personas with
the cues the rule extractor matches, the item pool every persona of the pack is searched over,
and the templates used to inject examples into a chat prompt::

    format_version = 1
    id = "countries"
    dimension = "country"
    extraction = "identity"          # self-statements ("I'm from Brazil"); "keywords" for styles

    [[personas]]
    id = "country/brazil"
    name = "people from Brazil"      # used in claims: "The majority of {name} would answer …"
    label = "Brazil"
    aliases = ["Brazilian"]          # identity words: "I'm Brazilian", "as a Brazilian"
    places = ["Brazil", "Brasil"]    # place names: "I'm from Brazil", "I live in Brazil"

    [[questions]]                    # survey question: one claim per option, exactly one True
    id = "gender_equality"
    question = "Should women have the same rights as men?"
    options = ["Yes", "No"]

``personas/FORMAT.md`` describes every field (preferences, open answers, ``items_files`` of
imported items, templates, provenance, the ``answer_pool`` of ``steerkit eval --task generation``). The model and its validation live in `_model`, files,
the shipped packs and `PackRegistry` (the configured packs: only personas it defines can ever be
matched, cached or searched) in `_registry`, writing pack files in `_write`, and the text
measures that ``steerkit pack check`` and ``pack generate`` share in `_quality`.
"""

from steerkit.packs._model import (
    ANSWER_POOL_FORMAT_VERSION,
    FORMAT_VERSION,
    SUPPORTED_FORMAT_VERSIONS,
    AnswerSpec,
    PackFile,
    PackProvenance,
    PackTemplates,
    PersonaPack,
    PersonaSpec,
    PoolAnswerSpec,
    PoolQuestionSpec,
    PreferenceSpec,
    QuestionSpec,
    format_version_needed,
    pack_from_data,
)
from steerkit.packs._quality import (
    near_duplicates,
    overlapping_options,
    persona_mentions,
    spread,
)
from steerkit.packs._registry import (
    PACK_SUFFIXES,
    PackRegistry,
    default_pack_paths,
    load_pack,
)

__all__ = [
    "ANSWER_POOL_FORMAT_VERSION",
    "FORMAT_VERSION",
    "PACK_SUFFIXES",
    "SUPPORTED_FORMAT_VERSIONS",
    "AnswerSpec",
    "NewPackSpec",
    "NewPersona",
    "PackFile",
    "PackProvenance",
    "PackRegistry",
    "PackTemplates",
    "PersonaPack",
    "PersonaSpec",
    "PoolAnswerSpec",
    "PoolQuestionSpec",
    "PreferenceSpec",
    "QuestionSpec",
    "append_answer_pool",
    "append_questions",
    "default_pack_paths",
    "format_version_needed",
    "load_pack",
    "near_duplicates",
    "new_pack_document",
    "overlapping_options",
    "pack_from_data",
    "persona_mentions",
    "spread",
    "write_pack_document",
    "write_survey_pack",
]

_WRITE = frozenset({"NewPackSpec", "NewPersona", "append_answer_pool", "append_questions", "new_pack_document", "write_pack_document",
                    "write_survey_pack"})


def __getattr__(name: str) -> object:
    """Writing packs needs tomlkit: imported on first use, so loading packs (every request) does not."""
    if name in _WRITE:
        from steerkit.packs import _write

        return getattr(_write, name)
    raise AttributeError(f"module 'steerkit.packs' has no attribute {name!r}")

"""steerkit: async steering middleware built on Internal Coherence Maximization."""

from steerkit._version import __version__
from steerkit.errors import *  # noqa: F403
from steerkit.models import (
    ConsistencyGroup,
    ExampleSet,
    Item,
    Label,
    Persona,
    PersonaCues,
    Pool,
    Provenance,
    SearchConfig,
    SearchStats,
)

__all__ = [
    "__version__",
    "ConsistencyGroup",
    "ExampleSet",
    "Item",
    "Label",
    "Persona",
    "PersonaCues",
    "Pool",
    "Provenance",
    "SearchConfig",
    "SearchStats",
]

"""Shared by the rule extractor's tests: the persona ids a text gives, the user packs of
tests/fixtures, and the check that the extractor's work grows linearly (counted, not timed)."""

from __future__ import annotations

from pathlib import Path

from op_count import line_events

from steerkit.extract import RuleExtractor
from steerkit.packs import PackRegistry

FIXTURES = Path(__file__).parent / "fixtures"
USER_PACKS = FIXTURES / "user_packs"  # religion, occupation and U.S. state packs, as an operator writes them
NAME_PACKS = FIXTURES / "name_packs"  # countries whose names are also people's names


def ids(rx: RuleExtractor, text: str) -> set[str]:
    """The persona ids ``rx`` finds in ``text``."""
    return {m.persona_id for m in rx.extract(text)}


def assert_extraction_linear(unit: str, registry: PackRegistry | None = None, *, chars_slack: int = 0) -> None:
    """Doubling a text made of ``unit`` repeated (3,000 then 6,000 characters) at most about doubles
    the extractor's work: its Python line events (≤ 2.3x) and the characters it reads
    (≤ 2.2x + ``chars_slack``)."""
    rx = RuleExtractor(registry or PackRegistry.default(), max_chars=10**6, max_request_chars=10**6)

    def work(size: int) -> tuple[int, int]:
        text = (unit * size)[:size]
        before = rx.chars_scanned
        ops = line_events(lambda: rx.extract(text))
        return ops, rx.chars_scanned - before

    (ops_small, chars_small), (ops_large, chars_large) = work(3_000), work(6_000)
    assert ops_large <= 2.3 * ops_small, (unit, ops_small, ops_large)
    assert chars_large <= 2.2 * chars_small + chars_slack, (unit, chars_small, chars_large)

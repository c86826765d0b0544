"""benchmarks/label_quality.py stays runnable: its quick mode (the weak planted fake scorer, never a
model) on the knowledge pools, and the pools themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import label_quality  # noqa: E402


@pytest.mark.parametrize("name, claims_per_question", [("two-100", {2}), ("multi-100", {3, 4})])
def test_the_knowledge_pools_have_one_right_option_per_question(name: str, claims_per_question: set[int]) -> None:
    pool = label_quality.knowledge_pool(name)
    assert len(pool.groups) == 100
    for g in pool.groups:
        members = [pool.item(i) for i in g.item_ids]
        assert len(members) in claims_per_question
        assert sum(bool(m.gold) for m in members) == 1, g.id
    assert pool.violations({it.id: bool(it.gold) for it in pool.items}) == 0
    assert len({it.question for it in pool.items}) == 100


async def test_quick_mode_reports_accuracy_spread_and_how_searches_ended(tmp_path: Path) -> None:
    out, png = tmp_path / "lq.json", tmp_path / "lq.png"
    report = await label_quality.main(["--quick", "--out", str(out), "--png", str(png)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [(e["model"], e["pool"]) for e in report["results"]] == [("fake", "two-10"), ("fake", "multi-10")]
    for e in report["results"]:
        assert 0.0 <= e["zero_shot_claim_accuracy"] <= 1.0
        d = e["configs"]["default"]
        assert d["seeds"] == 3 and 0.0 <= d["label_accuracy"]["min"] <= d["label_accuracy"]["max"] <= 1.0
        assert d["settled_share"] == 1.0  # the default search stops by itself
        assert all(r["restart_agreement"] is not None for r in e["runs"]["default"])
        assert set(e["targets"]) >= {"spread_ok", "settled_ok"}
    two = report["results"][0]
    assert "exact" in two["configs"] and "accuracy_ok" in two["targets"]

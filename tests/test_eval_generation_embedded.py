"""``steerkit eval --task generation`` end to end on the real embedded models (Gemma 3 270M searching,
SmolLM2-135M-Instruct writing and judging), on the shipped polparty pack's answer pool.

One run per module (``generation_run``), the smallest that still exercises every condition: one
persona, the pool's first 2 questions (1 for the search, 1 held out), 24-token answers, a 2-iteration
search, one accuracy-matched perturbation, one known pair for the judge's self-check (one pair can
never pass its 4-pair minimum: the failed self-check is part of what is tested). About a minute of
one core's CPU. No effect is expected from these models, and the tests check that the results say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from steerkit.packs import PackRegistry

pytestmark = pytest.mark.llama

CONDITIONS = ["zero_shot", "icm", "gold", "random", "accuracy_matched"]
PERSONA = "polparty/democrat"


@pytest.fixture(scope="module")
def generation_run(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> dict[str, Any]:
    """``{"data": report.json, "out": the output folder, "stdout": …}`` of one tiny generation run."""
    tmp = tmp_path_factory.mktemp("eval-generation")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(XDG_CONFIG_HOME=str(tmp / "xdg"), STEERKIT_CACHE_DIR=str(tmp / "cache"),
               STEERKIT_SEARCH_MODEL__N_THREADS="1")  # polite on a shared 2-core machine
    out = tmp / "out"
    argv = ["eval", "--task", "generation", "--persona", "Democrat", "--questions", "2", "--search-fraction", "0.5",
            "--max-tokens", "24", "--k", "2", "--max-iterations", "2", "--context-k", "2", "--perturbations", "1",
            "--self-check-pairs", "1", "--judge-retries", "0", "--threads", "1", "--model-path", str(gguf_path),
            "--out", str(out), "--report", str(out / "report.html"), "--no-plots", "--json"]
    res = subprocess.run([sys.executable, "-m", "steerkit.cli", *argv], env=env, capture_output=True, text=True,
                         timeout=1200, check=False)  # a hang guard, not a timing assertion
    assert res.returncode == 0, f"steerkit eval --task generation exited {res.returncode}:\n{res.stderr[-3000:]}"
    data = json.loads((out / "report.json").read_text())
    assert json.loads(res.stdout) == data  # --json prints what report.json holds
    return {"data": data, "out": out, "stderr": res.stderr}


def test_the_result_has_the_documented_shape_and_every_condition_ran(generation_run: dict[str, Any]) -> None:
    d = generation_run["data"]
    for key in ("task", "scale", "personas", "persona_labels", "persona_names", "conditions", "skipped", "split", "judge",
                "summary", "deltas", "icm_label_accuracy", "labellings", "questions", "notes", "usage", "provenance"):
        assert key in d, key
    assert d["task"] == "generation" and d["personas"] == [PERSONA] and d["persona_labels"][PERSONA] == "Democrat"
    assert d["conditions"] == CONDITIONS and d["skipped"] == {}  # the pack's gold lets gold and accuracy-matched run
    assert len(d["split"]["search_questions"]) == 1 and len(d["split"]["test_questions"]) == 1
    assert sorted(d["split"]["search_questions"] + d["split"]["test_questions"]) == ["minimum_wage", "unauthorized_immigrants"]
    prov = d["provenance"]
    assert prov["dataset"] == "pack" and prov["pack"] == "polparty" and prov["chat_embedded"] is True
    assert "SmolLM2" in prov["chat_model"] and prov["judge_model"] == prov["chat_model"] and "gemma" in prov["model"].lower()
    assert prov["pool"]["pack"] == "polparty" and prov["pool_hash"]
    # every condition has, for the persona, a score or a judgement counted as missing (never a 0)
    for c in CONDITIONS:
        cell = d["summary"][c]["per_persona"][PERSONA]
        assert cell["n"] + cell["missing"] == 1, (c, cell)
        assert (cell["mean"] is None) == (cell["n"] == 0)
        if cell["mean"] is not None:
            assert d["scale"]["min"] <= cell["mean"] <= d["scale"]["max"]
    for c in CONDITIONS[1:]:
        assert d["labellings"][PERSONA][c]["answers"] == 4  # the search question's 4 candidate answers
    assert 0.0 <= d["icm_label_accuracy"][PERSONA] <= 1.0
    u = d["usage"]
    assert u["chat_calls"] + u["chat_cache_hits"] == len(CONDITIONS)  # one answer per condition (two alike: cached)
    assert u["judge_calls"] + u["judge_cache_hits"] >= 4 + 1  # the self-check's four verdicts, then the answers'
    assert u["chat_calls"] >= 1 and u["judge_calls"] >= 1
    assert u["seconds_per_question"] > 0


def test_every_generated_answer_is_saved_with_its_examples_and_judgement(generation_run: dict[str, Any]) -> None:
    d, out = generation_run["data"], generation_run["out"]
    records = d["questions"]
    assert sorted(r["condition"] for r in records) == sorted(CONDITIONS)  # one test question, one perturbation
    saved = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert saved == records
    assert any(r["answer"] for r in records)
    for r in records:
        assert r["persona"] == PERSONA and r["question_id"] == d["split"]["test_questions"][0]
        assert r["score"] is None or d["scale"]["min"] <= r["score"] <= d["scale"]["max"]
        assert r["score"] is not None or r["judge_reason"]  # a missing verdict says why
    by = {r["condition"]: r for r in records}
    assert by["zero_shot"]["examples"] == []
    pack = PackRegistry.default().pack("polparty")
    gold = {a.text: a.gold[PERSONA] for q in pack.answer_pool for a in q.answers}
    assert by["gold"]["examples"] and all(gold[e["answer"]] for e in by["gold"]["examples"])  # the pack's own gold
    for c in CONDITIONS[1:]:
        assert all(e["answer"] in gold for e in by[c]["examples"])  # examples come from the pack's answer pool


def test_the_report_says_plainly_that_tiny_models_show_no_effect_and_the_judge_failed(generation_run: dict[str, Any]) -> None:
    d, out = generation_run["data"], generation_run["out"]
    toy = "No effect is expected from 135M–270M models"
    assert any(n.startswith(toy) for n in d["notes"])
    sc = d["judge"]["self_check"]
    assert sc["pairs"] == 1 and sc["sources"] == {"gold": 1}  # the pack's representative against an unrepresentative answer
    # one known pair is under the self-check's 4-pair minimum: the judge fails, and everything says so
    assert sc["passed"] is False and d["judge"]["scores_meaningful"] is False
    assert any("fewer than 4" in reason for reason in sc["reasons"])
    assert any("FAILED its self-check" in n and "mean nothing" in n for n in d["notes"])
    md = (out / "report.md").read_text(encoding="utf-8")
    assert toy in md and "FAILED its self-check" in md and "| Democrat |" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert toy in html and "FAILED its self-check" in html

"""How reliable a set is, as the commands tell it: `precompute` (text and ``--json``), `cache ls`
(columns ``agree``/``ended``, JSON rows), `cache show` (a header before the table) and `probe`
(the search's seed-to-seed agreement). Searches run on fake scorers; where a test needs a known
agreement, the real search runs and its stats are then set (``doctored_search``), so the numbers
the commands print are known in advance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import SMALL_SEARCH, cli_env, run_json

from steerkit import icm
from steerkit.cli import main
from steerkit.models import ExampleSet, Pool, SearchConfig
from steerkit.testing import FakeScorer, last_claim

PERSONA = "polparty/democrat"
REVIEW = f"steerkit review --escalate --persona {PERSONA}"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Isolated config/cache, small searches (these tests read reports, and set the agreement they
    need), the fake scorer as the search backend."""
    return cli_env(tmp_path, monkeypatch, **SMALL_SEARCH)


def doctored_search(monkeypatch: pytest.MonkeyPatch, *, agreement: float | None, ended: str | None = "fixed_point",
                    low: tuple[float, ...] = (), confidence: tuple[float, ...] = (), decided: bool = True) -> dict[str, Any]:
    """Every search runs for real, then reports ``agreement``/``ended``; the pool's first groups get
    the unit agreements ``low`` (the rest 1.0) and the group confidences ``confidence`` (the rest
    0.9); ``decided``: every label's final log-odds is ±3 its way (a model sure of its answers; the
    fake's own are near-ties). Returns what the commands should show: ``ids`` and ``questions`` of
    the pool's groups."""
    real = icm.search
    seen: dict[str, Any] = {}

    async def search(pool: Pool, backend: Any, config: Any = None, **kw: Any) -> ExampleSet:
        es = await real(pool, backend, config, **kw)
        ids = [g.id for g in pool.groups]
        seen.update(ids=ids, questions=[pool.item(g.item_ids[0]).question for g in pool.groups])
        unit = {} if agreement is None else {k: 1.0 for k in ids} | dict(zip(ids, low))
        stats = es.stats.model_copy(update={"restart_agreement": agreement, "ended": ended, "unit_agreement": unit})
        conf = {k: 0.9 for k in ids} | dict(zip(ids, confidence))
        labels = es.labels if not decided else {
            k: lab.model_copy(update={"logodds": 3.0 if lab.value else -3.0}) for k, lab in es.labels.items()}
        return es.model_copy(update={"stats": stats, "group_confidence": conf, "labels": labels})

    monkeypatch.setattr(icm, "search", search)
    return seen


def text_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """``main(argv)`` must exit 0; its stdout with every run of whitespace made one space (rich wraps)."""
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return " ".join(out.out.split())


def short(question: str) -> str:
    """The start of a question as the reports shorten it."""
    return " ".join(question.split())[:40]


# --- precompute -----------------------------------------------------------------------------------


def test_precompute_json_reports_the_stored_sets_search_end_and_agreement(env: dict[str, Any],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    [r] = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    stored = run_json(capsys, ["cache", "show", PERSONA, "--json"])["stats"]
    extra = r["extra"]
    assert extra["ended"] == stored["ended"] is not None
    assert extra["restart_agreement"] == stored["restart_agreement"]
    assert len(extra["least_certain"]) == 3 and all(q["question"] for q in extra["least_certain"])
    assert (extra["warning"] is not None) == (stored["ended"] in ("patience", "max_iterations"))


def test_precompute_names_the_least_certain_questions_and_warns(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # groups 0 and 1 disagree most; 2 and 3 tie at 0.75 and the lower confidence (3) comes first
    seen = doctored_search(monkeypatch, agreement=0.7, low=(0.5, 0.625, 0.75, 0.75), confidence=(0.9, 0.9, 0.8, 0.6))
    out = text_of(capsys, ["precompute", "--persona", PERSONA])
    ids, qs = seen["ids"], seen["questions"]
    assert "search ended: fixed_point; restarts agreed on 70% of the answers" in out
    line = out.split("least certain: ", 1)[1].split(" warning: ", 1)[0]
    at = [line.find(short(qs[i])) for i in (0, 1, 3)]
    assert -1 not in at and at == sorted(at), line  # lowest agreement first, then lowest confidence
    assert short(qs[2]) not in line and "(50% of restarts)" in line and "(62% of restarts)" in line
    assert "warning: its" in out and "agreed on only 70%" in out and REVIEW in out
    [r] = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])  # now cached: the same report
    assert r["status"] == "cached" and [q["id"] for q in r["extra"]["least_certain"]] == [ids[0], ids[1], ids[3]]
    assert r["extra"]["restart_agreement"] == 0.7 and "70%" in r["extra"]["warning"]


@pytest.mark.parametrize(("agreement", "ended", "warned"), [
    (1.0, "fixed_point", False),
    (0.8, "converged", False),  # the threshold itself is still reliable
    (0.79, "converged", True),
    (1.0, "max_iterations", True),  # stopped by its budget: not settled, whatever the agreement
])
def test_precompute_warns_below_80_percent_agreement_or_an_unsettled_search(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        agreement: float, ended: str, warned: bool) -> None:
    doctored_search(monkeypatch, agreement=agreement, ended=ended)
    out = text_of(capsys, ["precompute", "--persona", PERSONA])
    assert f"search ended: {ended}; restarts agreed on {agreement:.0%}" in out
    assert ("warning:" in out) == warned and ("next:" in out) == warned
    assert (REVIEW in out) == (agreement < 0.8)
    assert ("raise max_iterations/patience under [search]" in out) == (ended == "max_iterations")
    assert "least certain:" not in out  # every restart agreed on every question


def test_precompute_warns_of_answers_that_rest_on_near_ties(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    doctored_search(monkeypatch, agreement=1.0, decided=False)  # the fake scorer's own near-ties
    out = text_of(capsys, ["precompute", "--persona", PERSONA])
    assert "restarts agreed on 100% of the answers; answer confidence 5" in out
    assert "warning: its answers rest on near-ties" in out and "next: check the search model with `steerkit probe`" in out
    assert REVIEW in out
    rows = run_json(capsys, ["cache", "ls", "--json"])
    assert rows[0]["answer_confidence"] < 0.6


def test_a_one_restart_set_shows_its_least_confident_questions(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen = doctored_search(monkeypatch, agreement=None, confidence=(0.9, 0.55, 0.6, 0.51))
    out = text_of(capsys, ["precompute", "--persona", PERSONA])
    assert "search ended: fixed_point" in out and "restarts agreed" not in out and "warning:" not in out
    line = out.split("least certain: ", 1)[1]
    at = [line.find(short(seen["questions"][i])) for i in (3, 1, 2)]
    assert -1 not in at and at == sorted(at) and "(confidence 0.51)" in line


# --- cache ls / show --------------------------------------------------------------------------------


def test_cache_ls_shows_agreement_and_how_the_search_ended(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    doctored_search(monkeypatch, agreement=0.7, ended="converged")
    [computed] = run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    [row] = run_json(capsys, ["cache", "ls", "--json"])
    assert row["ended"] == "converged" and row["restart_agreement"] == 0.7
    out = text_of(capsys, ["cache", "ls"])
    assert "│ agree │ ended │" in out.replace("┃", "│")
    row_text = out.split(PERSONA, 1)[1]  # the persona and version are printed whole (never cut)
    assert computed["version"] in row_text and "│ 0.70 │ converged │" in row_text


def test_cache_show_opens_with_the_sets_reliability(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen = doctored_search(monkeypatch, agreement=0.5, low=(0.25,), ended="converged")
    run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    out = text_of(capsys, ["cache", "show", PERSONA])
    header, table = out.split("┏", 1)
    assert "search ended: converged; restarts agreed on 50% of the answers" in header
    assert f"least certain: {short(seen['questions'][0])}" in header and "(25% of restarts)" in header
    assert "warning:" in header and REVIEW in header
    assert "warning:" not in table


def test_cache_show_of_an_older_set_says_its_end_is_unknown(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    doctored_search(monkeypatch, agreement=None, ended=None)
    run_json(capsys, ["precompute", "--persona", PERSONA, "--json"])
    out = text_of(capsys, ["cache", "show", PERSONA])
    assert "search ended: unknown" in out and "warning:" not in out
    assert "│ - │" in text_of(capsys, ["cache", "ls"]).split(PERSONA, 1)[1]  # no agreement known


# --- probe ------------------------------------------------------------------------------------------


def target_only_fake() -> FakeScorer:
    """A fake whose answer depends on the target claim alone: every seed gives the same labels."""
    return FakeScorer(lambda p: 0.7 if last_claim(p).count("a") % 2 else 0.3, model="fake-target-only")


PROBE = ["probe", "--n-test", "6", "--n-demos", "2", "--random-seeds", "1", "--agreement-questions", "4"]


def test_the_probe_reports_the_searchs_own_agreement(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    env["factory"] = target_only_fake
    real, stats = icm.search, []

    async def recording(*a: Any, **kw: Any) -> ExampleSet:
        es = await real(*a, **kw)
        stats.append(es.stats)
        return es

    monkeypatch.setattr(icm, "search", recording)
    a = run_json(capsys, [*PROBE, "--json"])["seed_agreement"]
    [s] = stats  # one default search, on 4 of the held-out questions
    assert a["questions"] == 4 and a["restarts"] == len(s.restarts_u) == SearchConfig().restarts == 16
    assert a["restart_agreement"] == s.restart_agreement == 1.0 and a["ended"] == s.ended in ("fixed_point", "converged")
    assert a["model_calls"] == s.model_calls > 0
    out = text_of(capsys, PROBE)
    assert "restarts agreed on 100% of the answers to 4 held-out questions" in out
    assert "the labels hardly depend on the seed" in out and "seed-to-seed check: 16 restarts on 4 questions" in out


def test_low_agreement_in_the_probe_is_read_as_a_weak_signal(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    env["factory"] = target_only_fake
    doctored_search(monkeypatch, agreement=0.6, ended="converged")
    out = text_of(capsys, PROBE)
    assert "restarts agreed on 60%" in out and "it ended: converged" in out
    assert "depend on the seed, this model's signal is weak" in out and "hardly" not in out


def test_the_probe_without_the_agreement_check_runs_no_search(env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    env["factory"] = target_only_fake
    calls: list[object] = []
    monkeypatch.setattr(icm, "search", lambda *a, **kw: calls.append(a))
    report = run_json(capsys, [*PROBE[:-1], "0", "--json"])
    assert report["seed_agreement"] is None and calls == []
    assert "Seed to seed" not in text_of(capsys, [*PROBE[:-1], "0"])


# --- chat -----------------------------------------------------------------------------------------


def test_chat_warns_when_the_steering_sets_answers_rest_on_near_ties(capsys: pytest.CaptureFixture[str]) -> None:
    from steerkit.cli.chat_cmd import near_ties, render

    result = {"personas": [{"persona_id": PERSONA, "dimension": "political_affiliation", "evidence": "a Democrat",
                            "confidence": 1.0}], "example_set_version": "v1", "cache": "hit", "examples_used": 3,
              "added_ms": 1.0, "injected": [], "answer": "Yes.", "model": "m", "answer_confidence": 0.53}
    render(result)
    out = " ".join(capsys.readouterr().out.split())
    assert "answer confidence 53%" in out and "warning: the example set's answers rest on near-ties" in out
    assert f"`steerkit cache show {PERSONA}`" in out
    assert near_ties({**result, "answer_confidence": 0.8}) is None and near_ties({**result, "answer_confidence": None}) is None
    render({**result, "answer_confidence": 0.8})
    out = " ".join(capsys.readouterr().out.split())
    assert "answer confidence 80%" in out and "warning" not in out

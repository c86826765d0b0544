"""The probe in several domains (issue 19 item 6): the built-in fact sets, the verdict only where
the domains agree, and the command's per-domain report. Scores come from *fake* scorers with
planted behaviour: one that follows demonstration labels in some domains only, as Gemma 3 270M
did (capitals gold 0.80 vs inverted 0.37; another fact set 0.40 vs 0.43)."""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import pytest
from cli_helpers import cli_env, run_json
from rich.console import Console

from steerkit.cli import main
from steerkit.evaluation.facts import DOMAINS, domain_of, fact_pools, facts_pool
from steerkit.evaluation.probe import (
    DOMAIN_CONFIG,
    ProbeConfig,
    agree,
    gold_questions,
    probe,
    probe_domains,
)
from steerkit.testing import FakeScorer, unit_rand

_BLOCK = re.compile(r"Question: (.*)\nClaim: .* as: '(.*)'\nI think this claim is( True| False)?$")
_TRUTH = {(it.question, it.option): bool(it.gold) for p in fact_pools().values() for it in p.items}
_DOMAIN = {it.question: domain_of(it) for p in fact_pools().values() for it in p.items}


def selective_fake(follows: set[str], model: str = "fake-selective") -> FakeScorer:
    """A fake that follows its demonstrations' labels on questions of the ``follows`` domains and
    answers every other question by a coin fixed per claim (it ignores demonstrations there)."""

    def fn(prompt: str) -> float:
        blocks = [_BLOCK.match(b) for b in prompt.split("\n\n")]
        assert all(blocks), prompt
        *demos, target = blocks
        q, o = target.group(1), target.group(2)
        if _DOMAIN[q] not in follows:
            return unit_rand(f"{q}/{o}")
        noise = (2 * unit_rand("z" + q + o) - 1) * 0.5
        if not demos:
            return 1 / (1 + math.exp(-noise))
        a = sum(1 if (d.group(3) == " True") == _TRUTH[(d.group(1), d.group(2))] else -1 for d in demos) / len(demos)
        return 1 / (1 + math.exp(-(noise + 3 * a * (1 if _TRUTH[(q, o)] else -1))))

    return FakeScorer(fn, model=model)


# --- the fact sets ----------------------------------------------------------------------------------


def test_every_domain_has_enough_two_option_questions_with_one_true_answer() -> None:
    pools = fact_pools()
    assert list(pools) == ["capitals", "units", "science", "arithmetic", "dates"] == list(DOMAINS)
    need = DOMAIN_CONFIG.n_demos + DOMAIN_CONFIG.n_test
    questions = set()
    for name, pool in pools.items():
        qs = gold_questions(pool)
        assert len(qs) >= need, name
        assert all(len(q) == 2 and sum(bool(it.gold) for it in q) == 1 for q in qs), name
        assert all(domain_of(it) == name for it in pool.items)
        assert pool.persona.id.startswith("probe/") and pool.persona.name
        first = sum(bool(q[0].gold) for q in qs) / len(qs)
        assert 0.3 < first < 0.7, name  # the true option is not always in one place
        assert all(q[0].option != q[1].option for q in qs)
        questions |= {q[0].question for q in qs}
    assert len(questions) == sum(len(gold_questions(p)) for p in pools.values())  # no question in two domains


def test_the_arithmetic_domains_gold_answers_are_right() -> None:
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b}
    for q in gold_questions(facts_pool(domain="arithmetic")):
        m = re.fullmatch(r"What is (\d+) ([+\-×]) (\d+)\?", q[0].question)
        assert m is not None, q[0].question
        right = str(ops[m.group(2)](int(m.group(1)), int(m.group(3))))
        assert {it.option: bool(it.gold) for it in q}[right] is True


def test_the_capitals_keep_the_probes_original_questions() -> None:
    qs = gold_questions(facts_pool())
    assert len(qs) == 44 and qs[0][0].question == "What is the capital of France?"
    assert {it.option for it in qs[0]} == {"Paris", "Tehran"} and qs[0][0].group == "probe/capital/0"


def test_an_unknown_domain_is_a_user_error() -> None:
    from steerkit.errors import UserError

    with pytest.raises(UserError, match="no probe domain 'poetry'"):
        facts_pool(domain="poetry")


# --- the verdict where domains agree -----------------------------------------------------------------


def test_one_verdict_where_every_domain_agrees() -> None:
    v, why = agree({"capitals": ("follows_labels", "…"), "units": ("follows_labels", "…")})
    assert v == "follows_labels" and why == "all 2 domains agree"


def test_no_verdict_where_domains_disagree_and_what_each_showed() -> None:
    v, why = agree({"capitals": ("follows_labels", "…"), "units": ("ignores_demonstrations", "…"),
                    "dates": ("format_only", "…")})
    assert v == "domains_disagree"
    assert "capitals: follows labels; units: ignores demonstrations; dates: format only" in why
    assert "follows the labels of capitals demonstrations only" in why


def test_disagreeing_domains_none_of_which_follows_labels_say_no_set_can_steer() -> None:
    v, why = agree({"capitals": ("format_only", "…"), "units": ("ignores_demonstrations", "…")})
    assert v == "domains_disagree" and "in none does it follow the labels" in why


def test_one_domain_keeps_its_own_reason() -> None:
    assert agree({"opinionqa/x": ("format_only", "gold − inverted +0.00 ± 0.10 (not significant)")}) == (
        "format_only", "gold − inverted +0.00 ± 0.10 (not significant)")


def test_demonstrations_that_make_the_model_worse_are_said_plainly() -> None:
    from steerkit.evaluation.probe import Estimate, decide

    # Gemma 3 270M on the arithmetic domain: zero-shot 0.92, gold 0.50, inverted 0.67
    verdict, why = decide(Estimate(-0.17, 0.21, 12), Estimate(-0.23, 0.07, 12))
    assert verdict == "ignores_demonstrations" and "demonstrations did significantly *worse* than zero-shot" in why
    assert "worse" not in decide(Estimate(0.0, 0.1, 12), Estimate(-0.05, 0.1, 12))[1]


# --- the probe over domains on fakes ------------------------------------------------------------------


async def test_a_model_that_follows_labels_in_one_domain_only_gets_no_verdict() -> None:
    report = await probe_domains(fact_pools(), selective_fake({"capitals"}))
    d = report.domains
    assert list(d) == list(DOMAINS)
    assert d["capitals"].verdict == "follows_labels"
    assert d["capitals"].conditions["gold"].accuracy > 0.9 and d["capitals"].conditions["inverted"].accuracy < 0.1
    assert all(d[n].verdict == "ignores_demonstrations" for n in ("units", "science", "arithmetic", "dates"))
    assert report.verdict == "domains_disagree" and not report.steerable
    s = report.summary()
    assert "no verdict: the domains disagree" in s and "capitals gold 1.00 vs inverted 0.00" in s
    assert all(f"{n} gold" in s for n in DOMAINS)  # what each domain showed
    assert all(r.n_test == DOMAIN_CONFIG.n_test and r.n_demos == DOMAIN_CONFIG.n_demos for r in d.values())


async def test_a_model_that_follows_labels_everywhere_gets_the_verdict() -> None:
    report = await probe_domains(fact_pools(), selective_fake(set(DOMAINS)))
    assert report.verdict == "follows_labels" and report.steerable
    assert "(all 5 domains agree)" in report.summary()
    data = report.as_dict()
    assert set(data["domains"]) == set(DOMAINS) and data["verdict"] == "follows_labels"
    assert all(d["verdict"] == "follows_labels" for d in data["domains"].values())


async def test_the_seed_to_seed_check_takes_held_out_questions_of_every_domain_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerkit import icm

    real, pools_seen = icm.search, []

    async def recording(pool: Any, *a: Any, **kw: Any) -> Any:
        pools_seen.append(pool)
        return await real(pool, *a, **kw)

    monkeypatch.setattr(icm, "search", recording)
    cfg = ProbeConfig(n_test=4, n_demos=2, random_seeds=1, agreement_questions=5)
    report = await probe_domains(fact_pools(), selective_fake(set()), cfg)
    [pool] = pools_seen
    assert sorted(domain_of(it) for it in pool.items[::2]) == sorted(DOMAINS)  # one question of each
    assert report.seed_agreement is not None and report.seed_agreement["questions"] == 5
    assert all(r.seed_agreement is None for r in report.domains.values())  # run once, not per domain


async def test_random_labellings_differ_from_gold_inverted_and_each_other() -> None:
    fake = selective_fake(set())
    cfg = ProbeConfig(n_test=2, n_demos=3, random_seeds=4)  # 8 labellings of 3 questions: 6 to show
    for name, pool in fact_pools().items():
        fake.prompts.clear()
        await probe(pool, fake, cfg)
        seen = set()
        for p in fake.prompts:
            blocks = p.split("\n\n")[:-1]
            if blocks:
                seen.add(tuple(_BLOCK.match(b).group(3) for b in blocks))
        assert len(seen) == 2 + 4, name  # gold, inverted and four other labellings


# --- the command ----------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state = cli_env(tmp_path, monkeypatch)
    state["factory"] = lambda: selective_fake({"capitals", "dates"})
    return state


PROBE = ["probe", "--agreement-questions", "0"]


def test_the_probe_command_reports_each_domain_and_no_verdict_where_they_disagree(env: dict[str, Any],
                                                                                  capsys: pytest.CaptureFixture[str],
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = run_json(capsys, [*PROBE, "--json"])
    assert data["verdict"] == "domains_disagree"
    assert {k: v["verdict"] for k, v in data["domains"].items()} == {
        "capitals": "follows_labels", "units": "ignores_demonstrations", "science": "ignores_demonstrations",
        "arithmetic": "ignores_demonstrations", "dates": "follows_labels"}
    assert all(v["n_test"] == 12 and v["n_demos"] == 4 for v in data["domains"].values())  # the facts defaults
    assert all(v["usage"]["model_calls"] > 0 and "seconds" in v["usage"] for v in data["domains"].values())
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    capsys.readouterr()
    assert main(PROBE) == 0
    raw = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in raw.splitlines() if line.count("│") >= 8}
    for name, d in data["domains"].items():
        c = d["conditions"]
        assert f"{c['gold']['accuracy']:.2f} ± {c['gold']['se']:.2f}" in rows[name]
        assert ("follows labels" if d["verdict"] == "follows_labels" else "ignores demonstrations") in rows[name]
    out = " ".join(raw.split())
    assert "5 domains, 12 held-out and 4 demonstration questions each" in out
    assert "verdict: domains_disagree" in out and "follows the labels of capitals, dates demonstrations only" in out


def test_the_probe_command_runs_the_domains_asked_for(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, [*PROBE, "--domains", "units,dates", "--n-test", "6", "--n-demos", "2", "--json"])
    assert list(data["domains"]) == ["units", "dates"]
    assert data["verdict"] == "domains_disagree"  # dates follows, units ignores
    assert all(v["n_test"] == 6 and v["n_demos"] == 2 for v in data["domains"].values())


def test_an_unknown_domain_is_refused_by_the_command(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PROBE, "--domains", "units,poetry"]) == 2
    assert "unknown domain(s) poetry" in capsys.readouterr().err


def test_the_verdict_line_names_each_domain(tmp_path: Any) -> None:
    import asyncio

    from steerkit.cli.probe_cmd import print_verdict

    out = io.StringIO()
    report = asyncio.run(print_verdict(selective_fake({"units"}), tmp_path, console=Console(file=out, width=400)))
    assert report is not None and report.verdict == "domains_disagree"
    text = out.getvalue()
    assert text.startswith("probe: fake-selective: no verdict: the domains disagree")
    assert "units gold 1.00 vs inverted 0.00" in text and "follows the labels of units demonstrations only" in text
    assert json.loads(json.dumps(report.as_dict()))["verdict"] == "domains_disagree"

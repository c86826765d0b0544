"""The steerability probe: the verdict logic on crafted numbers, the probe's logic on *fake*
scorers with planted behaviour (label-following, format-only, ignoring), the cache, and one probe
end to end on the embedded model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from shared_data import needs_opinionqa, opinionqa_dir

from steerkit import ProbeConfig, facts_pool, model_verdict, probe
from steerkit.errors import UserError
from steerkit.evaluation.facts import fact_pools
from steerkit.evaluation.probe import Estimate, decide, gold_questions
from steerkit.models import Pool
from steerkit.testing import FakeScorer, unit_rand

# --- the verdict on crafted numbers ---------------------------------------------------------------


def _paired(a: list[int], b: list[int]) -> Estimate:
    return Estimate.of([float(x - y) for x, y in zip(a, b)])


def _correct(k: int, n: int = 30, offset: int = 0) -> list[int]:
    """n per-question outcomes with k correct, starting at ``offset`` (cyclically)."""
    return [1 if (i - offset) % n < k else 0 for i in range(n)]


def test_the_issue_numbers_for_gemma_mean_the_model_ignores_demonstrations() -> None:
    # zero-shot 0.43, gold 0.40, inverted 0.43, random 0.53-0.63 on 30 questions (issue 11)
    zs, gold, inv, r1, r2 = _correct(13), _correct(12, offset=3), _correct(13, offset=7), _correct(16, offset=11), _correct(19, offset=5)
    label = _paired(gold, inv)
    fmt = Estimate.of([((g + i) / 2 + (a + b) / 2) / 2 - z for g, i, a, b, z in zip(gold, inv, r1, r2, zs)])
    verdict, why = decide(label, fmt)
    assert verdict == "ignores_demonstrations"
    assert "neither significant" in why


def test_the_issue_numbers_for_smollm2_mean_a_format_effect_only() -> None:
    # zero-shot 0.43, gold 0.73, inverted 0.83, random 0.73-0.83
    zs, gold, inv, r1, r2 = _correct(13), _correct(22), _correct(25), _correct(22, offset=2), _correct(25, offset=1)
    label = _paired(gold, inv)
    fmt = Estimate.of([((g + i) / 2 + (a + b) / 2) / 2 - z for g, i, a, b, z in zip(gold, inv, r1, r2, zs)])
    assert label.mean < 0
    verdict, _ = decide(label, fmt)
    assert verdict == "format_only"


def test_a_clear_label_effect_means_the_model_follows_labels() -> None:
    verdict, why = decide(Estimate(0.40, 0.10, 30), Estimate(0.0, 0.05, 30))
    assert verdict == "follows_labels" and "> 2 SE" in why


def test_a_label_effect_with_barely_moving_probabilities_is_called_weak() -> None:
    verdict, why = decide(Estimate(0.43, 0.12, 30), Estimate(0.06, 0.10, 30), label_shift=Estimate(0.02, 0.006, 30))
    assert verdict == "follows_labels" and "weakly" in why
    assert "weakly" not in decide(Estimate(0.43, 0.12, 30), Estimate(0.0, 0.1, 30), label_shift=Estimate(0.3, 0.05, 30))[1]


def test_an_effect_within_two_standard_errors_or_below_the_minimum_is_not_significant() -> None:
    assert decide(Estimate(0.15, 0.08, 30), Estimate(0.0, 0.05, 30))[0] == "ignores_demonstrations"
    assert decide(Estimate(0.04, 0.001, 30), Estimate(0.0, 0.05, 30))[0] == "ignores_demonstrations"
    assert decide(Estimate(0.0, 0.08, 30), Estimate(0.2, 0.05, 30))[0] == "format_only"


def test_inverted_labels_doing_better_is_said_plainly() -> None:
    verdict, why = decide(Estimate(-0.4, 0.1, 30), Estimate(0.3, 0.05, 30))
    assert verdict == "format_only" and "inverted labels did significantly *better*" in why


# --- fake scorers with planted behaviour ----------------------------------------------------------

_BLOCK = re.compile(r"Question: (.*)\nClaim: .* as: '(.*)'\nI think this claim is( True| False)?$")


def _truth(pool: Pool) -> dict[tuple[str, str], bool]:
    """(question, option) → gold, of ``pool`` and every built-in fact domain (a fake serves them all)."""
    items = [*pool.items, *(it for p in fact_pools().values() for it in p.items)]
    return {(it.question, it.option or ""): bool(it.gold) for it in items}


def _parse(prompt: str) -> tuple[list[tuple[str, str, bool]], tuple[str, str]]:
    blocks = prompt.split("\n\n")
    demos = []
    for b in blocks[:-1]:
        m = _BLOCK.match(b)
        assert m is not None and m.group(3), f"malformed demonstration {b!r}"
        demos.append((m.group(1), m.group(2), m.group(3) == " True"))
    m = _BLOCK.match(blocks[-1])
    assert m is not None and m.group(3) is None, f"malformed target {blocks[-1]!r}"
    return demos, (m.group(1), m.group(2))


def following_fake(pool: Pool) -> FakeScorer:
    """A fake that follows its demonstrations' labels: the more of them agree with the truth, the
    more it says the truth about the target (inverted labels: the opposite)."""
    truth = _truth(pool)

    def fn(prompt: str) -> float:
        demos, target = _parse(prompt)
        noise = (2 * unit_rand("z" + "/".join(target)) - 1) * 0.5
        if not demos:
            return 1 / (1 + math.exp(-noise))
        a = sum(1 if v == truth[(q, o)] else -1 for q, o, v in demos) / len(demos)
        sign = 1 if truth[target] else -1
        return 1 / (1 + math.exp(-(noise + 3 * a * sign)))

    return FakeScorer(fn, model="fake-follower")


def format_fake(pool: Pool) -> FakeScorer:
    """A fake that knows the answers once it sees any demonstrations, whatever their labels."""
    truth = _truth(pool)

    def fn(prompt: str) -> float:
        demos, target = _parse(prompt)
        noise = (2 * unit_rand("z" + "/".join(target)) - 1) * 0.5
        return 1 / (1 + math.exp(-(noise + (2.0 if truth[target] else -2.0) * bool(demos))))

    return FakeScorer(fn, model="fake-format")


def ignoring_fake() -> FakeScorer:
    """A fake whose answer depends on the target alone."""

    def fn(prompt: str) -> float:
        _, target = _parse(prompt)
        return unit_rand("/".join(target))

    return FakeScorer(fn, model="fake-ignorer")


async def test_a_fake_that_follows_labels_is_told_apart() -> None:
    pool = facts_pool()
    report = await probe(pool, following_fake(pool))
    c = report.conditions
    assert c["gold"].accuracy > 0.9 and c["inverted"].accuracy < 0.1
    assert report.verdict == "follows_labels" and report.steerable
    assert c["gold"].agreement == 1.0 and c["inverted"].agreement == 0.0
    assert report.label_shift.mean > 0.5


async def test_a_fake_that_gains_from_the_format_only_is_told_apart() -> None:
    pool = facts_pool()
    report = await probe(pool, format_fake(pool))
    c = report.conditions
    assert c["gold"].accuracy == c["inverted"].accuracy == 1.0
    assert report.verdict == "format_only" and not report.steerable
    assert "format" in report.summary()


async def test_a_fake_that_ignores_demonstrations_is_told_apart() -> None:
    report = await probe(facts_pool(), ignoring_fake())
    accs = {c.accuracy for c in report.conditions.values()}
    assert len(accs) == 1  # nothing moves
    assert report.verdict == "ignores_demonstrations"


async def test_the_probe_shows_the_same_demonstrations_in_every_condition() -> None:
    pool = facts_pool()
    fake = following_fake(pool)
    cfg = ProbeConfig(n_test=4, n_demos=3, random_seeds=2)
    await probe(pool, fake, cfg)
    prefixes = {}
    for p in fake.prompts:
        demos, _ = _parse(p)
        prefixes.setdefault(tuple((q, o) for q, o, _ in demos), set()).add(tuple(v for _, _, v in demos))
    assert len(prefixes) == 2 and () in prefixes  # zero-shot and one set of demo items
    items = next(k for k in prefixes if k)
    gold = tuple(_truth(pool)[k] for k in items)
    labellings = prefixes[items]
    assert {gold, tuple(not v for v in gold)} <= labellings  # gold and inverted over the same items
    assert all(sum(lab[i : i + 2]) == 1 for lab in labellings for i in range(0, len(lab), 2))  # random: consistent
    assert len(fake.prompts) == 4 * 2 * (1 + 2 + 2)


async def test_the_verdict_is_cached_per_model(tmp_path: Path) -> None:
    pool = facts_pool()
    first = following_fake(pool)
    r1 = await model_verdict(first, tmp_path, ProbeConfig(n_test=6, n_demos=4, random_seeds=1))
    assert first.stats.calls > 0 and r1.usage["model_calls"] == first.stats.calls
    second = following_fake(pool)
    r2 = await model_verdict(second, tmp_path, ProbeConfig(n_test=6, n_demos=4, random_seeds=1))
    assert second.stats.calls == 0 and r2.usage["cache_hits"] == r2.usage["requested"] > 0
    assert len(r1.domains) == 5 and {k: d["conditions"] for k, d in r2.as_dict()["domains"].items()} == {
        k: d["conditions"] for k, d in r1.as_dict()["domains"].items()}
    assert sum(d.usage["model_calls"] for d in r1.domains.values()) == first.stats.calls  # each domain's share


async def test_a_pool_too_small_for_the_probe_is_a_user_error() -> None:
    pool = facts_pool()
    with pytest.raises(UserError, match="gold-labelled questions"):
        await probe(pool, ignoring_fake(), ProbeConfig(n_test=len(gold_questions(pool)), n_demos=8))


def test_the_built_in_facts_put_the_true_answer_first_about_half_the_time() -> None:
    qs = gold_questions(facts_pool())
    assert len(qs) >= 38
    first = sum(bool(q[0].gold) for q in qs) / len(qs)
    assert 0.3 < first < 0.7
    assert all(sum(bool(it.gold) for it in q) == 1 for q in qs)


# --- the real model --------------------------------------------------------------------------------


@pytest.mark.llama
async def test_the_probe_end_to_end_on_the_embedded_model(embedded_backend, tmp_path: Path) -> None:
    cfg = ProbeConfig(n_test=8, n_demos=4, random_seeds=1)
    report = await model_verdict(embedded_backend, tmp_path, cfg, domains=("capitals", "arithmetic"))
    assert set(report.domains) == {"capitals", "arithmetic"}
    for r in report.domains.values():
        assert set(r.conditions) == {"zero_shot", "gold", "inverted", "random_0"}
        assert all(0.0 <= c.accuracy <= 1.0 and len(c.correct) == 8 for c in r.conditions.values())
    assert report.verdict in ("follows_labels", "format_only", "ignores_demonstrations", "domains_disagree")
    assert report.model == embedded_backend.model and report.model in report.summary()
    assert report.usage["model_calls"] == 2 * 8 * 2 * 4 and report.usage["prompt_tokens"] > 0
    again = await model_verdict(embedded_backend, tmp_path, cfg, domains=("capitals", "arithmetic"))
    assert again.usage["model_calls"] == 0 and again.verdict == report.verdict


async def test_the_verdict_line_the_demo_and_precompute_print(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from steerkit.cli.probe_cmd import print_verdict

    out = io.StringIO()
    pool = facts_pool()
    report = await print_verdict(following_fake(pool), tmp_path, console=Console(file=out, width=300))
    assert report is not None and report.verdict == "follows_labels"
    text = out.getvalue()
    assert text.startswith("probe: fake-follower: follows in-context labels") and "(all 5 domains agree)" in text
    assert "capitals gold 1.00 vs inverted 0.00" in " ".join(text.split())
    assert (tmp_path / "eval" / "scores").is_dir()  # cached under <cache_dir>/eval


@needs_opinionqa
def test_the_probe_command_builds_a_persona_pool_from_a_dataset() -> None:
    from steerkit.cli import build_parser
    from steerkit.cli.probe_cmd import _pools

    data = opinionqa_dir()
    args = build_parser().parse_args(["probe", "--dataset", "opinionqa", "--data", str(data), "--persona", "Republican"])
    [pool] = _pools(args).values()  # a dataset's persona is one domain
    assert pool.persona.name == "Republicans"
    qs = gold_questions(pool)
    assert len(qs) >= 38  # enough for the default 8 demonstrations + 30 held out
    assert {len(q) for q in qs} == {2, 3}  # two- and three-option questions
    args = build_parser().parse_args(["probe", "--dataset", "opinionqa"])
    with pytest.raises(UserError, match="needs --data"):
        _pools(args)


@pytest.mark.llama
def test_the_probe_command_against_an_openai_compatible_server(llama_server_url: str, embedded_backend, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's server line (`--search-base-url … --search-model …`, as for vLLM), against
    llama.cpp's OpenAI-compatible server on loopback: the probe scores through `OpenAIBackend`."""
    import json
    import os

    from steerkit.cli import main

    for k in list(os.environ):
        if k.startswith("STEERKIT_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    rc = main(["probe", "--search-base-url", llama_server_url, "--search-model", embedded_backend.chat_model,
               "--domains", "capitals", "--n-test", "6", "--n-demos", "2", "--random-seeds", "1", "--json", "--cache-dir", str(tmp_path / "c"),
               "--agreement-questions", "0"])  # no seed-to-seed search: minutes (tests/test_reliability_report.py)
    out = capsys.readouterr()
    assert rc == 0, out.err
    report = json.loads(out.out)
    assert report["model"] == embedded_backend.chat_model and report["verdict"] in (
        "follows_labels", "format_only", "ignores_demonstrations")
    assert set(report["domains"]["capitals"]["conditions"]) == {"zero_shot", "gold", "inverted", "random_0"}
    # 6 questions × 2 options × 4 conditions, less the prompts two conditions share (a random
    # labelling can equal the gold one), scored by the server
    assert 6 * 2 * 2 <= report["usage"]["model_calls"] <= 6 * 2 * 4 and report["usage"]["prompt_tokens"] > 0

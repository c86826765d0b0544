"""The evaluation protocol: folds, accuracy-matched labels, ECE, the Persona-Tailoring clustering,
the whole protocol on a *fake* scorer with a planted coherent labelling (every condition and
metric, the disk cache making a re-run free, plots), and a small evaluation end to end on the
embedded model (library and CLI)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from shared_data import needs_opinionqa, opinionqa_dir

from steerkit import EvalConfig, EvalPersona, run_eval, write_plots
from steerkit.errors import DatasetImportError, UserError
from steerkit.evaluation import (
    CONDITIONS,
    accuracy_matched,
    expected_calibration_error,
    load_dataset,
    make_folds,
)
from steerkit.evaluation.probe import facts_pool, gold_questions
from steerkit.importers import cluster_style, import_persona_tailoring
from steerkit.models import Item, SearchConfig
from steerkit.testing import PLANTED_PERSONA, FakeScorer, planted_fn, planted_pool

# --- pieces ---------------------------------------------------------------------------------------


def _questions(n: int, options: int = 2) -> list[list[Item]]:
    out = []
    for q in range(n):
        out.append([Item(id=f"q{q}/o{k}", kind="claim", question=f"Q{q}?", option=f"opt{k}", group=f"q{q}", gold=k == q % options)
                    for k in range(options)])
    return out


def test_folds_split_each_persona_evenly_and_disjointly() -> None:
    qs = _questions(10)
    folds = make_folds(qs, 4, "seed")
    assert sorted(len(f) for f in folds) == [2, 2, 3, 3]
    ids = [q[0].group for f in folds for q in f]
    assert sorted(ids) == sorted(q[0].group for q in qs)
    assert make_folds(qs, 4, "seed") == folds and make_folds(qs, 4, "other") != folds
    with pytest.raises(UserError, match="cannot make 4 folds"):
        make_folds(qs[:3], 4, 0)


@pytest.mark.parametrize("options", [2, 3])
def test_accuracy_matched_labels_keep_the_accuracy_and_change_the_labels(options: int) -> None:
    qs = _questions(12, options)
    rng = random.Random(1)
    icm = {}
    for n, q in enumerate(qs):  # right on the first 8 questions, wrong on the last 4
        win = next(k for k, it in enumerate(q) if it.gold) if n < 8 else next(k for k, it in enumerate(q) if not it.gold)
        icm.update({it.id: k == win for k, it in enumerate(q)})

    def acc(labels: dict[str, bool]) -> float:
        return sum(all(labels[it.id] == it.gold for it in q) for q in qs) / len(qs)

    for seed in range(5):
        am = accuracy_matched(icm, qs, random.Random(seed))
        assert acc(am) == acc(icm) == 8 / 12
        assert sum(am[k] != v for k, v in icm.items()) >= 2 * 4  # four questions each way changed
        assert all(sum(am[it.id] for it in q) == 1 for q in qs)  # still consistent
    all_right = {it.id: bool(it.gold) for q in qs for it in q}
    assert accuracy_matched(all_right, qs, rng) == all_right


def test_expected_calibration_error_on_crafted_predictions() -> None:
    assert expected_calibration_error([1.0] * 4, [True] * 4) == 0.0
    assert expected_calibration_error([0.8] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.3)
    # two bins: 0.55 (1 of 2 right) and 0.95 (2 of 2 right): (2·0.05 + 2·0.05) / 4
    assert expected_calibration_error([0.55, 0.55, 0.95, 0.95], [True, False, True, True]) == pytest.approx(0.05)
    with pytest.raises(UserError):
        expected_calibration_error([], [])


def test_persona_tailoring_styles_are_clustered_by_the_papers_keywords() -> None:
    assert cluster_style("The user prefers concise, direct answers") == "style/dcf"
    assert cluster_style("The user wants step-by-step instructions") == "style/dms"
    assert cluster_style("The user values empathetic, supportive replies") == "style/dec"
    assert cluster_style("The user wants in-depth answers with historical background") == "style/dsn"
    # a negative keyword outweighs: "brief" (DCF) but "background" and "context" (DCF negatives, DSN positives)
    assert cluster_style("brief answers with background and context") == "style/dsn"
    assert cluster_style("The user likes cats") is None


def test_persona_tailoring_import_from_an_arrow_stream(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    rows = {
        "prompt": ["How do I boil an egg?", "Why is the sky blue?", "Hi"],
        "chosen": ["1. Boil water. 2. Add egg. 3. Wait 9 minutes.", "Rayleigh scattering, historically studied by…", "Hello"],
        "rejected": ["Eggs are nice.", "Because.", "Go away"],
        "chosen_persona_gold": ["wants clear steps and exact measurements", "wants in-depth, nuanced context", "likes cats"],
    }
    d = tmp_path / "persona-tailoring-BeaverTails" / "test"
    d.mkdir(parents=True)
    table = pa.table(rows)
    with pa.ipc.new_stream(str(d / "data-00000-of-00001.arrow"), table.schema) as w:
        w.write_table(table)
    out = import_persona_tailoring(tmp_path, subsets=("BeaverTails",))
    assert [len(out[k]) for k in ("style/dcf", "style/dec", "style/dms", "style/dsn")] == [0, 0, 1, 1]
    for it in out["style/dms"] + out["style/dsn"]:
        chosen = it.choice_1 if it.gold else it.choice_2
        assert chosen in rows["chosen"] and it.kind == "preference"
    assert import_persona_tailoring(tmp_path, subsets=("BeaverTails",), max_chars=60)["style/dms"] == []
    with pytest.raises(DatasetImportError, match="no persona-tailoring"):
        import_persona_tailoring(tmp_path, subsets=("Nope",))


@needs_opinionqa
def test_opinionqa_gives_the_three_parties_the_same_questions() -> None:
    eps = load_dataset("opinionqa", opinionqa_dir(), questions=6)
    assert [ep.label for ep in eps] == ["Democrat", "Republican", "Independent"]
    groups = [[q[0].group for q in ep.questions] for ep in eps]
    assert groups[0] == groups[1] == groups[2] and len(groups[0]) == 6
    assert all(len(q) == 2 and sum(bool(it.gold) for it in q) == 1 for ep in eps for q in ep.questions)


# --- the protocol on a fake scorer ------------------------------------------------------------------


def _planted() -> tuple[list[EvalPersona], dict[str, bool]]:
    pool, gold = planted_pool(16)
    return [EvalPersona(PLANTED_PERSONA, gold_questions(pool), "fake")], gold


async def test_the_protocol_on_a_fake_with_a_planted_coherent_labelling(tmp_path: Path) -> None:
    personas, gold = _planted()
    fake = FakeScorer(planted_fn(gold))
    cfg = EvalConfig(folds=4, search=SearchConfig(mode="sparse", context_k=4, max_iterations=20), n_sweep=(1, 4))
    report = await run_eval(personas, fake, cfg, cache_dir=tmp_path)
    d = report.data
    s = d["summary"]
    assert d["conditions"] == [c for c in CONDITIONS if c != "zero_shot_chat"]
    assert d["skipped"] == {"zero_shot_chat": "no chat model"}
    # the fake follows its demonstrations: gold labels teach it the truth, inverted ones the opposite
    assert s["gold"]["mean"]["accuracy"] == 1.0 and s["inverted"]["mean"]["accuracy"] == 0.0
    assert s["gold"]["per_persona"]["test/fake-testers"]["n"] == 16  # every question held out once
    # the gold labelling is the coherent one: its U beats random labels, and accuracy-matched ones
    # unless ICM's labels are all right (then the accuracy-matched labelling *is* gold: a tie)
    assert s["gold"]["u"] > s["random"]["u"]
    matched_is_gold = d["icm_label_accuracy"]["test/fake-testers"] == 1.0
    assert s["gold"]["u"] > s["accuracy_matched"]["u"] or (matched_is_gold and abs(s["gold"]["u"] - s["accuracy_matched"]["u"]) < 1e-6)
    assert 0.0 <= d["icm_label_accuracy"]["test/fake-testers"] <= 1.0
    assert all(0.0 <= s[c]["ece"] <= 1.0 and 0.0 <= s[c]["stability"] <= 1.0 for c in d["conditions"])
    assert set(d["n_sweep"]) == {"icm", "gold"} and set(d["n_sweep"]["gold"]) == {"1", "4", "12"}
    assert len(d["folds"]) == 4 and all(fo["train_questions"] == 12 for fo in d["folds"])
    assert "u" in d["folds"][0] and "u" not in d["folds"][1]  # coherence_folds=1
    assert d["usage"]["model_calls"] == fake.stats.calls > 0
    json.dumps(d)  # every number serialisable
    paths = write_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["accuracy_by_condition.png", "persona_deltas.png", "n_sweep.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)

    again = FakeScorer(planted_fn(gold))
    rerun = await run_eval(personas, again, cfg, cache_dir=tmp_path)
    assert again.stats.calls == 0  # every scored prompt (the search's too) came from the disk cache
    assert rerun.data["summary"] == d["summary"]


async def test_accuracy_matched_labels_have_icms_train_accuracy(tmp_path: Path) -> None:
    personas, gold = _planted()
    fake = FakeScorer(planted_fn(gold))
    cfg = EvalConfig(folds=2, conditions=("icm", "accuracy_matched"), perturbations=3, coherence_folds=0, n_sweep=())
    report = await run_eval(personas, fake, cfg, cache_dir=tmp_path)
    # the planted fake's predictions depend on its demonstrations' agreement with the truth only,
    # so labels at the same accuracy predict the same
    s = report.data["summary"]
    assert s["accuracy_matched"]["mean"]["accuracy"] == pytest.approx(s["icm"]["mean"]["accuracy"])


async def test_an_unknown_condition_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown condition"):
        EvalConfig(conditions=("zero_shot", "gold"))


# --- the real model ---------------------------------------------------------------------------------


@pytest.mark.llama
async def test_a_small_evaluation_end_to_end_on_the_embedded_model(embedded_backend, llama_server_url, tmp_path: Path) -> None:
    import openai

    qs = gold_questions(facts_pool())[:6]
    personas = [EvalPersona(facts_pool().persona, qs, "facts")]
    cfg = EvalConfig(folds=2, perturbations=2, n_sweep=(1,), search=SearchConfig(mode="sparse", context_k=4, max_iterations=6))
    client = openai.AsyncOpenAI(base_url=llama_server_url, api_key="unused")
    try:
        report = await run_eval(personas, embedded_backend, cfg, cache_dir=tmp_path,
                                chat=(client, embedded_backend.chat_model))
    finally:
        await client.close()
    d = report.data
    few_shot = {"zero_shot_base", "random", "icm", "accuracy_matched", "gold", "inverted"}
    assert few_shot <= set(d["conditions"])
    # the chat condition ran, or says why not (a base model may put no option letter in its top tokens)
    assert "zero_shot_chat" in d["conditions"] or d["skipped"]["zero_shot_chat"]
    for c in d["conditions"]:
        assert d["summary"][c]["per_persona"][personas[0].persona.id]["n"] == 6
    assert d["summary"]["gold"]["u"] is not None and d["summary"]["icm"]["stability"] is not None
    assert d["usage"]["model_calls"] > 0 and d["provenance"]["model"] == embedded_backend.model


@pytest.mark.llama
def test_the_eval_command_end_to_end_on_the_embedded_model(tmp_path: Path, gguf_path: Path) -> None:
    from steerkit.cli import main

    data = tmp_path / "facts.jsonl"
    with data.open("w") as f:
        for q in gold_questions(facts_pool())[:4]:
            f.write(json.dumps({"id": q[0].group.replace("/", "-"), "question": q[0].question,
                                "options": [it.option for it in q], "gold": next(it.option for it in q if it.gold)}) + "\n")
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "jsonl", "--data", str(data), "--persona-name", "geography experts", "--folds", "2",
               "--conditions", "zero_shot_base,gold,inverted", "--n-sweep", "1", "--coherence-folds", "0", "--out", str(out),
               "--cache-dir", str(tmp_path / "cache"), "--model-path", str(gguf_path), "--threads", "1", "--no-progress"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert d["conditions"] == ["zero_shot_base", "gold", "inverted"]
    assert d["summary"]["gold"]["per_persona"]["jsonl/persona"]["n"] == 4
    assert (out / "accuracy_by_condition.png").stat().st_size > 0


def _globalopinionqa_csv(path: Path, countries: list[str], n: int) -> Path:
    """A CSV in GlobalOpinionQA's format (its columns; ``selections`` as the release's
    ``defaultdict`` repr, ``options`` as a list literal, a refusal option), with questions this test
    writes: country i's plurality answer to question q is "Should" when q + i is even."""
    import csv

    rows = []
    for q in range(n):
        sel = {c: [0.6, 0.3, 0.1] if (q + i) % 2 == 0 else [0.3, 0.6, 0.1] for i, c in enumerate(countries)}
        rows.append({"question": f"Should your country's government fund public project number {q}?",
                     "selections": f"defaultdict(<class 'list'>, {sel!r})",
                     "options": repr(["Should", "Should not", "DK/Refused"]), "source": "GAS"})
    rows.append({"question": "Asked in one country only?", "selections": "defaultdict(<class 'list'>, {'Brazil': [0.5, 0.5]})",
                 "options": repr(["Yes", "No"]), "source": "GAS"})
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["question", "selections", "options", "source"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_the_eval_command_on_a_globalopinionqa_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`steerkit eval --dataset globalopinionqa` end to end (the search and predictions on the
    fake scorer): countries are personas, only questions every country answered are kept, and each
    country's gold is its own plurality answer."""
    from cli_helpers import cli_env

    from steerkit.cli import main

    cli_env(tmp_path, monkeypatch)
    data = _globalopinionqa_csv(tmp_path / "gqa.csv", ["Brazil", "Nigeria"], 6)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "globalopinionqa", "--data", str(data), "--persona", "Brazil", "--persona", "Nigeria",
               "--questions", "6", "--folds", "2", "--conditions", "zero_shot_base,icm,gold,inverted", "--n-sweep", "1",
               "--coherence-folds", "1", "--max-iterations", "6", "--out", str(out), "--no-progress"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert d["personas"] == ["country/brazil", "country/nigeria"] and d["provenance"]["dataset"] == "globalopinionqa"
    for pid in d["personas"]:
        assert d["summary"]["gold"]["per_persona"][pid]["n"] == 6  # the one-country question is not among them
        assert 0.0 <= d["icm_label_accuracy"][pid] <= 1.0
    assert d["summary"]["gold"]["u"] is not None
    eps = load_dataset("globalopinionqa", data, personas=["Brazil", "Nigeria"], questions=6)
    gold = {ep.label: {q[0].question: next(it.option for it in q if it.gold) for q in ep.questions} for ep in eps}
    assert set(gold["Brazil"]) == set(gold["Nigeria"]) and len(gold["Brazil"]) == 6
    assert all(gold["Brazil"][q] != gold["Nigeria"][q] for q in gold["Brazil"])  # the countries disagree on each


async def test_the_chat_predictor_needs_a_chat_model(tmp_path: Path) -> None:
    personas, gold = _planted()
    with pytest.raises(UserError, match="needs a chat model"):
        await run_eval(personas, FakeScorer(planted_fn(gold)), EvalConfig(predictor="chat"), cache_dir=tmp_path)


class FakeChatClient:
    """A *fake* OpenAI chat client: always answers "A" (logprob of 0.9), records the messages."""

    def __init__(self) -> None:
        from types import SimpleNamespace as NS

        self.messages: list[list[dict]] = []

        async def create(**kw):
            self.messages.append(kw["messages"])
            tops = [NS(token="A", logprob=-0.105), NS(token="B", logprob=-2.303)]
            return NS(choices=[NS(logprobs=NS(content=[NS(token="A", logprob=-0.105, top_logprobs=tops)]))])

        self.chat = NS(completions=NS(create=create))


async def test_the_chat_predictor_sees_the_demonstrations_and_predicts_every_condition(tmp_path: Path) -> None:
    personas, gold = _planted()
    client = FakeChatClient()
    cfg = EvalConfig(folds=2, predictor="chat", conditions=("zero_shot_chat", "gold", "inverted"), coherence_folds=0, n_sweep=())
    report = await run_eval(personas, FakeScorer(planted_fn(gold)), cfg, cache_dir=tmp_path, chat=(client, "fake-chat"))
    s = report.data["summary"]
    first_is_gold = sum(bool(q[0].gold) for q in personas[0].questions) / len(personas[0].questions)
    for c in ("zero_shot_chat", "gold", "inverted"):  # the fake always picks option A
        assert s[c]["mean"]["accuracy"] == pytest.approx(first_is_gold)
        assert s[c]["stability"] is None  # one letter per question: stability is not measurable
    with_demos = [m for m in client.messages if "answered other questions" in m[1]["content"]]
    assert len(with_demos) == 2 * 16  # gold and inverted, every held-out question once
    assert report.data["provenance"]["chat_model"] == "fake-chat"


async def test_the_markdown_table_has_a_row_per_condition_and_a_column_per_persona(tmp_path: Path) -> None:
    personas, gold = _planted()
    cfg = EvalConfig(folds=2, conditions=("zero_shot_base", "gold", "inverted"), coherence_folds=0, n_sweep=(2,))
    md = (await run_eval(personas, FakeScorer(planted_fn(gold)), cfg, cache_dir=tmp_path)).markdown()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0] == "| condition | fake | mean ± SE | ECE | stability | U |"
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| zero_shot_base", "| gold", "| inverted"]
    assert "| gold | 1.00 ± 0.00 | 1.00 ± 0.00 |" in md and "n sweep, gold: n=2: 1.00" in md


async def test_a_killed_evaluation_resumes_from_the_cache(tmp_path: Path) -> None:
    personas, gold = _planted()
    cfg = EvalConfig(folds=2, coherence_folds=1, n_sweep=(2,), search=SearchConfig(mode="sparse", context_k=4, max_iterations=10))
    full_fake = FakeScorer(planted_fn(gold))
    full = await run_eval(personas, full_fake, cfg, cache_dir=tmp_path / "clean")

    plant = planted_fn(gold)
    budget = {"left": full_fake.stats.calls // 2}

    def dies_halfway(prompt: str) -> float:
        if budget["left"] <= 0:
            raise RuntimeError("killed")
        budget["left"] -= 1
        return plant(prompt)

    with pytest.raises(RuntimeError, match="killed"):
        await run_eval(personas, FakeScorer(dies_halfway), cfg, cache_dir=tmp_path / "resumed")
    resumed_fake = FakeScorer(planted_fn(gold))
    resumed = await run_eval(personas, resumed_fake, cfg, cache_dir=tmp_path / "resumed")
    assert 0 < resumed_fake.stats.calls <= full_fake.stats.calls - full_fake.stats.calls // 2 + 64  # the first half was not redone
    assert resumed.data["summary"] == full.data["summary"]

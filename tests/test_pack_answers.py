"""Answer pools carried by persona packs (``[[answer_pool]]``, pack format 2): the format and its
errors, the writer, ``pack check``'s report, the shipped polparty pool (its item pool untouched),
and ``steerkit eval --task generation`` reading a pack's pool when no other answer source is given
(against the vLLM-shaped fake server of test_eval_generation)."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from steerkit._pack_check import check_pack
from steerkit.errors import PackError, UserError
from steerkit.evaluation import answer_pool_from_pack, pack_with_answer_pool
from steerkit.packs import (
    ANSWER_POOL_FORMAT_VERSION,
    PackRegistry,
    PoolQuestionSpec,
    append_answer_pool,
    format_version_needed,
    load_pack,
    pack_from_data,
)

ROOT = Path(__file__).resolve().parents[1]
POLPARTY = ROOT / "personas" / "political_affiliation.toml"
PARTIES = ("polparty/democrat", "polparty/republican", "polparty/independent")

#: The polparty item pool's hashes (the cache key's pool hash) before the answer pool was added.
#: They change only when the pack's survey questions do, never with its answer pool.
POLPARTY_POOL_HASHES = {"polparty/democrat": "b06705b735432e22", "polparty/republican": "9f086506e60d0d20",
                        "polparty/independent": "aea626876fa00c9b"}


def _pack(**top: Any) -> dict[str, Any]:
    return {"format_version": 2, "id": "tea", "dimension": "drink", **top,
            "personas": [{"id": "tea/lovers", "name": "Tea lovers", "label": "Tea lover", "aliases": ["tea lover"]},
                         {"id": "tea/haters", "name": "Tea haters", "aliases": ["tea hater"]}],
            "questions": [{"id": "q", "question": "Tea or coffee?", "options": ["Tea", "Coffee"]}],
            "answer_pool": [
                {"id": "morning", "question": "What should people drink in the morning?",
                 "answers": [{"id": "tea", "text": "A pot of strong tea, it wakes you up gently.",
                              "gold": {"lovers": True, "tea/haters": False}},
                             {"id": "coffee", "text": "Coffee, black, nothing else gets the day going.",
                              "gold": {"lovers": False, "haters": True}}]},
                {"id": "office", "question": "What should an office kitchen stock?",
                 "answers": [{"id": "kettle", "text": "A kettle and twenty kinds of leaf.", "gold": {"lovers": True}},
                             {"id": "machine", "text": "An espresso machine and good beans.", "stance": "coffee"}]}]}


# --- the shipped pool ------------------------------------------------------------------------------


def test_the_polparty_answer_pool_leaves_its_item_pool_and_hashes_as_they_were() -> None:
    reg = PackRegistry.default()
    assert {pid: reg.pool(pid).content_hash() for pid in PARTIES} == POLPARTY_POOL_HASHES
    # the same file without its answer pool (and as format 1) gives the very same pools
    data = tomllib.loads(POLPARTY.read_text())
    bare = {k: v for k, v in data.items() if k != "answer_pool"} | {"format_version": 1}
    without = pack_from_data(bare, base_dir=POLPARTY.parent)
    with_pool = load_pack(POLPARTY)
    assert with_pool.answer_pool and not without.answer_pool
    for pid in PARTIES:
        assert with_pool.pool(pid).content_hash() == without.pool(pid).content_hash()
        assert with_pool.pool(pid).items == without.pool(pid).items
    assert data["format_version"] == format_version_needed(data) == ANSWER_POOL_FORMAT_VERSION


def test_the_polparty_answer_pool_spans_the_spectrum_with_gold_for_every_party() -> None:
    pack = PackRegistry.default().pack("polparty")
    pool = answer_pool_from_pack(pack)
    assert len(pool.questions) == 6 and all(len(q.answers) == 4 for q in pool.questions)
    assert [p.id for p in pool.personas] == list(PARTIES) and pool.persona("Democrat").label == "Democrat"
    for q in pool.questions:
        assert len({a.stance for a in q.answers}) == 4
        for pid in PARTIES:
            assert all(pid in a.gold for a in q.answers), (q.id, pid)  # gold for every answer: every condition runs
            assert any(a.gold[pid] for a in q.answers), (q.id, pid)  # and something to show as representative
        # the two parties never share the representative answer; the last answer is an extreme nobody holds
        dem = {a.id for a in q.answers if a.gold["polparty/democrat"]}
        rep = {a.id for a in q.answers if a.gold["polparty/republican"]}
        assert dem and rep and not dem & rep and not any(q.answers[-1].gold.values())
    items = pool.items("polparty/republican")
    assert len(items) == 24 and all(it.kind == "claim" and it.gold is not None for it in items)
    assert pool.provenance["pack"] == "polparty"


# --- the format --------------------------------------------------------------------------------------


def test_gold_keys_are_stored_as_full_persona_ids_outside_the_item_pool() -> None:
    pack = pack_from_data(_pack())
    assert pack.format_version == 2 and [q.id for q in pack.answer_pool] == ["morning", "office"]
    assert pack.answer_pool[0].answers[1].gold == {"tea/lovers": False, "tea/haters": True}
    assert pack.answer_pool[1].answers[0].gold == {"tea/lovers": True}
    assert [it.id for it in pack.items] == ["tea/q/o0", "tea/q/o1"]  # the item pool is the survey question only
    assert pack.content_hash() != pack_from_data({**_pack(), "answer_pool": []}).content_hash()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format_version=1), r"field answer_pool: needs format_version = 2 \(the file says 1\).*write format_version = 2"),
    (lambda d: d.pop("format_version"), r"field answer_pool: needs format_version = 2"),
    (lambda d: d["answer_pool"][0]["answers"][0]["gold"].update(sippers=True),
     r"answer_pool\[0\] \(id='morning'\)\.answers\[0\] \(id='tea'\)\.gold: unknown persona 'sippers'.*haters, lovers"),
    (lambda d: d["answer_pool"][0]["answers"][0]["gold"].update({"tea/lovers": False}), r"persona 'tea/lovers' is given twice"),
    (lambda d: d["answer_pool"][0]["answers"][1].update(text="  a pot of STRONG tea, it wakes you up gently. "),
     r"answer_pool\[0\] \(id='morning'\)\.answers: answers 'tea' and 'coffee' have the same text"),
    (lambda d: d["answer_pool"][0]["answers"][1].update(id="tea"), r"duplicate answer id\(s\) \['tea'\]"),
    (lambda d: d["answer_pool"][0]["answers"].pop(), r"answer_pool\[0\] \(id='morning'\)\.answers: .*at least 2"),
    (lambda d: d["answer_pool"][0]["answers"][0]["gold"].update(lovers="yes"), r"\.gold\.lovers: Input should be a valid boolean"),
    (lambda d: d["answer_pool"][0]["answers"][0].update(txt="typo"), r"answers\[0\] \(id='tea'\)\.txt: Extra inputs"),
    (lambda d: d["answer_pool"].append(copy.deepcopy(d["answer_pool"][0])), r"field answer_pool: duplicate id\(s\) \['morning'\]"),
])
def test_a_wrong_answer_pool_is_a_pack_error_naming_the_field(edit: Any, message: str) -> None:
    data = _pack()
    edit(data)
    with pytest.raises(PackError, match=message) as e:
        pack_from_data(data, source="tea.toml")
    assert str(e.value).startswith("tea.toml: field")


def test_an_ambiguous_short_gold_key_asks_for_the_full_id() -> None:
    data = _pack()
    data["personas"].append({"id": "other/lovers", "name": "Other lovers", "aliases": ["other lover"]})
    with pytest.raises(PackError, match=r"'lovers' names several personas .*write the persona's full id"):
        pack_from_data(data)


def test_append_answer_pool_raises_the_version_keeps_the_file_and_round_trips(tmp_path: Path) -> None:
    data = _pack()
    pool = data.pop("answer_pool")
    data["format_version"] = 1
    path = tmp_path / "tea.toml"
    path.write_text("# my tea pack: keep this comment\n" + _toml(data))
    before = load_pack(path)
    pack = append_answer_pool(path, [PoolQuestionSpec.model_validate(q) for q in pool])
    text = path.read_text()
    assert text.startswith("# my tea pack: keep this comment\n") and "format_version = 2" in text
    assert "gold = {lovers = true, haters = false}" in text  # the persona id's last part, as a person writes it
    assert pack.format_version == 2 and load_pack(path).answer_pool == pack_from_data(_pack()).answer_pool
    assert pack.pool("tea/lovers").content_hash() == before.pool("tea/lovers").content_hash()
    bad = PoolQuestionSpec(id="x", question="Which?", answers=[{"id": "a", "text": "One", "gold": {"nobody": True}},
                                                               {"id": "b", "text": "Two"}])
    with pytest.raises(PackError, match="unknown persona 'nobody'"):
        append_answer_pool(path, [bad])
    assert path.read_text() == text  # a failed write leaves the file as it was


def _toml(data: dict[str, Any]) -> str:
    import tomlkit

    return tomlkit.dumps(data)


# --- pack check --------------------------------------------------------------------------------------


def test_pack_check_counts_the_shipped_answer_pool_and_finds_nothing_wrong_with_it() -> None:
    report = check_pack(POLPARTY)
    assert report.format_version == 2 and report.answer_pool_questions == 6 and report.answer_pool_answers == 24
    assert report.answer_pool_gold["polparty/democrat"] == {"representative": 6, "not_representative": 18, "unlabelled": 0}
    assert not [f for f in report.findings if f.code.startswith("answer_pool")]


def test_pack_check_reports_what_is_wrong_with_an_answer_pool(tmp_path: Path) -> None:
    data = _pack()
    data["answer_pool"].append({"id": "office2", "question": "What should an office kitchen stock?",
                                "answers": [{"id": "a", "text": "Whatever a tea lover asks for."},
                                            {"id": "b", "text": "Machine coffee, espresso beans."},
                                            {"id": "c", "text": "Espresso machine coffee beans!"}]})
    report = check_pack(pack_from_data(data, source="tea.toml"))
    codes = {f.code: f.message for f in report.findings}
    assert report.answer_pool_questions == 3 and report.answer_pool_answers == 7
    assert "office ~ office2" in codes["answer_pool_near_duplicate"] or "office2: b ~ c" in codes["answer_pool_near_duplicate"]
    assert sum(f.code == "answer_pool_near_duplicate" for f in report.findings) == 2  # questions, and answers to one
    assert "office2/a" in codes["answer_pool_names_persona"]
    assert "tea/lovers" in codes["answer_pool_partial_gold"] and "tea/haters" in codes["answer_pool_partial_gold"]
    assert "tea/haters: office, office2" in codes["answer_pool_no_representative"]
    assert report.answer_pool_gold["tea/lovers"] == {"representative": 2, "not_representative": 1, "unlabelled": 4}
    one = _pack()
    one["answer_pool"] = one["answer_pool"][:1]
    for a in one["answer_pool"][0]["answers"]:
        a.pop("gold")
    codes = {f.code: f for f in check_pack(pack_from_data(one)).findings}
    assert codes["answer_pool_small"].level == "warning" and codes["answer_pool_no_gold"].level == "info"


# --- which pack's pool --------------------------------------------------------------------------------


def test_the_pack_is_named_found_by_its_personas_or_the_only_one(tmp_path: Path) -> None:
    reg = PackRegistry.default()
    assert pack_with_answer_pool(reg).id == "polparty"  # the only shipped pack with one
    assert pack_with_answer_pool(reg, personas=["Democrats", "GOP voter"]).id == "polparty"
    assert pack_with_answer_pool(reg, "polparty").id == "polparty"
    path = tmp_path / "tea.toml"
    path.write_text(_toml(_pack()))
    assert pack_with_answer_pool(reg, path).id == "tea"  # a pack file, configured or not
    with pytest.raises(UserError, match="pack 'countries' carries no answer pool"):
        pack_with_answer_pool(reg, "countries")
    with pytest.raises(UserError, match="carries no answer pool"):
        pack_with_answer_pool(reg, personas=["Nigeria"])
    with pytest.raises(UserError, match="belong to several packs"):
        pack_with_answer_pool(reg, personas=["Democrats", "Nigeria"])
    with pytest.raises(UserError, match="neither a configured pack's id nor a pack file"):
        pack_with_answer_pool(reg, "nope")
    two = PackRegistry([*reg.packs, load_pack(path)])
    with pytest.raises(UserError, match=r"several configured packs carry an answer pool \(polparty, tea\)"):
        pack_with_answer_pool(two)
    with pytest.raises(UserError, match="no configured pack carries an answer pool"):
        pack_with_answer_pool(PackRegistry([reg.pack("countries")]))


# --- the command ---------------------------------------------------------------------------------------


def test_eval_generation_without_an_answer_source_runs_on_the_pack_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_helpers import cli_env
    from test_eval_generation import vllm_shaped_server

    from steerkit.cli import main

    cli_env(tmp_path, monkeypatch)
    out = tmp_path / "out"
    with vllm_shaped_server() as (url, requests):
        rc = main(["eval", "--task", "generation", "--persona", "Democrats", "--questions", "4", "--chat-base-url", url,
                   "--chat-model", "Qwen/Qwen2.5-7B-Instruct", "--judge-base-url", url, "--judge-model", "judge-model",
                   "--search-fraction", "0.5", "--max-iterations", "4", "--perturbations", "1", "--k", "2",
                   "--out", str(out), "--no-progress", "--no-plots"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert d["personas"] == ["polparty/democrat"] and d["provenance"]["dataset"] == "pack"
    assert d["provenance"]["pack"] == "polparty" and d["provenance"]["pool"]["pack"] == "polparty"
    assert d["conditions"] == ["zero_shot", "icm", "gold", "random", "accuracy_matched"] and not d["skipped"]
    assert sorted(d["split"]["search_questions"] + d["split"]["test_questions"]) == sorted(
        ["minimum_wage", "unauthorized_immigrants", "climate_policy", "gun_laws"])
    pack = PackRegistry.default().pack("polparty")
    texts = {a.text: a.gold["polparty/democrat"] for q in pack.answer_pool for a in q.answers}
    gold_runs = [r for r in d["questions"] if r["condition"] == "gold"]
    assert gold_runs and all(r["examples"] and all(texts[e["answer"]] for e in r["examples"]) for r in gold_runs)
    # the gold self-check pairs are the pack's: its representative against an unrepresentative answer
    assert d["judge"]["self_check"]["sources"] == {"gold": 4}
    answered = [r for r in requests if r["model"] == "Qwen/Qwen2.5-7B-Instruct"]
    assert any("Persona (U.S. political affiliation): Democrat." in r["messages"][0]["content"] for r in answered)


def test_classification_still_needs_a_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import cli_env

    from steerkit.cli import main

    cli_env(tmp_path, monkeypatch)
    assert main(["eval", "--questions", "2"]) != 0
    assert "the classification task needs --dataset and --data" in capsys.readouterr().err
    assert main(["eval", "--task", "generation", "--data", "x.jsonl"]) != 0
    assert "--data needs --dataset" in capsys.readouterr().err

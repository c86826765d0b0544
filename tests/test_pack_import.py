"""``steerkit pack import``: OpinionQA attribute packs and GlobalOpinionQA country packs with gold,
on small files written here, and on the shared OpinionQA data when it is there
(``$STEERKIT_OPINIONQA_DIR``, else ``../shared/data/opinionqa`` beside the repository)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, run_json

from steerkit._pack_check import check_pack
from steerkit.cli import main
from steerkit.extract import RuleExtractor
from steerkit.importers import (
    import_globalopinionqa_countries,
    import_opinionqa_attribute,
    opinionqa_attributes,
)
from steerkit.packs import PackRegistry, load_pack

REPO = Path(__file__).resolve().parents[1]
SHARED_OQA = Path(os.environ.get("STEERKIT_OPINIONQA_DIR") or REPO.parent / "shared" / "data" / "opinionqa")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return cli_env(tmp_path, monkeypatch)


def _wave(root: Path, name: str, questions: dict[str, tuple[str, list[str]]],
          attrs: dict[str, dict[str, dict[str, dict[str, float]]]]) -> None:
    """A wave folder in OpinionQA's layout: info.csv and one <ATTR>_data.json per attribute."""
    w = root / name
    w.mkdir(parents=True)
    with (w / "info.csv").open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["", "key", "question", "references"])
        for n, (key, (text, options)) in enumerate(questions.items()):
            wr.writerow([n, key, text, repr(options)])
    for attr, by_key in attrs.items():
        data = {}
        for key, groups in by_key.items():
            text, options = questions[key]
            data[key] = {"MC_options": options, "question_text": text, **groups}
        (w / f"{attr}_data.json").write_text(json.dumps(data))


@pytest.fixture
def oqa(tmp_path: Path) -> Path:
    """Two waves asking one question twice (its counts are summed), a question with a refusal and a
    four-option one (skipped), an unstatable group (``nan``) and a copy folder of a wave's key with
    counts that would flip gold if they were counted twice."""
    root = tmp_path / "human_resp"
    tax = ("Should taxes on the rich go up?", ["Yes", "No", "Refused"])
    _wave(root, "American_Trends_Panel_W1",
          {"TAX_W1": tax, "PARK_W1": ("More parks or more roads?", ["Parks", "Roads"]),
           "FOUR_W1": ("Pick a season", ["Spring", "Summer", "Autumn", "Winter"])},
          {"AGE": {"TAX_W1": {"18-29": {"Yes": 60, "No": 40, "Refused": 99}, "65+": {"Yes": 10, "No": 30},
                              "nan": {"Yes": 1, "No": 1}},
                   "PARK_W1": {"18-29": {"Parks": 8, "Roads": 2}, "65+": {"Parks": 3, "Roads": 7},
                               "nan": {"Parks": 0, "Roads": 0}},
                   "FOUR_W1": {"18-29": {"Spring": 1, "Summer": 2, "Autumn": 3, "Winter": 4},
                               "65+": {"Spring": 4, "Summer": 3, "Autumn": 2, "Winter": 1}}},
           "SEX": {"TAX_W1": {"Male": {"Yes": 5, "No": 9}, "Female": {"Yes": 9, "No": 5}},
                   "PARK_W1": {"Male": {"Parks": 5, "Roads": 6}, "Female": {"Parks": 6, "Roads": 5}}}})
    _wave(root, "American_Trends_Panel_W2", {"TAX_W2": tax},
          {"AGE": {"TAX_W2": {"18-29": {"Yes": 10, "No": 50}, "65+": {"Yes": 5, "No": 50}}}})
    _wave(root, "Pew_disagreement_copy", {"PARK_W1": ("More parks or more roads?", ["Parks", "Roads"])},
          {"AGE": {"PARK_W1": {"18-29": {"Parks": 0, "Roads": 100}, "65+": {"Parks": 0, "Roads": 100}}}})
    return root


def test_attribute_import_merges_waves_and_reads_copies_once(oqa: Path) -> None:
    assert opinionqa_attributes(oqa) == {"AGE": ["American_Trends_Panel_W1", "American_Trends_Panel_W2",
                                                 "Pew_disagreement_copy"],
                                         "SEX": ["American_Trends_Panel_W1"]}
    by_group = import_opinionqa_attribute(oqa, "AGE")
    young = by_group["18-29"]
    assert [it.id for it in young] == ["oqa/TAX_W1/o0", "oqa/TAX_W1/o1", "oqa/PARK_W1/o0", "oqa/PARK_W1/o1"]
    # TAX: 60/40 in W1 and 10/50 in W2: summed 70/90, so "No" is the plurality (W1 alone says "Yes")
    assert [it.gold for it in young[:2]] == [False, True]
    assert young[0].meta["waves"] == ["American_Trends_Panel_W1", "American_Trends_Panel_W2"]
    assert young[1].meta["share"] == pytest.approx(90 / 160)
    # PARK: the copy's 0/100 is not counted again
    assert [it.gold for it in young[2:]] == [True, False]
    assert [it.id for it in by_group["65+"]] == [it.id for it in young]  # one pool of questions, gold per group


def test_import_opinionqa_packs_from_the_command(oqa: Path, tmp_path: Path, env: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "packs"
    written = run_json(capsys, ["pack", "import", "opinionqa", "--data", str(oqa), "-o", str(out), "--json"])
    assert [w["attribute"] for w in written] == ["AGE", "SEX"]
    age, _sex = written
    assert age["personas"] == ["opinionqa_age/18_29", "opinionqa_age/65_plus"] and age["questions"] == 2
    assert age["notes"] == ["left out group(s) no user can state: nan"]
    pack = load_pack(age["path"])
    assert pack.dimension == "age" and pack.format_version == 1
    pool = pack.pool("opinionqa_age/65_plus")
    assert [it.gold for it in pool.items] == [False, True, False, True]
    assert "Pew Research Center's terms" in Path(age["path"]).read_text()
    # beside the shipped packs, a user's statement steers to the imported persona
    registry = PackRegistry.from_paths([out], include_default=True)
    matches = RuleExtractor(registry).extract("I'm in my twenties and I'm a woman. Should I rent or buy?")
    assert {m.persona_id for m in matches} == {"opinionqa_age/18_29", "opinionqa_sex/female"}
    # gold positions are part of the check's report
    report = check_pack(age["path"], registry.packs)
    assert report.gold_position_share == [0.25, 0.75] and not report.errors
    # existing files are kept unless --force; --max-questions keeps the same questions for everyone
    assert main(["pack", "import", "opinionqa", "--data", str(oqa), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    written = run_json(capsys, ["pack", "import", "opinionqa", "--data", str(oqa), "-o", str(out), "--attribute", "age",
                                "--max-questions", "1", "--force", "--json"])
    pack = load_pack(written[0]["path"])
    assert {it.group for s in pack.specs for it in pack.pool(s.id).items} == {"oqa/TAX_W1"}


@pytest.mark.parametrize("attribute, message", [("NONE", "no persona table"), ("RACE", "attributes in this data")])
def test_import_opinionqa_errors(oqa: Path, tmp_path: Path, env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                 attribute: str, message: str) -> None:
    assert main(["pack", "import", "opinionqa", "--data", str(oqa), "-o", str(tmp_path / "o"),
                 "--attribute", attribute]) == 2
    assert message in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pack", "import", "opinionqa", "--data", str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "no OpinionQA wave folders" in capsys.readouterr().err


def _gqa(path: Path) -> Path:
    rows = []
    for n in range(4):
        rows.append({"question": f"Is topic {n} important?", "options": repr(["Yes", "No", "DK/Refused"]),
                     "selections": "defaultdict(<class 'list'>, {'Brazil': [0.7, 0.2, 0.1], 'Atlantis': [0.1, 0.8, 0.1], "
                                   "'Tiny': [0.5, 0.4, 0.1]})" if n == 0 else
                                   "defaultdict(<class 'list'>, {'Brazil': [0.6, 0.4, 0.0], 'Atlantis': [0.3, 0.7, 0.0]})",
                     "source": "GAS"})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "selections", "options", "source"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_import_globalopinionqa_countries(tmp_path: Path, env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _gqa(tmp_path / "gqa.csv")
    by_country = import_globalopinionqa_countries(csv_path)
    assert sorted(by_country) == ["Atlantis", "Brazil", "Tiny"]
    assert [it.id for it in by_country["Brazil"]] == [it.id for it in by_country["Atlantis"]]  # shared questions
    assert [it.gold for it in by_country["Atlantis"][:2]] == [False, True]
    (w,) = run_json(capsys, ["pack", "import", "globalopinionqa", "--data", str(csv_path), "-o", str(tmp_path / "o"),
                             "--min-questions", "2", "--json"])
    assert w["personas"] == ["globalopinionqa_country/atlantis", "globalopinionqa_country/brazil"]
    assert w["notes"] == ["left out 1 countries with fewer than 2 questions: Tiny (1)"]
    pack = load_pack(w["path"])
    brazil = pack.spec("globalopinionqa_country/brazil")
    assert "Brazilian" in brazil.aliases and brazil.places == ("Brazil",)  # demonyms from the shipped pack
    assert pack.spec("globalopinionqa_country/atlantis").places == ("Atlantis",)
    # the shipped countries pack claims the same words: check says so
    report = check_pack(w["path"], PackRegistry.default().packs)
    assert any(f.code == "alias_conflict" and "country/brazil" in f.message for f in report.warnings)
    assert main(["pack", "import", "globalopinionqa", "--data", str(csv_path), "-o", str(tmp_path / "o2"),
                 "--country", "Narnia"]) == 2
    assert "no country 'Narnia'" in capsys.readouterr().err


# --- the shared OpinionQA data ------------------------------------------------------------------

needs_data = pytest.mark.skipif(not SHARED_OQA.is_dir(),
                                reason=f"no OpinionQA data at {SHARED_OQA} (set STEERKIT_OPINIONQA_DIR)")


@needs_data
def test_every_opinionqa_attribute_from_the_shared_data_is_a_pack_that_is_searched(
        tmp_path: Path, env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "oqa"
    written = run_json(capsys, ["pack", "import", "opinionqa", "--data", str(SHARED_OQA), "-o", str(out),
                                "--max-questions", "12", "--json"])
    assert [w["dimension"] for w in written] == ["age", "sex", "education", "income", "race", "region", "ideology",
                                                  "party"]
    assert all(w["questions"] == 12 for w in written)
    registry = PackRegistry.from_paths([out], include_default=True)
    assert len(registry.personas("education")) == 6 and len(registry.personas("age")) == 4
    pool = registry.pool("opinionqa_party/republican")
    assert all(it.gold is not None for it in pool.items) and pool.items[0].meta["source"] == "opinionqa"
    # searched like any persona (the fake scorer stands in for the base model)
    (res,) = run_json(capsys, ["precompute", "--packs-dir", str(out), "--persona", "opinionqa_ideology/very_liberal",
                               "--restarts", "1", "--json"])
    assert res["status"] == "computed" and env["backends"][-1].stats.calls > 0

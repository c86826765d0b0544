"""``steerkit pack new`` and ``steerkit pack check`` (through the CLI's ``main``), and the pack
format's version (``format_version``, the earlier ``schema_version``)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env

from steerkit.cli import main
from steerkit.errors import PackError
from steerkit.packs import FORMAT_VERSION, PackRegistry, format_version_needed, load_pack, pack_from_data

NURSES = ["--persona", "Nurses|nurse, RN, registered nurse|Registered nurses in hospitals",
          "--persona", "Physicians|doctor, physician|Doctors in hospitals"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return cli_env(tmp_path, monkeypatch)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    rc = main(["pack", "check", str(path), "--json", *flags])
    return rc, json.loads(capsys.readouterr().out)


def _codes(report: dict[str, Any], level: str | None = None) -> list[str]:
    return [f["code"] for f in report["findings"] if level is None or f["level"] == level]


# --- format version -----------------------------------------------------------------------------

def _minimal(**top: Any) -> dict[str, Any]:
    return {"id": "mini", "dimension": "mini", **top,
            "personas": [{"id": "mini/a", "name": "As", "aliases": ["alpha"]},
                         {"id": "mini/b", "name": "Bs", "aliases": ["beta"]}],
            "questions": [{"id": "q", "question": "Tea or coffee?", "options": ["Tea", "Coffee"]}]}


def test_format_version_known_legacy_and_unknown() -> None:
    assert pack_from_data(_minimal()).format_version == FORMAT_VERSION  # absent: version 1
    assert pack_from_data(_minimal(format_version=1)).format_version == 1
    assert pack_from_data(_minimal(schema_version=1)).format_version == 1  # the earlier spelling still loads
    assert pack_from_data(_minimal(format_version=2)).format_version == 2  # 2: 1 plus answer pools
    with pytest.raises(PackError, match=r"reads pack formats 1 to 2, the file is format 3.*upgrade steerkit"):
        pack_from_data(_minimal(format_version=3), source="new.toml")
    with pytest.raises(PackError, match="format 0 does not exist"):
        pack_from_data(_minimal(format_version=0))
    with pytest.raises(PackError, match="must be an integer"):
        pack_from_data(_minimal(format_version="1"))
    with pytest.raises(PackError, match="disagrees with schema_version"):
        pack_from_data(_minimal(format_version=1, schema_version=2))


def test_shipped_packs_declare_the_format_and_the_doc_has_a_loading_example() -> None:
    root = Path(__file__).resolve().parents[1] / "personas"
    for f in sorted(root.glob("*.toml")):
        data = tomllib.loads(f.read_text())
        assert data["format_version"] == format_version_needed(data), f  # the lowest version that reads it
    doc = (root / "FORMAT.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    pack = pack_from_data(tomllib.loads(example), source="FORMAT.md")
    assert pack.format_version == FORMAT_VERSION and len(pack.specs) >= 2


def test_packs_public_names_still_import() -> None:
    from steerkit import packs

    for name in ("PackRegistry", "PersonaPack", "PersonaSpec", "QuestionSpec", "PackTemplates", "load_pack",
                 "pack_from_data", "default_pack_paths", "NewPackSpec", "append_questions"):
        assert getattr(packs, name) is not None, name


# --- pack new -----------------------------------------------------------------------------------

def test_new_from_flags_writes_a_pack_that_loads(tmp_path: Path, env: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hospital.toml"
    rc = main(["pack", "new", str(out), "--dimension", "occupation", "--title", "Hospital staff", *NURSES])
    assert rc == 0, capsys.readouterr().err
    pack = load_pack(out)
    assert pack.id == "hospital" and pack.dimension == "occupation" and pack.title == "Hospital staff"
    nurse = pack.spec("hospital/nurses")
    assert nurse.name == "Nurses" and nurse.aliases == ("nurse", "RN", "registered nurse")
    assert nurse.description == "Registered nurses in hospitals"
    assert [q.id for q in pack.questions] == ["example_1", "example_2"]  # placeholders to replace
    assert "# The example_* questions are placeholders" in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # as a plain open() would create it
    # it works beside the shipped packs
    assert "hospital/physicians" in PackRegistry.from_paths([out], include_default=True)
    # an existing file is kept unless --force
    assert main(["pack", "new", str(out), *NURSES]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["pack", "new", str(out), "--force", "--dimension", "staff", *NURSES]) == 0
    assert load_pack(out).dimension == "staff"


def test_new_from_spec_with_questions_and_keywords(tmp_path: Path, env: dict[str, Any]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "id": "tone", "dimension": "tone", "extraction": "keywords",
        "personas": [{"name": "readers who want jokes", "label": "Playful", "keywords": ["make it funny"]},
                     {"name": "readers who want it plain", "label": "Plain", "aliases": ["no jokes"]}],
        "questions": [{"id": "q1", "question": "Puns in a manual?", "options": ["Yes", "No"]}],
    }))
    out = tmp_path / "tone.toml"
    assert main(["pack", "new", str(out), "--spec", str(spec)]) == 0
    pack = load_pack(out)
    assert pack.extraction == "keywords"
    assert pack.spec("tone/playful").keywords == ("make it funny",)
    assert pack.spec("tone/plain").keywords == ("no jokes",)  # aliases become keywords in a keywords pack
    assert [q.id for q in pack.questions] == ["q1"]


@pytest.mark.parametrize("argv, message", [
    (["--persona", "Nurses"], "at least two --persona"),
    (["--persona", "Nurses|a|b|c", "--persona", "X"], "NAME[|ALIASES[|DESCRIPTION]]"),
])
def test_new_rejects_bad_specs(tmp_path: Path, env: dict[str, Any], capsys: pytest.CaptureFixture[str],
                               argv: list[str], message: str) -> None:
    assert main(["pack", "new", str(tmp_path / "x.toml"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


# --- pack check ---------------------------------------------------------------------------------

def test_check_exit_codes_for_ci(tmp_path: Path, env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hospital.toml"
    assert main(["pack", "new", str(out), *NURSES]) == 0
    rc, report = _check(capsys, out)
    assert rc == 0 and report["exit_code"] == 0
    assert {"small_pool", "placeholder"} <= set(_codes(report, "warning"))
    assert report["frames_tested"] == report["frames_extracted"] > 0  # every alias is stated in both frames
    assert report["false_positive_frames"] > 0 and report["false_positives"] == 0
    rc, _ = _check(capsys, out, "--strict")
    assert rc == 1
    # the human-readable report says the same
    capsys.readouterr()
    assert main(["pack", "check", str(out), "--strict"]) == 1
    text = capsys.readouterr().out
    assert "warning placeholder" in text and "warnings (--strict)" in text
    # a pack that does not load: exit 2, the error names the field
    bad = tmp_path / "bad.toml"
    bad.write_text(out.read_text().replace("format_version = 1", "format_version = 9"))
    rc, report = _check(capsys, bad)
    assert rc == 2 and _codes(report, "error") == ["invalid"] and "format_version" in report["findings"][0]["message"]


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def _pack(personas: list[dict[str, Any]], questions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    qs = questions or [{"id": f"q{n}", "question": f"Question number {n} about topic {n}?", "options": ["Yes", "No"]}
                       for n in range(3)]
    return {"format_version": 1, "id": "mine", "dimension": "mine", "personas": personas, "questions": qs}


def test_check_alias_conflicts_in_the_pack_and_with_configured_packs(tmp_path: Path, env: dict[str, Any],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    inside = _write(tmp_path / "inside.json", _pack([
        {"id": "mine/a", "name": "Anglers", "aliases": ["angler", "fisher"]},
        {"id": "mine/b", "name": "Boaters", "aliases": ["boater", "Fisher"]},
    ]))
    rc, report = _check(capsys, inside)
    assert rc == 2 and "alias_conflict" in _codes(report, "error")
    conflict = next(f["message"] for f in report["findings"] if f["code"] == "alias_conflict")
    assert "'fisher'" in conflict and "mine/a" in conflict and "mine/b" in conflict
    # the extractor keeps one owner: the other persona's claim to it is reported as not extracted
    assert any(f["code"] == "not_extracted" and "'Fisher'" in f["message"] for f in report["findings"])

    across = _write(tmp_path / "across.json", _pack([
        {"id": "mine/a", "name": "Anglers", "aliases": ["angler", "Democrat"]},
        {"id": "mine/b", "name": "Boaters", "aliases": ["boater"]},
    ]))
    rc, report = _check(capsys, across)
    assert rc == 0  # a warning: both steer
    found = next(f for f in report["findings"] if f["code"] == "alias_conflict")
    assert found["level"] == "warning" and "'democrat'" in found["message"] and "polparty/democrat" in found["message"]

    clash = _write(tmp_path / "clash.json", {**_pack([
        {"id": "polparty/democrat", "name": "Donkeys", "aliases": ["donkey"]},
        {"id": "mine/b", "name": "Boaters", "aliases": ["boater"]},
    ])})
    rc, report = _check(capsys, clash)
    assert rc == 2 and "id_conflict" in _codes(report, "error")


def test_check_pool_quality(tmp_path: Path, env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    personas = [{"id": "mine/a", "name": "Anglers", "aliases": ["angler"]},
                {"id": "mine/b", "name": "Boaters", "aliases": ["boater"]}]
    questions = [
        {"id": "dup1", "question": "Do you prefer fishing at dawn or at dusk?", "options": ["Dawn", "Dusk"], "spread": 0.4},
        {"id": "dup2", "question": "Do you prefer fishing at dusk or at dawn?", "options": ["Dawn", "Dusk"], "spread": 0.3},
        {"id": "overlap", "question": "Would you buy a new rod?", "options": ["Yes", "Yes, soon", "No"], "spread": 0.01},
        {"id": "names", "question": "Who should get the best harbour spots?", "options": ["Boaters", "Swimmers"]},
        {"id": "give", "question": "As an angler, which bait do you use?", "options": ["Worms", "Flies"]},
    ]
    path = _write(tmp_path / "pool.json", _pack(personas, questions))
    rc, report = _check(capsys, path)
    assert rc == 0
    warn = _codes(report, "warning")
    for code in ("near_duplicate", "overlapping_options", "option_names_persona", "giveaway", "low_spread", "small_pool"):
        assert code in warn, code
    assert report["near_duplicate_pairs"] == 1 and report["questions"] == 5
    assert report["options"] == {"2": 4, "3": 1}
    assert report["spread_measured"] == 3 and report["spread_min"] == 0.01
    assert report["spread_mean"] == pytest.approx((0.4 + 0.3 + 0.01) / 3, abs=1e-4)
    low = next(f["message"] for f in report["findings"] if f["code"] == "low_spread")
    assert "overlap" in low and "dup1" not in low


def test_check_skips_itself_among_the_configured_packs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A pack already in packs_dirs is checked against the others, not against itself."""
    folder = tmp_path / "packs"
    folder.mkdir()
    cli_env(tmp_path, monkeypatch, STEERKIT_PACKS_DIRS=str(folder))
    out = folder / "hospital.toml"
    assert main(["pack", "new", str(out), *NURSES]) == 0
    rc, report = _check(capsys, out)
    assert rc == 0 and "alias_conflict" not in _codes(report) and "id_conflict" not in _codes(report)


def test_check_takes_a_configured_packs_id_or_dimension(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """`steerkit pack check political_affiliation` checks the configured pack of that dimension (by
    id too); a name that is neither a file nor a configured pack is still a path, and says so."""
    for name in ("political_affiliation", "polparty"):
        rc, report = _check(capsys, name)
        assert rc == 0 and report["pack_id"] == "polparty"
        assert report["source"].endswith("political_affiliation.toml") and report["frames_extracted"] > 0
    rc, report = _check(capsys, "no_such_pack")
    assert rc == 2 and "must end in .toml or .json" in report["findings"][0]["message"]

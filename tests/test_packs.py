"""Persona packs (shipped data, validation errors, registry) and the dataset importers."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import pytest
from shared_data import needs_opinionqa, opinionqa_dir

from steerkit.errors import DatasetImportError, PackError, UnknownPersonaError
from steerkit.importers import (
    import_globalopinionqa_csv,
    import_jsonl,
    import_opinionqa,
    is_refusal,
    write_jsonl,
)
from steerkit.models import Pool
from steerkit.packs import PackRegistry, default_pack_paths, load_pack

REPO = Path(__file__).resolve().parents[1]
OQA = opinionqa_dir()  # outside the repository: tests that read it skip, visibly, without it
GQA_13 = ["Brazil", "Britain", "France", "Germany", "Indonesia", "Japan", "Jordan", "Lebanon", "Mexico",
          "Nigeria", "Pakistan", "Russia", "Turkey"]
TABLE2 = {
    "style/dcf": (["direct", "concise", "to the point", "brief", "short answer", "no fluff", "without elaboration"],
                  ["explore options", "background", "context", "nuanced", "ask follow-up", "conversation",
                   "discuss further"]),
    "style/dec": (["empathetic", "gentle", "reassure", "acknowledge emotions", "personalized", "supportive", "tailored"],
                  ["blunt", "impersonal", "no empathy", "strictly factual"]),
    "style/dms": (["step by step", "step-by-step", "instructions", "checklist", "exact measurements", "clear steps",
                   "specific guidance", "recipe"],
                  ["high-level", "theoretical", "overview", "open-ended", "exploratory"]),
    "style/dsn": (["in-depth", "underlying mechanisms", "nuanced", "context", "background", "historical", "clarify first",
                   "ensure understanding"],
                  ["just answer", "skip context", "brief only", "no clarifying questions"]),
}


@pytest.fixture(scope="module")
def registry() -> PackRegistry:
    return PackRegistry.default()


# --- shipped packs ------------------------------------------------------------------------------


def test_three_shipped_packs_each_with_at_least_40_items(registry: PackRegistry) -> None:
    dims = {pk.dimension: pk for pk in registry.packs}
    assert set(dims) >= {"country", "political_affiliation", "interaction_style"}
    for pk in dims.values():
        assert len(pk.items) >= 40, pk.id
        # every persona's pool validates (groups consistent, ids unique)
        for spec in pk.specs:
            pool = registry.pool(spec.id)
            assert isinstance(pool, Pool) and len(pool.items) == len(pk.items)
            assert pool.persona.dimension == pk.dimension


def test_countries_include_the_13_globalopinionqa_countries(registry: PackRegistry) -> None:
    labels = {registry.spec(p.id).display for p in registry.personas("country")}
    assert set(GQA_13) <= labels
    brazil = registry.spec("country/brazil")
    assert "Brazilian" in brazil.aliases and "Brazil" in brazil.places
    assert registry.persona("country/brazil").name == "people from Brazil"


def test_political_pack_has_the_three_parties_with_synonyms(registry: PackRegistry) -> None:
    ids = {p.id for p in registry.personas("political_affiliation")}
    assert ids == {"polparty/democrat", "polparty/republican", "polparty/independent"}
    assert "GOP" in registry.spec("polparty/republican").aliases
    assert "Dem" in registry.spec("polparty/democrat").aliases


def test_style_pack_carries_table2_keywords(registry: PackRegistry) -> None:
    for pid, (pos, neg) in TABLE2.items():
        spec = registry.spec(pid)
        assert set(pos) <= set(spec.keywords), pid
        assert set(neg) <= set(spec.negative_keywords), pid
    labels = {registry.spec(p).display for p in TABLE2}
    assert labels == {"Direct, Concise, Fact-first", "Dialogic, Empathetic, Coach", "Direct, Methodical, Step-by-step",
                      "Dialogic, Scholarly, Nuanced"}


def test_item_kinds_and_groups(registry: PackRegistry) -> None:
    style = registry.pool("style/dcf")
    assert {it.kind for it in style.items} == {"preference"}
    assert all(g.kind == "asymmetric" for g in style.groups)
    a, b = (style.item(i) for i in style.groups[0].item_ids)
    assert (a.choice_1, a.choice_2) == (b.choice_2, b.choice_1)
    countries = registry.pool("country/japan")
    assert all(g.kind == "exactly_one" and 2 <= len(g.item_ids) <= 3 for g in countries.groups)


def test_pool_truncation_keeps_whole_groups(registry: PackRegistry) -> None:
    pool = registry.pool("polparty/democrat", max_items=7)
    assert 2 <= len(pool.items) <= 7
    members = {i for g in pool.groups for i in g.item_ids}
    assert members == {it.id for it in pool.items}


def test_shipped_packs_found_as_resources() -> None:
    assert default_pack_paths() == ["countries.toml", "interaction_styles.toml", "political_affiliation.toml"]


def test_pyproject_ships_personas_as_package_data() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"]["steerkit.personas"] == "personas"
    assert "steerkit.personas" in cfg["packages"]
    assert any(p.endswith(".toml") for p in cfg["package-data"]["steerkit.personas"])
    # every code package is listed (the list is explicit because of the package-dir mapping)
    code = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "steerkit").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    missing = code - set(cfg["packages"])
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_unknown_persona_error_suggests(registry: PackRegistry) -> None:
    with pytest.raises(UnknownPersonaError, match="did you mean 'country/japan'"):
        registry.persona("country/japn")
    assert "country/atlantis" not in registry


# --- user packs and validation errors -----------------------------------------------------------

GOOD = """
id = "mypack"
dimension = "profession"
extraction = "identity"
[[personas]]
id = "job/nurse"
name = "nurses"
aliases = ["nurse"]
[[questions]]
id = "q1"
question = "Should shifts be shorter?"
options = ["Yes", "No"]
"""


def _write(tmp_path: Path, text: str, name: str = "pack.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_user_pack_folder_loads_with_defaults(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    reg = PackRegistry.from_paths([tmp_path], include_default=True)
    assert reg.persona("job/nurse").dimension == "profession"
    assert "country/brazil" in reg
    assert [it.id for it in reg.pool("job/nurse").items] == ["mypack/q1/o0", "mypack/q1/o1"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (('options = ["Yes", "No"]', 'options = ["Yes"]'), "questions[0] (id='q1').options"),
        (('name = "nurses"', 'name = ""'), "personas[0] (id='job/nurse').name"),
        (('id = "job/nurse"', 'id = "job nurse"'), "personas[0] (id='job nurse').id"),
        (('extraction = "identity"', 'extraction = "vibes"'), "extraction"),
        (('aliases = ["nurse"]', 'aliases = ["nurse"]\ncolour = "red"'), "personas[0] (id='job/nurse').colour"),
    ],
)
def test_bad_pack_names_file_and_field(tmp_path: Path, patch: tuple[str, str], field: str) -> None:
    p = _write(tmp_path, GOOD.replace(*patch))
    with pytest.raises(PackError) as ei:
        load_pack(p)
    msg = str(ei.value)
    assert str(p) in msg and f"field {field}" in msg


def test_bad_template_placeholder_is_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD + '\n[templates]\nclaim = "{name} says {nonsense}"\n')
    with pytest.raises(PackError, match=r"templates.*claim.*nonsense"):
        load_pack(p)


def test_invalid_toml_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="invalid TOML"):
        load_pack(_write(tmp_path, "id = ", "broken.toml"))
    dup = GOOD + '\n[[questions]]\nid = "q1"\nquestion = "again?"\noptions = ["a", "b"]\n'
    with pytest.raises(PackError, match=r"field questions: duplicate id"):
        load_pack(_write(tmp_path, dup, "dup.toml"))
    with pytest.raises(PackError, match="must end in .toml or .json"):
        load_pack(_write(tmp_path, GOOD, "pack.yaml"))


def test_identity_persona_without_cues_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="needs 'aliases' or 'places'"):
        load_pack(_write(tmp_path, GOOD.replace('aliases = ["nurse"]', "")))


def test_duplicate_persona_across_packs(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, "a.toml")
    _write(tmp_path, GOOD.replace('id = "mypack"', 'id = "other"'), "b.toml")
    with pytest.raises(PackError, match=r"persona id 'job/nurse' is also defined in"):
        PackRegistry.from_paths([tmp_path])


def test_json_pack_and_items_file(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "x", "question": "Tea or coffee?", "options": ["Tea", "Coffee"], "gold": "Tea"}) + "\n")
    data = tomllib.loads(GOOD)
    data["items_files"] = ["items.jsonl"]
    p = tmp_path / "pack.json"
    p.write_text(json.dumps(data))
    pack = load_pack(p)
    assert [it.gold for it in pack.items if it.id.startswith("jsonl/")] == [True, False]
    data["items_files"] = ["missing.jsonl"]
    p.write_text(json.dumps(data))
    with pytest.raises(PackError, match="missing.jsonl"):
        load_pack(p)


@needs_opinionqa
def test_persona_items_file_with_imported_opinionqa(tmp_path: Path) -> None:
    items = import_opinionqa(OQA / "American_Trends_Panel_W92", "POLPARTY", "Republican")
    write_jsonl(items, tmp_path / "rep.jsonl")
    (tmp_path / "pack.toml").write_text(GOOD.replace('aliases = ["nurse"]', 'aliases = ["nurse"]\nitems_file = "rep.jsonl"'))
    reg = PackRegistry.from_paths([tmp_path / "pack.toml"])
    pool = reg.pool("job/nurse")
    assert [it.id for it in pool.items] == [it.id for it in items]
    assert sum(1 for it in pool.items if it.gold) == len(pool.groups)  # one plurality answer per question


# --- importers ----------------------------------------------------------------------------------


@needs_opinionqa
def test_opinionqa_import_filters_and_gold() -> None:
    wave = OQA / "American_Trends_Panel_W92"
    dem = import_opinionqa(wave, "POLPARTY", "Democrat")
    rep = import_opinionqa(wave, "POLPARTY", "Republican")
    by_id = {it.id: it for it in dem}
    # POL1JB_W92: Approve / Disapprove / Refused -> Refused dropped, Democrats approve
    assert by_id["oqa/POL1JB_W92/o0"].option == "Approve" and by_id["oqa/POL1JB_W92/o0"].gold is True
    assert by_id["oqa/POL1JB_W92/o1"].gold is False
    assert "oqa/POL1JB_W92/o2" not in by_id
    assert {it.id: it.gold for it in rep}["oqa/POL1JB_W92/o1"] is True
    # the options come from info.csv (the JSON splits options on commas)
    big = [it for it in dem if it.id.startswith("oqa/BIGHOUSES_W92/")]
    assert len(big) == 2 and big[0].option.startswith("Larger and farther apart, but schools")
    # only 2- or 3-option questions survive, no refusals, each group has exactly one gold True
    groups: dict[str, list] = {}
    for it in dem:
        groups.setdefault(it.group, []).append(it)
        assert not is_refusal(it.option)
    assert all(2 <= len(v) <= 3 for v in groups.values())
    assert all(sum(1 for i in v if i.gold) <= 1 for v in groups.values())
    Pool.from_items(PackRegistry.default().persona("polparty/democrat"), dem)  # a valid pool


@needs_opinionqa
def test_opinionqa_errors() -> None:
    wave = OQA / "American_Trends_Panel_W92"
    with pytest.raises(DatasetImportError, match="groups in this file"):
        import_opinionqa(wave, "POLPARTY", "Whig")
    with pytest.raises(DatasetImportError, match="attributes in this wave"):
        import_opinionqa(wave, "NOPE", "Democrat")


def _gqa_fixture(path: Path) -> Path:
    rows = [
        {
            "question": "Do you think women should have equal rights with men, or shouldn't they?",
            "selections": "defaultdict(<class 'list'>, {'Brazil': [0.9, 0.08, 0.02], 'Nigeria': [0.4, 0.55, 0.05]})",
            "options": "['Should', 'Should not', 'DK/Refused']",
            "source": "GAS",
        },
        {
            "question": "How would you rate the economy?",
            "selections": "defaultdict(<class 'list'>, {'Brazil': [0.1, 0.2, 0.3, 0.4]})",
            "options": "['Very good', 'Somewhat good', 'Somewhat bad', 'Very bad']",
            "source": "GAS",
        },
        {
            "question": "Is religion important?",
            "selections": "defaultdict(<class 'list'>, {'Nigeria': [0.9, 0.1]})",
            "options": "['Yes', 'No']",
            "source": "WVS",
        },
    ]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "selections", "options", "source"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_globalopinionqa_csv_import(tmp_path: Path) -> None:
    p = _gqa_fixture(tmp_path / "gqa.csv")
    brazil = import_globalopinionqa_csv(p, "Brazil")
    assert [it.option for it in brazil] == ["Should", "Should not"]  # refusal dropped, 4-option item skipped
    assert [it.gold for it in brazil] == [True, False]
    nigeria = import_globalopinionqa_csv(p, "Nigeria")
    assert len(nigeria) == 4 and [it.gold for it in nigeria[:2]] == [False, True]
    both = import_globalopinionqa_csv(p, "Nigeria", require_countries=["Brazil", "Nigeria"])
    assert len(both) == 2
    assert import_globalopinionqa_csv(p, "Nigeria", sources=["WVS"])[0].question == "Is religion important?"
    with pytest.raises(DatasetImportError, match="countries in this file"):
        import_globalopinionqa_csv(p, "Atlantis")
    bad = tmp_path / "bad.csv"
    bad.write_text("q,a\n1,2\n")
    with pytest.raises(DatasetImportError, match="missing column"):
        import_globalopinionqa_csv(bad, "Brazil")


def test_jsonl_import_roundtrip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "items.jsonl"
    p.write_text(
        json.dumps({"id": "q", "question": "Cats or dogs?", "options": ["Cats", "Dogs"]}) + "\n\n"
        + json.dumps({"id": "p", "question": "Explain tides", "response_1": "Moon.", "response_2": "Long essay.",
                      "preferred": 1}) + "\n"
    )
    items = import_jsonl(p)
    assert [it.kind for it in items] == ["claim", "claim", "preference", "preference"]
    assert [it.gold for it in items[2:]] == [True, False]
    out = write_jsonl(items, tmp_path / "again.jsonl")
    assert import_jsonl(out) == items  # full Item rows round-trip
    p.write_text('{"id": "q", "question": "x", "options": ["only one"]}\n')
    with pytest.raises(DatasetImportError, match=r"items.jsonl:1: 'options'"):
        import_jsonl(p)
    p.write_text("not json\n")
    with pytest.raises(DatasetImportError, match="invalid JSON"):
        import_jsonl(p)

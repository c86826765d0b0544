"""``steerkit pack import``: survey data as persona packs, with gold labels.

OpinionQA (Santurkar et al. 2023): one pack per demographic attribute of its per-group answer
files (age, sex, education, income, race, region, ideology, party), each group a persona whose
pool is the attribute's questions with the group's plurality answer as gold. GlobalOpinionQA
(Durmus et al. 2023): one pack of its countries. The items come from `steerkit.importers`; the
tables below give each group what a user would say to state it ("I'm in my twenties", "as a
Midwesterner"), since the data has only the survey's category labels.

Groups that no one can state ("Refused", "Other", a missing value) are left out and named in the
result's notes. The attributes OpinionQA lists in ``metadata.csv`` without per-group answer
files (religion, religious attendance, marital status, citizenship) need the individual
responses, which the release's ``human_resp`` files do not carry; they are not imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from steerkit.errors import DatasetImportError
from steerkit.importers import (
    import_globalopinionqa_countries,
    import_opinionqa_attribute,
    opinionqa_attributes,
)
from steerkit.models import Item
from steerkit.packs import PackRegistry
from steerkit.packs._write import slug, write_survey_pack

__all__ = ["OPINIONQA_ATTRIBUTES", "ImportedPack", "import_globalopinionqa_pack", "import_opinionqa_packs"]


class ImportedPack(BaseModel):
    """One pack file ``pack import`` wrote."""

    path: Path
    attribute: str
    dimension: str
    personas: list[str]
    questions: int
    gold_ties: int = 0
    """Items of questions whose plurality is tied (gold left unset)."""
    notes: list[str] = Field(default_factory=list)


def _p(slug_: str, name: str, label: str, aliases: Sequence[str], *, places: Sequence[str] = (),
       ambiguous: Sequence[str] = (), description: str = "") -> dict[str, Any]:
    return {"slug": slug_, "name": name, "label": label, "aliases": list(aliases), "places": list(places),
            "ambiguous": list(ambiguous), "description": description}


#: attribute file name -> (dimension, title, {group label in the data: persona}).
OPINIONQA_ATTRIBUTES: dict[str, tuple[str, str, dict[str, dict[str, Any]]]] = {
    "AGE": ("age", "U.S. adults by age", {
        "18-29": _p("18_29", "U.S. adults aged 18-29", "18-29",
                    ["18-29 year old", "in my twenties", "in my 20s", "in my early twenties", "in my late twenties",
                     "young adult"]),
        "30-49": _p("30_49", "U.S. adults aged 30-49", "30-49",
                    ["30-49 year old", "in my thirties", "in my 30s", "in my forties", "in my 40s"]),
        "50-64": _p("50_64", "U.S. adults aged 50-64", "50-64",
                    ["50-64 year old", "in my fifties", "in my 50s", "in my early sixties"]),
        "65+": _p("65_plus", "U.S. adults aged 65 and over", "65+",
                  ["senior citizen", "retiree", "in my seventies", "in my 70s", "in my eighties", "in my 80s",
                   "over 65"]),
    }),
    "SEX": ("sex", "U.S. adults by sex", {
        "Male": _p("male", "U.S. men", "Male", ["man", "male", "guy"]),
        "Female": _p("female", "U.S. women", "Female", ["woman", "female"]),
    }),
    "EDUCATION": ("education", "U.S. adults by education", {
        "Less than high school": _p("less_than_high_school", "U.S. adults without a high school diploma",
                                    "Less than high school", ["high school dropout"]),
        "High school graduate": _p("high_school", "U.S. high school graduates", "High school graduate",
                                   ["high school graduate", "high school grad"]),
        "Some college, no degree": _p("some_college", "U.S. adults with some college but no degree",
                                      "Some college, no degree", ["college dropout"]),
        "Associate's degree": _p("associate", "U.S. adults with an associate's degree", "Associate's degree",
                                 ["community college graduate", "associate's degree holder"]),
        "College graduate/some postgrad": _p("college", "U.S. college graduates", "College graduate",
                                             ["college graduate", "college grad", "university graduate"]),
        "Postgraduate": _p("postgraduate", "U.S. adults with a postgraduate degree", "Postgraduate",
                           ["postgraduate", "PhD", "master's degree holder", "grad school graduate"]),
    }),
    "INCOME": ("income", "U.S. adults by family income", {
        "Less than $30,000": _p("under_30k", "U.S. adults with family income under $30,000", "Less than $30,000",
                                ["low-income", "low income earner", "working poor"]),
        "$30,000-$50,000": _p("30k_50k", "U.S. adults with family income of $30,000-$50,000", "$30,000-$50,000",
                              ["lower-middle-income", "lower middle class"]),
        "$50,000-$75,000": _p("50k_75k", "U.S. adults with family income of $50,000-$75,000", "$50,000-$75,000",
                              ["middle-income", "middle class"]),
        "$75,000-$100,000": _p("75k_100k", "U.S. adults with family income of $75,000-$100,000", "$75,000-$100,000",
                               ["upper-middle-income", "upper middle class"]),
        "$100,000 or more": _p("100k_plus", "U.S. adults with family income of $100,000 or more", "$100,000 or more",
                               ["high-income", "high earner", "six-figure earner"]),
    }),
    "RACE": ("race", "U.S. adults by race and ethnicity", {
        "White": _p("white", "White Americans", "White", ["White", "white American", "Caucasian"], ambiguous=["White"]),
        "Black": _p("black", "Black Americans", "Black", ["Black", "African American", "Black American"],
                    ambiguous=["Black"]),
        "Asian": _p("asian", "Asian Americans", "Asian", ["Asian", "Asian American"]),
        "Hispanic": _p("hispanic", "Hispanic Americans", "Hispanic",
                       ["Hispanic", "Latino", "Latina", "Latinx", "Hispanic American"]),
        "Mixed Race": _p("mixed", "mixed-race Americans", "Mixed race", ["mixed race", "mixed-race", "multiracial",
                                                                          "biracial"]),
    }),
    "CREGION": ("region", "U.S. adults by census region", {
        "Northeast": _p("northeast", "people in the U.S. Northeast", "Northeast", ["Northeasterner", "New Englander"],
                        places=["the Northeast", "New England"]),
        "Midwest": _p("midwest", "people in the U.S. Midwest", "Midwest", ["Midwesterner"], places=["the Midwest"]),
        "South": _p("south", "people in the U.S. South", "South", ["Southerner"],
                    places=["the South", "the American South"]),
        "West": _p("west", "people in the U.S. West", "West", ["West Coaster"],
                   places=["the West Coast", "the American West", "the Mountain West"]),
    }),
    "POLIDEOLOGY": ("ideology", "U.S. adults by political ideology", {
        "Very conservative": _p("very_conservative", "very conservative Americans", "Very conservative",
                                ["very conservative", "staunch conservative", "hardline conservative"]),
        "Conservative": _p("conservative", "conservative Americans", "Conservative", ["conservative"]),
        "Moderate": _p("moderate", "moderate Americans", "Moderate", ["moderate", "centrist", "political moderate"]),
        "Liberal": _p("liberal", "liberal Americans", "Liberal", ["liberal"]),
        "Very liberal": _p("very_liberal", "very liberal Americans", "Very liberal",
                           ["very liberal", "staunch liberal", "progressive"]),
    }),
    "POLPARTY": ("party", "U.S. adults by party affiliation", {
        "Democrat": _p("democrat", "Democrats", "Democrat", ["Democrat", "Democratic voter", "registered Democrat"]),
        "Republican": _p("republican", "Republicans", "Republican",
                         ["Republican", "GOP voter", "registered Republican"]),
        "Independent": _p("independent", "Independents", "Independent",
                          ["Independent", "independent voter", "political independent"], ambiguous=["Independent"]),
    }),
}


def _limit(items_by_persona: dict[str, list[Item]], max_questions: int | None) -> dict[str, list[Item]]:
    """The same first ``max_questions`` questions (groups) in every persona's pool."""
    if max_questions is None:
        return items_by_persona
    if max_questions < 1:
        raise DatasetImportError(f"--max-questions must be at least 1, got {max_questions}")
    first = next(iter(items_by_persona.values()))
    keep = set(list(dict.fromkeys(it.group for it in first))[:max_questions])
    return {pid: [it for it in its if it.group in keep] for pid, its in items_by_persona.items()}


def _write(out: Path, pack_id: str, dimension: str, title: str, description: str, attribute: str,
           personas: list[dict[str, Any]], items: dict[str, list[Item]], header: list[str],
           notes: list[str], force: bool) -> ImportedPack:
    pack = write_survey_pack(out / f"{pack_id}.toml", pack_id=pack_id, dimension=dimension, title=title,
                             description=description, personas=personas, items=items, header=header, force=force)
    first = next(iter(items.values()))
    ties = sum(1 for its in items.values() for it in its if it.gold is None)
    return ImportedPack(path=Path(pack.source), attribute=attribute, dimension=dimension,
                        personas=[s.id for s in pack.specs], questions=len({it.group for it in first}),
                        gold_ties=ties, notes=notes)


def import_opinionqa_packs(data: str | Path, out: str | Path, *, attributes: Iterable[str] | None = None,
                           max_questions: int | None = None, force: bool = False) -> list[ImportedPack]:
    """One pack per OpinionQA attribute (default: every attribute of `OPINIONQA_ATTRIBUTES` the
    data has) in the folder ``out``: ``opinionqa_<dimension>.toml`` and its items files."""
    have = opinionqa_attributes(data)
    wanted = [a.upper() for a in attributes] if attributes else [a for a in OPINIONQA_ATTRIBUTES if a in have]
    for a in wanted:
        if a not in OPINIONQA_ATTRIBUTES:
            raise DatasetImportError(f"no persona table for OpinionQA attribute {a!r}",
                                     hint=f"attributes steerkit imports: {', '.join(OPINIONQA_ATTRIBUTES)}")
        if a not in have:
            raise DatasetImportError(f"{data}: no wave has {a}_data.json", hint=f"attributes in this data: {sorted(have)}")
    out_dir = Path(out).expanduser()
    written = []
    for attr in wanted:
        dimension, title, table = OPINIONQA_ATTRIBUTES[attr]
        by_group = import_opinionqa_attribute(data, attr)
        pack_id = f"opinionqa_{dimension}"
        personas, items = [], {}
        for group, spec in table.items():
            if not by_group.get(group):
                continue
            pid = f"{pack_id}/{spec['slug']}"
            personas.append({"id": pid, "name": spec["name"], "label": spec["label"], "aliases": spec["aliases"],
                             "places": spec["places"], "ambiguous": spec["ambiguous"],
                             "description": f"{spec['name']} (OpinionQA {attr} = {group!r})"})
            items[pid] = by_group[group]
        left_out = sorted(g for g in by_group if g not in table)
        notes = [f"left out group(s) no user can state: {', '.join(left_out)}"] if left_out else []
        header = [f"OpinionQA (Santurkar et al. 2023) {attr}: Pew American Trends Panel answers per group, written by",
                  "`steerkit pack import opinionqa`. Gold = each group's plurality answer (evaluation only; the search",
                  "never reads it). Pew Research Center's terms of use apply to the data: do not redistribute."]
        written.append(_write(out_dir, pack_id, dimension, title,
                              f"{title}: OpinionQA's {attr} groups, with gold from their survey answers.", attr,
                              personas, _limit(items, max_questions), header, notes, force))
    return written


def import_globalopinionqa_pack(data: str | Path, out: str | Path, *, countries: Iterable[str] | None = None,
                                min_questions: int = 40, max_questions: int | None = None,
                                force: bool = False) -> ImportedPack:
    """One pack of GlobalOpinionQA's countries (``globalopinionqa_country.toml`` in ``out``): the
    listed countries, else every country with at least ``min_questions`` questions. A country the
    shipped countries pack knows gets its demonyms as aliases ("Brazilian"); every country its
    name as a place ("I'm from Brazil")."""
    want = list(countries) if countries else None
    by_country = import_globalopinionqa_countries(data, countries=want)
    shipped = {s.display.casefold(): s for pk in PackRegistry.default().packs if pk.dimension == "country"
               for s in pk.specs}
    pack_id = "globalopinionqa_country"
    personas, items, small = [], {}, []
    for country in sorted(by_country):
        its = by_country[country]
        n_questions = len({it.group for it in its})
        if want is None and n_questions < min_questions:
            small.append(f"{country} ({n_questions})")
            continue
        known = shipped.get(country.casefold())
        pid = f"{pack_id}/{slug(country)}"
        personas.append({"id": pid, "name": f"people from {country}", "label": country,
                         "description": f"Adults surveyed in {country} (GlobalOpinionQA).",
                         "aliases": list(known.aliases) if known else [], "places": [country],
                         "ambiguous": list(known.ambiguous) if known else []})
        items[pid] = its
    if not personas:
        raise DatasetImportError(f"{data}: no country has {min_questions} or more questions",
                                 hint="lower --min-questions or name countries with --country")
    notes = []
    if small:
        notes.append(f"left out {len(small)} countries with fewer than {min_questions} questions: "
                     f"{', '.join(small[:8])}{' …' if len(small) > 8 else ''}")
    header = ["GlobalOpinionQA (Durmus et al. 2023): Pew Global Attitudes and World Values Survey answers per country,",
              "written by `steerkit pack import globalopinionqa`. Gold = each country's plurality answer (evaluation only)."]
    return _write(Path(out).expanduser(), pack_id, "country", "Countries (GlobalOpinionQA)",
                  "Adults by country, with gold from GlobalOpinionQA's survey answers.", "countries", personas,
                  _limit(items, max_questions), header, notes, force)

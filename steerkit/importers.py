"""Item pools from real survey data: OpinionQA, GlobalOpinionQA and plain JSONL.

The survey importers keep the seed paper's filtering: only questions with two or three answer
options (after dropping "Refused"-style non-answers) become items, so every option maps to one
member of an ``exactly_one`` group; the gold label of an option is True when it is the group's
plurality answer. Gold labels are for evaluation only — the search never reads them.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from steerkit.errors import DatasetImportError
from steerkit.models import Item, stable_hash

__all__ = [
    "PERSONA_TAILORING_STYLES",
    "cluster_style",
    "import_globalopinionqa_countries",
    "import_globalopinionqa_csv",
    "import_jsonl",
    "import_opinionqa",
    "import_opinionqa_attribute",
    "import_persona_tailoring",
    "is_refusal",
    "opinionqa_attributes",
    "opinionqa_waves",
    "read_jsonl",
    "write_jsonl",
]

#: Options dropped before the 2-or-3-option filter (case-insensitive, whole option text).
REFUSAL_PATTERNS = (
    r"refused",
    r"dk\s*/\s*refused",
    r"don'?t know\s*/\s*refused",
    r"don[’']t know\s*/\s*refused",
    r"no answer",
    r"refused\s*/\s*don'?t know",
)
_REFUSAL_RE = re.compile(r"^\s*(?:" + "|".join(REFUSAL_PATTERNS) + r")\s*\.?\s*$", re.IGNORECASE)


def is_refusal(option: str) -> bool:
    """True for "Refused", "DK/Refused", "Don't know/Refused" and similar non-answers."""
    return bool(_REFUSAL_RE.match(option))


def _safe_id(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.:\-]+", "_", text).strip("_")
    return s or stable_hash(text)


def _plurality(counts: Sequence[float]) -> int | None:
    """Index of the largest count; None for a tie at the top or no data."""
    if not counts or max(counts) <= 0:
        return None
    top = max(counts)
    if sum(1 for c in counts if c == top) > 1:
        return None
    return list(counts).index(top)


def _claims(prefix: str, question: str, options: Sequence[str], counts: Sequence[float] | None,
            meta: dict[str, Any]) -> list[Item]:
    gid = prefix
    win = _plurality(counts) if counts is not None else None
    total = float(sum(counts)) if counts else 0.0
    items = []
    for n, opt in enumerate(options):
        m = dict(meta)
        if counts is not None and total > 0:
            m["share"] = round(float(counts[n]) / total, 6)
        items.append(
            Item(
                id=f"{gid}/o{n}",
                kind="claim",
                question=question,
                option=opt,
                group=gid,
                gold=None if win is None else (n == win),
                meta=m,
            )
        )
    return items


# --- OpinionQA ----------------------------------------------------------------------------------


def _literal_list(text: str, where: str) -> list[str]:
    try:
        val = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DatasetImportError(f"{where}: expected a Python list literal, got {text[:80]!r}") from None
    if not isinstance(val, (list, tuple)) or not all(isinstance(v, str) for v in val):
        raise DatasetImportError(f"{where}: expected a list of strings, got {text[:80]!r}")
    return [str(v) for v in val]


def import_opinionqa(
    wave_dir: str | Path,
    attribute: str,
    group: str,
    *,
    allowed_options: Sequence[int] = (2, 3),
    id_prefix: str = "oqa",
) -> list[Item]:
    """Claims from one OpinionQA wave folder (``info.csv`` + ``<ATTR>_data.json``) for one group.

    ``attribute`` is the demographic file (``POLPARTY``), ``group`` the persona inside it
    (``Democrat``). The options come from ``info.csv``'s ``references`` (the JSON's
    ``MC_options`` splits options on commas); "Refused" is dropped; questions left with a number
    of options outside ``allowed_options`` are skipped; gold = the group's plurality answer.
    """
    wave = Path(wave_dir).expanduser()
    data_path = wave / f"{attribute}_data.json"
    if not wave.is_dir():
        raise DatasetImportError(f"{wave}: not a folder", hint="give an OpinionQA wave folder, e.g. American_Trends_Panel_W92")
    if not data_path.is_file():
        have = sorted(p.name.removesuffix("_data.json") for p in wave.glob("*_data.json"))
        raise DatasetImportError(f"{data_path}: no such file", hint=f"attributes in this wave: {have}")
    references = _references(wave / "info.csv")
    data = _attribute_data(data_path)
    groups_seen: set[str] = set()
    items: list[Item] = []
    for qkey, rec in data.items():
        if not isinstance(rec, dict) or "question_text" not in rec:
            raise DatasetImportError(f"{data_path}: question {qkey!r} has no 'question_text'")
        groups_seen.update(k for k, v in rec.items() if isinstance(v, dict))
        counts_by_opt = rec.get(group)
        if not isinstance(counts_by_opt, dict):
            continue
        options = references.get(qkey) or list(counts_by_opt)
        options = [o for o in options if not is_refusal(o)]
        if len(options) not in allowed_options:
            continue
        counts = [float(counts_by_opt.get(o, 0.0) or 0.0) for o in options]
        meta = {"source": "opinionqa", "wave": wave.name, "question_key": qkey, "attribute": attribute, "group": group}
        items.extend(_claims(f"{id_prefix}/{_safe_id(qkey)}", str(rec["question_text"]), options, counts, meta))
    if not items and group not in groups_seen:
        raise DatasetImportError(
            f"{data_path}: no group {group!r}", hint=f"groups in this file: {sorted(groups_seen)}"
        )
    return items


def _references(info_path: Path) -> dict[str, list[str]]:
    """Question key → its answer options, from a wave's ``info.csv`` (empty when there is none)."""
    references: dict[str, list[str]] = {}
    if info_path.is_file():
        try:
            with info_path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or "key" not in reader.fieldnames or "references" not in reader.fieldnames:
                    raise DatasetImportError(f"{info_path}: expected columns 'key' and 'references'")
                for n, row in enumerate(reader, start=2):
                    references[row["key"]] = _literal_list(row["references"], f"{info_path}:{n} references")
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise DatasetImportError(f"{info_path}: cannot read as CSV ({e})") from None
    return references


def _attribute_data(data_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(data_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetImportError(f"{data_path}: cannot read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetImportError(f"{data_path}: expected an object keyed by question id")
    return data


def opinionqa_waves(root: str | Path) -> list[Path]:
    """The OpinionQA wave folders at or below ``root`` (folders with an ``info.csv`` and at least one
    ``<ATTR>_data.json``), sorted by name."""
    r = Path(root).expanduser()
    if not r.is_dir():
        raise DatasetImportError(f"{r}: not a folder", hint="give the OpinionQA human_resp folder (or a folder above it)")
    waves = sorted({p.parent for p in r.rglob("*_data.json") if (p.parent / "info.csv").is_file()}, key=lambda p: p.name)
    if not waves:
        raise DatasetImportError(f"{r}: no OpinionQA wave folders (info.csv with <ATTR>_data.json) at or below it",
                                 hint="give the folder holding American_Trends_Panel_W* from the OpinionQA release")
    return waves


def opinionqa_attributes(root: str | Path) -> dict[str, list[str]]:
    """Attribute file name (``POLPARTY``) → the waves (folder names) that have it."""
    out: dict[str, list[str]] = {}
    for wave in opinionqa_waves(root):
        for p in sorted(wave.glob("*_data.json")):
            out.setdefault(p.name.removesuffix("_data.json"), []).append(wave.name)
    return out


def import_opinionqa_attribute(
    root: str | Path,
    attribute: str,
    *,
    allowed_options: Sequence[int] = (2, 3),
    id_prefix: str = "oqa",
) -> dict[str, list[Item]]:
    """Claims for every group of one attribute (``AGE`` → ``18-29``, ``30-49`` …) from every wave at
    or below ``root``: {group: items}.

    The filtering is `import_opinionqa`'s. A question asked in several waves with the same text
    and options is one question: its counts are summed and gold is the group's plurality over all
    the waves. A question key seen before (a folder holding a copy of a wave's questions, such as
    the disagreement subsets) is read once. Every group's items share ids (``<prefix>/<first question key>/o<n>``) so the
    groups' pools are the same questions, differing only in gold.
    """
    waves = [w for w in opinionqa_waves(root) if (w / f"{attribute}_data.json").is_file()]
    if not waves:
        have = sorted(opinionqa_attributes(root))
        raise DatasetImportError(f"{root}: no wave has {attribute}_data.json", hint=f"attributes in this data: {have}")
    # (question, options) -> first key, waves, keys, {group: counts}
    merged: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    keys_seen: set[str] = set()
    for wave in waves:
        references = _references(wave / "info.csv")
        data_path = wave / f"{attribute}_data.json"
        for qkey, rec in _attribute_data(data_path).items():
            if not isinstance(rec, dict) or "question_text" not in rec:
                raise DatasetImportError(f"{data_path}: question {qkey!r} has no 'question_text'")
            if qkey in keys_seen:  # a key names one question of one wave: another folder's copy (e.g. a subset)
                continue
            keys_seen.add(qkey)
            groups = {g: c for g, c in rec.items() if isinstance(c, dict)}
            if not groups:
                continue
            options = references.get(qkey) or list(next(iter(groups.values())))
            options = [o for o in options if not is_refusal(o)]
            if len(options) not in allowed_options:
                continue
            question = " ".join(str(rec["question_text"]).split())
            entry = merged.setdefault((question, tuple(options)), {"key": qkey, "waves": [], "keys": [], "counts": {}})
            entry["waves"].append(wave.name)
            entry["keys"].append(qkey)
            for g, counts in groups.items():
                acc = entry["counts"].setdefault(g, [0.0] * len(options))
                for n, o in enumerate(options):
                    v = counts.get(o, 0.0)
                    acc[n] += float(v) if isinstance(v, (int, float)) and not math.isnan(v) else 0.0
    out: dict[str, list[Item]] = {}
    for (question, options), entry in merged.items():
        for g, counts in entry["counts"].items():
            meta = {"source": "opinionqa", "waves": entry["waves"], "question_keys": entry["keys"],
                    "attribute": attribute, "group": g}
            out.setdefault(g, []).extend(
                _claims(f"{id_prefix}/{_safe_id(entry['key'])}", question, list(options), counts, meta))
    return out


# --- GlobalOpinionQA ----------------------------------------------------------------------------

_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class '[^']*'>\s*,\s*(\{.*\})\s*\)\s*$", re.DOTALL)


def _parse_selections(text: str, where: str) -> dict[str, list[float]]:
    m = _DEFAULTDICT.match(text)
    body = m.group(1) if m else text
    try:
        val = ast.literal_eval(body)
    except (ValueError, SyntaxError):
        raise DatasetImportError(f"{where}: 'selections' is not a dict literal: {text[:80]!r}") from None
    if not isinstance(val, dict):
        raise DatasetImportError(f"{where}: 'selections' must map country -> list of shares")
    out: dict[str, list[float]] = {}
    for k, v in val.items():
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) for x in v):
            raise DatasetImportError(f"{where}: 'selections'[{k!r}] must be a list of numbers")
        out[str(k)] = [float(x) for x in v]
    return out


def _globalopinionqa_rows(path: str | Path, sources: Iterable[str] | None
                          ) -> Iterator[tuple[str, dict[str, str], dict[str, list[float]]]]:
    """The rows of a GlobalOpinionQA CSV, those of ``sources`` only: (where, row, its selections).
    A file that is missing, unreadable or lacks the columns raises `DatasetImportError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetImportError(f"{p}: no such file")
    keep_sources = set(sources) if sources is not None else None
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"question", "selections", "options"} - set(reader.fieldnames or ())
            if missing:
                raise DatasetImportError(f"{p}: not a GlobalOpinionQA CSV: missing column(s) {sorted(missing)}",
                                         hint="expected columns question, selections, options, source")
            for n, row in enumerate(reader, start=2):
                where = f"{p}:{n}"
                if keep_sources is not None and row.get("source") not in keep_sources:
                    continue
                yield where, row, _parse_selections(row["selections"] or "", where)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise DatasetImportError(f"{p}: cannot read as CSV ({e})") from None


def _question_id(row: dict[str, str], where: str, options: list[str], id_prefix: str,
                 used_ids: dict[str, int]) -> tuple[str, str]:
    """(the row's question, its group id): the id hashes question and options; a repeat of both in
    one file gets ``-1``, ``-2``, … (``used_ids`` counts them)."""
    question = (row["question"] or "").strip()
    if not question:
        raise DatasetImportError(f"{where}: empty 'question'")
    base = f"{id_prefix}/{stable_hash([question, options])}"
    k = used_ids.get(base, 0)
    used_ids[base] = k + 1
    return question, base if k == 0 else f"{base}-{k}"


def import_globalopinionqa_csv(
    path: str | Path,
    country: str,
    *,
    allowed_options: Sequence[int] = (2, 3),
    require_countries: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    id_prefix: str = "gqa",
) -> list[Item]:
    """Claims for one country from a GlobalOpinionQA CSV (columns ``question``, ``selections``,
    ``options``, ``source``).

    ``selections`` is the dataset's ``defaultdict(<class 'list'>, {'Brazil': [shares…], …})``
    string aligned with ``options`` (a Python list literal). Refusal options ("Refused",
    "DK/Refused") are dropped, items keep 2 or 3 options, gold = the country's plurality option.
    ``require_countries`` keeps only questions answered in every listed country (the paper's
    "complete labels across all 13 countries"); ``sources`` filters the ``source`` column.
    """
    need = set(require_countries or ())
    items: list[Item] = []
    countries_seen: set[str] = set()
    used_ids: dict[str, int] = {}
    for where, row, sel in _globalopinionqa_rows(path, sources):
        countries_seen.update(sel)
        if need and not need.issubset(sel):
            continue
        shares = sel.get(country)
        if shares is None:
            continue
        options = _literal_list(row["options"] or "", f"{where} options")
        if len(shares) != len(options):
            raise DatasetImportError(f"{where}: {len(options)} options but {len(shares)} shares for {country!r}")
        kept = [(o, s) for o, s in zip(options, shares) if not is_refusal(o)]
        if len(kept) not in allowed_options:
            continue
        question, gid = _question_id(row, where, options, id_prefix, used_ids)
        meta = {"source": "globalopinionqa", "survey": row.get("source") or None, "country": country}
        items.extend(_claims(gid, question, [o for o, _ in kept], [s for _, s in kept], meta))
    if not items and country not in countries_seen:
        raise DatasetImportError(
            f"{Path(path).expanduser()}: no country {country!r} in 'selections'",
            hint=f"countries in this file: {sorted(countries_seen)[:20]}",
        )
    return items


def import_globalopinionqa_countries(
    path: str | Path,
    *,
    countries: Iterable[str] | None = None,
    allowed_options: Sequence[int] = (2, 3),
    sources: Iterable[str] | None = None,
    id_prefix: str = "gqa",
) -> dict[str, list[Item]]:
    """Claims for many countries from one pass over a GlobalOpinionQA CSV: {country: items}
    (every country in ``selections``, or those of ``countries``). Filtering and gold are
    `import_globalopinionqa_csv`'s; a question's items have the same ids in every country's list,
    so the countries' pools share their questions and differ in gold."""
    want = set(countries) if countries is not None else None
    out: dict[str, list[Item]] = {}
    seen: set[str] = set()
    used_ids: dict[str, int] = {}
    for where, row, sel in _globalopinionqa_rows(path, sources):
        seen.update(sel)
        options = _literal_list(row["options"] or "", f"{where} options")
        keep = [k for k, o in enumerate(options) if not is_refusal(o)]
        if len(keep) not in allowed_options:
            continue
        question, gid = _question_id(row, where, options, id_prefix, used_ids)
        for country, shares in sel.items():
            if want is not None and country not in want:
                continue
            if len(shares) != len(options):
                raise DatasetImportError(f"{where}: {len(options)} options but {len(shares)} shares for {country!r}")
            meta = {"source": "globalopinionqa", "survey": row.get("source") or None, "country": country}
            out.setdefault(country, []).extend(
                _claims(gid, question, [options[i] for i in keep], [shares[i] for i in keep], meta))
    unknown = sorted((want or set()) - seen)
    if unknown:
        raise DatasetImportError(f"{Path(path).expanduser()}: no country {', '.join(map(repr, unknown))} in 'selections'",
                                 hint=f"countries in this file: {sorted(seen)[:20]}")
    return out


# --- JSONL --------------------------------------------------------------------------------------


def _row_items(row: dict[str, Any], where: str, n: int, id_prefix: str) -> list[Item]:
    """One JSONL row: a full `Item`, a question with ``options`` (optional ``gold`` option), or a
    preference pair (``response_1``, ``response_2``, optional ``preferred``: 1 or 2)."""
    if "kind" in row:
        return [Item.model_validate(row)]
    qid = _safe_id(str(row.get("id") or f"row{n}"))
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetImportError(f"{where}: 'question' must be a non-empty string")
    if "options" in row:
        options = row["options"]
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
            raise DatasetImportError(f"{where}: 'options' must be a list of at least 2 non-empty strings")
        gold = row.get("gold")
        if gold is not None and gold not in options:
            raise DatasetImportError(f"{where}: 'gold' {gold!r} is not one of the options")
        gid = f"{id_prefix}/{qid}"
        return [
            Item(id=f"{gid}/o{i}", kind="claim", question=question, option=o, group=gid,
                 gold=None if gold is None else (o == gold), meta=dict(row.get("meta") or {}))
            for i, o in enumerate(options)
        ]
    if "response_1" in row and "response_2" in row:
        pref = row.get("preferred")
        if pref not in (None, 1, 2):
            raise DatasetImportError(f"{where}: 'preferred' must be 1 or 2")
        gid = f"{id_prefix}/{qid}"
        r1, r2 = str(row["response_1"]), str(row["response_2"])
        return [
            Item(id=f"{gid}/12", kind="preference", question=question, choice_1=r1, choice_2=r2, group=gid,
                 gold=None if pref is None else pref == 1),
            Item(id=f"{gid}/21", kind="preference", question=question, choice_1=r2, choice_2=r1, group=gid,
                 gold=None if pref is None else pref == 2),
        ]
    raise DatasetImportError(
        f"{where}: unrecognised row: give an Item (with 'kind'), a question with 'options', "
        "or a pair with 'response_1'/'response_2'"
    )


def read_jsonl(path: str | Path, each: Callable[[dict[str, Any], str, int], None]) -> None:
    """Call ``each(row, where, n)`` for every JSON object of a JSONL file, in order: ``n`` is the
    line number and ``where`` is ``"PATH:n"`` for messages; blank lines are skipped and a UTF-8 byte
    order mark is allowed. A missing or unreadable file, a line that is not a JSON object, and a
    pydantic ``ValidationError`` raised by ``each`` become a `DatasetImportError` that names the line
    (and the field)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetImportError(f"{p}: no such file")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetImportError(f"{p}: cannot read ({e})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetImportError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DatasetImportError(f"{where}: each line must be a JSON object")
        try:
            each(row, where, n)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "<row>"
            raise DatasetImportError(f"{where}: field {loc}: {err['msg'].removeprefix('Value error, ')}") from None


def import_jsonl(path: str | Path, *, id_prefix: str = "jsonl") -> list[Item]:
    """Items from a JSONL file, one JSON object per line (see `_row_items` for the row shapes)."""
    items: list[Item] = []
    read_jsonl(path, lambda row, where, n: items.extend(_row_items(row, where, n, id_prefix)))
    ids = [it.id for it in items]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise DatasetImportError(f"{Path(path).expanduser()}: duplicate item id(s) {dups[:5]}")
    return items


def write_jsonl(items: Iterable[Item], path: str | Path) -> Path:
    """Write items as JSONL (one `Item` per line) so a pack can reference them in ``items_files``."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(it.model_dump_json(exclude_defaults=False) + "\n")
    return p


# --- Persona-Tailoring --------------------------------------------------------------------------

#: The seed paper's Table 2: the four interaction styles the Persona-Tailoring personas are
#: clustered into, by (positive keywords, negative keywords). Keys are the shipped pack's ids.
PERSONA_TAILORING_STYLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "style/dcf": (
        ("direct", "concise", "to the point", "brief", "short answer", "no fluff", "without elaboration"),
        ("explore options", "background", "context", "nuanced", "ask follow-up", "conversation", "discuss further"),
    ),
    "style/dec": (
        ("empathetic", "gentle", "reassure", "acknowledge emotions", "personalized", "supportive", "tailored"),
        ("blunt", "impersonal", "no empathy", "strictly factual"),
    ),
    "style/dms": (
        ("step by step", "step-by-step", "instructions", "checklist", "exact measurements", "clear steps",
         "specific guidance", "recipe"),
        ("high-level", "theoretical", "overview", "open-ended", "exploratory"),
    ),
    "style/dsn": (
        ("in-depth", "underlying mechanisms", "nuanced", "context", "background", "historical", "clarify first",
         "ensure understanding"),
        ("just answer", "skip context", "brief only", "no clarifying questions"),
    ),
}


def cluster_style(persona_text: str) -> str | None:
    """The Table 2 style a free-text persona belongs to: the style whose positive keywords it
    matches most, less its negative-keyword matches; None when no style scores above zero or two
    styles tie at the top."""
    t = persona_text.lower()
    score = {k: sum(w in t for w in pos) - sum(w in t for w in neg) for k, (pos, neg) in PERSONA_TAILORING_STYLES.items()}
    best = max(score.values())
    top = [k for k, v in score.items() if v == best]
    return top[0] if best > 0 and len(top) == 1 else None


def import_persona_tailoring(
    data_dir: str | Path,
    *,
    subsets: Sequence[str] = ("Anthropic HHH", "BeaverTails"),
    splits: Sequence[str] = ("fewshot", "sft_train", "sft_val", "dpo_train", "dpo_val", "test"),
    max_chars: int | None = None,
    id_prefix: str = "pt",
) -> dict[str, list[Item]]:
    """Preference items from the Persona-Tailoring release (Balepur et al. 2025), by style.

    ``data_dir`` is the release's ``data`` folder (``persona-tailoring-<subset>/<split>/*.arrow``,
    Hugging Face ``save_to_disk`` Arrow streams; needs ``pyarrow``). Each row whose
    ``chosen_persona_gold`` clusters into one of the four styles (`cluster_style`, the paper's
    Table 2) becomes one ``preference`` item: the two responses in a seeded order, gold True when
    choice 1 is the chosen one. ``max_chars`` skips rows whose prompt and responses together are
    longer (prompt cost on small models). Returns {style id: items}.
    """
    try:
        import pyarrow as pa
    except ImportError:
        raise DatasetImportError(
            "reading Persona-Tailoring needs pyarrow", hint="pip install 'steerkit[eval]'"
        ) from None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetImportError(f"{root}: not a folder", hint="give the Persona-Tailoring release's data/ folder")
    out: dict[str, list[Item]] = {k: [] for k in PERSONA_TAILORING_STYLES}
    found = 0
    for subset in subsets:
        for split in splits:
            for f in sorted((root / f"persona-tailoring-{subset}" / split).glob("*.arrow")):
                found += 1
                try:
                    rows = pa.ipc.open_stream(str(f)).read_all().to_pylist()
                except (OSError, pa.ArrowInvalid) as e:
                    raise DatasetImportError(f"{f}: not an Arrow stream ({e})") from None
                for n, row in enumerate(rows):
                    where = f"{f}:{n}"
                    missing = {"prompt", "chosen", "rejected", "chosen_persona_gold"} - set(row)
                    if missing:
                        raise DatasetImportError(f"{where}: missing column(s) {sorted(missing)}")
                    prompt, chosen, rejected = (str(row[k] or "").strip() for k in ("prompt", "chosen", "rejected"))
                    style = cluster_style(str(row["chosen_persona_gold"] or ""))
                    if style is None or not (prompt and chosen and rejected):
                        continue
                    if max_chars is not None and len(prompt) + len(chosen) + len(rejected) > max_chars:
                        continue
                    h = stable_hash([subset, split, n, prompt, chosen])
                    first = int(h[:2], 16) % 2 == 0  # the chosen response is choice 1 about half the time
                    c1, c2 = (chosen, rejected) if first else (rejected, chosen)
                    out[style].append(
                        Item(id=f"{id_prefix}/{h}", kind="preference", question=prompt, choice_1=c1, choice_2=c2,
                             gold=first, meta={"source": "persona-tailoring", "subset": subset, "split": split, "row": n})
                    )
    if not found:
        raise DatasetImportError(
            f"{root}: no persona-tailoring-<subset>/<split>/*.arrow files for subsets {list(subsets)}",
            hint="point at nbalepur_persona-anon/data",
        )
    return out

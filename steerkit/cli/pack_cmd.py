"""``steerkit pack``: make your own persona packs.

- ``pack new FILE``: a validated skeleton from a dimension and its personas (flags or ``--spec``);
- ``pack check FILE``: is it ready, beside the other configured packs? (exit 0 ok, 1 warnings with
  ``--strict``, 2 errors);
- ``pack import opinionqa|globalopinionqa``: packs with gold from the survey data where you put it;
- ``pack generate FILE``: grow the pool with a chat model, filtered and measured (resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from steerkit.errors import PackError, UserError

__all__ = ["register"]


def register(sub: Any, common: Any, models: Any) -> None:
    p = sub.add_parser("pack", help="make your own persona packs: new, check, import, generate")
    common(p)
    psub = p.add_subparsers(dest="pack_command", metavar="ACTION", required=True)

    n = psub.add_parser("new", help="a validated pack skeleton from a dimension and its personas",
                        description="Write a pack skeleton that loads: the dimension, its personas with their cues, and "
                        "a pool to replace or grow (`steerkit pack generate`).")
    common(n)
    n.add_argument("file", metavar="FILE", help="the pack file to write (.toml)")
    n.add_argument("--spec", metavar="FILE", help="a TOML/JSON spec: id, dimension, title, description, extraction, "
                   "personas = [{name, label, description, aliases, places, keywords}], questions (flags override it)")
    n.add_argument("--id", dest="pack_id", metavar="ID", help="pack id (default: the file's name)")
    n.add_argument("--dimension", metavar="NAME", help="the persona dimension, e.g. occupation (default: the pack id)")
    n.add_argument("--title", metavar="TEXT", help="the dimension's title")
    n.add_argument("--description", metavar="TEXT", help="what the dimension is about")
    n.add_argument("--persona", action="append", default=[], metavar="NAME[|ALIASES[|DESCRIPTION]]",
                   help="a persona: its claim name (plural, e.g. 'Nurses'), comma-separated aliases a user states "
                        "('nurse, RN'), a description; repeat for each persona (2 or more)")
    n.add_argument("--extraction", choices=["identity", "keywords"], help="identity: 'I'm a …' statements (default); "
                   "keywords: phrases such as 'keep it short' (the aliases become keywords)")
    n.add_argument("--force", action="store_true", help="replace an existing file")
    n.set_defaults(func=run_new)

    c = psub.add_parser("check", help="validate a pack and report what would steer badly (exit 0/1/2 for CI)",
                        description="Exit codes: 0 no errors (warnings allowed), 1 warnings with --strict, 2 errors "
                        "(the pack does not load, clashes with another pack, or two personas claim one phrase).")
    common(c)
    c.add_argument("file", metavar="FILE", help="the pack file to check, or a configured pack's id or dimension")
    c.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_check)

    i = psub.add_parser("import", help="packs with gold labels from OpinionQA or GlobalOpinionQA files")
    common(i)
    isub = i.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    o = isub.add_parser("opinionqa", help="one pack per OpinionQA attribute (age, sex, education, income, race, "
                        "region, ideology, party)")
    common(o)
    o.add_argument("--data", required=True, metavar="DIR", help="the OpinionQA human_resp folder (or any folder above "
                   "its American_Trends_Panel_W* waves)")
    o.add_argument("--attribute", action="append", metavar="ATTR", help="an attribute file name (AGE, SEX, EDUCATION, "
                   "INCOME, RACE, CREGION, POLIDEOLOGY, POLPARTY); repeatable (default: every one the data has)")
    _import_common(o)
    o.set_defaults(func=run_import)
    g = isub.add_parser("globalopinionqa", help="one pack of GlobalOpinionQA's countries")
    common(g)
    g.add_argument("--data", required=True, metavar="CSV", help="the GlobalOpinionQA CSV (question, selections, options, source)")
    g.add_argument("--country", action="append", metavar="NAME", help="a country (repeatable; default: every country "
                   "with at least --min-questions questions)")
    g.add_argument("--min-questions", type=int, default=40, metavar="N", help="leave out countries with fewer (default 40)")
    _import_common(g)
    g.set_defaults(func=run_import)

    gen = psub.add_parser("generate", help="grow a pack's pool with a chat model, filtered and measured (resumable)",
                          description="Ask the chat model for topic-diverse questions, drop near-duplicates, overlapping "
                          "options, options or questions that name a persona, and the questions on which the personas' "
                          "predicted answers under the base model (the search backend) differ least; append the rest "
                          "with their spread and a [[provenance]] entry. Re-running continues toward --target.")
    common(gen)
    models(gen)
    gen.add_argument("file", metavar="FILE", help="the pack file to grow (.toml)")
    gen.add_argument("--target", type=int, default=40, metavar="N", help="grow the pool to N questions (default 40)")
    gen.add_argument("--batch", type=int, default=6, metavar="N", help="questions asked for per chat call (default 6)")
    gen.add_argument("--max-calls", type=int, default=20, metavar="N", help="stop after N chat calls this run (default 20)")
    gen.add_argument("--min-spread", type=float, default=0.05, metavar="S",
                     help="keep questions whose spread under the base model is at least S (default 0.05; 0 keeps all)")
    gen.add_argument("--no-spread", action="store_true", help="do not score with the base model (no spread filter)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed of the chat calls (default 0)")
    gen.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads of the embedded models")
    gen.add_argument("--json", action="store_true", help="print the run's figures as JSON")
    gen.set_defaults(func=run_generate)


def _import_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the pack files (add it to packs_dirs "
                   "or pass --packs-dir to use them)")
    p.add_argument("--max-questions", type=int, metavar="N", help="keep at most N questions per pack (default: all)")
    p.add_argument("--force", action="store_true", help="replace existing pack files")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


# --- new ------------------------------------------------------------------------------------------


def _read_spec(path: str) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PackError(f"{p}: cannot read the spec ({e.strerror})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise PackError(f"{p}: the spec is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise PackError(f"{p}: the spec must be a table/object")
    return data


def _persona_flag(text: str) -> dict[str, Any]:
    parts = [x.strip() for x in text.split("|")]
    if not parts[0] or len(parts) > 3:
        raise UserError(f"--persona {text!r}: expected NAME[|ALIASES[|DESCRIPTION]]",
                        hint="e.g. --persona 'Nurses|nurse, RN|Registered nurses working in hospitals'")
    out: dict[str, Any] = {"name": parts[0]}
    if len(parts) > 1 and parts[1]:
        out["aliases"] = [a.strip() for a in parts[1].split(",") if a.strip()]
    if len(parts) > 2:
        out["description"] = parts[2]
    return out


def run_new(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from steerkit.packs import NewPackSpec, new_pack_document, write_pack_document

    data = _read_spec(args.spec) if args.spec else {}
    out = Path(args.file).expanduser()
    data.setdefault("id", out.stem)
    for key, val in (("id", args.pack_id), ("dimension", args.dimension), ("title", args.title),
                     ("description", args.description), ("extraction", args.extraction)):
        if val is not None:
            data[key] = val
    if args.persona:
        data["personas"] = [_persona_flag(x) for x in args.persona]
    if data.get("extraction") == "keywords":
        for p in data.get("personas", []):
            if isinstance(p, dict) and "keywords" not in p and "aliases" in p:
                p["keywords"] = p.pop("aliases")
    try:
        spec = NewPackSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "<spec>"
        raise UserError(f"pack spec: field {loc}: {err['msg']}",
                        hint="give at least two --persona NAME[|ALIASES[|DESCRIPTION]] (or personas in --spec)") from None
    pack = write_pack_document(new_pack_document(spec), out, force=args.force)
    print(f"wrote {out}: pack {pack.id!r}, dimension {pack.dimension!r}, {len(pack.specs)} personas, "
          f"{len(pack.questions)} question(s)")
    print(f"next: edit it, then `steerkit pack check {out}` and `steerkit pack generate {out}`")
    return 0


# --- check ----------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    from steerkit._pack_check import check_pack
    from steerkit._runtime import make_registry
    from steerkit.cli import load_settings

    settings = load_settings(args)
    try:
        others = make_registry(settings).packs
    except PackError as e:  # the configured packs themselves are broken: check this one against the shipped ones
        print(f"steerkit: warning: the configured packs do not load ({e}); checking against the shipped packs only",
              file=sys.stderr)
        from steerkit.packs import PackRegistry

        others = PackRegistry.default().packs
    report = check_pack(_configured_pack(args.file, others), others)
    code = report.exit_code(strict=args.strict)
    if args.json:
        print(json.dumps({**report.model_dump(), "exit_code": code}, indent=2))
        return code
    _render_check(report, code)
    return code


def _configured_pack(name: str, packs: Any) -> Any:
    """A FILE that is no file but a configured pack's id or dimension is that pack (``steerkit pack
    check political_affiliation``); anything else stays a path, and its errors name it."""
    if Path(name).expanduser().exists():
        return name
    found = [p for p in packs if name in (p.id, p.dimension)]
    return found[0] if len(found) == 1 else name


def _render_check(report: Any, code: int) -> None:
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)
    if report.pack_id is not None:
        con.print(f"[bold]{report.source}[/]: pack {report.pack_id!r} (dimension {report.dimension!r}, format "
                  f"{report.format_version}), {report.personas} personas, {report.questions} questions, {report.items} items")
        opts = ", ".join(f"{v} with {k}" for k, v in report.options.items()) or "none"
        con.print(f"  options per question: {opts}")
        con.print(f"  extraction: {report.frames_extracted}/{report.frames_tested} stating frames extracted, "
                  f"{report.false_positives}/{report.false_positive_frames} false-positive frames extracted")
        con.print(f"  near-duplicate question pairs: {report.near_duplicate_pairs}")
        if report.gold_position_share:
            con.print("  gold answer by option position: " + ", ".join(f"{s:.0%}" for s in report.gold_position_share))
        if report.answer_pool_questions:
            gold = "; ".join(f"{pid.rsplit('/', 1)[-1]} {g['representative']} representative, {g['not_representative']} not, "
                             f"{g['unlabelled']} unlabelled" for pid, g in report.answer_pool_gold.items())
            con.print(f"  answer pool: {report.answer_pool_questions} questions, {report.answer_pool_answers} answers; gold: {gold}")
        if report.spread_measured:
            con.print(f"  spread under the base model: mean {report.spread_mean:.3f}, min {report.spread_min:.3f} "
                      f"({report.spread_measured} questions measured)")
    style = {"error": "red", "warning": "yellow", "info": "dim"}
    for f in report.findings:
        con.print(f"  [{style[f.level]}]{f.level}[/] {f.code}: {f.message}")
    verdict = {0: "ok", 1: "warnings (--strict)", 2: "errors"}[code]
    con.print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s): {verdict}")


# --- import ---------------------------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    from steerkit import _pack_import

    if args.dataset == "opinionqa":
        written = _pack_import.import_opinionqa_packs(args.data, args.out, attributes=args.attribute,
                                                       max_questions=args.max_questions, force=args.force)
    else:
        written = [_pack_import.import_globalopinionqa_pack(args.data, args.out, countries=args.country,
                                                            min_questions=args.min_questions,
                                                            max_questions=args.max_questions, force=args.force)]
    if args.json:
        print(json.dumps([w.model_dump(mode="json") for w in written], indent=2))
        return 0
    for w in written:
        print(f"wrote {w.path}: {w.attribute} -> dimension {w.dimension!r}, {len(w.personas)} personas "
              f"({', '.join(w.personas)}), {w.questions} questions with gold")
        for note in w.notes:
            print(f"  note: {note}")
    print(f"use them with --packs-dir {args.out} (or packs_dirs in the configuration); "
          f"`steerkit pack check` reports their overlap with the packs you already have")
    return 0


# --- generate -------------------------------------------------------------------------------------


def run_generate(args: argparse.Namespace) -> int:
    import asyncio

    from steerkit._pack_generate import GenerateConfig, generate_from_settings
    from steerkit.cli.probe_cmd import settings_for

    settings = settings_for(args)
    cfg = GenerateConfig(target=args.target, batch=args.batch, max_calls=args.max_calls, min_spread=args.min_spread,
                         measure_spread=not args.no_spread, seed=args.seed)

    def progress(ev: Any) -> None:
        if not args.json:
            print(ev.line(), file=sys.stderr, flush=True)

    result = asyncio.run(generate_from_settings(args.file, settings, cfg, progress=progress))
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print(result.summary())
    return 0

"""``steerkit cache``: see, inspect, delete and move cached example sets.

- ``cache ls [--personas] [--json]``: persona, version, model, items, coherence U, confidence, how
  far the search's restarts agreed (``agree``) and how it ended (``ended``), age.
- ``cache show PERSONA [--model M] [--json]``: how reliable the set is (how its search ended, its
  restarts' agreement, its least certain questions, a warning for a possible bad draw), then the
  labelled items as a table.
- ``cache rm PERSONA... | --all``: delete (every version of) the entries.
- ``cache export [PERSONA...] -o FILE``: a JSON-lines file to copy to another machine
  (first line a header, then one ``{"key": …, "example_set": …}`` per entry).
- ``cache import FILE``: put the file's example sets into this cache (an entry whose current
  version is already the same is left alone). The whole file is checked first (see
  `steerkit._store.import_entries`: each set against its key and the configured pack, this library
  version, records of at most 32 MiB); a bad file, a folder or a device changes nothing (exit 2).
  A combined persona's set (``country/nigeria+polparty/democrat``) is imported when the
  configuration allows that combination (``steer.combined_personas = "allow-list"``, listed in
  ``steer.combined_allow``), checked against the combined pool; any other combination is a
  `ConfigError` (exit 2).

``show``, ``rm`` and ``export`` take a combined id with its members in any order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steerkit._store import EXPORT_FORMAT, export_entries, import_entries, list_entries
from steerkit.cli._reliability import cut, reliability_lines
from steerkit.errors import SteerkitError, UserError
from steerkit.packs._combine import combined_id, is_combined, members_of

__all__ = ["EXPORT_FORMAT", "add_subcommands", "export_entries", "import_entries", "list_entries"]



def add_subcommands(parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    p = sub.add_parser("ls", help="list cached example sets")
    common(p)
    p.add_argument("--personas", action="store_true", help="list every loaded persona, cached or not")
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    p.set_defaults(func=_run(_ls))

    p = sub.add_parser("show", help="inspect one example set as a table")
    common(p)
    p.add_argument("persona", help="persona id, or a pack's name for it (nigeria, democrat)")
    p.add_argument("--model", help="pick the entry computed with this model (when several)")
    p.add_argument("--version", dest="es_version", metavar="VERSION", help="an older version of the entry")
    p.add_argument("--json", action="store_true", help="the example set as JSON")
    p.set_defaults(func=_run(_show))

    p = sub.add_parser("rm", help="delete cached example sets")
    common(p)
    p.add_argument("personas", nargs="*", metavar="PERSONA", help="persona ids")
    p.add_argument("--all", action="store_true", help="delete every entry")
    p.set_defaults(func=_run(_rm))

    p = sub.add_parser("export", help="write cached example sets to a file")
    common(p)
    p.add_argument("personas", nargs="*", metavar="PERSONA", help="persona ids (default: all)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output file ('-' for stdout)")
    p.set_defaults(func=_run(_export))

    p = sub.add_parser("import", help="read example sets from an exported file")
    common(p)
    p.add_argument("file", metavar="FILE", help="a file written by `steerkit cache export` ('-' for stdin)")
    p.set_defaults(func=_run(_import))


def _run(fn: Callable[[argparse.Namespace, Any], Any]) -> Callable[[argparse.Namespace], int]:
    def runner(args: argparse.Namespace) -> int:
        from steerkit._runtime import make_store
        from steerkit.cli import load_settings

        settings = load_settings(args)
        store = make_store(settings)

        async def go() -> int:
            try:
                return int(await fn(args, (settings, store)) or 0)
            finally:
                close = getattr(store, "aclose", None) or getattr(store, "close", None)
                if close is not None:
                    res = close()
                    if asyncio.iscoroutine(res):
                        await res

        return asyncio.run(go())

    return runner


def _now() -> datetime:
    return datetime.now(UTC)


def _age(t: datetime) -> str:
    s = max(0.0, (_now() - t).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.0f}{unit}"
    return f"{s:.0f}s"


def _mean_conf(es: Any) -> float:
    vals = [lab.confidence for lab in es.labels.values()]
    return sum(vals) / len(vals) if vals else 0.0


def _row(info: Any, es: Any) -> dict[str, Any]:
    size = getattr(info, "size_bytes", None) or getattr(info, "size", None) or len(es.to_json().encode())
    return {
        "persona": info.key.persona_id,
        "version": es.version,
        "model": info.key.model,
        "items": len(es.items),
        "score": round(es.score, 4),
        "mean_confidence": round(_mean_conf(es), 4),
        "answer_confidence": None if (ac := es.answer_confidence()) is None else round(ac, 4),
        "min_group_confidence": round(min(es.group_confidence.values()), 4) if es.group_confidence else None,
        "violations": es.violations,
        "ended": es.stats.ended,
        "restart_agreement": None if es.stats.restart_agreement is None else round(es.stats.restart_agreement, 4),
        "human_labels": sum(1 for lab in es.labels.values() if lab.source == "human"),
        "size_bytes": size,
        "computed_at": es.provenance.finished_at.isoformat(),
        "age": _age(es.provenance.finished_at),
        "key": info.key.digest(),
    }


# --- commands ----------------------------------------------------------------------------------

_LS_COLUMNS = ("persona", "version", "model", "items", "U", "conf", "min grp", "answers", "agree", "ended", "viol", "human", "size",
               "age")


async def _ls(args: argparse.Namespace, ctx: tuple[Any, Any]) -> int:
    settings, store = ctx
    rows = [_row(i, es) for i, es in await list_entries(store)]
    if args.personas:
        from steerkit._runtime import make_registry

        registry = make_registry(settings)
        cached = {r["persona"] for r in rows}
        personas = [
            {"persona": p.id, "dimension": p.dimension, "name": p.name, "cached": p.id in cached} for p in registry.personas()
        ]
        if args.json:
            print(json.dumps(personas, indent=2))
            return 0
        from rich.console import Console
        from rich.table import Table

        t = Table("persona", "dimension", "name", "cached", title=f"{len(personas)} personas")
        for p in personas:
            t.add_row(p["persona"], p["dimension"], p["name"], "yes" if p["cached"] else "-")
        Console().print(t)
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no cached example sets in {settings.examples_dir} (compute some with `steerkit precompute`)")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(*_LS_COLUMNS, title=str(settings.examples_dir))
    for r in rows:
        t.add_row(
            r["persona"],
            r["version"],
            r["model"],
            str(r["items"]),
            f"{r['score']:.2f}",
            f"{r['mean_confidence']:.2f}",
            "-" if r["min_group_confidence"] is None else f"{r['min_group_confidence']:.2f}",
            "-" if r["answer_confidence"] is None else f"{r['answer_confidence']:.2f}",
            "-" if r["restart_agreement"] is None else f"{r['restart_agreement']:.2f}",
            r["ended"] or "-",
            str(r["violations"]),
            str(r["human_labels"]),
            f"{r['size_bytes'] / 1024:.1f}K",
            r["age"],
        )
    _print_uncut(t)
    return 0


def _print_uncut(table: Any) -> None:
    """``table`` at its natural width (at least the terminal's, or 120 when piped): a cut persona
    or version could not be pasted into `cache show`."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(width=10_000)
    need = Measurement.get(wide, wide.options, table).maximum
    Console(width=max(120, Console().width, need)).print(table)


def _canonical(persona: str) -> str:
    """A combined id with its members sorted, as keys hold it; any other id as it is."""
    return combined_id(members_of(persona)) if is_combined(persona) else persona


async def _find(store: Any, persona: str, model: str | None, settings: Any = None) -> list[tuple[Any, Any]]:
    persona = _canonical(persona)
    entries = await list_entries(store)
    if settings is not None and not any(i.key.persona_id == persona for i, _ in entries):
        from steerkit._runtime import make_registry

        registry = make_registry(settings)
        if is_combined(persona):  # `democrat+nigeria` → country/nigeria+polparty/democrat
            persona = combined_id(m if m in registry else registry.resolve(m) for m in members_of(persona))
        else:
            persona = registry.resolve(persona)  # `nigeria` → country/nigeria, or "did you mean"
    found = [(i, es) for i, es in entries if i.key.persona_id == persona and (model is None or i.key.model == model)]
    if not found:
        raise UserError(
            f"no cached example set for persona {persona!r}" + (f" and model {model!r}" if model else ""),
            hint="see `steerkit cache ls`, compute one with `steerkit precompute --persona ID`",
        )
    return found


async def _show(args: argparse.Namespace, ctx: tuple[Any, Any]) -> int:
    settings, store = ctx
    found = await _find(store, args.persona, args.model, settings)
    info, es = found[0]
    if args.es_version:
        es = await store.get_version(info.key, args.es_version)
        if es is None:
            raise UserError(f"persona {args.persona!r} has no cached version {args.es_version!r}", hint="see `steerkit cache ls`")
    if args.json:
        print(es.to_json())
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    if len(found) > 1:
        others = ", ".join(f"{i.key.model}" for i, _ in found[1:])
        console.print(f"[dim]{len(found)} entries for {args.persona}; showing the newest (model {info.key.model}); others: {others} (use --model)[/dim]")
    console.print(
        f"[bold]{es.persona.id}[/bold] ({es.persona.name}) version {es.version}  model {es.provenance.model}  "
        f"U={es.score:.3f}  violations={es.violations}  items={len(es.items)}"
    )
    from steerkit._compute import reliability

    for line in reliability_lines(reliability(es), es.persona.id):
        console.print(line, markup=False, highlight=False)
    t = Table("question / option", "label", "conf", "source", "item")
    last_q = None
    for it in es.items:
        lab = es.labels.get(it.id)
        if it.question != last_q:
            t.add_row(f"[bold]{cut(it.question, 90)}[/bold]", "", "", "", "", end_section=False)
            last_q = it.question
        option = it.option or (f"{it.choice_1} > {it.choice_2}" if it.choice_1 else "")
        t.add_row(
            "  " + cut(option, 88),
            "-" if lab is None else ("[green]True[/green]" if lab.value else "[red]False[/red]"),
            "-" if lab is None else f"{lab.confidence:.2f}",
            "-" if lab is None else lab.source,
            f"[dim]{it.id}[/dim]",
        )
    console.print(t)
    return 0


async def _rm(args: argparse.Namespace, ctx: tuple[Any, Any]) -> int:
    _, store = ctx
    if not args.personas and not args.all:
        raise UserError("name the personas to delete, or pass --all")
    entries = await store.entries()
    if args.all:
        targets = list(entries)
    else:
        targets = []
        for p in map(_canonical, args.personas):
            match = [i for i in entries if i.key.persona_id == p]
            if not match:
                raise UserError(f"no cached example set for persona {p!r}", hint="see `steerkit cache ls`")
            targets += match
    for info in targets:
        await store.delete(info.key)
    print(f"deleted {len(targets)} cache entr{'y' if len(targets) == 1 else 'ies'}")
    return 0


async def _export(args: argparse.Namespace, ctx: tuple[Any, Any]) -> int:
    _, store = ctx
    args.personas = [_canonical(p) for p in args.personas]
    lines = await export_entries(store, args.personas or None)
    if args.personas:
        present = {json.loads(line)["key"]["persona_id"] for line in lines[1:]}
        missing = [p for p in args.personas if p not in present]
        if missing:
            raise UserError(f"no cached example set for {', '.join(map(repr, missing))}", hint="see `steerkit cache ls`")
    text = "\n".join(lines) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output).expanduser()
        _write_safely(out, text)
        print(f"exported {len(lines) - 1} example set(s) to {out}", file=sys.stderr)
    return 0


def _write_safely(out: Path, text: str) -> None:
    """Write ``out`` atomically through a temporary file created exclusively, under an
    unpredictable name, in the target folder (`tempfile.mkstemp`: ``O_EXCL``, never follows a
    link); refuse a target that exists and is not a regular file (a symlink, FIFO, device,
    folder). Temporary files a killed export left are removed first."""
    import os
    import stat
    import tempfile

    from steerkit._compute import remove_stale_temp_files

    try:
        st = out.lstat()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserError(f"{out}: cannot write the export there ({e.strerror or e})") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            kind = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a folder" if stat.S_ISDIR(st.st_mode) else "a device or special file")
            raise UserError(f"{out} is {kind}, not a regular file; refusing to replace it",
                            hint="give -o a new path or an existing regular file, or '-' for stdout")
    parent = out.parent
    remove_stale_temp_files(out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise UserError(f"{parent}: cannot create the export there ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


MAX_IMPORT_CHARS = 2**30
"""The most characters one ``cache import`` reads (1 Gi): the whole file is checked before anything
is written, so it is held in memory; a larger export is imported in parts."""


def _read_lines(stream: Any, source: str, limit: int) -> list[str]:
    """The lines of an export, each read with a bound (``limit`` characters) and all of them with
    another (`MAX_IMPORT_CHARS`), so an endless or binary input (``/dev/zero``, a huge line, ``yes |``) is a
    clear error instead of a `MemoryError`."""
    lines, read = [], 0
    try:
        while True:
            line = stream.readline(limit + 1)
            if not line:
                return lines
            if len(line) > limit:
                raise UserError(f"{source}: line {len(lines) + 1} is longer than the {limit / 2**20:.0f} MiB limit of a "
                                "cache record", hint="give a file written by `steerkit cache export`")
            read += len(line)
            if read > MAX_IMPORT_CHARS:
                raise UserError(f"{source}: more than {MAX_IMPORT_CHARS / 2**20:.0f} MiB, the most one import reads (it checks the "
                                "whole file before writing anything)",
                                hint="export fewer personas per file (steerkit cache export PERSONA… -o FILE) and import "
                                "each file")
            lines.append(line.rstrip("\r\n"))
    except UnicodeDecodeError:
        raise UserError(f"{source}: not UTF-8 text, so not a file written by `steerkit cache export`") from None


def _open_export(path: Path) -> Any:
    """``path`` opened for reading as UTF-8 (a byte-order mark is skipped), or a `UserError`
    saying why it cannot be an export: missing, unreadable, a folder, a device or socket."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path} is a folder, not a file written by `steerkit cache export`",
                        hint="give the export file itself (steerkit cache export -o FILE writes one)")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise UserError(f"{path} is a device or special file, not a file written by `steerkit cache export`")
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None


async def _import(args: argparse.Namespace, ctx: tuple[Any, Any]) -> int:
    settings, store = ctx
    from steerkit._store import MAX_RECORD_BYTES

    limit = getattr(store, "max_record_bytes", MAX_RECORD_BYTES)
    if args.file == "-":
        source = "<stdin>"
        lines = _read_lines(sys.stdin, source, limit)
    else:
        path = Path(args.file).expanduser()
        source = str(path)
        with _open_export(path) as f:
            lines = _read_lines(f, source, limit)
    from steerkit._runtime import make_registry
    from steerkit.packs._combine import allowed_combinations

    registry = make_registry(settings)
    steer = settings.steer_config()
    combos = allowed_combinations(registry, steer)  # the operator's combined personas, pools cut as the app cuts them
    known = _Personas({p.id for p in registry.personas()} | set(combos), registry, steer, source)
    max_items = steer.max_pool_items

    def pool_hash_of(persona_id: str) -> str:  # the pool the app would search, so the key it would read
        combo = combos.get(persona_id)
        if combo is not None:
            return combo.pool.content_hash()
        return registry.pool(persona_id, max_items=max_items).content_hash()

    imported, unchanged = await import_entries(store, lines, source, known_personas=known, pool_hash_of=pool_hash_of,
                                               max_record_bytes=limit)
    print(f"imported {imported} example set(s), {unchanged} already present")
    return 0


class _Personas(Collection[str]):
    """The persona ids an import may hold: the configured packs' and the allowed combinations'. A
    combination the configuration does not allow is a `ConfigError` saying how to allow it (the
    whole file is checked before anything is written, so nothing is imported)."""

    def __init__(self, ids: set[str], registry: Any, steer: Any, source: str) -> None:
        self.ids, self.registry, self.steer, self.source = ids, registry, steer, source

    def __contains__(self, persona_id: object) -> bool:
        if persona_id in self.ids:
            return True
        if isinstance(persona_id, str) and is_combined(persona_id):
            from steerkit.cli.precompute import allowed_combined_id

            try:
                allowed_combined_id(self.registry, persona_id, self.steer)
            except SteerkitError as e:
                raise type(e)(f"{self.source}: {e.message}; nothing was imported", hint=e.hint) from None
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

"""``steerkit precompute``: compute and cache example sets for personas, offline.

Resumable: the search writes a checkpoint per persona in ``<cache_dir>/checkpoints`` after every
accepted change; after Ctrl-C or a crash, the same command picks up finished personas from the
cache and the unfinished one from its checkpoint. Idempotent: a persona whose example set is
already cached (same pool, model, search config and library version) is skipped unless ``--force``.
Each persona's result says how far its set can be trusted (how the search ended, how far its
restarts agreed, its least certain questions) and warns, with what to do, when it may be a bad draw.

A combined persona (``--persona polparty/republican+country/nigeria``: members by id or a pack's
name for them, in any order) is precomputed like any other when the operator allows it
(``steer.combined_personas = "allow-list"`` and the combination in ``steer.combined_allow``); its
key is the one the middleware reads. Any other combination is a `ConfigError` (exit 2). ``--all``
adds the allowed combinations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerkit._compute import PrecomputeResult, checkpoint_path
from steerkit.cli import probe_cmd
from steerkit.cli._reliability import reliability_lines
from steerkit.errors import ConfigError, UserError
from steerkit.packs._combine import combined_id, is_combined, members_of

if TYPE_CHECKING:
    from steerkit._runtime import Runtime

__all__ = ["PersonaResult", "add_arguments", "allowed_combined_id", "checkpoint_path", "precompute", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sel = p.add_argument_group("which personas")
    sel.add_argument("--persona", action="append", default=[], metavar="ID",
                     help="persona id or a pack's name for it: country/nigeria, nigeria, democrat; an allowed combined "
                          "persona: country/nigeria+polparty/democrat (repeatable)")
    sel.add_argument("--dimension", action="append", default=[], metavar="DIM", help="every persona of a dimension (repeatable)")
    sel.add_argument("--all", action="store_true", help="every persona of every loaded pack, and the allowed combined personas")
    run_g = p.add_argument_group("run")
    run_g.add_argument("--force", action="store_true", help="recompute personas that are already cached")
    run_g.add_argument("--fresh", action="store_true", help="ignore existing checkpoints (start searches from scratch)")
    run_g.add_argument("--jobs", type=int, default=1, metavar="N", help="personas searched at once (default 1)")
    run_g.add_argument("--no-progress", action="store_true", help="no live progress display")
    run_g.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    probe_cmd.add_probe_flag(run_g)
    run_g.add_argument("--store", metavar="URL", help="shared example-set store, redis://host:port/db (default: the disk cache)")
    run_g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="search each persona as a Ray task: on the cluster at ADDRESS, else a local Ray with --jobs CPUs")
    s = p.add_argument_group("search (overrides [search] in the configuration)")
    s.add_argument("--mode", choices=["exact", "sparse"],
                   help="scoring: sparse (nearest-group contexts, minutes) or exact leave-one-out (hours)")
    s.add_argument("--context-k", type=int, metavar="K", help="sparse mode: demonstrations per prompt")
    s.add_argument("--max-iterations", type=int, metavar="N", help="iteration budget per restart (labelling every group counts)")
    s.add_argument("--restarts", type=int, metavar="N",
                   help="independent searches from different seeds (default 16 sparse: their answers are settled by consensus, "
                        "and how far they agreed is reported; 1 exact)")
    s.add_argument("--seed", type=int, metavar="N", help="random seed (same seed, pool and model: same labels)")
    s.add_argument("--patience", type=int, metavar="N", help="stop after N iterations without an accepted change")


PersonaResult = PrecomputeResult  # the name this module used to export


def checkpoint_of(rt: Any) -> Any:
    """persona id → its search checkpoint file under the runtime's settings."""
    sets = rt.steerer.example_sets

    def of(pid: str) -> Any:
        return sets.checkpoint_path(sets.cache_key(pid)) if sets.checkpoints_dir is not None else None

    return of


def allowed_combined_id(registry: Any, name: str, steer: Any) -> str:
    """The combined id ``name`` names (members by id or a pack's name for them, in any order), when
    ``steer`` (a `SteerConfig`) allows that combination; else a `ConfigError` saying how to allow it.
    An unknown member is an `UnknownPersonaError`."""
    members = [m if m in registry else registry.resolve(m) for m in members_of(name)]
    cid = combined_id(members)
    if len(members_of(cid)) < 2:
        raise UserError(f"{name!r} is not a combination of two personas",
                        hint="join persona ids of different dimensions with '+': country/nigeria+polparty/democrat")
    mode = getattr(steer, "combined_personas", "off")
    allowed = list(getattr(steer, "combined_allow", []) or [])
    if mode == "allow-list" and cid in allowed:
        return cid
    if mode != "allow-list":
        raise ConfigError(f"combined persona {cid!r} is not allowed: combined personas are off (steer.combined_personas)",
                          hint=f'set steer.combined_personas = "allow-list" and add "{cid}" to steer.combined_allow; in the '
                               f"environment: STEERKIT_STEER__COMBINED_PERSONAS=allow-list STEERKIT_STEER__COMBINED_ALLOW={cid}")
    raise ConfigError(f"combined persona {cid!r} is not in steer.combined_allow (allowed: {', '.join(allowed) or 'none'})",
                      hint=f'add "{cid}" to steer.combined_allow; only the operator creates combinations')


def select_personas(registry: Any, ids: list[str], dimensions: list[str], all_: bool, steer: Any = None) -> list[str]:
    """The persona ids to precompute. ``steer`` (a `SteerConfig`): the combined personas allowed
    (``--persona a+b``, and with ``--all``)."""
    personas = list(registry.personas())
    known = {p.id for p in personas}
    if not (ids or dimensions or all_):
        raise UserError("name the personas to precompute", hint="use --persona ID, --dimension DIM or --all; see `steerkit cache ls`")
    out: list[str] = []
    if all_:
        out = [p.id for p in personas]
        if getattr(steer, "combined_personas", "off") == "allow-list":
            out += list(getattr(steer, "combined_allow", []) or [])
    for d in dimensions:
        match = [p.id for p in personas if p.dimension == d]
        if not match:
            dims = sorted({p.dimension for p in personas})
            raise UserError(f"no persona has dimension {d!r}", hint=f"known dimensions: {', '.join(dims)}")
        out += match
    for i in ids:
        if is_combined(i):
            out.append(allowed_combined_id(registry, i, steer))
        else:
            out.append(i if i in known else registry.resolve(i))  # a short name or alias: `democrat`
    return list(dict.fromkeys(out))


async def precompute(
    runtime: Runtime,
    persona_ids: list[str],
    *,
    force: bool = False,
    fresh: bool = False,
    jobs: int = 1,
    on_progress: Any = None,
    on_status: Any = None,
) -> list[PrecomputeResult]:
    """`ExampleSets.precompute` of the runtime's steerer (the same keys, pools and checkpoints
    the middleware and the proxy use)."""
    assert runtime.steerer is not None
    return await runtime.steerer.example_sets.precompute(
        persona_ids, force=force, fresh=fresh, jobs=jobs, on_progress=on_progress, on_status=on_status
    )


class Eta:
    """An honest time estimate for one persona's search, from its own measured pace.

    A sparse search first labels every unit once (phase ``complete``: about one model call per
    item), then anneals (phase ``anneal``: at most ``max_iterations`` in all, and it stops after
    ``patience`` iterations without an accepted change or when no label is contradicted). So:

    - while completing: the time to the first complete labelling is (items left + seed items, which
      are scored last) × (seconds per item labelled so far); known after the first labelled unit,
      then annealing follows;
    - while annealing: at most min(budget left, patience left) × (seconds per anneal iteration
      so far): an upper bound, since the search may converge sooner;
    - figures before that are unknown ("estimating…"), never invented.
    ``clock``: a monotonic clock (tests pass a fake one).
    """

    def __init__(self, patience: int, clock: Any = None) -> None:
        import time

        self.patience = patience
        self.clock = clock or time.monotonic
        self.base: dict[str, tuple[float, float]] = {}  # phase -> (time, progress) when first seen
        self.last_accepted: int | None = None
        self.since_accept = 0

    def update(self, pr: Any) -> str:
        now = self.clock()
        phase = getattr(pr, "phase", "anneal")
        if phase == "done":
            return "done"
        if phase in ("init", "complete"):
            t0, l0 = self.base.setdefault("complete", (now, float(pr.labelled)))
            left = pr.total - pr.labelled
            if pr.labelled <= l0 or now <= t0:
                return "estimating…"
            eta = (left + l0) * (now - t0) / (pr.labelled - l0)  # the seed items are scored at the end
            return f"first labelling in ~{_clock(eta)}, then refining"
        # anneal
        if self.last_accepted is not None and pr.accepted == self.last_accepted:
            self.since_accept += 1
        else:
            self.since_accept = 0
        self.last_accepted = pr.accepted
        t0, i0 = self.base.setdefault("anneal", (now, float(pr.iteration)))
        if pr.iteration <= i0 or now <= t0:
            return "refining, estimating…"
        per = (now - t0) / (pr.iteration - i0)
        left = max(0, min(pr.max_iterations - pr.iteration, self.patience - self.since_accept))
        return f"refining, ≤ {_clock(left * per)} left"


def _clock(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def checkpoint_figures(path: Any) -> dict[str, Any] | None:
    """What a search checkpoint says about a resumed search (iteration, accepted, labelled, phase),
    shown at once while the search restores; None when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
        r = max(data["restarts"], key=lambda r: r.get("iteration", 0))
        return {"iteration": int(r["iteration"]), "accepted": int(r["accepted"]), "labelled": len(r["labels"]),
                "phase": str(r.get("phase", "anneal"))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _ProgressView:
    """Rich progress: one row per persona (iterations, accepted, U, calls, labelled, honest ETA).
    ``checkpoint_of(persona_id)``: the persona's checkpoint file, read when a search resumes so
    its figures show at once."""

    def __init__(self, persona_ids: list[str], config: Any, enabled: bool, checkpoint_of: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.config = config
        self.checkpoint_of = checkpoint_of
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("it {task.fields[it]}"),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("U {task.fields[u]}"),
            TextColumn("calls {task.fields[calls]}"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            disable=not enabled,
            refresh_per_second=4,
        )
        self.tasks = {
            pid: self.progress.add_task(pid, total=1000, it="-", acc="-", u="-", calls="-", status="waiting", eta="")
            for pid in persona_ids
        }
        self.etas = {pid: Eta(config.patience) for pid in persona_ids}
        self.last: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> _ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    @staticmethod
    def fraction(pr: Any) -> float:
        """Share of the work done: the first half labels every item, the second anneals."""
        phase = getattr(pr, "phase", "anneal")
        if phase == "done":
            return 1.0
        if phase in ("init", "complete"):
            return 0.5 * pr.labelled / max(1, pr.total)
        return 0.5 + 0.5 * min(1.0, pr.iteration / max(1, pr.max_iterations))

    def on_progress(self, pid: str, pr: Any) -> None:
        phase = getattr(pr, "phase", "anneal")
        fields = dict(
            completed=int(1000 * self.fraction(pr)),
            it=f"{pr.iteration}/{pr.max_iterations}" + (f" r{pr.restart}" if self.config.restarts > 1 else ""),
            acc=pr.accepted,
            u="-" if pr.u != pr.u else f"{pr.u:.2f}",
            calls=pr.calls,
            status=f"{phase} {pr.labelled}/{pr.total}",
            eta=self.etas[pid].update(pr),
        )
        self.last[pid] = fields
        self.progress.update(self.tasks[pid], **fields)

    def on_status(self, pid: str, status: str) -> None:
        fields: dict[str, Any] = {"status": status}
        if status == "resuming" and self.checkpoint_of is not None:
            fig = checkpoint_figures(self.checkpoint_of(pid))
            if fig is not None:  # the checkpoint's figures at once, while the search restores
                fields.update(it=f"{fig['iteration']}/{self.config.max_iterations}", acc=fig["accepted"],
                              status=f"resuming ({fig['phase']}) {fig['labelled']} labelled", eta="estimating…")
        if status in ("cached", "done"):
            fields.update(completed=1000, eta="")
        self.last[pid] = {**self.last.get(pid, {}), **fields}
        self.progress.update(self.tasks[pid], **fields)


def run(args: argparse.Namespace) -> int:
    from steerkit.cli import load_settings

    overrides = {
        "mode": args.mode,
        "context_k": args.context_k,
        "max_iterations": args.max_iterations,
        "restarts": args.restarts,
        "seed": args.seed,
        "patience": args.patience,
    }
    args.search_overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if args.jobs > 1:  # the compute service's search limit is what bounds concurrent searches
        args.steer_overrides = {"max_concurrent_searches": args.jobs}
    settings = load_settings(args)
    return asyncio.run(_main(args, settings))


async def _main(args: argparse.Namespace, settings: Any) -> int:
    from steerkit._runtime import Runtime

    show = not args.no_progress and sys.stderr.isatty()
    on_ray = getattr(args, "ray", None) is not None
    from steerkit._runtime import make_registry

    registry = make_registry(settings)
    steer = settings.steer_config()
    ids = select_personas(registry, args.persona, args.dimension, args.all, steer)  # before the model loads
    if any(is_combined(i) for i in ids):  # a combination whose pools clash fails here, before the model loads
        from steerkit.packs._combine import allowed_combinations

        allowed_combinations(registry, steer)
    rt = await Runtime.open(settings, chat=False, backend=not on_ray)  # on Ray, the workers open the backend
    try:
        if probe_cmd.wants_probe(args):  # does the search model follow in-context labels at all?
            await probe_cmd.print_verdict(rt.backend, settings.cache_dir)
        view = _ProgressView(ids, rt.steerer.config.search, show, checkpoint_of=checkpoint_of(rt))
        try:
            with view:
                if on_ray:
                    from steerkit._ray_precompute import FromSettings, precompute_on_ray

                    if args.ray and settings.store is None:  # a cluster's workers would each write their own disk
                        raise UserError("--ray ADDRESS (a cluster) needs a shared store for the results",
                                        hint="add --store redis://HOST:6379/0 (or leave ADDRESS out for a local Ray)")

                    results = await precompute_on_ray(
                        FromSettings.of(settings), ids, address=args.ray or None, num_cpus=args.jobs if args.jobs > 1 else None,
                        force=args.force, fresh=args.fresh, on_progress=view.on_progress, on_status=view.on_status)
                else:
                    results = await precompute(rt, ids, force=args.force, fresh=args.fresh, jobs=args.jobs,
                                               on_progress=view.on_progress, on_status=view.on_status)
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("precompute interrupted; run the same command again to resume from the checkpoints", file=sys.stderr)
            raise KeyboardInterrupt from None
    finally:
        await rt.aclose()
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            if r.status == "cached":
                print(f"{r.persona}: cached (version {r.version}, U={r.score:.3f}); --force recomputes")
            else:
                print(f"{r.persona}: {r.status} version {r.version} U={r.score:.3f} items={r.items} calls={r.calls} in {r.seconds:.1f}s")
            for line in reliability_lines(r.extra, r.persona):
                print(line)
    return 0


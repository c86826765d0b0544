"""The ``steerkit`` command.

Commands::

    steerkit precompute [--persona ID ...] [--dimension DIM ...] [--all] [--force]
    steerkit cache ls | show PERSONA | rm PERSONA... | export -o FILE | import FILE
    steerkit chat "message" [--persona ID] [--no-steer]
    steerkit serve [--host H] [--port P] [--chat-base-url URL]
    steerkit demo [--query TEXT]
    steerkit probe [--dataset facts|opinionqa|...]   (does the model follow in-context labels?)
    steerkit eval --dataset D --data PATH            (the seed paper's protocol)
    steerkit config show
    steerkit pack new | check | import | generate   (your own persona packs)
    steerkit review ...          (human review of escalated labels)

Every command takes ``--config FILE``, ``--cache-dir DIR``, ``--packs-dir DIR`` and ``-v``; the
configuration is the TOML file, then ``STEERKIT_*`` environment variables, then flags (see
`steerkit._config`).

Exit codes (a script can rely on them):

====  ==============================================================================
0     success
1     runtime error: a model server / backend failed, the cache could not be read or
      written, a search failed, or an unexpected internal error
2     usage or configuration error: bad flags, invalid configuration, unknown persona,
      malformed input file
130   interrupted (Ctrl-C); ``precompute`` resumes from its checkpoints when re-run
====  ==============================================================================

Errors are printed to stderr as one line, ``steerkit: error: <what> (<what to do>)``; ``-v``
adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from steerkit._version import __version__
from steerkit.errors import SteerkitError, UserError

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "build_parser", "load_settings", "main"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
    g.add_argument("--cache-dir", metavar="DIR", default=argparse.SUPPRESS, help="cache directory (example sets, checkpoints)")
    g.add_argument("--packs-dir", metavar="DIR", action="append", default=argparse.SUPPRESS, help="extra persona-pack folder (repeatable)")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging and tracebacks")


def _models(parser: argparse.ArgumentParser, *, chat: bool = True, search: bool = True) -> None:
    g = parser.add_argument_group("models")
    if search:
        g.add_argument("--search-base-url", metavar="URL", help="OpenAI-compatible server of the search base model (default: embedded)")
        g.add_argument("--search-model", metavar="NAME", help="model name on the search server")
        g.add_argument("--model-path", metavar="GGUF", help="embedded search model file")
    if chat:
        g.add_argument("--chat-base-url", metavar="URL", help="OpenAI-compatible server of the chat model")
        g.add_argument("--chat-model", metavar="NAME", help="chat model name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steerkit",
        description="Persona steering for LLM apps: precompute coherent example sets, chat, serve an OpenAI-compatible proxy.",
        epilog="Exit codes: 0 ok, 1 runtime/backend error, 2 usage/config error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"steerkit {__version__}")
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from steerkit.cli import cache_cmd, chat_cmd, demo, precompute, serve_cmd

    p = sub.add_parser("precompute", help="compute example sets for personas (resumable, idempotent)")
    _common(p)
    _models(p, chat=False)
    precompute.add_arguments(p)
    p.set_defaults(func=precompute.run)

    p = sub.add_parser("cache", help="list, inspect, delete, export and import cached example sets")
    _common(p)
    cache_cmd.add_subcommands(p, _common)

    p = sub.add_parser("chat", help="one steered answer in the terminal")
    _common(p)
    _models(p)
    chat_cmd.add_arguments(p)
    p.set_defaults(func=chat_cmd.run)

    p = sub.add_parser("serve", help="run the OpenAI-compatible steering proxy")
    _common(p)
    _models(p)
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default 1; server.workers)")
    p.add_argument("--store", metavar="URL", help="shared example-set store, redis://host:port/db (default: the disk cache)")
    p.set_defaults(func=serve_cmd.run)

    p = sub.add_parser("demo", help="the whole flow on the embedded model, in a few minutes")
    _common(p)
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)

    from steerkit.cli import eval_cmd, probe_cmd

    probe_cmd.register(sub, _common, _models)
    eval_cmd.register(sub, _common, _models)

    from steerkit.cli import pack_cmd

    pack_cmd.register(sub, _common, _models)

    p = sub.add_parser("config", help="show the effective configuration")
    _common(p)
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    cp = csub.add_parser("show", help="print the effective configuration, secrets masked")
    _common(cp)
    _models(cp)
    cp.add_argument("--json", action="store_true", help="JSON instead of TOML")
    cp.set_defaults(func=_config_show)

    _add_review(sub)
    return parser


def _add_review(sub: Any) -> None:
    try:
        from steerkit.cli import review
    except ImportError as e:  # the escalation extra is broken; keep every other command working
        p = sub.add_parser("review", help="review escalated labels (unavailable)")
        err = str(e)
        p.set_defaults(func=lambda args: _unavailable("review", err))
        return
    add = getattr(review, "add_review_parser", None)
    if add is not None:
        add(sub)
        rp = sub.choices.get("review")
        if rp is not None:
            try:
                _common(rp)
            except argparse.ArgumentError:
                pass  # the review parser defines these options itself
        return
    p = sub.add_parser("review", help="review escalated labels")
    _common(p)
    p.set_defaults(func=review.review_command)


def _unavailable(name: str, why: str) -> int:
    print(f"steerkit: error: the {name} command is unavailable: {why}", file=sys.stderr)
    return EXIT_RUNTIME


def load_settings(args: argparse.Namespace) -> Any:
    """Settings from the config file, env and this command's flags (flags win)."""
    from steerkit._config import Settings

    overrides: dict[str, Any] = {
        "cache_dir": getattr(args, "cache_dir", None),
        "store": getattr(args, "store", None),
        "packs_dirs": getattr(args, "packs_dir", None),
        "search_model": {
            "base_url": getattr(args, "search_base_url", None),
            "model": getattr(args, "search_model", None),
            "model_path": getattr(args, "model_path", None),
        },
        "chat_model": {
            "base_url": getattr(args, "chat_base_url", None),
            "model": getattr(args, "chat_model", None),
        },
        "server": {"host": getattr(args, "host", None), "port": getattr(args, "port", None),
                   "workers": getattr(args, "workers", None)},
    }
    extra = getattr(args, "search_overrides", None)
    if extra:
        overrides["search"] = extra
    steer = getattr(args, "steer_overrides", None)
    if steer:
        overrides["steer"] = steer
    return Settings.load(getattr(args, "config", None), overrides=overrides)


def _config_show(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.json:
        import json

        print(json.dumps(settings.masked(), indent=2, default=str))
    else:
        sys.stdout.write(settings.show())
    return EXIT_OK


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in ("httpx", "httpcore", "openai"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help, --version, or a usage error (argparse printed it)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    _setup_logging(verbose)
    try:
        return int(args.func(args) or EXIT_OK)
    except BrokenPipeError:  # stdout closed early (`steerkit cache ls | head`): stop quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print("steerkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SteerkitError as e:
        if verbose:
            logging.getLogger("steerkit").exception("error")
        print(f"steerkit: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UserError) else EXIT_RUNTIME
    except Exception as e:
        if verbose:
            logging.getLogger("steerkit").exception("internal error")
        print(f"steerkit: internal error: {type(e).__name__}: {_one_line(str(e))} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_RUNTIME


def _one_line(text: str) -> str:
    return " ".join(text.split())

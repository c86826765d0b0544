"""MkDocs hook: reference parts generated from the code at build time, so they cannot drift.

A page holding ``<!-- generated: cli -->`` gets every ``steerkit`` command's ``--help``; one
holding ``<!-- generated: settings -->`` gets a table per configuration section (TOML key,
environment variable, default, bounds, and the setting's docstring); ``<!-- generated: namespace
steerkit.x -->`` becomes that namespace's mkdocstrings block less the names the flat ``steerkit``
API exports (those are documented once, as ``steerkit.Name``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import types
import typing
from typing import Any

import annotated_types
import griffe
from pydantic import BaseModel, SecretStr

_NAMESPACE = re.compile(r"<!-- generated: namespace ([\w.]+)( with-flat)? -->")


def on_page_markdown(markdown: str, **_: Any) -> str:
    for marker, render in (("<!-- generated: cli -->", cli_reference), ("<!-- generated: settings -->", settings_reference)):
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return _NAMESPACE.sub(lambda m: namespace_reference(m.group(1), with_flat=bool(m.group(2))), markdown)


# --- a public namespace, less what the flat API documents -------------------------------------------


def flat_names() -> list[str]:
    import steerkit

    return [n for n in steerkit.__all__ if n != "__version__"]


def namespace_reference(name: str, *, with_flat: bool = False) -> str:
    """The namespace's block, its flat-API names filtered out; ``with_flat`` renders those names
    too, as ``steerkit.Name`` (a page whose namespace the flat API exports almost whole)."""
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None) or [  # no __all__: what the module defines, not imports
        n for n, v in vars(mod).items() if getattr(v, "__module__", name) == name
    ]
    shared = [n for n in flat_names() if n in exported]
    filters = ['"!^_"'] + ([f'"!^({"|".join(shared)})$"'] if shared else [])
    block = f"::: {name}\n    options:\n      filters: [{', '.join(filters)}]\n"
    if with_flat:
        block += "".join(f"\n::: steerkit.{n}\n" for n in shared)
    elif shared:
        links = ", ".join(f"[`{n}`][steerkit.{n}]" for n in shared)
        block += f"\nAlso in `{name}`, and documented as `steerkit.Name`: {links}.\n"
    return block


# --- the CLI ------------------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(words, parser)]
    seen: set[int] = set()
    for action in parser._actions:  # argparse keeps sub-commands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias names the same parser twice
                    seen.add(id(sub))
                    out += _commands(sub, (*words, name))
    return out


def cli_reference() -> str:
    from steerkit.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: fix it for the page
    try:
        parts = []
        for words, parser in _commands(build_parser(), ("steerkit",)):
            level = "#" * min(len(words) + 1, 4)
            parts.append(f"{level} `{' '.join(words)}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


# --- the configuration ----------------------------------------------------------------------------

_PACKAGE: list[griffe.Object] = []


def _docstring(cls: type, name: str) -> str:
    """The attribute's docstring (the string under it in the source), which Python does not keep."""
    if not _PACKAGE:
        _PACKAGE.append(griffe.load("steerkit", resolve_aliases=False))
    for klass in cls.__mro__:
        if klass.__module__.startswith("steerkit."):
            try:
                attr = _PACKAGE[0][f"{klass.__module__.removeprefix('steerkit.')}.{klass.__qualname__}.{name}"]
            except KeyError:
                continue
            if attr.docstring is not None:
                return " ".join(attr.docstring.value.split())
    return ""


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _type(args[0])
    if typing.get_origin(annotation) is not None:  # list[Path] and the like, without module paths
        return "`" + re.sub(r"\b[\w]+\.", "", str(annotation)) + "`"
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _bounds(metadata: list[Any]) -> str:
    out = []
    for m in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(m, annotated_types.BaseMetadata) and hasattr(m, attr):
                out.append(f"{sign} {getattr(m, attr):,}")
    return ", ".join(out)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr) or (isinstance(value, list) and value and isinstance(value[0], SecretStr)):
        return "(secret)"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _row(cls: type[BaseModel], instance: BaseModel, section: str | None, name: str) -> str:
    field = cls.model_fields[name]
    key = f"`{name}`"
    env = "STEERKIT_" + (f"{section}__{name}" if section else name).upper()
    if name == "cache_dir":
        default = "`$STEERKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/steerkit`, else `~/.cache/steerkit`"
    else:
        default = _default(getattr(instance, name))
    doc = _docstring(cls, name).replace("|", "\\|")
    return f"| {key} | `{env}` | {_type(field.annotation)} | {default} | {_bounds(field.metadata)} | {doc} |"


_HEAD = "| setting | environment variable | type | default | bounds | what it does |\n| --- | --- | --- | --- | --- | --- |"


def settings_reference() -> str:
    from steerkit import Settings

    settings = Settings()
    top = [n for n, f in Settings.model_fields.items() if not f.exclude and not isinstance(getattr(settings, n), BaseModel)]
    parts = ["### Top level\n", _HEAD, *(_row(Settings, settings, None, n) for n in top)]
    for section in Settings.model_fields:
        value = getattr(settings, section)
        if not isinstance(value, BaseModel):
            continue
        cls = type(value)
        doc = " ".join((cls.__doc__ or "").split())
        parts += [f"\n### `[{section}]`\n", doc + "\n" if doc else "", _HEAD]
        for name in cls.model_fields:
            if isinstance(getattr(value, name), BaseModel) or (section == "steer" and name == "search"):
                continue  # a nested section: [steer]'s search is the [search] section unless the file sets it
            parts.append(_row(cls, value, section, name))
    return "\n".join(parts) + "\n"

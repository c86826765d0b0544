"""Code blocks of markdown documents, shared by the README's tests (test_docs) and the site's
(test_site): which blocks there are, how their imports and ``steerkit`` command lines are read."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(paths: Iterable[Path], lang: str) -> list[tuple[str, int, str]]:
    """(path relative to the repository, line of the fence, code) of every ```lang block."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                out.append((path.relative_to(ROOT).as_posix(), text[: m.start()].count("\n") + 1, m.group(2)))
    return out


def run_imports(source: str, where: str) -> int:
    """Execute every import statement of ``source`` (at any depth); returns how many ran."""
    tree = ast.parse(source)
    n = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            code = compile(ast.Module(body=[node], type_ignores=[]), where, "exec")
            exec(code, {})  # noqa: S102 - the documentation's own import lines
            n += 1
    return n


def needs_a_server(code: str) -> bool:
    """A python block that cannot run as written here: it names a URL, awaits, or elides (``...``)."""
    return "http" in code or "await" in code or "..." in code


def run_block(code: str, where: str) -> dict:
    """Run a self-contained python block; close any store it opened (its namespace is returned)."""
    ns: dict = {}
    exec(compile(code, where, "exec"), ns)  # noqa: S102 - the documentation's own code
    for v in ns.values():
        close = getattr(getattr(v, "store", None), "close", None)
        if callable(close):
            close()
    return ns


def command_lines(code: str) -> list[list[str]]:
    """The words of every command of a bash block (``&&`` split, comments and VAR= prefixes dropped)."""
    cmds = []
    for raw in code.splitlines():
        line = raw.split("  #", 1)[0].strip()
        for part in line.split("&&"):
            part = part.strip()
            words = shlex.split(part) if part else []
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value prefixes
            if words:
                cmds.append(words)
    return cmds


def check_bash_blocks(blocks: Iterable[tuple[str, int, str]]) -> int:
    """Every ``steerkit`` command line of these bash blocks parses with the real CLI parser and every
    extra named in a ``pip install`` exists in pyproject.toml; returns how many commands parsed."""
    from steerkit.cli import build_parser

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    parser = build_parser()
    seen = 0
    for doc, line, code in blocks:
        for words in command_lines(code):
            if words[0] == "steerkit":
                try:
                    parser.parse_args(words[1:])
                except SystemExit as e:
                    raise AssertionError(f"{doc}:{line}: `{' '.join(words)}` does not parse (exit {e.code})") from None
                seen += 1
            elif words[:2] == ["pip", "install"]:
                for w in words:
                    m = re.search(r"\[([\w,-]+)\]", w)
                    if m:
                        missing = set(m.group(1).split(",")) - extras
                        assert not missing, f"{doc}:{line}: unknown extra(s) {missing}"
    return seen

"""The layering the architecture promises, checked on the source (every import, lazy ones too;
``if TYPE_CHECKING:`` blocks excepted).

- one caller of `steerkit.icm.search` in the product: the compute service (`steerkit._compute`);
  the paper's evaluation protocol (`steerkit.evaluation` and its private parts) runs its own
  searches on training folds, with no cache or steerer, as the architecture allows;
- no import cycle between steerkit's concepts (a module or a subpackage is one concept), nor
  between the modules of one subpackage;
- the middleware knows nothing of HTTP, the search knows nothing of HTTP, caches or chat messages;
- the CLI and the proxy do not run searches themselves.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "steerkit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every import outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    me = _module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out.append((base, [a.name for a in node.names]))
    return out


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py") if "personas" not in p.parts}


def _concept(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "steerkit" or len(parts) == 1:
        return None  # outside steerkit, or the public facade (steerkit/__init__) that imports everything
    return parts[1]


def _assert_no_cycle(graph: dict[str, set[str]]) -> None:
    """A depth-first search for a back edge: fails naming the first import cycle it meets."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_only_the_compute_service_calls_the_search() -> None:
    callers = set()
    for name, path in _sources().items():
        if name.startswith("steerkit.icm"):
            continue
        for mod, names in _imports(path):
            if (mod in ("steerkit.icm", "steerkit.icm.search") and "search" in names) or mod == "steerkit.icm.search":
                callers.add(name)
        text = path.read_text(encoding="utf-8")
        if "icm.search(" in text.replace("steerkit.icm.search(pool, backend, config)", ""):
            callers.add(name)
    evaluation = {c for c in callers if c == "steerkit.evaluation" or c.startswith("steerkit.evaluation.")}
    assert callers - evaluation == {"steerkit._compute"}


def test_no_import_cycle_between_concepts() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in _sources().items():
        src = _concept(name)
        if src is None:
            continue
        for mod, names in _imports(path):
            targets = [mod] + [f"{mod}.{n}" for n in names if mod == "steerkit"]
            for t in targets:
                dst = _concept(t)
                if dst is not None and dst != src and ((PKG / dst).is_dir() or (PKG / f"{dst}.py").exists()):
                    graph[src].add(dst)
    _assert_no_cycle(graph)
    assert graph["_middleware"] and graph["escalation"]  # the graph is not empty by mistake


def test_no_import_cycle_between_the_modules_of_a_concept() -> None:
    """Inside a subpackage too (`cli`'s commands, `evaluation`'s tasks): two modules that need the
    same piece import it from a third, never each other. A package's ``__init__`` (its facade,
    which may import its modules lazily) is left out."""
    sources = _sources()
    packages = {n for n, p in sources.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in sources.items():
        if name in packages:
            continue
        for mod, names in _imports(path):
            for t in (mod, *(f"{mod}.{n}" for n in names)):
                if t in sources and t != name and t not in packages:
                    graph[name].add(t)
    _assert_no_cycle(graph)
    assert "steerkit.cli._answers" in graph["steerkit.cli.demo"]  # the graph holds a subpackage's own imports


def _imported_modules(prefix: str) -> set[str]:
    out = set()
    for name, path in _sources().items():
        if name == prefix or name.startswith(prefix + "."):
            out |= {mod for mod, _ in _imports(path)}
    return out


def test_the_middleware_knows_nothing_of_http() -> None:
    mods = _imported_modules("steerkit._middleware")
    assert "steerkit.extract" in mods  # the check reads real imports
    http = {"httpx", "starlette", "openai", "uvicorn", "steerkit._server", "steerkit._wire", "steerkit.adapters"}
    assert not {m for m in mods if m.split(".")[0] in http or m in http or m.startswith("starlette")}


def test_the_search_knows_nothing_of_http_caches_or_chat() -> None:
    mods = _imported_modules("steerkit.icm")
    bad = {"httpx", "starlette", "openai", "steerkit._store", "steerkit._middleware", "steerkit._server", "steerkit._wire",
           "steerkit._compute", "steerkit._inject", "steerkit.extract"}
    assert "steerkit.models" in mods and not (mods & bad)


def test_the_cli_and_the_proxy_do_not_search_themselves() -> None:
    for prefix in ("steerkit.cli", "steerkit._server"):
        mods = _imported_modules(prefix)
        assert not {m for m in mods if m.startswith("steerkit.icm")}, prefix


def test_a_command_starts_without_the_heavy_packages() -> None:
    """``steerkit --version`` (and so every command's start: the package, the parser with every
    subcommand's options) imports no model client, llama.cpp, numpy or server: each costs a
    command's start up to a second (openai alone 0.8 s), and most commands use none of them.
    Checked in a fresh interpreter by the start-up benchmark's own probe (benchmarks/cli_startup.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_startup", PKG.parent / "benchmarks" / "cli_startup.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert {"openai", "numpy", "xllamacpp", "starlette"} <= set(bench.HEAVY)
    assert bench.heavy_modules() == []

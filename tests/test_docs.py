"""The documentation works as written: README code, docstring examples, import lines in docstrings.

- every ```python block of README.md and ARCHITECTURE.md compiles (top-level ``await`` allowed)
  and every import statement in it runs and finds the names it imports;
- every ``steerkit ...`` command line in a ```bash block parses with the real CLI parser, and
  every extra named in a ``pip install -e ".[...]"`` exists in pyproject.toml;
- every doctest (``>>>``) in a steerkit module passes;
- every ``from steerkit… import …`` / ``import steerkit…`` line inside a module docstring runs.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import re
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from doc_blocks import (
    ROOT,
    check_bash_blocks,
    fenced_blocks,
    needs_a_server,
    run_block,
    run_imports,
)

import steerkit

DOCS = [p for p in (ROOT / "README.md", ROOT / "ARCHITECTURE.md") if p.exists()]
#: Modules whose import needs something optional that a test machine may lack.
OPTIONAL = {"steerkit.backends.embedded"}


def blocks(lang: str) -> list[tuple[str, int, str]]:
    return fenced_blocks(DOCS, lang)


def steerkit_modules() -> list[ModuleType]:
    mods = [steerkit]
    for info in pkgutil.walk_packages(steerkit.__path__, "steerkit."):
        if info.name in OPTIONAL or info.name.startswith("steerkit.personas"):
            continue
        mods.append(importlib.import_module(info.name))
    return mods


@pytest.mark.parametrize(("doc", "line", "code"), blocks("python"), ids=lambda v: str(v)[:30] if isinstance(v, str) else str(v))
def test_python_blocks_compile_and_their_imports_work(doc: str, line: int, code: str) -> None:
    where = f"{doc}:{line}"
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    run_imports(code, where)


def test_self_contained_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that need no server (no URL, no ``await``, no ``...``) run as written, in a clean home."""
    for k in list(__import__("os").environ):
        if k.startswith(("STEERKIT_", "XDG_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ran = 0
    for doc, line, code in blocks("python"):
        if needs_a_server(code):
            continue
        run_block(code, f"{doc}:{line}")
        ran += 1
    assert ran >= 2


def test_the_readme_has_python_and_bash_blocks() -> None:
    assert len(blocks("python")) >= 3 and len(blocks("bash")) >= 3


def test_bash_blocks_name_real_commands_flags_and_extras() -> None:
    assert check_bash_blocks(blocks("bash")) >= 5


@pytest.mark.parametrize("module", steerkit_modules(), ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in finder.find(module, module.__name__):
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} docstring example(s) of {module.__name__} failed (see the output above)"
    # import lines shown in the module docstring (indented code, not doctest) must work too
    doc = module.__doc__ or ""
    lines = [ln.strip() for ln in doc.splitlines()
             if re.match(r"\s*(from steerkit[\w.]* import [\w, ]+|import steerkit[\w.]*)\s*$", ln)]
    if lines:
        run_imports("\n".join(lines), f"{module.__name__} docstring")


def test_doctests_exist() -> None:
    """The flat public API is shown by a runnable example (so the doctest test is not vacuous)."""
    assert doctest.DocTestFinder().find(steerkit)[0].examples


def test_examples_compile_and_their_imports_work() -> None:
    files = sorted((ROOT / "examples").glob("*.py"))
    assert files
    for f in files:
        code = f.read_text(encoding="utf-8")
        compile(code, str(f), "exec")
        assert run_imports(code, str(f)) > 0


# --- every README command as written, on the embedded model (bounded) -----------------------------

#: README lines the run below does not execute, and why (every other line runs). A new README
#: command that needs none of these runs automatically.
NOT_RUN = {
    "python3 -m venv": "set-up: makes the environment this test runs in",
    "pip install": "set-up: installs what this test runs with",
    "./scripts/test.sh": "the test suite itself",
    ". .venv/bin/activate": "set-up: this test runs in the activated environment",
    "gpu-box": "a remote model server", "vllm-": "a remote model server", "ray://": "a remote Ray cluster",
    "redis://": "a Redis server", "--workers": "N worker processes each loading the model",
    "http://gpu:": "a remote model server", "steerkit eval": "a dataset downloaded by the user",
}


def readme_commands() -> list[list[str]]:
    out = []
    for doc, _line, code in blocks("bash"):
        if doc != "README.md":
            continue
        for raw in code.splitlines():
            line = raw.split("  #", 1)[0].strip()
            if line.startswith("#") or any(k in line for k in ("gpu-box", "vllm-", "ray://", "redis://", "--workers", "http://gpu:")):
                continue
            out += [p.strip() for p in line.split("&&") if p.strip() and not any(k in p for k in NOT_RUN)]
    return out


def test_the_readme_commands_that_run_are_the_first_hour_path() -> None:
    cmds = " ".join(readme_commands())
    for must in ("steerkit demo", "steerkit precompute", "steerkit cache ls", "steerkit cache show", "steerkit cache export",
                 "steerkit chat", "steerkit config show", "steerkit serve"):
        assert must in cmds, f"{must} is no longer run by test_readme_commands_run_as_written"


def _words(command: str) -> tuple[dict[str, str], list[str]]:
    """(``VAR=value`` prefixes, the command's words)."""
    words = shlex.split(command)
    extra = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        k, v = words.pop(0).split("=", 1)
        extra[k] = v
    return extra, words


def readme_chains() -> list[list[str]]:
    """The README's commands (`readme_commands`, in order) as chains that need nothing of each other,
    so each runs as a test of its own (in its own clean home, on any worker). A command that reads
    what an earlier one stored joins that one's chain, as it follows it for a user: ``steerkit
    cache …`` the ``steerkit precompute`` before it (the set it lists, shows, exports), ``steerkit
    probe`` on the default model the ``steerkit demo`` (whose probe verdict scored the same prompts,
    cached: the probe reuses them). Every other command is a chain of its own."""
    chains: list[list[str]] = []

    def chain_with(kind: str) -> list[str] | None:
        return next((chain for chain in reversed(chains) if any(_words(c)[1][:2] == ["steerkit", kind] for c in chain)), None)

    for cmd in readme_commands():
        _, words = _words(cmd)
        follows = None
        if words[:2] == ["steerkit", "cache"]:
            follows = chain_with("precompute")
        elif words[:2] == ["steerkit", "probe"] and "--model-path" not in words:
            follows = chain_with("demo")
        if follows is not None:
            follows.append(cmd)
        else:
            chains.append([cmd])
    return chains


def _chain_id(chain: list[str]) -> str:
    _, words = _words(chain[0])
    return re.sub(r"\W+", "-", " ".join(words[1:] if words[0] == "steerkit" else words))[:40].strip("-")


def test_every_readme_command_is_in_one_chain() -> None:
    chains = readme_chains()
    assert sorted(c for chain in chains for c in chain) == sorted(readme_commands())  # none dropped, none twice
    cache_chain = next(chain for chain in chains if any("steerkit cache ls" in c for c in chain))
    assert "steerkit precompute" in cache_chain[0]  # the cache commands see what precompute stored
    if "steerkit probe" in readme_commands():  # it reuses the demo's scored prompts
        assert any(chain[0] == "steerkit demo" and "steerkit probe" in chain for chain in chains)
    assert len({_chain_id(chain) for chain in chains}) == len(chains) and len(readme_commands()) >= 8


def _readme_env(home: Path) -> dict[str, str]:
    """A clean home on the embedded models, bounded: an 8-item pool and a 30 s any-time budget."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEERKIT_", "XDG_"))}
    env.update(HOME=str(home), STEERKIT_CACHE_DIR=str(home / "cache"), STEERKIT_STEER__MAX_POOL_ITEMS="8",
               STEERKIT_STEER__WAIT_TIMEOUT_S="30", STEERKIT_SEARCH_MODEL__N_THREADS="1")
    return env


def _run_serve(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    """The proxy is started, checked on /healthz (its upstream named) and stopped (exit 0)."""
    import socket
    import subprocess
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(cmd, cwd=cwd, env={**env, "STEERKIT_SERVER__PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(240):
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        assert body is not None, "steerkit serve did not come up"
        assert body["upstream"]["url"] == "http://127.0.0.1:8000/v1"  # checked and named at start-up
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def _chain_params() -> list[Any]:
    """The chains as parameters; the demo's shares the session's tiny demo (and so its worker)."""
    return [pytest.param(chain, id=_chain_id(chain),
                         marks=[pytest.mark.xdist_group("demo")] if chain[0] == "steerkit demo" else [])
            for chain in readme_chains()]


@pytest.mark.llama
@pytest.mark.timeout(2700)
@pytest.mark.parametrize("chain", _chain_params())
def test_readme_commands_run_as_written(chain: list[str], tmp_path: Path, request: pytest.FixtureRequest,
                                        record_property: Any) -> None:
    """Each README command line that needs no remote server runs as written, in a clean home, on the
    embedded models; bounded by an 8-item pool (``STEERKIT_STEER__MAX_POOL_ITEMS``) and a 30 s
    any-time budget for chat, so each takes a minute or two. One chain of `readme_chains` per test:
    independent commands run on different workers under pytest-xdist. The proxy is started,
    checked on /healthz (its upstream named) and stopped. The demo's home starts with the scored
    prompts of the session's tiny demo (tests/conftest.py, which computed the probe verdict of the
    same model): its verdict, and the probe's, are read from that cache instead of computed again."""
    import subprocess
    import sys
    import time

    env = _readme_env(tmp_path)
    if chain[0] == "steerkit demo":
        import shutil

        shutil.copytree(Path(request.getfixturevalue("tiny_demo")["env"]["STEERKIT_CACHE_DIR"]) / "eval",
                        tmp_path / "cache" / "eval")
    bin_dir = Path(sys.executable).parent
    for line in chain:
        extra, words = _words(line)
        assert words, line
        cmd = [str(bin_dir / words[0]) if (bin_dir / words[0]).exists() else words[0], *words[1:]]
        t0 = time.perf_counter()
        if words[:2] == ["steerkit", "serve"]:
            _run_serve(cmd, tmp_path, {**env, **extra})
        else:
            res = subprocess.run(cmd, cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=1500,
                                 check=False)
            assert res.returncode == 0, f"`{line}` exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        record_property(line, round(time.perf_counter() - t0, 1))  # seconds, in --junitxml's report


@pytest.mark.llama
def test_the_wrap_openai_example_runs(tmp_path: Path) -> None:
    """examples/wrap_openai.py as written, on the packaged chat model."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(ROOT / "examples" / "wrap_openai.py")], cwd=tmp_path, env=_readme_env(tmp_path),
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    assert "<|im_" not in res.stdout  # an instruction-tuned chat model: no chat-template tokens in answers

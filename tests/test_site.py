"""The documentation site builds strictly and its code works as written, like the README's.

- ``mkdocs build --strict`` passes: a broken link, a page missing from the nav, an API reference to
  a name that no longer exists or a docstring mkdocstrings cannot read fails the build;
- every name of the flat API (``steerkit.__all__``) is documented on the site;
- every ```python block of ``docs/`` compiles and its imports run, and the blocks that need no
  server run as written (test_docs' rules, shared through ``doc_blocks``);
- every ``steerkit`` command line parses, every extra named in ``pip install`` exists, and every
  command line that would run is one the README's command test already runs (so the slow ones,
  ``steerkit demo`` and ``precompute``, run once);
- the environment variables of the generated configuration reference name real settings.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from doc_blocks import (
    ROOT,
    check_bash_blocks,
    fenced_blocks,
    needs_a_server,
    run_block,
    run_imports,
)
from test_docs import NOT_RUN, readme_commands

import steerkit
from steerkit import Settings
from steerkit.errors import ConfigError

DOCS_DIR = ROOT / "docs"
PAGES = sorted(DOCS_DIR.rglob("*.md"))


def site_blocks(lang: str) -> list[tuple[str, int, str]]:
    return fenced_blocks(PAGES, lang)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict`` (what CI and a reader's build run)."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail('mkdocs is not installed: pip install -e ".[docs]" (scripts/test.sh does)')
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=900, check=False)
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith(("WARNING", "ERROR"))]
    assert res.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or res.stderr.splitlines()[-30:])
    return out


def inventory(site: Path) -> set[str]:
    """The object names of the site's ``objects.inv`` (Sphinx inventory v2: 4 header lines, then zlib)."""
    raw = (site / "objects.inv").read_bytes()
    body = raw.split(b"\n", 4)[4]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines() if line}


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in PAGES:
        rel = page.relative_to(DOCS_DIR).with_suffix("")
        if rel.parts[0] == "hooks":
            continue
        folder = rel.parent if rel.name == "index" else rel  # directory URLs: a/b.md -> a/b/index.html
        assert (site / folder / "index.html").is_file(), f"{page} was not built"


def test_every_public_name_has_an_api_entry(site: Path) -> None:
    names = inventory(site)
    missing = [n for n in steerkit.__all__ if n != "__version__" and f"steerkit.{n}" not in names]
    assert not missing, f"add these to a page under docs/reference/api/: {missing}"
    for ns in ("icm", "evaluation", "importers", "packs", "models", "errors", "backends", "adapters", "escalation", "testing"):
        assert f"steerkit.{ns}" in names, f"the public namespace steerkit.{ns} has no API page"


def test_the_generated_reference_pages_are_there(site: Path) -> None:
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("precompute", "cache", "chat", "serve", "demo", "probe", "eval", "config", "review"):
        assert f'id="steerkit-{command}"' in cli, f"steerkit {command} is missing from the CLI reference"
    assert "--wait-timeout" in cli and "<!-- generated" not in cli
    config = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "STEERKIT_SERVER__HEADER_TIMEOUT" in config and "<!-- generated" not in config


@pytest.mark.parametrize(("doc", "line", "code"), site_blocks("python"), ids=lambda v: str(v)[:40] if isinstance(v, str) else str(v))
def test_python_blocks_compile_and_their_imports_work(doc: str, line: int, code: str) -> None:
    where = f"{doc}:{line}"
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert run_imports(code, where) > 0, f"{where}: a python example that imports nothing from steerkit"


def test_self_contained_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that need no server (no URL, no ``await``, no ``...``) run as written, in a clean home."""
    for k in list(os.environ):
        if k.startswith(("STEERKIT_", "XDG_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ran = [f"{doc}:{line}" for doc, line, code in site_blocks("python") if not needs_a_server(code)]
    for doc, line, code in site_blocks("python"):
        if not needs_a_server(code):
            run_block(code, f"{doc}:{line}")
    assert len(ran) >= 3, ran


def test_bash_blocks_name_real_commands_flags_and_extras() -> None:
    assert check_bash_blocks(site_blocks("bash")) >= 10


def site_commands() -> list[tuple[str, str]]:
    """(where, command) of every site command line that the README's rules would run."""
    out = []
    for doc, line, code in site_blocks("bash"):
        for raw in code.splitlines():
            cmd = raw.split("  #", 1)[0].strip()
            if cmd.startswith("#") or any(k in cmd for k in ("gpu-box", "vllm-", "ray://", "redis://", "--workers", "http://gpu:")):
                continue
            out += [(f"{doc}:{line}", p.strip()) for p in cmd.split("&&") if p.strip() and not any(k in p for k in NOT_RUN)]
    return out


def test_every_site_command_runs_in_the_readme_test() -> None:
    """The site shows no command that no test runs: each one is run as written by
    test_docs.test_readme_commands_run_as_written (which runs the README's). A site command that the
    README lacks must be run here, or named in test_docs.NOT_RUN with the reason it cannot run."""
    tested = set(readme_commands())
    commands = site_commands()
    assert any(c == "steerkit demo" for _, c in commands)  # the getting-started command is seen
    untested = [f"{where}: {c}" for where, c in commands if c not in tested]
    assert not untested, "site commands that no test runs:\n" + "\n".join(untested)


def _hook_module():
    spec = importlib.util.spec_from_file_location("site_hooks", DOCS_DIR / "hooks" / "generated.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_configuration_reference_names_real_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    table = _hook_module().settings_reference()
    names = re.findall(r"\| `[\w]+` \| `(STEERKIT_[A-Z_]+)` \|", table)
    assert len(names) >= 50 and "STEERKIT_STEER__MISS_POLICY" in names
    for var in names:
        try:
            settings = Settings.load(env={var: "1"})
        except ConfigError as e:  # a bad value for a real setting, named by its path
            path = var.removeprefix("STEERKIT_").lower().replace("__", ".")
            assert path in str(e), f"{var}: {e}"
        else:
            assert var not in settings.ignored_env, f"{var} names no setting"

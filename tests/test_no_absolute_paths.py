"""No test or benchmark names a path that exists only on one machine (a home folder, a mount, a
scratch folder): data outside the repository is found relative to it or through an environment
variable (`tests/shared_data.py`), temporary files come from ``tmp_path`` / `tempfile`. URLs,
``/dev/null``-style devices and ``/proc`` are not machine-specific and are allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "benchmarks")
TEXT = {".py", ".json", ".jsonl", ".toml", ".md", ".txt", ".csv", ".yaml", ".yml", ".cfg", ".ini", ".sh"}
ROOTS = ("work", "home", "tmp", "root", "Users", "mnt", "media", "data", "opt", "srv", "scratch", "var", "private")
# a root folder at the start of a path: not inside a URL (``http://host/tmp/x``), a relative path
# (``cache/tmp/``) or a joined one (``f"{base}/tmp/"``)
ABSOLUTE = re.compile(r"(?<![\w:/.\-}~$])/(?:" + "|".join(ROOTS) + r")/[\w.\-]+")
WINDOWS = re.compile(r"(?<![\w])[A-Za-z]:\\\\?[\w.\-]+")


def absolute_paths(text: str) -> list[str]:
    """The machine-specific absolute paths named in ``text``."""
    return [m.group(0) for m in ABSOLUTE.finditer(text)] + [m.group(0) for m in WINDOWS.finditer(text)]


def scanned_files() -> list[Path]:
    out = []
    for top in SCANNED:
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and p.suffix in TEXT and "__pycache__" not in p.parts and p.stat().st_size < 5_000_000:
                out.append(p)
    return out


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('OQA = Path("/' + 'work/shared/data/opinionqa")', ["/" + "work/shared"]),
        ("cache_dir='/" + "home/alice/.cache/steerkit'", ["/" + "home/alice"]),
        ('open("/' + 'tmp/steerkit-test.json")', ["/" + "tmp/steerkit-test.json"]),
        ("data = r'C:" + "\\" + "Users'", ["C:" + "\\" + "Users"]),
        ('base = "http://127.0.0.1:8000/' + 'tmp/v1"', []),
        ('Path("/' + 'dev/null"), open("/' + 'dev/zero"), Path(f"/' + 'proc/{pid}/stat")', []),
        ('tmp_path / "work" / "x", f"{tmp_path}/' + 'tmp/x", "cache/' + 'tmp/y"', []),
        ('post("/steerkit/answers"), "/v1/chat/completions"', []),
    ],
)
def test_the_check_finds_machine_paths_and_nothing_else(text: str, found: list[str]) -> None:
    assert absolute_paths(text) == found


def test_no_test_or_benchmark_names_an_absolute_path() -> None:
    files = scanned_files()
    assert any(p.name == "test_packs.py" for p in files) and any(p.parent.name == "benchmarks" for p in files)
    offenders = {
        str(p.relative_to(ROOT)): hits for p in files if (hits := absolute_paths(p.read_text(encoding="utf-8", errors="replace")))
    }
    assert not offenders, (
        f"absolute paths that exist only on one machine: {offenders}; find data relative to the repository or "
        "through an environment variable (tests/shared_data.py), temporary files under tmp_path"
    )

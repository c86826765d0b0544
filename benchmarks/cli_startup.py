"""How long a ``steerkit`` command takes to start, against the bare interpreter. Prints JSON.

    python benchmarks/cli_startup.py [--runs 15]
    python benchmarks/cli_startup.py --quick   # 3 runs each (CI)

Every command a user types pays Python's start plus the imports of ``steerkit`` and its command
line before any work; the tests and CI start a few hundred. Each case runs ``--runs`` times in a
fresh process, interleaved with the others (so load from other processes hits every case alike);
the figures are the median wall and CPU seconds and the ratio of the median wall time to that of
``python -c pass`` measured in the same run. ``heavy_modules`` says which of `HEAVY`, the
packages that a command should import only when it uses them (openai, numpy, llama.cpp,
Starlette…), ``steerkit --version`` imported (its parser holds every subcommand's options).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HEAVY = ("openai", "numpy", "xllamacpp", "starlette", "uvicorn", "matplotlib", "redis", "ray", "litellm")
"""Packages a command imports only when it uses them (tests/test_layering.py checks the start has none)."""

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import steerkit": [sys.executable, "-c", "import steerkit"],
    "steerkit --version": [sys.executable, "-m", "steerkit.cli", "--version"],
    "steerkit --help": [sys.executable, "-m", "steerkit.cli", "--help"],
    "steerkit probe --help": [sys.executable, "-m", "steerkit.cli", "probe", "--help"],
    "steerkit eval --help": [sys.executable, "-m", "steerkit.cli", "eval", "--help"],
}


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``cmd`` (the child's user + system time)."""
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def heavy_modules() -> list[str]:
    """Which `HEAVY` packages ``steerkit --version``'s process had imported when it exited."""
    code = ("import sys, runpy; sys.argv = ['steerkit', '--version']\n"
            "try:\n    runpy.run_module('steerkit.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1].replace("'", '"'))


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 runs of each case (CI)")
    args = ap.parse_args(argv)
    runs = 3 if args.quick else args.runs
    load = round(os.getloadavg()[0], 2)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for name, cmd in CASES.items():  # warm the file cache and the bytecode once
        _run(cmd)
    for _ in range(runs):
        for name, cmd in CASES.items():
            samples[name].append(_run(cmd))
    base = statistics.median(w for w, _ in samples["python -c pass"])
    out: dict[str, object] = {
        "benchmark": "cli_startup",
        "quick": args.quick,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": load,
        "runs": runs,
        "cases": {
            name: {"wall_s": round(statistics.median(w for w, _ in s), 3),
                   "cpu_s": round(statistics.median(c for _, c in s), 3),
                   "wall_vs_bare_python": round(statistics.median(w for w, _ in s) / base, 1)}
            for name, s in samples.items()
        },
        "heavy_modules": heavy_modules(),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

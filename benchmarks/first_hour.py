"""A new user's first hour, timed: every README command that needs no remote server, run as
written, in order, in a clean cache and configuration, one at a time. Prints JSON: each command's
wall seconds, exit status and the load average when it ended, and the path's total.

    python benchmarks/first_hour.py            # the README path on the embedded models (no server): ~10-15 min on 2 cores
    python benchmarks/first_hour.py --setup    # first the README's first set-up command (venv, pip install, demo) in a fresh clone
    python benchmarks/first_hour.py --suite    # also the second set-up command: the whole test suite (20-30 min on 2 cores)
    python benchmarks/first_hour.py --quick    # seconds (CI): a *stub* model server, 8-item pools, embedded-only commands skipped

The README's set-up time, its first-hour times (``precompute --persona democrat``, the cold
``chat``, the probes) and the suite's time are these figures. What runs: the lines of the README's
``bash`` blocks (comments dropped, ``A && B`` as two commands), then ``examples/wrap_openai.py``;
not run: set-up lines (unless ``--setup``), lines that name a remote server, Redis, Ray or N
workers, and ``steerkit eval`` (it needs a downloaded dataset). ``steerkit serve`` is timed to its
first ``/healthz`` answer, then stopped.

``--setup`` clones this checkout's HEAD into a temporary folder and runs the set-up command there
with ``bash`` (pip's download cache is left as it is: warm when you have installed before); the
path then runs with that clone's fresh environment. ``--quick`` points the search and chat models at
the stub OpenAI-compatible server of ``tests/services.py`` (hashed probabilities, no model), caps
every pool at 8 items and skips what only runs on the embedded model (``demo``, ``--model-path``,
the example): it checks that the path still runs, not how long it takes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _loadgen import free_port, machine, stop

ROOT = Path(__file__).resolve().parents[1]

#: README lines not run on the path, and why.
NOT_RUN = {
    "python3 -m venv": "set-up (--setup runs it)",
    "pip install": "set-up (--setup runs it)",
    "./scripts/test.sh": "the test suite (--suite runs it)",
    ". .venv/bin/activate": "set-up (--setup runs it)",
    "gpu-box": "a remote model server", "vllm-": "a remote model server", "http://gpu:": "a remote model server",
    "ray://": "a Ray cluster", "--ray": "a Ray instance", "redis://": "a Redis server",
    "--workers": "N worker processes each loading the model", "steerkit eval": "a dataset the user downloads",
}
#: What only runs on the embedded model (skipped by --quick).
EMBEDDED_ONLY = {"steerkit demo": "always the embedded models", "--model-path": "an embedded model file",
                 "examples/wrap_openai.py": "the embedded models"}
EXAMPLE = "python examples/wrap_openai.py"


def readme_blocks(readme: Path) -> list[str]:
    """The lines of the README's ``bash`` blocks, comments dropped."""
    lines, inside = [], False
    for raw in readme.read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            inside = raw.strip() == "```bash"
            continue
        if inside:
            line = raw.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def setup_commands(readme: Path) -> list[str]:
    """The README's set-up commands, whole: the lines that make a virtual environment."""
    return [line for line in readme_blocks(readme) if line.startswith("python3 -m venv")]


def path_commands(readme: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(the commands of the path, in order; the parts not run and why)."""
    run, skipped = [], []
    for line in readme_blocks(readme):
        for part in (p.strip() for p in line.split("&&")):
            why = next((w for k, w in NOT_RUN.items() if k in part), None)
            if why is None and any(k in line for k in ("gpu-box", "vllm-", "ray://", "redis://", "--workers", "http://gpu:")):
                why = "its line needs a remote service"
            if why:
                skipped.append({"command": part, "why": why})
            elif part:
                run.append(part)
    return [*run, EXAMPLE], skipped


def _split_env(command: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    return env, words


def _healthy(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    import httpx

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5, trust_env=False)  # any answer: it serves
            return True
        time.sleep(0.2)
    return False


def run_command(command: str, cwd: Path, env: dict[str, str], bin_dir: Path, timeout: float) -> dict[str, Any]:
    """Run one README command as written (``VAR=value`` prefixes as environment); its figures."""
    extra, words = _split_env(command)
    exe = bin_dir / words[0]
    argv = [str(exe) if exe.exists() else words[0], *words[1:]]
    if words[0] == "python":
        argv[0] = str(bin_dir / "python") if (bin_dir / "python").exists() else sys.executable
        argv[1:] = [str(ROOT / a) if a.endswith(".py") and (ROOT / a).exists() else a for a in argv[1:]]
    full_env = {**env, **extra}
    t0 = time.perf_counter()
    if words[:2] == ["steerkit", "serve"]:  # timed to a healthy /healthz, then stopped
        port = free_port()
        proc = subprocess.Popen(argv, cwd=cwd, env={**full_env, "STEERKIT_SERVER__PORT": str(port)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ok = _healthy(port, proc, timeout)
            seconds = time.perf_counter() - t0
        finally:
            stop(proc)
        err = proc.stderr.read() if proc.stderr and not ok else ""
        return {"command": command, "seconds": round(seconds, 1), "exit": 0 if ok else 1, "note": "to its first /healthz answer",
                **({"stderr_tail": err[-1500:]} if err else {})}
    try:
        res = subprocess.run(argv, check=False, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
        code, err = res.returncode, res.stderr
    except subprocess.TimeoutExpired:
        code, err = 124, f"timed out after {timeout:.0f} s"
    out: dict[str, Any] = {"command": command, "seconds": round(time.perf_counter() - t0, 1), "exit": code}
    if code:
        out["stderr_tail"] = err[-1500:]
    return out


def run_shell(command: str, cwd: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """A set-up command, whole, as a user types it (``bash -c``)."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run(["bash", "-c", command], check=False, cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=timeout)
        code, err = res.returncode, res.stderr + res.stdout
    except subprocess.TimeoutExpired:
        code, err = 124, f"timed out after {timeout:.0f} s"
    out: dict[str, Any] = {"command": command, "seconds": round(time.perf_counter() - t0, 1), "exit": code,
                           "load_avg_1m": round(os.getloadavg()[0], 2)}
    if code:
        out["output_tail"] = err[-1500:]
    return out


@contextlib.contextmanager
def stub_models(tmp: Path) -> Iterator[dict[str, str]]:
    """The quick mode's environment: search and chat on the stub server of ``tests/services.py``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from services import stub_openai

    with stub_openai(tmp / "stub") as url:
        yield {"STEERKIT_SEARCH_MODEL__BASE_URL": url, "STEERKIT_SEARCH_MODEL__MODEL": "stub",
               "STEERKIT_CHAT_MODEL__BASE_URL": url, "STEERKIT_CHAT_MODEL__MODEL": "stub",
               "STEERKIT_STEER__MAX_POOL_ITEMS": "8"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="seconds (CI): a stub model server, 8-item pools")
    ap.add_argument("--setup", action="store_true", help="first run the README's set-up command in a fresh clone")
    ap.add_argument("--suite", action="store_true", help="also run the README's test-suite command (in the clone with --setup)")
    ap.add_argument("--timeout", type=float, default=3600, help="longest one command may take, seconds")
    args = ap.parse_args(argv)
    if args.quick and (args.setup or args.suite):
        ap.error("--quick times no set-up: it checks that the path runs")
    readme = ROOT / "README.md"
    commands, skipped = path_commands(readme)
    report: dict[str, Any] = {"benchmark": "first_hour", "quick": args.quick, "machine": machine(),
                              "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="steerkit-first-hour-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEERKIT_", "VIRTUAL_ENV"))}
        env.update(STEERKIT_CACHE_DIR=str(tmp / "cache"), XDG_CONFIG_HOME=str(tmp / "config"))
        bin_dir, repo = Path(sys.executable).parent, ROOT
        if args.setup or args.suite:
            repo = tmp / "steerkit"
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
            report["clone"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                             text=True, check=True).stdout.strip()
        setups = setup_commands(readme)
        if args.setup:
            report["setup"] = run_shell(setups[0], repo, env, args.timeout)
            bin_dir = repo / ".venv" / "bin"
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
            if report["setup"]["exit"]:
                print(json.dumps(report, indent=2))
                return 1
            commands = [c for c in commands if c != "steerkit demo"]  # the set-up command ran it
        if args.quick:
            env.update(stack.enter_context(stub_models(tmp)))
            kept = []
            for c in commands:
                why = next((w for k, w in EMBEDDED_ONLY.items() if k in c), None)
                if why:
                    skipped.append({"command": c, "why": f"--quick: {why}"})
                else:
                    kept.append(c)
            commands = kept
        work = tmp / "work"
        work.mkdir()
        rows = []
        for c in commands:
            row = run_command(c, work, env, bin_dir, args.timeout)
            row["load_avg_1m"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(f"{row['seconds']:>8.1f} s  exit {row['exit']}  {c}", file=sys.stderr, flush=True)
        report["commands"] = rows
        report["path_total_s"] = round(sum(r["seconds"] for r in rows), 1)
        if "setup" in report:
            report["setup_and_path_total_s"] = round(report["setup"]["seconds"] + report["path_total_s"], 1)
        if args.suite:
            report["suite"] = run_shell(setups[1], repo, env, max(args.timeout, 7200))
        report["skipped"] = skipped
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    failed = [r for r in report["commands"] if r["exit"]] + [report[k] for k in ("setup", "suite") if report.get(k, {}).get("exit")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

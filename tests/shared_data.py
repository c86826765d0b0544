"""Data the tests read from outside the repository (the project's shared datasets): found beside the
checkout (``../shared/data``) or where an environment variable says, never at an absolute path, so
a fresh clone elsewhere runs the suite; absent data is a visible skip (`needs_opinionqa`).

- ``STEERKIT_SHARED_DATA``: the shared data folder (default: ``<repo>/../shared/data``);
- ``STEERKIT_OPINIONQA_DIR``: OpinionQA's ``human_resp`` folder (default: under the shared data;
  ``benchmarks/icm_cost.py`` reads the same variable).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The shared data folder (it may not exist)."""
    return Path(os.environ.get("STEERKIT_SHARED_DATA") or REPO.parent / "shared" / "data")


def opinionqa_dir() -> Path:
    """OpinionQA's ``human_resp`` folder (tatsu-lab/opinions_qa; it may not exist)."""
    default = shared_data_dir() / "opinionqa" / "tatsu-lab_opinions_qa" / "data" / "human_resp"
    return Path(os.environ.get("STEERKIT_OPINIONQA_DIR") or default)


needs_opinionqa = pytest.mark.skipif(
    not opinionqa_dir().is_dir(),
    reason=f"no OpinionQA data at {opinionqa_dir()} (set STEERKIT_OPINIONQA_DIR or STEERKIT_SHARED_DATA)",
)

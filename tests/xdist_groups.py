"""pytest-xdist's ``--dist loadgroup`` that works on pytest 9.2 (helpers only, no tests here).

xdist 3.8 tells its scheduler a test's ``xdist_group`` by appending ``@group`` to the test's node id
on the worker; pytest 9.2's node ids no longer take that edit, so every group is silently spread
over the workers (pytest-xdist issue 1386). Here the workers write ``{node id: group}`` of their
collection to a file that the controller names (``STEERKIT_XDIST_GROUPS``), and the controller's
scheduler (`GroupScheduling`, from ``pytest_xdist_make_scheduler``) reads it, once every worker
has collected, before it hands out any test. Where xdist's own edit still works, the two agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

ENV = "STEERKIT_XDIST_GROUPS"


def group_of(item: pytest.Item) -> str | None:
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")})
    return "_".join(names) or None


def start(config: pytest.Config) -> None:
    """On the controller of a ``--dist loadgroup`` run: the file the workers will write."""
    if getattr(config.option, "dist", "no") == "loadgroup" and "PYTEST_XDIST_WORKER" not in os.environ:
        fd, path = tempfile.mkstemp(prefix="steerkit-xdist-groups-", suffix=".json")
        os.close(fd)
        os.environ[ENV] = path  # the workers, started after this, inherit it
        config.stash[_FILE] = path


def stop(config: pytest.Config) -> None:
    path = config.stash.get(_FILE, None)
    if path is not None:
        os.environ.pop(ENV, None)
        with contextlib.suppress(OSError):
            os.unlink(path)


def record(items: list[pytest.Item]) -> None:
    """On a worker: write the groups of its collection (every worker collects the same tests)."""
    path = os.environ.get(ENV)
    if not path or "PYTEST_XDIST_WORKER" not in os.environ:
        return
    groups = {item.nodeid: g for item in items if (g := group_of(item)) is not None}
    tmp = f"{path}.{os.environ['PYTEST_XDIST_WORKER']}"
    Path(tmp).write_text(json.dumps(groups))
    os.replace(tmp, path)


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    if getattr(config.option, "dist", "no") != "loadgroup" or config.stash.get(_FILE, None) is None:
        return None
    from xdist.scheduler import LoadGroupScheduling

    path = config.stash[_FILE]

    class GroupScheduling(LoadGroupScheduling):
        """xdist's loadgroup, its groups read from the workers' file (see the module doc)."""

        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # first asked once every worker has collected (and written)
                try:
                    self._groups = json.loads(Path(path).read_text() or "{}")
                except (OSError, ValueError):
                    self._groups = {}
            group = self._groups.get(nodeid)
            return group if group is not None else super()._split_scope(nodeid)

    return GroupScheduling(config, log)


_FILE = pytest.StashKey[str]()

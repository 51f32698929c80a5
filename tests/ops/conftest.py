"""Ops tests import the helpers beside them and the runner tests' registry helpers; the incident journal is built
once per session (shared by the xdist workers, a file lock)."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from suite_support import import_helpers_from

import_helpers_from(Path(__file__).resolve().parent, "runner")


@pytest.fixture(scope="session")
def ops_registry(shared_tmp: Path) -> object:
    """The runner tests' promoted registry (``runner_support.shared_registry``: built once for every suite)."""
    from runner_support import shared_registry

    return shared_registry(shared_tmp)


@pytest.fixture(scope="session")
def incident_journal(ops_registry: object, shared_tmp: Path) -> tuple[Path, int]:
    """A real journal of the runner with a ``stale_feed`` incident (``incident_support``): (path, incident id)."""
    from incident_support import stale_feed_journal

    from toolkit.emulator.testing import make_store

    root = shared_tmp / "incident-journal"
    root.mkdir(exist_ok=True)
    done = root / "done.json"
    with (root / "build.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not done.exists():
            store = make_store(root / "bars", {"BTC/USDT": ("2024-02-25", "2024-03-04")})
            path, incident = stale_feed_journal(ops_registry, root, store)  # type: ignore[arg-type]
            done.write_text(json.dumps({"journal": str(path), "incident": incident}))
    info = json.loads(done.read_text())
    return Path(info["journal"]), int(info["incident"])

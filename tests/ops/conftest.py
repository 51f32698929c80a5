"""Ops tests import the helpers beside them and the runner tests' registry helpers; the incident journal is built
once per session (shared by the xdist workers, a file lock)."""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent / "runner"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def _shared(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    return tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent


@pytest.fixture(scope="session")
def ops_registry(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> object:
    """The runner tests' promoted registry (``runner_support.shared_registry``: built once for every suite)."""
    from runner_support import shared_registry

    return shared_registry(_shared(tmp_path_factory, worker_id))


@pytest.fixture(scope="session")
def incident_journal(ops_registry: object, tmp_path_factory: pytest.TempPathFactory,
                     worker_id: str) -> tuple[Path, int]:
    """A real journal of the runner with a ``stale_feed`` incident (``incident_support``): (path, incident id)."""
    from incident_support import stale_feed_journal

    from toolkit.emulator.testing import make_store

    root = _shared(tmp_path_factory, worker_id) / "incident-journal"
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

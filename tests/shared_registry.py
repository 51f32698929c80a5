"""The ``shared_registry`` fixture: one real PostgreSQL + ``mlflow server`` per test session, on loopback.

Started by the first xdist worker that asks (a file lock), used by every worker, stopped by the
last one to finish (a reference count under the same lock), also when tests failed. The state
folder is under the system's temporary directory with mode 0755, because PostgreSQL runs as the
user ``postgres`` when the suite runs as root and pytest's own folders are private (0700).
Registered in ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from toolkit.registry.server import RegistryEndpoints, down, running, up


def _shared_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    base = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = Path(tempfile.gettempdir()) / f"toolkit-registry-{os.getuid()}-{base.name}"
    root.mkdir(exist_ok=True)
    root.chmod(0o755)
    return root


@contextmanager
def _locked(root: Path) -> Iterator[Path]:
    with (root / "fixture.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield root / "users"
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_registry(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[RegistryEndpoints]:
    """A running shared registry (no authentication): its endpoints; stopped when the last user is done."""
    root = _shared_root(tmp_path_factory, worker_id)
    state = root / "state"
    with _locked(root) as users:
        ep = running(state) or up(state)
        users.write_text(str(int(users.read_text() or 0) + 1 if users.exists() else 1))
    try:
        yield ep
    finally:
        with _locked(root) as users:
            left = int(users.read_text()) - 1
            users.write_text(str(left))
            if left == 0:
                down(state)
                shutil.rmtree(root, ignore_errors=True)  # a later user (another worker) recreates it


@pytest.fixture
def on_shared_registry(shared_registry: RegistryEndpoints, monkeypatch: pytest.MonkeyPatch,
                       tmp_path: Path) -> RegistryEndpoints:
    """Point this test's environment (and its subprocesses') at the shared registry; reports stay private."""
    for k, v in shared_registry.env().items():
        monkeypatch.setenv(k, v)
    for k in ("TOOLKIT_ARTIFACTS", "TOOLKIT_LEDGER", "TOOLKIT_AUDIT"):  # the server and the database hold them
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TOOLKIT_REPORTS_DIR", str(tmp_path / "reports"))
    return shared_registry

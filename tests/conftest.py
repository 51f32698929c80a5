"""Suite-wide isolation: nothing a test does reaches the repository's mlflow/, reports/ or ledger.

Every run of the suite gets one temporary root; the toolkit's locations are pointed
into it through the environment (which subprocesses and papermill kernels inherit).
Tests that need a private store override these variables themselves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["shared_registry"]  # the session's PostgreSQL + mlflow server (tests/shared_registry.py)
_SESSION_DIR: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_DIR
    _SESSION_DIR = Path(tempfile.mkdtemp(prefix="toolkit-tests-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
    os.environ["TOOLKIT_ARTIFACTS"] = str(_SESSION_DIR / "artifacts")
    os.environ["TOOLKIT_LEDGER"] = str(_SESSION_DIR / "trials.db")
    os.environ["TOOLKIT_REPORTS_DIR"] = str(_SESSION_DIR / "reports")
    os.environ["TOOLKIT_DATA_DIR"] = str(_SESSION_DIR / "cache")
    os.environ.setdefault("TOOLKIT_AUDIT", str(_SESSION_DIR / "audit.db"))
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["TOOLKIT_WARM_DIR"] = str(_SESSION_DIR / "warm")  # a developer's warm server never serves the suite


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_DIR is not None and not os.environ.get("TOOLKIT_KEEP_TEST_DIR"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give one test its own tracking store, artifacts, ledger, audit log and reports."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TOOLKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("TOOLKIT_LEDGER", str(tmp_path / "trials.db"))
    monkeypatch.setenv("TOOLKIT_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("TOOLKIT_AUDIT", str(tmp_path / "audit.db"))
    return tmp_path


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Return the temporary folder every xdist worker of this session shares (pytest's own without xdist)."""
    return tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent

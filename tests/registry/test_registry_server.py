"""`toolkit registry up` / `down` as installed: the printed lines, a second `up`, nothing left after `down`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="toolkit-registry-cli-"))
    root.chmod(0o755)  # PostgreSQL runs as 'postgres' when the suite runs as root
    try:
        yield root / "state"
    finally:
        subprocess.run([TOOLKIT, "registry", "down"], env={**os.environ, "TOOLKIT_REGISTRY_STATE": str(root / "state")},
                       capture_output=True, timeout=120)  # also when the test failed half-way
        shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow  # initdb, MLflow's schema migrations and two server starts: a minute or two
def test_up_prints_the_tracking_uri_and_down_leaves_nothing_running(state_dir: Path) -> None:
    env = {**os.environ, "TOOLKIT_REGISTRY_STATE": str(state_dir)}
    up = subprocess.run([TOOLKIT, "registry", "up"], env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.strip().splitlines()
    assert lines[0].startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:")
    assert "password" not in up.stdout.lower() and "pgpass" in lines[2].lower()
    uri = lines[0].split("=", 1)[1]
    with urllib.request.urlopen(f"{uri}/health", timeout=10) as resp:
        assert resp.status == 200
    again = subprocess.run([TOOLKIT, "registry", "up"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout == up.stdout  # already running: the same lines
    state = json.loads((state_dir / "state.json").read_text())
    assert oct((state_dir / "pgpass").stat().st_mode & 0o777) == "0o600"
    down = subprocess.run([TOOLKIT, "registry", "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert not _alive(state["postgres_pid"]) and not _alive(state["mlflow_pgid"])
    assert not _listening(state["pg_port"]) and not _listening(state["mlflow_port"])
    assert not (state_dir / "state.json").exists()
    assert (state_dir / "pgdata" / "PG_VERSION").exists()  # the data stays for the next `up`

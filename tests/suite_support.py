"""What the test folders' conftests share: the folders are not packages, so a folder whose tests import another
folder's helper modules (``*_support.py``) puts that folder on ``sys.path``. ``tests/`` itself is on it (the
suite's root conftest), which is how this module imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def import_helpers_from(*folders: Path | str) -> None:
    """Put ``folders`` (paths, or names of folders under ``tests/``) first on ``sys.path``, each once."""
    for folder in folders:
        p = str(folder if isinstance(folder, Path) else TESTS / folder)
        if p not in sys.path:
            sys.path.insert(0, p)


#: a backtest whose template runs for seconds after its kernel starts: the bundled four months of 1m bars (its
#: cells ~9 s cold on a quiet machine, 2026-11-30), for the tests that interrupt a run inside its template
LONG_BACKTEST = ["backtest", "--strategy", "ma_cross", "--timeframe", "1m", "--start", "2024-01-01", "--end",
                 "2024-04-30", "--grid", "fast=5,10,20", "--grid", "slow=50,100", "--json"]


def live_children(pid: int) -> set[int]:
    """Return the ids of ``pid``'s live child processes (zombies excluded)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def wait_inside_template(proc: subprocess.Popen[str], parent: int, children: int, timeout: float = 240.0) -> None:
    """Return once ``parent`` has ``children`` live children (the template's kernel among them) and ``proc``,
    half a second later, still runs. The executed notebook is written only when its last cell ends, so the
    kernel is the sign that the template runs."""
    deadline = time.monotonic() + timeout
    while len(live_children(parent)) < children:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the template never started"
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, "the backtest ended before it could be interrupted"


def ctrl_c_inside_template(proc: subprocess.Popen[str], parent: int, children: int) -> tuple[str, str, set[int]]:
    """Send SIGINT to ``proc``'s process group (what a terminal sends) once its template runs (see
    :func:`wait_inside_template`); return its stdout, its stderr and ``parent``'s children at the signal.
    Whatever happens, nothing of the group is left running."""
    try:
        wait_inside_template(proc, parent, children)
        running = live_children(parent)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    return out, err, running


def assert_interrupted_keeping_nothing(proc: subprocess.Popen[str], out: str, err: str, reports: Path) -> None:
    """Assert a ``--json`` command ended as an interrupted one: exit 130, one error line, no report file."""
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: interrupted (Ctrl-C); nothing half-written was kept"]
    assert json.loads(out)["error"]["exit_code"] == 130
    assert not [p for p in reports.rglob("*") if p.is_file()]  # no half-written report

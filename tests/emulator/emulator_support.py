"""Helpers shared by the emulator's tests: real child processes of the emulator's CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["PROCESS_TIMEOUT_S", "spawn_emulator"]


#: Generous limits for a loaded 2-core machine: a child process may take this long to start or to stop.
PROCESS_TIMEOUT_S = 90


def spawn_emulator(state: Path, port: int, cache: Path, procs: list[subprocess.Popen[bytes]],
                   env_extra: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """Start ``serve`` of the emulator's CLI in a child process (bundled bars); stderr goes to a log file."""
    cmd = [sys.executable, "-c", "from toolkit.emulator.cli import app; app()", "serve", "--port", str(port),
           "--speed", "0", "--start", "2024-03-01", "--state", str(state), "--balance", "USDT=50000",
           "--symbols", "BTC/USDT", *args]
    env = {**os.environ, "TOOLKIT_DATA_DIR": str(cache), **(env_extra or {})}
    log = state.parent / f"emulator-{port}.log"
    with log.open("wb") as err:  # a file never fills up and blocks the child the way an unread pipe can
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    procs.append(proc)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"emulator exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/ping", timeout=30).read()
            return proc
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"emulator did not start within {PROCESS_TIMEOUT_S} s: {log.read_text(errors='replace')}")

"""``toolkit warm``: commands and their kernels forked from a warm server, alike a cold run, nothing left behind.

Real servers (``toolkit warm start`` in a temporary state dir), real clients (the installed console
script), real kernels. One server serves most of the module and is stopped by the last test; the
stale-code and idle-timeout rules get their own short-lived servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from suite_support import (
    LONG_BACKTEST,
    assert_interrupted_keeping_nothing,
    ctrl_c_inside_template,
    live_children,
    wait_inside_template,
)

from toolkit.warm.paths import state_files

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
SMALL = ["backtest", "--strategy", "ma_cross", "--timeframe", "1h", "--start", "2024-01-01", "--end", "2024-01-31",
         "--grid", "fast=5,10", "--grid", "slow=30", "--json"]
SCRIPT = """
import os, sys, time
if sys.argv[1] == "ppid":
    print(os.getppid())
elif sys.argv[1] == "sleep":
    print(os.getpid(), flush=True)
    time.sleep(float(sys.argv[2]))
elif sys.argv[1] == "streams":
    print(sys.stdout.isatty(), sys.stdout.line_buffering, sys.stderr.line_buffering, sys.stdout.encoding,
          sys.stdin.isatty(), flush=True)
elif sys.argv[1] == "template":
    from toolkit.errors import ExecutionFailed
    from toolkit.reporting.notebooks import execute_template
    try:
        execute_template(sys.argv[2], sys.argv[3], {})
    except ExecutionFailed as exc:
        print("FAILED", exc)
        sys.exit(exc.exit_code)
"""


def _env(root: Path, state: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "TOOLKIT_ARTIFACTS": str(root / "artifacts"), "TOOLKIT_LEDGER": str(root / "trials.db"),
           "TOOLKIT_REPORTS_DIR": str(root / "reports"), "TOOLKIT_AUDIT": str(root / "audit.db"), **extra}
    if state is not None:
        env["TOOLKIT_WARM_DIR"] = str(state)
    return env


def _toolkit(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLKIT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _cold(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TOOLKIT_WARM": "0"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _until(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Server:
    state: Path
    root: Path
    pid: int

    def env(self, root: Path, **extra: str) -> dict[str, str]:
        return _env(root, self.state, **extra)

    def status(self) -> dict:
        proc = _toolkit(["warm", "status", "--json"], _env(self.root, self.state), self.root)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def _start(root: Path, *options: str, **extra: str) -> Server:
    state = root / "state"
    proc = _toolkit(["warm", "start", *options, "--json"], _env(root, state, **extra), root)
    assert proc.returncode == 0, proc.stderr
    started = json.loads(proc.stdout)
    assert started["already_running"] is False and _alive(started["pid"])
    return Server(state, root, started["pid"])


def _stop(server: Server) -> None:
    _toolkit(["warm", "stop"], _env(server.root, server.state), server.root)
    _until(lambda: not _alive(server.pid), "the server to exit", 60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("warm"))
    yield srv
    _stop(srv)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("script") / "script.py"
    path.write_text(SCRIPT)
    return path


def test_a_second_start_says_it_runs_already(server: Server) -> None:
    proc = _toolkit(["warm", "start", "--json"], server.env(server.root), server.root)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["already_running"] is True and again["pid"] == server.pid
    status = server.status()
    assert status["running"] is True and status["pid"] == server.pid and status["rss_bytes"] > 100 * 2**20
    assert (server.state.stat().st_mode & 0o777) == 0o700


def test_a_backtest_runs_warm_as_it_runs_cold(server: Server, tmp_path: Path) -> None:
    before = server.status()
    warm = _toolkit(SMALL, server.env(tmp_path / "warm"), tmp_path)
    after = server.status()
    cold = _toolkit(SMALL, _cold(server.env(tmp_path / "cold")), tmp_path)
    assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
    got, expected = json.loads(warm.stdout), json.loads(cold.stdout)
    assert set(got) == set(expected)
    assert got["chosen"] == expected["chosen"] and got["metrics"] == expected["metrics"]
    assert Path(got["report_path"]).is_file() and Path(got["report_path"]).is_relative_to(tmp_path / "warm")
    assert (after["served"], after["kernels_forked"]) == (before["served"] + 1, before["kernels_forked"] + 1)
    assert server.status()["served"] == after["served"]  # the cold run did not reach the server


@pytest.mark.parametrize("args", [
    ["backtest", "--json"],  # usage error: --strategy is required
    ["data", "check", "--bars-file", "nothing.csv", "--json"],  # DataError
    ["backtest", "--strategy", "ma_cross", "--grid", "fast=5", "--grid", "fast=6", "--json"],  # a bad parameter
    ["warm", "python", "missing-script.py"],  # an uncaught exception: traceback, exit 1
], ids=["usage", "data-error", "bad-parameter", "traceback"])
def test_exit_status_and_output_are_the_cold_runs(server: Server, args: list[str], tmp_path: Path) -> None:
    served = server.status()["served"]
    secret = f"s3cret-{os.getpid()}-{args[0]}"
    warm = _toolkit(args, server.env(tmp_path, TOOLKIT_EXCHANGE_SECRET=secret), tmp_path)
    assert server.status()["served"] == served + 1
    log = next(server.state.glob("*.log")).read_text()
    assert "worker" in log and secret not in log  # the log names commands, never their environment
    cold = _toolkit(args, _cold(server.env(tmp_path)), tmp_path)
    assert warm.returncode == cold.returncode != 0
    assert warm.stdout == cold.stdout
    if args[0] == "warm":  # the traceback's frames differ (a forked worker), its last line does not
        assert warm.stderr.splitlines()[-1] == cold.stderr.splitlines()[-1]
        assert "Traceback" in warm.stderr
    else:
        assert warm.stderr == cold.stderr


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``toolkit *args`` with stdin and stdout on a pseudo-terminal; return its status and output."""
    controller, terminal = os.openpty()
    try:
        proc = subprocess.run([TOOLKIT, *args], env=env, cwd=cwd, stdin=terminal, stdout=terminal,
                              stderr=subprocess.PIPE, timeout=120)
        os.set_blocking(controller, False)
        out = os.read(controller, 65536).decode()
    finally:
        os.close(terminal)
        os.close(controller)
    return proc.returncode, out


def test_a_worker_buffers_its_streams_as_a_fresh_process(server: Server, script: Path, tmp_path: Path) -> None:
    args = ["warm", "python", str(script), "streams"]
    served = server.status()["served"]
    buffered = {k: v for k, v in server.env(tmp_path).items() if k != "PYTHONUNBUFFERED"}
    unbuffered = {**buffered, "PYTHONUNBUFFERED": "1"}  # -u: no line buffering, every write goes through
    for env, flags in ((buffered, ["True", "True"]), (unbuffered, ["False", "False"])):
        on_tty = _on_a_terminal(args, env, tmp_path)
        assert on_tty == _on_a_terminal(args, _cold(env), tmp_path)
        assert on_tty[0] == 0 and on_tty[1].split() == ["True", *flags, "utf-8", "True"]
    piped = _toolkit(args, buffered, tmp_path)
    assert piped.stdout == _toolkit(args, _cold(buffered), tmp_path).stdout
    assert piped.stdout.split() == ["False", "False", "True", "utf-8", "False"]  # stderr: line-buffered anyway
    assert server.status()["served"] == served + 3


def _killing_notebook(path: Path) -> Path:
    nb = new_notebook(cells=[new_code_cell("import os, signal\nprint('dying', flush=True)\n"
                                           "os.kill(os.getpid(), signal.SIGKILL)"), new_code_cell("print('never')")])
    nb.metadata["kernelspec"] = {"name": "desk-toolkit", "display_name": "Desk toolkit (.venv)", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_kernel_killed_mid_cell_fails_the_run(server: Server, script: Path, tmp_path: Path, warm: bool) -> None:
    notebook = _killing_notebook(tmp_path / "dies.ipynb")
    env = server.env(tmp_path) if warm else _cold(server.env(tmp_path))
    forked = server.status()["kernels_forked"]
    proc = _toolkit(["warm", "python", str(script), "template", str(notebook), str(tmp_path / "out.ipynb")],
                    env, tmp_path)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAILED dies.ipynb: the kernel failed"), proc.stdout
    assert server.status()["kernels_forked"] == forked + warm
    _until(lambda: not live_children(server.pid), "the server's children to end", 30)


def _long_backtest(server: Server, root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([TOOLKIT, *LONG_BACKTEST], env=server.env(root), cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_ctrl_c_interrupts_the_worker_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    proc = _long_backtest(server, tmp_path)
    # the client forwards the signal to the worker
    out, err, running = ctrl_c_inside_template(proc, server.pid, 2)  # the worker and its kernel
    assert_interrupted_keeping_nothing(proc, out, err, tmp_path / "reports")
    _until(lambda: not any(_alive(pid) for pid in running), "the worker and its kernel to end", 60)


def test_a_killed_client_takes_its_worker_and_kernel_along(server: Server, tmp_path: Path) -> None:
    proc = _long_backtest(server, tmp_path)
    try:
        wait_inside_template(proc, server.pid, 2)
        running = live_children(server.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert len(running) == 2  # the worker and its kernel
    _until(lambda: not any(_alive(pid) for pid in running), "the worker and its kernel to end", 120)
    assert server.status()["running_workers"] == 0


def test_stop_kills_a_running_command_and_removes_the_socket(server: Server, script: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([TOOLKIT, "warm", "python", str(script), "sleep", "600"], env=server.env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    assert worker in live_children(server.pid)
    stop = _toolkit(["warm", "stop", "--json"], server.env(tmp_path), tmp_path)
    assert stop.returncode == 0 and json.loads(stop.stdout) == {"stopped": True, "pid": server.pid}
    assert proc.wait(timeout=60) == 128 + signal.SIGKILL
    proc.communicate()
    assert not _alive(server.pid) and not _alive(worker)
    assert not list(server.state.glob("*.socket")) and not list(server.state.glob("*.pid"))
    status = _toolkit(["warm", "status", "--json"], server.env(tmp_path), tmp_path)
    assert json.loads(status.stdout) == {"running": False}


def test_changed_code_makes_the_server_exit_and_the_command_run_cold(script: Path, tmp_path: Path) -> None:
    watched = tmp_path / "watched.py"
    watched.write_text("x = 1\n")
    srv = _start(tmp_path, TOOLKIT_WARM_WATCH_EXTRA=str(watched))
    try:
        warm = _toolkit(["warm", "python", str(script), "ppid"], srv.env(tmp_path), tmp_path)
        assert warm.returncode == 0 and int(warm.stdout) == srv.pid  # a worker forked by the server
        watched.write_text("x = 22\n")
        cold = _toolkit(["warm", "python", str(script), "ppid"], srv.env(tmp_path), tmp_path)
        assert cold.returncode == 0 and int(cold.stdout) == os.getpid() and cold.stderr == ""  # ran in the client
        _until(lambda: not _alive(srv.pid), "the stale server to exit", 60)
        assert not list(srv.state.glob("*.socket"))
    finally:
        _stop(srv)


def test_an_idle_server_exits_by_itself(tmp_path: Path) -> None:
    srv = _start(tmp_path, "--idle-minutes", "0.02")
    try:
        _until(lambda: not _alive(srv.pid), "the idle server to exit", 60)
        assert not list(srv.state.glob("*.socket"))
    finally:
        _stop(srv)


def test_a_killed_server_takes_its_workers_and_the_client_says_so(script: Path, tmp_path: Path) -> None:
    srv = _start(tmp_path)
    proc = subprocess.Popen([TOOLKIT, "warm", "python", str(script), "sleep", "600"], env=srv.env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        assert worker in live_children(srv.pid)
        os.kill(srv.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == 1
        assert "the warm server went away" in proc.communicate()[1]
        _until(lambda: not _alive(worker), "the worker to die with its server", 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _until(lambda: not _alive(srv.pid), "the server to be gone", 60)


def test_a_state_dir_deeper_than_a_socket_address_holds(script: Path, tmp_path: Path) -> None:
    root = tmp_path / ("deep-" * 12)
    root.mkdir()
    srv = _start(root)
    try:
        assert len(os.fsencode(state_files(srv.state)["socket"])) >= 108  # beyond sockaddr_un's sun_path
        warm = _toolkit(["warm", "python", str(script), "ppid"], srv.env(root), root)
        assert warm.returncode == 0 and int(warm.stdout) == srv.pid, warm.stderr  # served by the server
    finally:
        _stop(srv)

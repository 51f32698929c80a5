"""``toolkit warm start | stop | status``: the opt-in warm server (:mod:`toolkit.warm`)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli_support import emit
from toolkit.errors import ConfigurationError, ExecutionFailed
from toolkit.warm.paths import state_dir, state_files
from toolkit.warm.protocol import connect, recv_msg, send_msg

__all__ = ["app", "server_status"]

HELP = (
    "Keep the toolkit's imports in memory: an opt-in server that every `toolkit` command is forked from.\n\n"
    "A cold `toolkit backtest` imports mlflow, pandas, papermill and nbconvert, then starts a kernel that "
    "imports ipykernel, vectorbt and the template's modules: seconds of the same imports on every run. "
    "`toolkit warm start` starts one detached process (its own session, log in the state dir) that imports "
    "all of it once and then only forks: while it runs, every `toolkit` command of this install (same "
    "sys.prefix, same checkout) runs in a worker forked from it, on your terminal, cwd, umask and environment, "
    "and a template's kernel is forked from it too. Exit codes, output and Ctrl-C are those of a cold run. "
    "Nothing changes until you start it (TOOLKIT_WARM=0 runs one command cold).\n\n"
    "It keeps about 600 MB resident (`toolkit warm status` prints its RSS) and exits after --idle-minutes "
    "without a request (default 30), on `toolkit warm stop` (which kills what it runs), or when the code it "
    "imported changed: each command re-checks every file under toolkit/ and templates/; when one changed "
    "the server exits and that command runs cold.\n\n"
    "State dir: $TOOLKIT_WARM_DIR, else $XDG_RUNTIME_DIR/desk-toolkit, else ~/.cache/desk-toolkit/warm "
    "(mode 0700)."
)

app = typer.Typer(help=HELP, no_args_is_help=True)
_SERVER = "import sys; from toolkit.cli import serve_warm; sys.exit(serve_warm(sys.argv[1:]))"


def server_status(directory: Path | None = None, timeout: float = 10.0) -> dict[str, Any] | None:
    """Return the running server's status for this install, or ``None`` when none answers."""
    try:
        with connect(state_files(directory or state_dir())["socket"], timeout=timeout) as sock:
            send_msg(sock, {"op": "status"})
            return recv_msg(sock)[0]
    except OSError:
        return None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _human(st: dict[str, Any]) -> str:
    return (f"warm server pid {st['pid']} since {st['started']}: {st['served']} commands served, "
            f"{st['kernels_forked']} kernels forked, {st['running_workers']} running; RSS "
            f"{st['rss_bytes'] / 2**20:.0f} MiB; exits after {st['idle_minutes']:g} min idle; log {st['log']}")


@app.command("start")
def start_command(
    idle_minutes: Annotated[float, typer.Option(help="exit after this many minutes without a request")] = 30.0,
    json_output: Annotated[bool, typer.Option("--json", help="print the server's status as JSON")] = False,
) -> None:
    """Start the warm server (detached) and return once it answers; says so when one already runs."""
    if idle_minutes <= 0:
        raise ConfigurationError("--idle-minutes", "a positive number of minutes", idle_minutes)
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    files = state_files(directory)
    running = server_status(directory)
    if running is not None:
        emit({**running, "already_running": True}, json_output, "already running: " + _human(running))
        return
    t0 = time.monotonic()
    with open(files["log"], "ab") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, "--state-dir", str(directory),
                                 "--idle-minutes", repr(idle_minutes)], stdin=null, stdout=log, stderr=log,
                                cwd="/", start_new_session=True)
    while (st := server_status(directory, timeout=5.0)) is None:
        if proc.poll() is not None:
            again = server_status(directory)  # lost a race with another start: that one serves
            if again is not None:
                emit({**again, "already_running": True}, json_output, "already running: " + _human(again))
                return
            raise ExecutionFailed(f"the warm server exited {proc.returncode} before answering; its log "
                                  f"({files['log']}) ends: {_tail(files['log'])}")
        time.sleep(0.1)
    proc.returncode = 0  # detached: it outlives this process, which must not wait for it
    emit({**st, "already_running": False, "start_s": round(time.monotonic() - t0, 2)}, json_output,
         f"started in {time.monotonic() - t0:.1f} s: " + _human(st))


@app.command("stop")
def stop_command(
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Stop the warm server (SIGTERM): its running commands and kernels are killed."""
    st = server_status()
    if st is None:
        emit({"stopped": False, "running": False}, json_output, "no warm server running")
        return
    pid = int(st["pid"])
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        emit({"stopped": True, "pid": pid}, json_output, f"warm server {pid} stopped")
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], 60.0)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], 10.0)
    finally:
        os.close(pidfd)
    emit({"stopped": True, "pid": pid}, json_output, f"warm server {pid} stopped")


@app.command("python", hidden=True,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def python_command(ctx: typer.Context, script: Annotated[Path, typer.Argument(help="a Python file")]) -> None:
    """Run a Python file as ``__main__`` with the remaining arguments (internal: benchmarks and tests).

    Through a warm server it runs in a forked worker, like any command; without one, in this process.
    ``bench/bench_template.py --warm`` measures plain Python against a template run this way.
    """
    import runpy

    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


@app.command("status")
def status_command(
    json_output: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """Say whether the warm server runs: pid, commands served, kernels forked, RSS, idle timeout."""
    st = server_status()
    if st is None:
        emit({"running": False}, json_output, "no warm server running")
        return
    emit({**st, "running": True}, json_output, _human(st))

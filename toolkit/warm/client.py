"""The ``toolkit`` entry point's side of a warm server: hand the command over, forward signals, exit alike.

:func:`run_warm` is called by :func:`toolkit.cli.cli` before anything else. When ``TOOLKIT_WARM`` is not
``0`` and a server for this install answers, the command runs in a worker forked by the server, on this
process's terminal descriptors, cwd, umask and environment; this process waits for its exit status and
forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the worker's process group (so Ctrl-C still interrupts the
command, which exits 130 as a cold one does). A worker killed by signal ``n`` gives ``128 + n``, as a shell
reports it. Any failure to reach a server, or a server that answers "stale" or "cold", returns ``None``:
the caller runs the command itself, and nothing is printed. Without a server this costs a ``connect`` to
a missing path.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from toolkit.warm.paths import ENV_SWITCH, state_dir, state_files

__all__ = ["FORWARDED", "in_worker", "run_warm"]

#: the signals the client passes on to the worker's process group
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_WORKER: dict[str, str] = {"socket": ""}  # set in a worker: its server's socket


def in_worker() -> bool:
    """Return whether this process is a worker forked by a warm server."""
    return bool(_WORKER["socket"])


def run_warm(argv: Sequence[str]) -> int | None:
    """Run ``toolkit argv`` in a warm worker and return its exit status; ``None``: run it here (cold)."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or in_worker() or (argv[:1] == ["warm"] and argv[1:2] != ["python"]):
        return None
    path = state_files(state_dir())["socket"]
    if not os.path.exists(path):  # no server: this is all it costs
        return None
    from toolkit.warm.protocol import connect, current_umask, recv_msg, send_msg

    try:
        sock = connect(path, timeout=10.0)
    except OSError:
        return None
    pending: list[int] = []
    worker: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if not worker:
            pending.append(signum)
            return
        try:
            os.killpg(worker[0], signum)
        except OSError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        with sock:
            try:
                send_msg(sock, {"op": "run", "argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ),
                                "umask": current_umask(), "prefix": sys.prefix, "path": sys.path}, fds=(0, 1, 2))
                reply, _ = recv_msg(sock)
            except OSError:
                return None
            if not isinstance(reply.get("pid"), int):
                return None  # stale, or this environment needs a cold process
            worker.append(reply["pid"])
            for signum in pending:
                forward(signum, None)
            sock.settimeout(None)
            try:
                done, _ = recv_msg(sock)
            except OSError:
                print("error: the warm server went away while it ran this command", file=sys.stderr)
                return 1
            return int(done["status"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""A template kernel forked by the warm server, seen by jupyter_client as the process it would have started.

Inside a warm worker (:func:`toolkit.warm.client.in_worker`), :class:`toolkit.reporting.kernels.TemplateKernel`
does not ``Popen`` its kernel: :func:`launch` asks the worker's server (a new connection to its socket)
to fork one with the command's ipykernel arguments (``KERNEL_ARGUMENTS`` and the start-up line), cwd,
environment and umask, on the worker's stdout and the kernel's stderr log; the server answers with the
kernel's pid and a pidfd. :class:`ForkedKernel` gives that pidfd the part of ``subprocess.Popen`` that
jupyter_client's ``LocalProvisioner`` uses (``poll``, ``wait``, ``send_signal``, ``kill``,
``terminate``, ``pid``, ``returncode``), and ``TemplateKernel``'s manager hands it to the provisioner as its
process (:func:`toolkit.reporting.kernels.set_kernel_launcher`, set in each worker):
papermill sees a dead kernel, and kills a live one, exactly as it does a started one. The exit status
comes from the server (which collected it) over the same connection; the kernel is killed by the server
if that connection closes (the worker ended).

When the server cannot be reached (it went stale and stopped listening), :func:`launch` returns ``None``
and the kernel is started the usual way.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from toolkit.warm import client as warm_client
from toolkit.warm.protocol import ProtocolError, connect, current_umask, recv_msg, send_msg

__all__ = ["ForkedKernel", "launch"]


class ForkedKernel:
    """A kernel forked by the warm server, through its pidfd, with ``subprocess.Popen``'s interface."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, pidfd: int, conn: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._conn: socket.socket | None = conn

    def _ended(self, timeout: float | None) -> bool:
        if self.returncode is not None:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        if not ready:
            return False
        status = -signal.SIGKILL
        if self._conn is not None:
            try:
                self._conn.settimeout(5.0)
                status = int(recv_msg(self._conn)[0]["status"])
            except (OSError, KeyError, ValueError):
                pass
        self.returncode = -(status - 128) if status > 128 else status  # Popen's: minus the signal
        self.close()
        return True

    def poll(self) -> int | None:
        self._ended(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended(timeout):
            raise subprocess.TimeoutExpired(["forked kernel"], timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self._pidfd >= 0:
            signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Close the pidfd and the server connection (the server then kills the kernel if it still runs)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def __del__(self) -> None:
        self.close()


def _fileno(stream: Any, default: int) -> int:
    fileno = getattr(stream, "fileno", None)
    return int(fileno()) if callable(fileno) else default


def launch(cmd: list[str], kw: dict[str, Any]) -> ForkedKernel | None:
    """Ask the worker's server to fork the kernel ``cmd`` would start; ``None``: start it the usual way.

    ``cmd`` must run ``-m ipykernel_launcher`` (the project's kernelspec does); ``kw`` holds what
    jupyter_client passes to ``Popen``: ``env``, ``cwd``, ``stderr`` (the kernel's log) and maybe ``stdout``.
    """
    path = warm_client._WORKER["socket"]
    if not path or "ipykernel_launcher" not in cmd:
        return None
    at = cmd.index("ipykernel_launcher")
    if at == 0 or cmd[at - 1] != "-m":
        return None
    fds = tuple(_fileno(kw.get(name), default) for name, default in (("stdout", 1), ("stderr", 2)))
    try:
        sock = connect(Path(path), timeout=30.0)
    except OSError:
        return None
    try:
        send_msg(sock, {"op": "kernel", "args": cmd[at + 1:], "cwd": str(kw.get("cwd") or os.getcwd()),
                        "env": dict(kw.get("env") or os.environ), "umask": current_umask(), "path": sys.path}, fds=fds)
        reply, pidfds = recv_msg(sock)
        if not isinstance(reply.get("pid"), int) or len(pidfds) != 1:
            raise ProtocolError(f"the warm server did not fork a kernel: {reply}")
    except OSError:
        sock.close()
        return None
    return ForkedKernel(reply["pid"], pidfds[0], sock)

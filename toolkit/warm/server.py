"""The warm server: import once, then only accept and fork (workers for commands, kernels for templates).

Started detached by ``toolkit warm start`` (:func:`serve_main`). It imports what the commands and the
templates need (:func:`warm_up`), records the code it serves (:func:`code_signature`), binds its socket
and loops over a ``selectors`` selector of the listening socket, its clients' connections and the
``pidfd`` of every child; ``os.waitid(P_PIDFD)`` collects each child's exit status.

**Fork safety.** Every fork happens here, in a process that has exactly one Python thread (asserted
before each fork), has never created a zmq context, opened an sqlite or MLflow connection, or run numba
parallel code: it only imported modules. (Importing numpy, scipy and pyarrow starts native thread pools,
OpenBLAS's and jemalloc's background thread; both libraries register ``pthread_atfork`` handlers for
this.) A child closes everything of the server's (listening socket, selector, connections, pidfds, the
pid file's lock) before it runs anything, and forgets what the server cached from its own environment.

- ``run``: the client's descriptors 0/1/2, cwd, umask, environment and ``sys.path`` are adopted by a
  forked worker (its own process group) that runs ``toolkit.cli.main(argv)`` and exits with its status.
  The client hears the worker's pid at once and its exit status when it ends (a signal death: 128 + n).
  When the client's connection closes first, the worker's process group is killed; when the server dies,
  its workers are killed (``PR_SET_PDEATHSIG``) and its kernels exit (ipykernel's parent poller).
- ``kernel``: a worker's :class:`toolkit.reporting.kernels.TemplateKernel` asks for a kernel; the server
  forks one (its own session, as jupyter_client starts one) running ipykernel's ``IPKernelApp`` with the
  arguments, cwd and environment sent, stdout and stderr on the descriptors sent, and sends back its
  pidfd. A worker's kernels are killed when the worker ends, or when its connection closes.
- ``status``: counters, RSS, what is watched.

**Stale code.** Each ``run`` re-checks (path, mtime_ns, size) of every file under ``toolkit/`` and
``templates/`` (and of the paths in ``$TOOLKIT_WARM_WATCH_EXTRA``, ``os.pathsep``-separated, read when
the server starts). When anything changed, the server answers "stale", stops listening, lets its running
children end, and exits; the client runs the command cold. A client whose ``sys.prefix`` differs, or
whose value of a variable read at import time (:data:`toolkit.warm.child.IMPORT_TIME_ENV`) differs from the server's, is
answered "cold" (the server stays).

The log (stdout and stderr of the server) gets one line per request: the command's name (``argv[0]``)
and pids, never the arguments or the environment.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import fcntl
import gc
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from toolkit.reporting.kernels import set_kernel_launcher
from toolkit.warm import client as warm_client
from toolkit.warm.child import (
    ENV_WATCH_EXTRA,
    adopt_process,
    adopt_stdio,
    code_signature,
    die_with,
    exit_status,
    import_time_env,
    warm_up,
)
from toolkit.warm.kernels import launch
from toolkit.warm.paths import state_files
from toolkit.warm.protocol import ProtocolError, address, peer, recv_msg, send_msg

__all__ = ["Server", "serve_main"]

def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _close(fds: list[int]) -> None:
    """Close the descriptors a request brought (the server's copies; a forked child has its own)."""
    for fd in fds:
        os.close(fd)


def _log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} {message}", flush=True)


@dataclass
class Child:
    """A worker or a kernel the server forked."""

    kind: str
    pid: int
    pidfd: int
    conn: socket.socket | None
    owner: int | None = None
    name: str = ""
    kernels: set[int] = field(default_factory=set)


class Server:
    """The server's state and loop (see the module docstring)."""

    def __init__(self, directory: Path, idle_seconds: float, main: Callable[[list[str]], int]) -> None:
        self.main = main
        self.pid = os.getpid()
        self.files = state_files(directory)
        self.idle_seconds = idle_seconds
        self.extra = tuple(p for p in os.environ.get(ENV_WATCH_EXTRA, "").split(os.pathsep) if p)
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, Child] = {}
        self.listener: socket.socket | None = None
        self.lock_fd = -1
        self.wakeup = socket.socketpair()
        self.signature: dict[str, tuple[int, int]] = {}
        self.env_at_import: dict[str, str] = {}
        self.started = dt.datetime.now(dt.UTC)
        self.served = self.kernels_forked = 0
        self.last_activity = time.monotonic()
        self.stopping = self.stale = False

    # -- start and stop ------------------------------------------------------------------------
    def lock(self) -> bool:
        self.lock_fd = os.open(self.files["pid"], os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def listen(self) -> None:
        path = self.files["socket"]
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with address(path) as where:
                self.listener.bind(where)
        finally:
            os.umask(old)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        self.last_activity = time.monotonic()  # idle from now, not from before the imports
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, f"{os.getpid()}\n".encode(), 0)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            self.files["socket"].unlink(missing_ok=True)

    def _close_inherited(self, conn: socket.socket) -> None:
        """In a forked child: close every descriptor of the server's (sockets detached first, so that no
        Python object closes a descriptor number the child has reused since)."""
        self.sel.close()
        sockets = [*self.wakeup, conn, *(c.conn for c in self.children.values() if c.conn is not None)]
        if self.listener is not None:
            sockets.append(self.listener)
        fds = [self.lock_fd, *(c.pidfd for c in self.children.values()), *(s.detach() for s in sockets)]
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def finish(self) -> NoReturn:
        """Kill every child, collect them, remove the socket and the pid file, exit."""
        self.stop_listening()
        for child in list(self.children.values()):
            self._kill(child)
        for child in list(self.children.values()):
            info = os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED)
            self._ended(child, exit_status(info) if info is not None else None)
        self.files["pid"].unlink(missing_ok=True)
        _log("stopped")
        os._exit(0)

    # -- forks -------------------------------------------------------------------------------
    def _fork(self, conn: socket.socket, target: Any, *args: Any) -> int:
        assert threading.active_count() == 1, f"the warm server must fork single-threaded: {threading.enumerate()}"
        pid = os.fork()
        if pid == 0:
            status = 70
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                self._close_inherited(conn)
                status = target(*args)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except KeyboardInterrupt:
                traceback.print_exc()
                status = 130
            except BaseException:
                traceback.print_exc()
                status = 1
            finally:
                try:
                    atexit._run_exitfuncs()
                    for stream in (sys.stdout, sys.stderr):
                        if stream is not None:
                            stream.flush()
                finally:
                    os._exit(status)
        return pid

    def _worker(self, req: dict[str, Any], fds: list[int]) -> int:
        os.setpgid(0, 0)
        die_with(self.pid)
        for fd, target in zip(fds, (0, 1, 2), strict=True):
            if fd != target:
                os.dup2(fd, target)
                os.close(fd)
        adopt_process(req)
        adopt_stdio(req["env"])
        sys.argv = ["toolkit", *req["argv"]]
        sys.path[:] = req["path"]
        warm_client._WORKER["socket"] = str(self.files["socket"])
        set_kernel_launcher(launch)
        return self.main(list(req["argv"]))

    def _kernel(self, req: dict[str, Any], fds: list[int]) -> int:
        os.setsid()  # as jupyter_client starts a kernel: its own session and process group
        null = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((null, 0), (fds[0], 1), (fds[1], 2)):
            os.dup2(fd, target)
            os.close(fd)
        adopt_process(req)
        adopt_stdio(req["env"])
        # its parent is this server: the kernel exits if the server dies (as a started one follows its parent)
        args = [*req["args"], f"--IPKernelApp.parent_handle={os.getppid()}"]
        sys.argv = ["ipykernel_launcher", *args]
        sys.path[:] = [req["cwd"], *req["path"][1:]]  # ``python -m``: the cwd first, then the worker's path
        warm_client._WORKER["socket"] = ""
        from ipykernel.kernelapp import IPKernelApp

        IPKernelApp.launch_instance(argv=args)
        return 0

    # -- requests ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        workers = [c for c in self.children.values() if c.kind == "worker"]
        return {"pid": os.getpid(), "started": self.started.isoformat(timespec="seconds"),
                "idle_minutes": self.idle_seconds / 60, "served": self.served,
                "kernels_forked": self.kernels_forked, "running_workers": len(workers),
                "running_kernels": len(self.children) - len(workers), "rss_bytes": _rss_bytes(),
                "prefix": sys.prefix, "watched_files": len(self.signature), "log": str(self.files["log"]),
                "stale": self.stale}

    def _why_cold(self, req: dict[str, Any]) -> str | None:
        if req.get("prefix") != sys.prefix:
            return "another sys.prefix"
        if import_time_env(req.get("env", {})) != self.env_at_import:
            return "a variable read at import time differs"
        if code_signature(self.extra) != self.signature:
            self.stale = True
            return "stale"
        return None

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        try:
            pid, uid = peer(conn)
            if uid != os.getuid():
                raise ProtocolError("another user")
            req, fds = recv_msg(conn)
        except (OSError, ValueError) as exc:
            _log(f"refused a connection: {exc}")
            conn.close()
            return
        op = req.get("op")
        try:
            if op == "status":
                send_msg(conn, self.status())
            elif op == "run" and not self.stale and len(fds) == 3:
                self._run(conn, req, fds)
                return
            elif op == "kernel" and pid in self.children and self.children[pid].kind == "worker" and len(fds) == 2:
                self._start_kernel(conn, req, fds, owner=pid)
                return
            else:
                send_msg(conn, {"error": f"unknown or refused request {op!r}"})
        except OSError as exc:
            _log(f"request {op!r} failed: {exc}")
        _close(fds)
        conn.close()

    def _run(self, conn: socket.socket, req: dict[str, Any], fds: list[int]) -> None:
        why = self._why_cold(req)
        if why is not None:
            send_msg(conn, {"stale" if why == "stale" else "cold": why})
            _close(fds)
            conn.close()
            if self.stale:
                _log("stale: the code it imported changed; exits when its children have ended")
                self.stop_listening()
            return
        pid = self._fork(conn, self._worker, req, fds)
        _close(fds)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        child = Child("worker", pid, os.pidfd_open(pid), conn, name=str(req["argv"][:1]))
        self._add(child)
        self.served += 1
        _log(f"worker {pid}: toolkit {child.name}")
        try:
            send_msg(conn, {"pid": pid})
        except OSError:
            self._kill(child)

    def _start_kernel(self, conn: socket.socket, req: dict[str, Any], fds: list[int], owner: int) -> None:
        pid = self._fork(conn, self._kernel, req, fds)
        _close(fds)
        child = Child("kernel", pid, os.pidfd_open(pid), conn, owner=owner)
        self._add(child)
        self.children[owner].kernels.add(pid)
        self.kernels_forked += 1
        _log(f"kernel {pid} for worker {owner}")
        try:
            send_msg(conn, {"pid": pid}, fds=(child.pidfd,))
        except OSError:
            self._kill(child)

    # -- children ----------------------------------------------------------------------------
    def _add(self, child: Child) -> None:
        self.children[child.pid] = child
        self.sel.register(child.pidfd, selectors.EVENT_READ, ("exit", child))
        if child.conn is not None:
            child.conn.setblocking(False)
            self.sel.register(child.conn, selectors.EVENT_READ, ("conn", child))

    def _kill(self, child: Child) -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            try:
                signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
            except OSError:
                pass

    def _drop_conn(self, child: Child) -> None:
        if child.conn is not None:
            self.sel.unregister(child.conn)
            child.conn.close()
            child.conn = None

    def _ended(self, child: Child, status: int | None) -> None:
        self.children.pop(child.pid, None)
        if child.conn is not None and status is not None:
            try:
                child.conn.setblocking(True)
                child.conn.settimeout(2.0)
                send_msg(child.conn, {"status": status})
            except OSError:
                pass
        self._drop_conn(child)
        self.sel.unregister(child.pidfd)
        os.close(child.pidfd)
        for kernel in child.kernels:
            if kernel in self.children:
                self._kill(self.children[kernel])
        if child.owner in self.children:
            self.children[child.owner].kernels.discard(child.pid)
        self.last_activity = time.monotonic()
        _log(f"{child.kind} {child.pid} ended: {status}")

    # -- loop --------------------------------------------------------------------------------
    def loop(self) -> NoReturn:
        self.sel.register(self.wakeup[0], selectors.EVENT_READ, ("signal", None))
        for s in self.wakeup:
            s.setblocking(False)
        signal.set_wakeup_fd(self.wakeup[1].fileno())
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while True:
            if not self.children and (self.stale or self.stopping):
                self.finish()
            timeout = None if self.children else max(0.0, self.last_activity + self.idle_seconds - time.monotonic())
            events = self.sel.select(timeout)
            if not events and not self.children and time.monotonic() >= self.last_activity + self.idle_seconds:
                _log(f"idle for {self.idle_seconds / 60:g} min: exiting")
                self.finish()
            for key, _ in events:
                kind, child = key.data
                if kind == "listen" and self.listener is not None:
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    self.last_activity = time.monotonic()
                    self.handle(conn)
                elif kind == "signal":
                    try:
                        got = self.wakeup[0].recv(64)
                    except BlockingIOError:
                        got = b""
                    if signal.SIGTERM in got:
                        _log("SIGTERM: stopping")
                        self.finish()
                elif kind == "conn" and child.conn is not None:
                    try:
                        data = child.conn.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # the client or the worker went away: its process goes too
                        self._drop_conn(child)
                        if child.pid in self.children:
                            self._kill(child)
                elif kind == "exit" and child.pid in self.children:
                    try:
                        info = os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED | os.WNOHANG)
                    except ChildProcessError:
                        info = None
                    if info is not None:
                        self._ended(child, exit_status(info))


def serve_main(argv: list[str], main: Callable[[list[str]], int], prepare: Callable[[], None]) -> int:
    """Run the server; its workers run ``main(argv)``, ``prepare()`` runs after the imports.

    ``toolkit warm start`` launches it detached, its stdio on the log, through ``toolkit.cli.serve_warm``
    (the entry point passes its own ``main``; this area does not import the CLI).
    """
    ap = argparse.ArgumentParser(prog="toolkit-warm-server")
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--idle-minutes", type=float, required=True)
    args = ap.parse_args(argv)
    server = Server(args.state_dir, args.idle_minutes * 60, main)
    if not server.lock():
        _log("another warm server holds this install's pid file: exiting")
        return 1
    t0 = time.perf_counter()
    warm_up()
    prepare()
    server.signature = code_signature(server.extra)
    server.env_at_import = import_time_env(os.environ)
    if threading.active_count() != 1:
        _log(f"imports left threads running ({threading.enumerate()}): a warm server cannot fork safely")
        return 1
    gc.collect()
    gc.freeze()  # the imported heap stays shared with the children (copy on write)
    server.listen()
    _log(f"ready: pid {os.getpid()}, imports {time.perf_counter() - t0:.1f} s, {len(server.signature)} files "
         f"watched, RSS {_rss_bytes() / 2**20:.0f} MiB")
    try:
        server.loop()
    except Exception:
        traceback.print_exc()
        server.finish()


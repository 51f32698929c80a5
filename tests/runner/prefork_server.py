"""A pre-forked runner for the crash tests: one process imports the runner (ccxt, MLflow, pandas…) and warms the
registry once, then ``os.fork()``s a child per request that runs the real ``runner start`` (``runner.cli.main``)
— a real process, killed by a real SIGKILL at its armed kill point or from outside.

Protocol: JSON lines. On stdin ``{"op": "start", "argv": [...], "env": {...}, "out": path, "err": path}``
(answered ``{"started": pid}``) and ``{"op": "quit"}`` (or end of input): the children still running are
SIGKILLed and reaped, then the server exits. On stdout ``{"ready": pid}`` once warm, and ``{"exited": pid,
"status": n}`` for each child (``n`` as ``subprocess``: the exit status, or minus the signal that ended it).

Fork safety: the server starts no thread; after the warm-up it disposes of every SQLAlchemy engine (MLflow's
sqlite store) and closes every sqlite connection it holds, so a child opens its own; the child gets its own
stdin (/dev/null), stdout and stderr (files), its environment, default signal handlers, a fresh random seed
and its failpoints armed from its environment (``runner.failpoints.arm``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import selectors
import signal
import sys
import traceback
from typing import Any


def _warm(model: str | None, alias: str, symbol: str) -> None:
    import runner.cli
    import runner.engine
    import runner.guard
    import runner.observe
    import runner.protect
    import runner.switch  # noqa: F401
    import toolkit.registry.promotion  # noqa: F401  (the rollback)

    if model:
        from runner.version import load_version

        load_version(model, alias, symbol, "warm-up")  # MLflow's store, pyfunc, the version's code: imported once


def _release() -> None:
    """Close what a child must not share: SQLAlchemy engines' pooled connections, sqlite connections."""
    import sqlite3

    try:
        from sqlalchemy.engine import Engine
    except ImportError:  # pragma: no cover - mlflow brings it
        Engine = None  # type: ignore[assignment,misc]
    for obj in gc.get_objects():
        if Engine is not None and isinstance(obj, Engine):
            obj.dispose()
        elif isinstance(obj, sqlite3.Connection):
            try:
                obj.close()
            except sqlite3.Error:
                pass


def _child(req: dict[str, Any]) -> None:
    """Become the runner of ``req``: never returns."""
    status = 70
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(req["env"])
        random.seed()
        from runner import failpoints
        from runner.cli import main

        failpoints.arm(os.environ.get(failpoints.ENV, ""))
        status = main(list(req["argv"]))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def serve(model: str | None, alias: str, symbol: str) -> None:
    _warm(model, alias, symbol)
    _release()
    gc.collect()
    gc.freeze()  # the warm heap stays shared between the children (copy on write)
    out = sys.stdout

    def say(doc: dict[str, Any]) -> None:
        out.write(json.dumps(doc) + "\n")
        out.flush()

    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    say({"ready": os.getpid()})
    pending = b""
    quitting = False
    while not quitting or children:
        if not quitting and sel.select(timeout=0.02):
            chunk = os.read(0, 1 << 16)
            quitting = not chunk
            pending += chunk
            while b"\n" in pending and not quitting:
                line, pending = pending.split(b"\n", 1)
                req = json.loads(line)
                if req["op"] == "quit":
                    quitting = True
                    break
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    _child(req)
                children.add(pid)
                say({"started": pid})
            if quitting:
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
        while children:
            pid, wstatus = os.waitpid(-1, os.WNOHANG) if not quitting else os.waitpid(-1, 0)
            if pid == 0:
                break
            children.discard(pid)
            code = -os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else os.WEXITSTATUS(wstatus)
            say({"exited": pid, "status": code})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", nargs=3, metavar=("MODEL", "ALIAS", "SYMBOL"),
                        help="load this deployment's version once before forking")
    args = parser.parse_args()
    model, alias, symbol = args.warm or (None, "paper", "")
    serve(model, alias, symbol)


if __name__ == "__main__":
    main()

"""What the warm server imports and watches, and how a forked child becomes the requester's process.

:func:`warm_up` imports, once, what the commands and the templates need; :func:`code_signature` is what
the server re-checks on every request (stale code); :data:`IMPORT_TIME_ENV` are the variables whose
value was fixed by those imports. In a forked worker or kernel, :func:`adopt_process` and
:func:`adopt_stdio` take the requester's cwd, umask, environment and descriptors as a fresh interpreter
would, and :func:`die_with` ties a worker's life to the server's.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ENV_WATCH_EXTRA", "IMPORT_TIME_ENV", "IMPORT_TIME_PREFIXES", "adopt_process", "adopt_stdio",
           "code_signature", "die_with", "exit_status", "import_time_env", "warm_up"]

#: variables read once, at interpreter start or at import (numba's config, matplotlib's rcParams, the
#: locale, the time zone): a client whose value differs runs cold. (ipykernel's ``JPY_PARENT_PID`` default
#: is read at import too: a forked kernel is given ``--IPKernelApp.parent_handle`` instead; ``tempfile``'s
#: cached ``$TMPDIR`` is forgotten in every child.) ``toolkit`` itself reads the environment at call time.
IMPORT_TIME_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONIOENCODING", "MPLBACKEND",
                   "MPLCONFIGDIR", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
IMPORT_TIME_PREFIXES = ("NUMBA_",)
ENV_WATCH_EXTRA = "TOOLKIT_WARM_WATCH_EXTRA"
_PACKAGE = Path(__file__).resolve().parents[1]
_TEMPLATES = _PACKAGE.parent / "templates"
#: modules the commands import when they run (besides ``toolkit.*`` and the templates' own imports)
_COMMAND_IMPORTS = (
    "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry."
    "sqlalchemy_store", "mlflow.pyfunc", "sqlalchemy", "alembic", "pandas", "numpy", "papermill",
    "papermill.execute", "nbconvert", "nbformat", "jupyter_client.manager", "jupyter_client.kernelspec",
    "ipykernel.kernelapp", "ipykernel.ipkernel", "IPython", "matplotlib", "matplotlib.pyplot",
    "matplotlib_inline.backend_inline", "vectorbt", "pyarrow.parquet",
)


def warm_up() -> None:
    """Import what the commands and the templates need (``toolkit.*`` and each template's imports)."""
    import pkgutil

    from toolkit import importhooks
    from toolkit.reporting.kernels import template_imports

    importhooks.install()
    names: list[str] = [*_COMMAND_IMPORTS]
    for template in sorted(_TEMPLATES.glob("*.ipynb")):
        names += template_imports(json.loads(template.read_text(encoding="utf-8")))
    names += [m.name for m in pkgutil.walk_packages([str(_PACKAGE)], "toolkit.")
              if not m.name.startswith("toolkit.warm.") and not m.name.endswith("__main__")]
    importhooks.preload(list(dict.fromkeys(names)))  # what fails to import here fails in a cold process too


def code_signature(extra: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """Return (mtime_ns, size) of every source under ``toolkit/`` and ``templates/`` and of ``extra``."""
    out: dict[str, tuple[int, int]] = {}
    for root, suffixes in ((_PACKAGE, (".py",)), (_TEMPLATES, (".ipynb",))):
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            for name in files:
                if name.endswith(suffixes):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:
                        continue
                    out[path] = (st.st_mtime_ns, st.st_size)
    for path in extra:
        try:
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            out[path] = (-1, -1)
    return out


def exit_status(info: Any) -> int:
    """Return a shell's view of a ``waitid`` result: the exit code, or 128 + the signal that ended it."""
    return int(info.si_status) if info.si_code == os.CLD_EXITED else 128 + int(info.si_status)


def import_time_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in IMPORT_TIME_ENV or k.startswith(IMPORT_TIME_PREFIXES)}


def adopt_stdio(env: dict[str, str]) -> None:
    """Rebuild ``sys.stdin/stdout/stderr`` on descriptors 0/1/2 as a fresh interpreter would."""
    encoding, _, errors = (env.get("PYTHONIOENCODING") or "utf-8:").partition(":")
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    streams = []
    for fd, mode in ((0, "r"), (1, "w"), (2, "w")):
        try:
            tty = os.isatty(fd)
            stream = open(fd, mode, buffering=-1, encoding=encoding or "utf-8", closefd=False,
                          errors=errors or ("backslashreplace" if fd == 2 else "strict"),
                          newline="\n")
            if fd and isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=not unbuffered and (tty or fd == 2), write_through=unbuffered)
        except OSError:
            stream = None  # a closed descriptor: Python leaves the stream None too
        streams.append(stream)
    sys.stdin, sys.stdout, sys.stderr = streams  # type: ignore[assignment]
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams  # type: ignore[misc,assignment]


def adopt_process(req: dict[str, Any]) -> None:
    """Take the requester's cwd, umask and environment; forget what the server cached from its own."""
    os.chdir(req["cwd"])
    os.umask(int(req["umask"]))
    os.environ.clear()
    os.environ.update(req["env"])
    tempfile.tempdir = None  # gettempdir() caches $TMPDIR
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (``PR_SET_PDEATHSIG``); exit if it is gone."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(128 + signal.SIGKILL)

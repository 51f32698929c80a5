"""The kernel a template runs on: started early, warmed with the template's imports, stopped at once.

A :class:`toolkit.reporting.notebooks.TemplateRun` starts a :class:`TemplateKernel` first, lets its
caller do its own work and import papermill while the kernel starts, then hands the running kernel
to papermill. Three things keep dead time out of a run (``bench/bench_template.py`` measures them):

- **Start-up overlaps the caller.** Launching the kernel returns at once; on two cores the kernel's
  interpreter start, its ipykernel imports and the template's imports (below) run while this process
  imports papermill and does its own work (a backtest opens the registry; the gates check the
  version's evidence).
- **Warm imports.** The kernel starts with :mod:`toolkit.importhooks` installed, whatever the template
  imports first, and imports the modules named by the template's top-level ``import`` statements
  (:func:`template_imports`) before it answers: the cells then find them loaded. Only module-level
  statements count (an import inside an ``if`` stays where it is); a failing one is left for its cell
  to report. A template names in its metadata (``"toolkit": {"preload": [...]}``) the modules its
  cells import through the toolkit's own lazy imports (vectorbt, for the backtest's vectorbt
  record; the numba sweep kernel and pyarrow, for the gates' replays): the kernel imports those at
  start-up too, while the caller works, instead of inside a cell.
- **Stopped at once** (:meth:`TemplateKernel.stop`, ``SHUTDOWN_NOW``): killed after the last cell
  instead of asked to exit. A graceful exit lets the kernel's interpreter finalise, running full
  garbage collections over everything the cells imported (vectorbt, pandas, numba): 2–3 s for a
  backtest, during which papermill waited. By then papermill holds every cell's reply and outputs;
  a template writes its files inside its cells and the calling process records them, so a template
  must not leave work to the kernel's exit (``atexit`` handlers, background threads).

Inside a ``toolkit warm`` worker the kernel is forked by the warm server, which imported ipykernel and
the templates' modules once (:func:`set_kernel_launcher`, :mod:`toolkit.warm.kernels`); all of the above
still holds.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["KERNEL_ARGUMENTS", "SHUTDOWN_NOW", "TemplateKernel", "declared_parameters", "set_kernel_launcher",
           "template_imports"]

#: the kernel's command-line arguments: quiet, its IPython history in memory (as nbclient sets it)
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR", "--HistoryManager.hist_file=:memory:")
#: the kernel is killed after the last cell, never left to finalise (see the module docstring)
SHUTDOWN_NOW = True


def _code_cells(notebook: dict[str, Any]) -> Iterable[tuple[bool, str]]:
    """Yield ``(is_parameters_cell, source)`` for each code cell of a notebook's JSON."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            yield ("parameters" in cell.get("metadata", {}).get("tags", []),
                   "".join(source) if isinstance(source, list) else str(source))


def _parse(source: str) -> ast.Module | None:
    """Parse a cell's Python, IPython magics and shell escapes left out; None when it is not Python."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def declared_parameters(notebook: dict[str, Any]) -> tuple[str, ...]:
    """Return the names the ``parameters`` cell assigns at top level (what papermill may override)."""
    names: list[str] = []
    for is_parameters, source in _code_cells(notebook):
        tree = _parse(source) if is_parameters else None
        for node in tree.body if tree else ():
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return tuple(names)


def template_imports(notebook: dict[str, Any]) -> tuple[str, ...]:
    """Return the modules the template's code cells import at top level, in order (``from m import a``
    gives ``m`` and ``m.a``, which the kernel imports only when it is a submodule), then the modules its
    metadata names under ``toolkit.preload``."""
    out: list[str] = []
    for is_parameters, source in _code_cells(notebook):
        tree = None if is_parameters else _parse(source)
        for node in tree.body if tree else ():
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names if a.name != "*")]
            else:
                continue
            out += [m for m in found if m not in out]
    declared = notebook.get("metadata", {}).get("toolkit", {}).get("preload", [])
    out += [str(m) for m in declared if str(m) not in out]
    return tuple(out)


def _startup_line(preload: tuple[str, ...]) -> str:
    """Return the kernel's start-up line: the import hooks installed, then ``preload`` imported."""
    return ("import toolkit.importhooks as _hooks; _hooks.install(); "
            f"_hooks.preload({preload!r}); del _hooks")


_LAUNCHER: list[Callable[[list[str], dict[str, Any]], Any]] = []


def set_kernel_launcher(launch: Callable[[list[str], dict[str, Any]], Any] | None) -> None:
    """Have kernels started by ``launch(cmd, popen_kwargs)`` instead of ``Popen`` (``None``: the usual way).

    ``launch`` returns an object with ``subprocess.Popen``'s ``pid``, ``poll``, ``wait``, ``send_signal``,
    ``kill`` and ``terminate`` whose process leads its own process group, or ``None`` to start this kernel
    the usual way. A ``toolkit warm`` worker sets :func:`toolkit.warm.kernels.launch`.
    """
    _LAUNCHER[:] = [launch] if launch is not None else []


#: how long one kernel_info request waits for its idle status on IOPub (jupyter_client's own figure)
IOPUB_PROOF_S = 0.2


@functools.cache
def _client_class() -> type:
    """Return papermill's kernel client: ready as soon as IOPub is proven connected, without a dead wait.

    jupyter_client's ``wait_for_ready`` sends ``kernel_info`` until a reply comes and IOPub delivers a
    message, then drains IOPub until it has been silent for 0.2 s: every template run waited 0.2 s for
    nothing. Here IOPub is proven connected when it carries the ``idle`` status of the request that was
    answered, the last message that request causes; nothing of it is left to drain, and nbclient ignores
    IOPub messages whose parent is not one of its own requests. When that status does not come within
    :data:`IOPUB_PROOF_S` (published before the subscription was connected) the request is sent again,
    as jupyter_client does.
    """
    import asyncio
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient

    class ReadyKernelClient(AsyncKernelClient):  # type: ignore[misc]
        async def _idle_seen(self, request: str) -> bool:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + IOPUB_PROOF_S
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await self.iopub_channel.get_msg(timeout=left)
                except Empty:
                    return False
                if (msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
                        and msg["parent_header"].get("msg_id") == request):
                    return True
            return False

        async def wait_for_ready(self, timeout: float | None = None) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (float("inf") if timeout is None else timeout)
            while True:
                self.kernel_info()
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    reply = None
                if (reply is not None and reply["msg_type"] == "kernel_info_reply"
                        and await self._idle_seen(reply["parent_header"].get("msg_id"))):
                    self._handle_kernel_info_reply(reply)
                    return
                if not await self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if loop.time() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")

    return ReadyKernelClient


def _manager_class(log: Path) -> type:
    """Return a kernel manager class whose kernels write their stderr to ``log``, whose clients are
    :func:`_client_class`'s and that keeps its clients."""
    from jupyter_client.manager import AsyncKernelManager

    client_class = _client_class()

    class LoggingKernelManager(AsyncKernelManager):  # type: ignore[misc]
        clients_made: list[Any]

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with log.open("ab") as stderr:  # the child keeps its own copy of the descriptor
                kw["stderr"] = stderr
                process = _LAUNCHER[0](kernel_cmd, kw) if _LAUNCHER else None
                if process is None:
                    await super()._async_launch_kernel(kernel_cmd, **kw)
                    return
                # the provisioner's process, as LocalProvisioner.launch_kernel sets it: the kernel leads its
                # own process group (Popen(start_new_session=True) makes it so), signals go to the group
                prov: Any = self.provisioner
                prov.process, prov.pid, prov.pgid, prov.cwd = process, process.pid, process.pid, kw.get("cwd")
                self._reconcile_connection_info(prov.connection_info)

        def client(self, **kwargs: Any) -> Any:  # papermill's client: its channels are closed on stop
            self.client_factory = client_class
            kc = super().client(**kwargs)
            self.__dict__.setdefault("clients_made", []).append(kc)
            return kc

    return LoggingKernelManager


class TemplateKernel:
    """A kernel for one template run: :meth:`start` launches it (returns at once), :meth:`stop` kills it.

    Parameters
    ----------
    name
        The kernelspec (``toolkit.reporting.notebooks.kernel_name()``).
    preload
        Modules the kernel imports before it answers (:func:`template_imports`).
    log
        File receiving the kernel's stderr.
    cwd
        The kernel's working directory.
    """

    def __init__(self, name: str, preload: tuple[str, ...], log: Path, cwd: Path) -> None:
        self.name = name
        self.preload = preload
        self.arguments = (*KERNEL_ARGUMENTS, f"--IPKernelApp.exec_lines={_startup_line(preload)}")
        self.km: Any = _manager_class(log)(kernel_name=name)
        self._cwd = cwd
        self._stopped = False

    def start(self) -> None:
        """Launch the kernel process; it starts up and imports ``preload`` while the caller goes on."""
        from jupyter_core.utils import run_sync

        run_sync(self.km.start_kernel)(extra_arguments=list(self.arguments), cwd=str(self._cwd))

    def stop(self) -> None:
        """Kill the kernel now (``SHUTDOWN_NOW``), close papermill's channels, remove its connection file.

        Idempotent.
        """
        from jupyter_core.utils import run_sync

        if self._stopped:
            return
        self._stopped = True
        for kc in self.km.__dict__.get("clients_made", []):
            kc.stop_channels()
        try:
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=SHUTDOWN_NOW)
        except RuntimeError as exc:  # already gone
            if "No kernel is running" not in str(exc):
                raise
        finally:
            run_sync(self.km.cleanup_resources)()

"""The papermill and nbconvert adapter: execute templates, render HTML without code, keep an index.

Templates run on the project's own kernel (``toolkit.config.KERNEL_NAME``,
installed into ``.venv`` by ``make``), so a user-level ``python3`` kernelspec
elsewhere cannot win. Parameters are checked against the template's
``parameters`` cell before a kernel starts: papermill itself only warns about an
unknown one. A :class:`TemplateRun` starts the kernel before papermill is even
imported, so that the caller's own work overlaps its start-up; the kernel is warmed
and stopped by :class:`toolkit.reporting.kernels.TemplateKernel` so that no dead time
surrounds the cells (that module says how; ``bench/bench_template.py`` measures it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.errors import ConfigurationError, ExecutionFailed
from toolkit.reporting.kernels import TemplateKernel, declared_parameters, template_imports

__all__ = [
    "TemplateRun",
    "execute_template",
    "kernel_name",
    "prepare_rendering",
    "render_html",
    "start_template",
    "template_parameters",
    "template_path",
    "template_sha256",
]


def template_path(name: str) -> Path:
    """Return the path of template ``name`` (``backtest`` -> ``templates/backtest.ipynb``)."""
    path = config.TEMPLATES_DIR / f"{name}.ipynb"
    if not path.is_file():
        raise ConfigurationError("template", f"a notebook under {config.TEMPLATES_DIR}", name)
    return path


def template_sha256(path: str | Path) -> str:
    """Return the sha256 of a template's bytes (recorded on every run it produces)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def template_parameters(path: str | Path) -> dict[str, Any]:
    """Return the declared parameters of a template (name -> papermill's description)."""
    import papermill

    return dict(papermill.inspect_notebook(str(path)))


def kernel_name() -> str:
    """Return the kernel templates run on: the project's, else the current interpreter's ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return config.KERNEL_NAME if config.KERNEL_NAME in specs else "python3"


class TemplateRun:
    """One run of a template: entering starts its kernel, :meth:`execute` runs the cells, leaving stops it.

    Use :func:`start_template`. Between the two, the caller does its own work while the kernel starts
    up and imports the template's modules (on another core): a backtest opens the registry, the gates
    check the version's evidence. The kernel is killed right after the last cell, or on leaving the
    block whatever happened (an exception in the caller's work included); no cell runs unless
    :meth:`execute` is called.

    The kernel's own stderr (start-up warnings, the traceback of an interrupted cell after Ctrl-C)
    goes to a log file instead of the terminal; it is quoted only when it matters.
    """

    def __init__(self, template: str | Path, cwd: str | Path | None = None) -> None:
        self.template = Path(template)
        self.notebook = json.loads(self.template.read_text(encoding="utf-8"))
        self.declared = declared_parameters(self.notebook)
        self.cwd = Path(cwd or config.PROJECT_ROOT)
        self._kernel: TemplateKernel | None = None
        self._log: Path | None = None
        self._env_before: str | None = None
        self._executed = False

    def __enter__(self) -> TemplateRun:
        self._env_before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
        os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        fd, log_name = tempfile.mkstemp(prefix="toolkit-kernel-", suffix=".log")
        os.close(fd)
        self._log = Path(log_name)
        self._kernel = TemplateKernel(kernel_name(), template_imports(self.notebook), self._log, self.cwd)
        try:
            self._kernel.start()
        except RuntimeError as exc:
            self.__exit__(None, None, None)
            raise self._kernel_failed(exc) from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._kernel is not None:
            self._kernel.stop()
            self._kernel = None  # executes no more
        if self._log is not None:
            self._log.unlink(missing_ok=True)
        if self._env_before is None:
            os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)

    def check(self, parameters: dict[str, Any]) -> None:
        """Raise ``ConfigurationError`` naming a parameter the template does not declare."""
        unknown = sorted(set(parameters) - set(self.declared))
        if unknown:
            raise ConfigurationError(
                f"parameter {unknown[0]}", f"one of the template's parameters {sorted(self.declared)}", unknown[0]
            )

    def execute(self, output: str | Path, parameters: dict[str, Any], progress: bool = False) -> Path:
        """Run the cells with ``parameters`` into ``output`` through papermill, then kill the kernel.

        Raises
        ------
        ConfigurationError
            A parameter the template does not declare (no cell ran).
        ExecutionFailed
            A cell raised; the message carries the cell's error (the output notebook,
            with papermill's error banner, is still written). When the kernel itself died,
            the message quotes the end of its log.
        """
        if self._kernel is None or self._executed:
            raise RuntimeError("TemplateRun.execute: once, inside the with block")
        self._executed = True
        self.check(parameters)
        import papermill
        from papermill.exceptions import PapermillExecutionError

        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            papermill.execute_notebook(
                str(self.template), str(out), parameters=parameters, kernel_name=self._kernel.name,
                km=self._kernel.km, progress_bar=progress, cwd=str(self.cwd),
                # written once, when the last cell ends or one fails (with papermill's error banner), not again
                # at every cell's start and end: no half-run notebook is left behind a kernel that died
                request_save_on_cell_execute=False,
            )
        except PapermillExecutionError as exc:
            raise ExecutionFailed(
                f"{self.template.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                f"(executed notebook kept at {out})"
            ) from None
        except RuntimeError as exc:  # nbclient: the kernel died or never answered
            raise self._kernel_failed(exc) from None
        finally:
            self._kernel.stop()
        return out

    def _kernel_failed(self, exc: Exception) -> ExecutionFailed:
        text = self._log.read_text(encoding="utf-8", errors="replace") if self._log and self._log.exists() else ""
        tail = text.strip().splitlines()[-5:]
        return ExecutionFailed(f"{self.template.name}: the kernel failed ({exc}); its log ends: "
                               + (" | ".join(tail) or "(empty)"))


def start_template(template: str | Path, cwd: str | Path | None = None) -> TemplateRun:
    """Return a :class:`TemplateRun` of ``template``; ``with start_template(t) as run:`` starts its kernel."""
    return TemplateRun(template, cwd)


def execute_template(template: str | Path, output: str | Path, parameters: dict[str, Any],
                     cwd: str | Path | None = None, progress: bool = False) -> Path:
    """Execute ``template`` with ``parameters`` into ``output`` through papermill.

    The parameters are checked before a kernel starts; the kernel then starts, imports the
    template's modules while this process imports papermill, runs the cells and is killed
    right after the last one (:class:`TemplateRun`).

    Raises
    ------
    ConfigurationError
        A parameter the template does not declare (before a kernel starts).
    ExecutionFailed
        A cell raised (the executed notebook is kept), or the kernel died.
    """
    run = start_template(template, cwd)
    run.check(parameters)
    with run:
        return run.execute(output, parameters, progress)


def prepare_rendering() -> None:
    """Import nbconvert's HTML exporter ahead of :func:`render_html` (a workflow does it while a kernel runs)."""
    from nbconvert import HTMLExporter  # noqa: F401


def render_html(notebook: str | Path, target: str | Path, title: str | None = None) -> Path:
    """Render an executed notebook to HTML without code cells (what the desk reads)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter()
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or Path(notebook).stem}})
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out

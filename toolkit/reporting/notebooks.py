"""The papermill and nbconvert adapter: execute templates, render HTML without code, keep an index.

Templates run on the project's own kernel (``toolkit.config.KERNEL_NAME``,
installed into ``.venv`` by ``make``), so a user-level ``python3`` kernelspec
elsewhere cannot win. Parameters are checked against the template's
``parameters`` cell before a kernel starts: papermill itself only warns about an
unknown one. The kernel is started, warmed and stopped by
:class:`toolkit.reporting.kernels.TemplateKernel` so that no dead time surrounds the
cells (that module says how; ``bench/bench_template.py`` measures it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.errors import ConfigurationError, ExecutionFailed
from toolkit.reporting.kernels import TemplateKernel, declared_parameters, template_imports

__all__ = [
    "execute_template",
    "kernel_name",
    "prepare_rendering",
    "render_html",
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


def execute_template(template: str | Path, output: str | Path, parameters: dict[str, Any],
                     cwd: str | Path | None = None, progress: bool = False,
                     meanwhile: Callable[[], object] | None = None) -> Path:
    """Execute ``template`` with ``parameters`` into ``output`` through papermill.

    The parameters are checked first; then the kernel starts (and imports the template's modules)
    while this process imports papermill and calls ``meanwhile``, the caller's own preparation
    (a backtest opens the registry it records into); then papermill runs the cells on that kernel,
    which is killed right after the last one.

    Raises
    ------
    ConfigurationError
        A parameter the template does not declare (before a kernel starts).
    ExecutionFailed
        A cell raised; the message carries the cell's error (the output notebook,
        with papermill's error banner, is still written). When the kernel itself died,
        the message quotes the end of its log.

    Whatever ``meanwhile`` raises propagates, after the kernel is stopped. The kernel's own
    stderr (start-up warnings, the traceback of an interrupted cell after Ctrl-C) goes to a
    log file instead of the terminal; it is quoted only when it matters.
    """
    notebook = json.loads(Path(template).read_text(encoding="utf-8"))
    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ConfigurationError(
            f"parameter {unknown[0]}", f"one of the template's parameters {sorted(declared)}", unknown[0]
        )
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    fd, log_name = tempfile.mkstemp(prefix="toolkit-kernel-", suffix=".log")
    os.close(fd)
    log = Path(log_name)
    kernel = TemplateKernel(kernel_name(), template_imports(notebook), log, Path(cwd or config.PROJECT_ROOT))
    try:
        try:
            kernel.start()
        except RuntimeError as exc:
            raise _kernel_failed(template, exc, log) from None
        import papermill  # while the kernel starts
        from papermill.exceptions import PapermillExecutionError

        if meanwhile is not None:
            meanwhile()
        try:
            papermill.execute_notebook(
                str(template), str(out), parameters=parameters, kernel_name=kernel.name, km=kernel.km,
                progress_bar=progress, cwd=str(cwd or config.PROJECT_ROOT),
            )
        except PapermillExecutionError as exc:
            raise ExecutionFailed(
                f"{Path(template).name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                f"(executed notebook kept at {out})"
            ) from None
        except RuntimeError as exc:  # nbclient: the kernel died or never answered
            raise _kernel_failed(template, exc, log) from None
    finally:
        kernel.stop()
        log.unlink(missing_ok=True)
        if env_before is None:
            os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
    return out


def _kernel_failed(template: str | Path, exc: Exception, log: Path) -> ExecutionFailed:
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
    return ExecutionFailed(f"{Path(template).name}: the kernel failed ({exc}); its log ends: "
                           + (" | ".join(tail) or "(empty)"))


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

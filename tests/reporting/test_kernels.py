"""The template kernel: parameters read as papermill reads them, warm imports, hooks first, killed at once.

Real kernels on the project's kernelspec, through ``start_template`` / ``execute_template``, on tiny
notebooks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from suite_support import live_children

from toolkit.errors import ConfigurationError
from toolkit.reporting.kernels import KERNEL_ARGUMENTS, SHUTDOWN_NOW, declared_parameters, template_imports
from toolkit.reporting.notebooks import execute_template, start_template, template_parameters, template_path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted([*(ROOT / "templates").glob("*.ipynb"), *(ROOT / "notebooks").glob("*.ipynb")])


def _notebook(path: Path, *sources: str) -> Path:
    params = new_code_cell("x = 1\nlabel: str = 'a'  # annotated")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("tiny"), params, *(new_code_cell(s) for s in sources)])
    nb.metadata["kernelspec"] = {"name": "desk-toolkit", "display_name": "Desk toolkit (.venv)", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _stdout(executed: Path, cell: int) -> str:
    nb = json.loads(executed.read_text())
    return "".join("".join(o.get("text", "")) for o in nb["cells"][cell]["outputs"] if o["output_type"] == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_declared_parameters_are_papermills(path: Path) -> None:
    assert set(declared_parameters(json.loads(path.read_text()))) == set(template_parameters(path))


def test_the_backtest_template_preloads_its_imports_but_not_the_registry() -> None:
    imports = template_imports(json.loads(template_path("backtest").read_text()))
    assert {"toolkit.backtest", "toolkit.reporting.plots", "toolkit.data.quality"} <= set(imports)
    assert not any(m.startswith("toolkit.registry") for m in imports)  # imported under `if register:` only


def test_the_kernel_starts_warm_with_the_hooks_and_is_killed_after_the_last_cell(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    template = _notebook(
        tmp_path / "k.ipynb",
        "import os, sys\n"  # no cell imports toolkit: the hooks come with the kernel; colorsys: a later cell's
        "print(any(type(f).__module__ == 'toolkit.importhooks' for f in sys.meta_path),\n"
        "      'colorsys' in sys.modules, x, label, os.getpid())",
        "import nbformat, sys\nprint('rfc3987_syntax.syntax_helpers' in sys.modules)",
        f"import atexit, colorsys, pathlib\natexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')",
    )
    before = live_children(os.getpid())
    with start_template(template) as run:
        during = live_children(os.getpid())  # the caller's own work happens here, the kernel starting meanwhile
        out = run.execute(tmp_path / "out.ipynb", {"x": 5})
        after_cells = live_children(os.getpid())
    installed, preloaded, x, label, pid = _stdout(out, 3).split()
    assert (installed, preloaded, x, label) == ("True", "True", "5", "a")
    assert _stdout(out, 4).strip() == "False"  # nbformat imported in the kernel without building the parser
    assert int(pid) in during - before  # the kernel ran while the caller worked
    assert after_cells == before  # it is gone right after the last cell …
    assert not marker.exists()  # … killed, not left to run its exit handlers (SHUTDOWN_NOW)
    assert SHUTDOWN_NOW is True and "--HistoryManager.hist_file=:memory:" in KERNEL_ARGUMENTS


def test_a_failing_check_in_the_block_stops_the_kernel_before_any_cell(tmp_path: Path) -> None:
    template = _notebook(tmp_path / "k.ipynb", "print(x)")
    before = live_children(os.getpid())
    with pytest.raises(LookupError, match="registry down"), start_template(template) as run:
        assert live_children(os.getpid()) != before
        raise LookupError("registry down")
    assert live_children(os.getpid()) == before
    assert not (tmp_path / "out.ipynb").exists()  # no cell ran
    with pytest.raises(RuntimeError, match="once"):
        run.execute(tmp_path / "out.ipynb", {})


def test_an_unknown_parameter_is_refused_before_any_cell(tmp_path: Path) -> None:
    template = _notebook(tmp_path / "k.ipynb", "print(x)")
    with start_template(template) as run, pytest.raises(ConfigurationError, match="colour"):
        run.execute(tmp_path / "out.ipynb", {"colour": "red"})
    assert not (tmp_path / "out.ipynb").exists()
    with pytest.raises(ConfigurationError, match="colour"):  # execute_template: before a kernel starts
        execute_template(template, tmp_path / "out.ipynb", {"colour": "red"})


def test_a_template_names_the_modules_its_cells_import_lazily() -> None:
    backtest = template_imports(json.loads(template_path("backtest").read_text()))
    gates = template_imports(json.loads(template_path("gates").read_text()))
    assert {"vectorbt", "toolkit.backtest.fused"} <= set(backtest)
    assert {"toolkit.backtest.fused", "pyarrow.parquet"} <= set(gates)
    notebook = {"metadata": {"toolkit": {"preload": ["colorsys", "json"]}},
                "cells": [{"cell_type": "code", "source": "import json\nimport os"}]}
    assert template_imports(notebook) == ("json", "os", "colorsys")


def test_the_client_is_ready_once_iopub_carries_its_requests_idle_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """No message of the readiness check is left for the first cell, and none of the first cell's is lost."""
    import asyncio

    from toolkit.reporting.kernels import TemplateKernel

    kernel = TemplateKernel("desk-toolkit", (), tmp_path / "kernel.log", tmp_path)
    kernel.start()
    try:
        kc = kernel.km.client()
        assert type(kc).__name__ == "ReadyKernelClient"

        async def first_cell() -> list[tuple[str, str, str]]:
            kc.start_channels()
            await kc.wait_for_ready(timeout=120)
            assert not await kc.iopub_channel.msg_ready()  # nothing queued: the check read its idle status last
            request = kc.execute("print('first')")
            seen = []
            while not seen or seen[-1][1] != "idle":
                msg = await kc.iopub_channel.get_msg(timeout=60)
                seen.append((msg["msg_type"], msg["content"].get("execution_state", msg["content"].get("text", "")),
                             msg["parent_header"].get("msg_id") == request))
            return seen

        seen = asyncio.run(first_cell())
    finally:
        kernel.stop()
    assert all(ours for _, _, ours in seen), seen  # every message after readiness is the cell's own
    assert seen[0][:2] == ("status", "busy") and ("stream", "first\n", True) in seen

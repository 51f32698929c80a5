"""What every ``tools/make_*.py`` notebook writer shares: stable cell ids, the project's kernel, the modules a
template's kernel preloads, and writing the files. (``python tools/make_x.py`` puts ``tools/`` first on
``sys.path``; ``tests/test_templates.py`` does the same before loading a writer.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
KERNEL = {"name": "desk-toolkit", "display_name": "Desk toolkit (.venv)", "language": "python"}


def finish(nb: nbformat.NotebookNode, preload: list[str] | None = None) -> nbformat.NotebookNode:
    """Give the cells stable ids (regenerating changes only what was edited), the kernel, and the modules the
    cells import lazily, for the template's kernel to import at start-up
    (``toolkit.reporting.kernels.template_imports``)."""
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    if preload is not None:
        nb.metadata["toolkit"] = {"preload": preload}
    return nb


def write(notebooks: Callable[[], dict[Path, nbformat.NotebookNode]]) -> int:
    """Write every notebook ``notebooks()`` returns; the ``main`` of a writer."""
    for path, nb in notebooks().items():
        nbformat.write(nb, str(path))
        print(f"wrote {path}")
    return 0

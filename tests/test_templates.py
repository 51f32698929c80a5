"""The committed notebooks are exactly what ``tools/`` generates from its sources (edit the generator, rerun it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ["make_templates.py", "make_gates_template.py", "make_attribution_template.py",
              "make_incident_template.py"]


def _load(name: str) -> ModuleType:
    tools = str(ROOT / "tools")
    if tools not in sys.path:  # as `python tools/<name>` has it: the writers share tools/notebook_writer.py
        sys.path.insert(0, tools)
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / "tools" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("generator", GENERATORS)
def test_committed_notebooks_equal_the_generated_ones(generator: str) -> None:
    notebooks = _load(generator).notebooks()
    assert notebooks, f"{generator} generates nothing"
    for path, nb in notebooks.items():
        committed = path.read_text(encoding="utf-8")
        generated = nbformat.writes(nb) + "\n"
        assert committed == generated, (f"{path.relative_to(ROOT)} differs from what tools/{generator} writes: "
                                        f"run `.venv/bin/python tools/{generator}` and commit the result")


def test_every_template_and_notebook_has_a_generator() -> None:
    generated = {p for g in GENERATORS for p in _load(g).notebooks()}
    committed = set((ROOT / "templates").glob("*.ipynb")) | set((ROOT / "notebooks").glob("*.ipynb"))
    assert committed == generated

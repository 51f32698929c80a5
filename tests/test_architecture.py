"""The shape of the code: areas import each other without cycles, and each outside system has one adapter.

Read from the source (every ``import`` statement, lazy ones inside functions included),
so a new cycle or a second module talking to MLflow fails here, not in review.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolkit"

#: outside system -> the only modules (paths under toolkit/) allowed to import it
ADAPTERS = {
    "mlflow": {"registry/adapter/models.py", "registry/adapter/runs.py",
               "registry/strategy_model.py",  # runs inside the model
               "registry/auth_app.py"},  # runs inside `mlflow server` (the desk-auth app)
    "papermill": {"reporting/notebooks.py"},
    "nbconvert": {"reporting/notebooks.py"},
    "vectorbt": {"backtest/portfolio.py"},
    "ccxt": {"exchange/client.py", "exchange/convert.py"},
    "tenacity": {"exchange/retry.py"},
    "psycopg": {"database.py"},
    "distributed": {"backtest/cluster.py"},
}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def _imports(path: Path) -> list[str]:
    """Return every absolute module name imported by ``path`` (``from a import b`` gives ``a`` and ``a.b``)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def _sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "bundled" not in p.parts]


def _area_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _sources():
        src = _area(_module(path))
        for name in _imports(path):
            if name.startswith("toolkit."):
                dst = _area(name)
                if dst in {p.stem for p in PACKAGE.iterdir()} and dst != src:
                    graph[src].add(dst)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_area_import_graph_has_no_cycle() -> None:
    graph = _area_graph()
    assert graph["workflows"] >= {"registry", "reporting"}  # the graph is really read (not empty)
    assert _cycle(graph) is None, f"import cycle between areas: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_detection_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layers_point_inward() -> None:
    graph = _area_graph()
    assert graph.get("strategies", set()) == set(), "strategies travel inside every version: no toolkit import"
    assert graph.get("stats", set()) <= {"errors"}
    below = {a for a in graph if a not in ("workflows", "cli")}
    importers = sorted(a for a in below if "workflows" in graph[a])
    assert importers == [], f"only the CLI may import workflows, found {importers}"
    assert "registry" not in graph.get("reporting", set()), "reporting renders; it does not talk to the registry"


@pytest.mark.parametrize("system", sorted(ADAPTERS))
def test_each_outside_system_has_one_adapter(system: str) -> None:
    found = {str(p.relative_to(PACKAGE)) for p in _sources()
             if any(n == system or n.startswith(system + ".") for n in _imports(p))}
    assert found, f"no module imports {system}: the rule is stale"
    assert found <= ADAPTERS[system], f"{system} imported outside its adapter: {sorted(found - ADAPTERS[system])}"


def test_the_registry_adapter_imports_without_backtest_gates_or_vectorbt() -> None:
    """A process that only reads the registry (the runner, ``toolkit status``) does not pull in the research stack."""
    code = ("import sys, toolkit.registry.adapter as a; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('vectorbt', 'papermill', 'numba') "
            "or m.startswith(('toolkit.backtest', 'toolkit.gates', 'toolkit.workflows', 'toolkit.reporting'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

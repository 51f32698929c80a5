"""templates/gates.ipynb executed by papermill on the project kernel against a bundle dir, then nbval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from toolkit import config
from toolkit.backtest.bundle import load_bundle
from toolkit.gates import EXTRAS_FILE, VERDICT_FILE, Evidence, GatePolicy, evaluate, verify_verdict_json
from toolkit.ops.regimes import RegimeMap, verify_regime_map
from toolkit.reporting.notebooks import execute_template, render_html, template_parameters

TEMPLATE = config.TEMPLATES_DIR / "gates.ipynb"


def test_template_declares_the_contract_parameters() -> None:
    nb = nbformat.read(str(TEMPLATE), as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "desk-toolkit"
    assert nb.metadata["kernelspec"]["display_name"] == "Desk toolkit (.venv)"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert set(template_parameters(TEMPLATE)) == {"model_name", "version", "policy_path", "output_dir",
                                                  "evidence_dir", "registry_trials", "stage", "latency_path",
                                                  "paper_record_path"}


@pytest.fixture(scope="module")
def executed(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("gates-out")
    nb = execute_template(TEMPLATE, out / "gates.ipynb", {
        "model_name": "ma_cross.BTC-USDT.1h", "version": 1, "policy_path": None,
        "output_dir": str(out), "evidence_dir": str(bundle_dir)})
    return nb, out


def test_executed_template_writes_a_reproducible_verdict(executed: tuple[Path, Path], bundle_dir: Path,
                                                         policy: GatePolicy) -> None:
    nb_path, out = executed
    text = (out / VERDICT_FILE).read_text()
    assert verify_verdict_json(text)
    assert (out / EXTRAS_FILE).is_file()
    # the verdict is a pure function of the recorded evidence and the policy
    assert evaluate(Evidence.read(bundle_dir, out), policy).to_json() == text
    nb = nbformat.read(str(nb_path), as_version=4)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 5  # DSR vs trials, PBO logits, drawdown vs limit, latency vs budget, regime map
    # the regime map stored with the verdict re-derives from the bundle's own bars
    regimes = RegimeMap.from_json((out / "regime_map.json").read_text())
    verify_regime_map(regimes, load_bundle(bundle_dir).bars)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    html = render_html(nb_path, out / "gates.html").read_text()
    assert "Promotion gates" in html and json.loads(text)["verdict_sha"] in html
    assert "evaluate_bundle(" not in html  # no code in the desk's HTML


def test_executed_copy_passes_nbval_lax(executed: tuple[Path, Path]) -> None:
    nb_path, _ = executed
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           str(nb_path)], capture_output=True, text=True, cwd=nb_path.parent, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout

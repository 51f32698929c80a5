"""The research notebook runs as shipped (small parameters), and every CLI command has --help."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.backtest.costs import CostModel
from toolkit.errors import ConfigurationError
from toolkit.reporting.notebooks import execute_template, template_parameters, template_path

ROOT = Path(__file__).resolve().parents[1]


def test_research_notebook_executes(tmp_path: Path) -> None:
    out = execute_template(ROOT / "notebooks" / "explore_strategy.ipynb", tmp_path / "explore.ipynb",
                           {"timeframe": "4h", "grid": {"window": [12, 24], "exit_window": [6]}, "launch": False})
    text = out.read_text()
    assert "trials recorded so far for donchian" in text
    assert '"output_type": "error"' not in text


def test_cost_calibration_notebook_executes(tmp_path: Path) -> None:
    out = execute_template(ROOT / "notebooks" / "cost_calibration.ipynb", tmp_path / "costs.ipynb",
                           {"sizes": [100_000, 1_000_000], "every": "5s"})
    text = out.read_text()
    assert "Fitted Y = **0.1" in text  # 0.18 on the default sizes and states; 0.1x on this coarser run too
    assert text.count('"image/png"') == 2
    assert '"output_type": "error"' not in text


def test_demo_selection_notebook_executes(tmp_path: Path) -> None:
    """The research that picks the demo, on a reduced set: one trend candidate and the control, one year."""
    out = execute_template(ROOT / "notebooks" / "demo_selection.ipynb", tmp_path / "selection.ipynb",
                           {"candidates": {"ma_cross": {"fast": [20, 40], "slow": [200]},
                                           "bollinger": {"window": [48], "k": [2.0]}},
                            "periods": [["2024-01-01", "2024-12-31"]]})
    text = out.read_text()
    assert '"output_type": "error"' not in text
    assert "ma_cross" in text and "bollinger" in text and ("Chosen:" in text or "No candidate passes" in text)


def test_template_declares_its_parameters() -> None:
    declared = template_parameters(template_path("backtest"))
    for name in ("strategy", "symbol", "timeframe", "start", "end", "grid", "taker_fee", "maker_fee",
                 "capital", "split", "experiment", "output_dir"):
        assert name in declared


def test_template_cost_defaults_are_the_cost_models() -> None:
    # the template passes its costs explicitly: they must be the calibrated defaults, not older figures
    declared = template_parameters(template_path("backtest"))
    model = CostModel()
    for name in ("taker_fee", "maker_fee", "spread_model", "spread_bps", "spread_share", "impact_coef",
                 "execution_horizon_minutes"):
        assert ast.literal_eval(declared[name]["default"]) == getattr(model, name), name


def test_unknown_template_parameter_is_refused_before_a_kernel_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="colour"):
        execute_template(template_path("backtest"), tmp_path / "x.ipynb", {"colour": "red"})
    assert not (tmp_path / "x.ipynb").exists()


@pytest.mark.parametrize("command", [[], ["backtest"], ["data"], ["data", "check"], ["report", "index"], ["demo"]])
def test_help(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", *command, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout

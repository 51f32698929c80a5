"""``make demo`` itself, as the README tells a new user to run it (to a temporary store), and the template's
``register = True`` cell, as a researcher runs it in JupyterLab."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "TOOLKIT_ARTIFACTS": str(root / "artifacts"), "TOOLKIT_LEDGER": str(root / "trials.db"),
            "TOOLKIT_REPORTS_DIR": str(root / "reports"), "TOOLKIT_AUDIT": str(root / "audit.db")}


def test_make_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    env = {k: v for k, v in _env(tmp_path).items() if not k.startswith("TOOLKIT_POLICY")}  # the shipped policies
    proc = subprocess.run(["make", "--no-print-directory", "demo"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in ("1/7 backtest", "2/7 paper gates", "3/7 promote to paper", "4/7 paper trading", "5/7 attribution",
                 "6/7 live gates", "7/7 index"):
        assert step in out, out
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = client.get_model_version("ma_cross.BTC-USDT.1h", "1").tags
    paper, live = tags["gate.paper.verdict"], tags["gate.live.verdict"]
    # the configuration notebooks/demo_selection.ipynb chose passes the shipped paper policy on the real bars
    assert paper == "passed" and tags["data.quality"] == "passed", out
    aliases = client.get_registered_model("ma_cross.BTC-USDT.1h").aliases
    assert str(aliases.get("paper")) == "1"  # promoted to paper because the paper gates passed
    assert "champion" not in aliases  # the demo never goes live
    assert "not promoted" not in out
    # live: never eligible today, and the demo says why in plain words
    assert live == "failed" and "paper_record" in tags["gate.live.failed"].split(",")
    assert "not eligible for live:" in out and "paper_record: paper record: Not enough data yet" in out
    # the runner paper-traded the version against the emulator, attribution measured the record
    assert re.search(r"96 replayed hours from 2024-03-01 UTC against the emulator: 97 decisions, [1-9]\d* orders?", out)
    assert "0 open incidents" in out
    assert tags["attribution.paper.verdict"] == "not enough data yet"
    assert float(tags["attribution.paper.days"]) == pytest.approx(4.0, abs=0.05)
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "backtest" in index and "paper gates" in index and "live gates" in index
    # the desk overview on top of the index
    assert index.index("<h2>Models</h2>") < index.index("<h2>Reports</h2>")
    row = json.loads((tmp_path / "reports" / "overview.json").read_text())["ma_cross.BTC-USDT.1h"]
    assert row["paper"]["version"] == "1" and row["champion"] is None
    assert row["paper"]["paper_record"]["verdict"] == "not enough data yet"
    run = client.get_run(client.get_model_version("ma_cross.BTC-USDT.1h", "1").run_id)
    assert row["paper"]["backtest_oos_sharpe"] == run.data.metrics["oos.sharpe"]
    assert {s: v["verdict"] for s, v in row["latest_verdicts"].items()} == {"paper": "passed", "live": "failed"}
    assert row["promotions"] == {"paper": 1, "live": 0} and row["rollbacks"] == {"paper": 0, "live": 0}
    assert 0 <= row["median_hours_registration_to_paper"] < 1 and row["median_hours_paper_to_live"] is None
    assert f"tracking store: sqlite:///{tmp_path / 'mlflow.db'}" in out  # the temporary store, not the repo's


def test_the_template_registers_from_the_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.reporting.notebooks import execute_template, template_path

    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    nb = execute_template(template_path("backtest"), tmp_path / "run.ipynb", {
        "strategy": "ma_cross", "timeframe": "1h", "start": "2024-01-01", "end": "2024-03-31",
        "grid": {"fast": [5], "slow": [30]}, "register": True, "output_dir": str(tmp_path / "bundle"),
        "progress": False})
    assert "Registered **ma_cross.BTC-USDT.1h** version 1" in nb.read_text()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("ma_cross.BTC-USDT.1h", "1")
    assert version.tags["gate.paper.verdict"] == version.tags["gate.live.verdict"] == "not_evaluated"
    assert version.tags["strategies.package"]

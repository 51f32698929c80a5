"""``toolkit study`` as installed: a tiny study on a real Dask LocalCluster, its trials in the ledger once; bad
study files refused naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.backtest.ledger import TrialLedger, ledger_key
from toolkit.backtest.study import load_study
from toolkit.errors import ConfigurationError

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
STUDY = """\
study_id: tiny
grids:
  ma_cross: {fast: [5, 10], slow: [50]}
  donchian: {window: [24]}
markets:
  - {symbol: BTC/USDT, timeframe: 4h, start: "2024-01-01", end: "2024-04-30"}
params: {taker_fee: 0.001}
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TOOLKIT_DATABASE_URL", "MLFLOW_TRACKING_URI", "PGPASSFILE")}
    return {**env, "TOOLKIT_LEDGER": str(tmp_path / "trials.db")}


def test_the_study_file_gives_one_cell_per_strategy_and_market(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(STUDY)
    spec, configs = load_study(tmp_path / "s.yaml")
    assert spec.study_id == "tiny"
    assert [(c.strategy, c.symbol, c.timeframe, len(c.combinations())) for c in configs] == [
        ("ma_cross", "BTC/USDT", "4h", 2), ("donchian", "BTC/USDT", "4h", 1)]
    assert all(c.costs.taker_fee == 0.001 for c in configs)


@pytest.mark.parametrize(("text", "field"), [
    (STUDY.replace("grids:", "gridz:"), "gridz"),
    (STUDY.replace("study_id: tiny\n", "").replace("markets:\n  - {symbol: BTC/USDT, timeframe: 4h, "
                                                   "start: \"2024-01-01\", end: \"2024-04-30\"}\n", ""), "markets"),
    (STUDY.replace("window: [24]", "windows: [24]"), "grids.donchian @ BTC/USDT 4h: "),
    (STUDY.replace("params: {taker_fee: 0.001}", "params: {symbol: ETH/USDT}"), "params.symbol"),
    ("- just a list\n", "study"),
])
def test_a_bad_study_file_is_refused_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_study(tmp_path / "s.yaml")
    assert err.value.field.startswith(field), err.value


def test_toolkit_study_sweeps_on_a_local_cluster_and_records_each_trial_once(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(STUDY)
    out = subprocess.run([TOOLKIT, "study", str(tmp_path / "s.yaml"), "--workers", "1", "--chunk", "1", "--json"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["study_id"] == "tiny" and result["scheduler"] == "LocalCluster" and result["workers"] == 1
    assert result["combinations"] == 3 and result["tasks"] == 3 + 2  # one task per combination, one per cell
    assert [(c["strategy"], c["trials_added"]) for c in result["cells"]] == [("ma_cross", 2), ("donchian", 1)]
    ledger = TrialLedger(tmp_path / "trials.db")
    assert ledger.count(ledger_key("ma_cross", "BTC/USDT")) == 2
    assert ledger.count(ledger_key("donchian", "BTC/USDT")) == 1


def test_a_bad_scheduler_address_exits_2_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(STUDY)
    out = subprocess.run([TOOLKIT, "study", str(tmp_path / "s.yaml"), "--scheduler", "127.0.0.1:8786", "--json"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert json.loads(out.stdout)["error"]["field"] == "scheduler"

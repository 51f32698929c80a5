"""Fixtures of the gate tests: one real recorded bundle per session, and hand-made evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.backtest import TrialLedger, config_from_params, run_backtest
from toolkit.backtest.bundle import save_bundle
from toolkit.clock import ManualClock
from toolkit.data.quality import certify
from toolkit.gates import DEFAULT_POLICY_PATH, Evidence, GatePolicy, collect_evidence, load_policy
from toolkit.reporting.views import bars_for


@pytest.fixture(scope="session")
def policy() -> GatePolicy:
    return load_policy(DEFAULT_POLICY_PATH)  # the shipped live policy, whatever TOOLKIT_POLICY_LIVE says


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real backtest bundle: ma_cross on bundled BTC/USDT 1h bars 2023-01..2024-06, 9 combinations."""
    root = tmp_path_factory.mktemp("gates-bundle")
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", start="2023-01-01", end="2024-06-30",
                             grid={"fast": [5, 10, 20], "slow": [50, 100, 200]})
    bars = bars_for(cfg)
    result = run_backtest(cfg, bars, ledger=TrialLedger(root / "t.db"), progress=False,
                          clock=ManualClock("2026-01-02T03:04:05Z"))
    return save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), root / "bundle")


@pytest.fixture(scope="session")
def real_evidence(bundle_dir: Path, policy: GatePolicy, tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    """Evidence collected once on the real bundle, written and read back."""
    out = tmp_path_factory.mktemp("gates-extras")
    collect_evidence(bundle_dir, policy).write(out)
    return Evidence.read(bundle_dir, out)


# --------------------------------------------------------------------------- hand-made evidence


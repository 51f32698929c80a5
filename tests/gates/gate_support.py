"""Helpers of the gate tests: policy tweaks and hand-made evidence (imported by name; not fixtures)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.backtest.bundle import Bundle
from toolkit.data.quality import data_hash
from toolkit.gates import DEFAULT_POLICY_PATH, Evidence, GatePolicy, load_policy
from toolkit.gates.evidence import measurement_settings
from toolkit.gates.policy import policy_from_dict


def tweak(policy: GatePolicy, **sections: Any) -> GatePolicy:
    """Return ``policy`` with some fields of some sections replaced (validated again)."""
    data = policy.model_dump(mode="json")
    for name, fields in sections.items():
        data[name] = {**data[name], **fields} if isinstance(fields, dict) else fields
    return policy_from_dict(data)


def _bars(n: int, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(7)
    idx = pd.date_range(start, periods=n, freq="1h", tz="UTC", name="timestamp")
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close,
                         "volume": np.full(n, 500.0), "quote_volume": 500.0 * close}, index=idx)


def make_evidence(n: int = 24 * 400, drift: float = 4e-4, vol: float = 4e-3, seed: int = 1,
                  n_trials: int = 20, trades: int = 40, split: float = 0.5) -> Evidence:
    """Build evidence from small hand-made frames that pass every gate of the default policy.

    The chosen strategy earns i.i.d. normal hourly returns with ``drift``/``vol``
    (annualised Sharpe = drift/vol·√8760); the other trials are pure noise.
    """
    from toolkit.backtest.config import BacktestConfig

    rng = np.random.default_rng(seed)
    bars = _bars(n)
    idx = bars.index
    r = rng.normal(drift, vol, n)
    split_at = idx[int(n * split)]
    pos = np.ones(n)
    trial = rng.normal(0.0, vol, (n, n_trials))
    trial[:, 0] = r
    trials = pd.DataFrame({"timeframe": ["1h"] * n_trials, "data_hash": [data_hash(bars)] * n_trials,
                           "params": [f'{{"fast": {j + 2}, "slow": 50}}' for j in range(n_trials)],
                           "sharpe_is": trial[: int(n * split)].mean(0) / trial[: int(n * split)].std(0, ddof=1),
                           "sharpe_oos": trial[int(n * split):].mean(0) / trial[int(n * split):].std(0, ddof=1)})
    t_entry = idx[int(n * split)::max(1, (n - int(n * split)) // trades)][:trades]
    trade_frame = pd.DataFrame({"entry_time": t_entry, "return": np.full(len(t_entry), 0.01)})
    orders = pd.DataFrame({"timestamp": [idx[1]], "side": ["buy"], "size": [100_000 / bars["open"].iloc[1]],
                           "price": [bars["open"].iloc[1]], "notional": [100_000.0]})
    cfg = BacktestConfig(strategy="ma_cross", timeframe="1h", capital=100_000.0, params={"fast": 10, "slow": 50})
    dh = data_hash(bars)
    bundle = Bundle(
        config=cfg, config_sha256=cfg.sha256(), chosen={"fast": 10, "slow": 50}, chosen_index=0,
        strategy_type="intraday", split_at=split_at.isoformat(), created_at="2026-01-01T00:00:00+00:00",
        data_hash=dh, model_name="ma_cross.BTC-USDT.1h", backtest_id="hand", n_trials=n_trials,
        n_trials_run=n_trials, metrics={}, metrics_is={}, benchmark={}, required_history=50,
        folds=[{"train_lo": 0, "test_lo": int(n * split), "test_hi": n, "chosen": {"fast": 10, "slow": 50}}],
        certificate={"passed": True, "failed": [], "data_hash": dh, "n_bars": n, "expected_bars": n},
        bars=bars, returns=pd.DataFrame({"return": r, "position": pos * 0.3, "direction": pos}, index=idx),
        trades=trade_frame, orders=orders, trials=trials, sweep=pd.DataFrame(),
        trial_returns=pd.DataFrame(trial, index=idx, columns=[f"t{j:04d}" for j in range(n_trials)]),
    )
    extras = {
        "settings": measurement_settings(load_policy(DEFAULT_POLICY_PATH)),
        "latency": {"samples_ns": [200_000 + 10 * k for k in range(1000)], "window_bars": 500},
        "lookahead": {"cut_points": ["x"] * 40, "decisions_compared": 1000, "mismatches": 0,
                      "max_abs_diff": 0.0, "first_mismatch": None, "recorded_mismatches": 0},
        "warmup": {"warmup": 49, "rows": [{"multiple": 1.0, "bars": 50, "compared": 10, "mismatches": 0,
                                           "max_abs_diff": 0.0}]},
        "cost_stress": {"factor": 2.0, "capital": 100_000.0, "base": {"sharpe_oos_annual": 3.0},
                        "stressed": {"sharpe_oos_annual": 2.0}},
        "robustness": {"sharpe_oos_annual": 3.0, "neighbours": [{"sharpe_oos_annual": 2.5},
                                                                {"sharpe_oos_annual": 2.8}]},
        "paper_record": {"days": 60.0, "consistency_p": 0.4},
    }
    return Evidence(bundle_dir=Path("."), bundle=bundle, bundle_sha="0" * 64, extras=extras)


def with_changes(ev: Evidence, bundle: dict[str, Any] | None = None,
                 extras: dict[str, Any] | None = None) -> Evidence:
    """Return a copy of ``ev`` with top-level bundle entries / extras sections replaced."""
    b = dataclasses.replace(ev.bundle, **(bundle or {}))
    e = copy.deepcopy(ev.extras)
    for k, v in (extras or {}).items():
        e[k] = {**e[k], **v} if isinstance(v, dict) else v
    return Evidence(bundle_dir=ev.bundle_dir, bundle=b, bundle_sha=ev.bundle_sha, extras=e)

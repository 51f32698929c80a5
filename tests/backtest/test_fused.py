"""The fused sweep kernel against the vectorbt path: equal on random combinations of real bars.

vectorbt here is the real library (``toolkit.backtest.portfolio.simulate`` calls
``vectorbt.Portfolio.from_orders``); nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest import TrialLedger, config_from_params, fused, fused_path, run_backtest
from toolkit.backtest.bundle import load_bundle, save_bundle
from toolkit.backtest.config import BacktestConfig
from toolkit.backtest.costs import BarCostInputs
from toolkit.backtest.engine import _simulate, fold_bounds, path_returns, sweep_moments, sweep_returns
from toolkit.data import load_bars
from toolkit.data.quality import certify
from toolkit.errors import ConfigurationError
from toolkit.reporting.views import engine_note
from toolkit.stats.metrics import sharpe_ratios
from toolkit.strategies import BUILTINS, Strategy, StrategyParams, make_strategy
from toolkit.strategies.sizing import Sizing

TOL = 1e-9


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1h", "2022-01-01", "2024-12-31")


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1m", "2024-03-01", "2024-03-31")


def random_params(strategy: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one valid parameter set of ``strategy`` from wide ranges (shorts included)."""
    short = bool(rng.integers(0, 2))
    if strategy == "ma_cross":
        fast = int(rng.integers(2, 120))
        return {"fast": fast, "slow": int(rng.integers(fast + 1, 800)), "allow_short": short}
    if strategy == "donchian":
        window = int(rng.integers(2, 400))
        return {"window": window, "exit_window": int(rng.integers(1, window + 1)),
                "max_hold": int(rng.integers(1, 1500)), "allow_short": short}
    return {"window": int(rng.integers(2, 400)), "k": float(rng.uniform(0.3, 3.5)),
            "max_hold": int(rng.integers(1, 800)), "allow_short": short}


def vectorbt_path(cfg: BacktestConfig, bars: pd.DataFrame, direction: np.ndarray) -> tuple[np.ndarray, Any]:
    """The project's vectorbt path for one direction series (sizing, costs, borrow): returns, orders, trades."""
    decided = cfg.sizing.positions(direction, bars["close"], cfg.bar_minutes())
    returns, trades, orders = _simulate(cfg, bars, decided[:, None], BarCostInputs.from_bars(bars, cfg.costs), (0,))
    return returns[:, 0], (orders[0], trades[0], decided)


#: equity below this share of the capital is a ruined account: both simulators are in rounding dust there
RUIN = 1e-6


def assert_equal_paths(cfg: BacktestConfig, bars: pd.DataFrame, params: dict[str, Any]) -> tuple[int, bool, bool]:
    """Compare the kernel with the vectorbt path bar by bar; return (orders compared, ruined, equity compared)."""
    strategy = make_strategy(cfg.strategy, params)
    direction = strategy.positions(bars).to_numpy()
    # the kernel's rule on the shared features decides exactly what the strategy decides
    np.testing.assert_array_equal(fused_path.directions(cfg, bars, params), direction, err_msg=str(params))
    kernel = fused_path.simulate_path(cfg, bars, direction)
    ref_returns, (orders, trades, decided) = vectorbt_path(cfg, bars, direction)
    np.testing.assert_array_equal(kernel.positions, decided)
    # compare up to ruin: once the equity is dust (~1e-11 of the capital), the two simulators' snapping
    # of near-zero cash differs (vectorbt rejects, then ignores, orders of a few 1e-8 BTC)
    equity = cfg.capital * np.cumprod(1.0 + ref_returns)
    ruined = bool((equity < RUIN * cfg.capital).any())
    n = int(np.argmax(equity < RUIN * cfg.capital)) if ruined else len(bars)
    np.testing.assert_allclose(kernel.returns[:n], ref_returns[:n], rtol=0, atol=TOL, err_msg=str(params))
    long_only = not (kernel.positions < 0).any()
    if long_only:  # without borrow charges the returns compound to the equity
        np.testing.assert_allclose(kernel.values[:n], equity[:n], rtol=TOL, err_msg=str(params))
    k = kernel.orders
    if ruined:  # the orders before the ruin bar
        k = k[k["bar"] < n - 1].reset_index(drop=True)
        orders = orders[orders["timestamp"] < bars.index[n - 1]].reset_index(drop=True)
    assert len(k) == len(orders), params
    assert list(bars.index[k["bar"]]) == list(orders["timestamp"])
    assert list(np.where(k["size"] > 0, "buy", "sell")) == list(orders["side"])
    for ours, theirs in (("size", "size"), ("price", "price"), ("fees", "fees"), ("slippage", "slippage")):
        np.testing.assert_allclose(np.abs(k[ours]), orders[theirs], rtol=TOL, atol=1e-12,
                                   err_msg=f"{ours} {params}")
    if not ruined:
        # vectorbt's trades are exit trades: one per order that reduces or closes a position, plus the open one
        held = [0.0]
        for size in k["size"]:  # a position closed to within rounding is flat, as vectorbt counts it
            now = held[-1] + size
            held.append(0.0 if abs(now) <= 1e-9 * max(abs(held[-1]), abs(size)) else now)
        h = np.asarray(held)
        exits = (h[:-1] != 0) & ((np.abs(h[1:]) < np.abs(h[:-1])) | (np.sign(h[1:]) != np.sign(h[:-1])))
        assert int(exits.sum()) + int(h[-1] != 0) == len(trades), params
        np.testing.assert_allclose(trades["fees"].sum(), k["fees"].sum(), rtol=1e-9)
    return len(k), ruined, long_only


@pytest.mark.parametrize("strategy", sorted(fused.SUPPORTED))
def test_kernel_equals_vectorbt_on_random_combinations_of_hourly_bars(strategy: str, hourly: pd.DataFrame) -> None:
    rng = np.random.default_rng(sorted(fused.SUPPORTED).index(strategy) + 9)
    cfg = config_from_params(strategy=strategy, timeframe="1h")
    compared = [assert_equal_paths(cfg, hourly, random_params(strategy, rng)) for _ in range(4)]
    assert sum(n for n, _, _ in compared) > 100  # the draws trade
    assert not any(ruined for _, ruined, _ in compared)  # sized at the default target nothing is ruined
    assert any(equity for _, _, equity in compared)  # the equity itself was compared on a long-only draw


@pytest.mark.parametrize("strategy", sorted(fused.SUPPORTED))
def test_kernel_equals_vectorbt_on_minute_bars_with_costs_that_bind(strategy: str, minutes: pd.DataFrame) -> None:
    # a short volatility window so that the sizing trades within the month, a target that asks for all
    # the equity so that buys run out of cash (vectorbt's partial fills), a large allocation (impact)
    rng = np.random.default_rng(42 + sorted(fused.SUPPORTED).index(strategy))
    cfg = config_from_params(strategy=strategy, timeframe="1m", capital=5e7,
                             sizing={"vol_window_days": 1.0, "target_vol_annual_pct": 150.0, "max_position": 1.0,
                                     "rebalance_band": 0.1},
                             costs={"taker_fee": 0.002, "impact_coef": 1.0}, borrow_rate_annual_pct=40.0)
    compared = [assert_equal_paths(cfg, minutes, random_params(strategy, rng)) for _ in range(4)]
    assert sum(n for n, _, _ in compared) > 100
    assert sum(ruined for _, ruined, _ in compared) <= 2  # most draws compare the whole month


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(fused.SUPPORTED))
def test_kernel_equals_vectorbt_on_many_random_combinations(strategy: str, hourly: pd.DataFrame) -> None:
    rng = np.random.default_rng()  # new draws every run; the failing parameters are in the message
    cfg = config_from_params(strategy=strategy, timeframe="1h")
    for _ in range(40):
        _, ruined, _ = assert_equal_paths(cfg, hourly, random_params(strategy, rng))
        assert not ruined


def test_sweep_reductions_equal_the_returns_they_summarise(hourly: pd.DataFrame) -> None:
    cfg = config_from_params(strategy="bollinger", timeframe="1h",
                             grid={"window": [20, 60], "k": [1.0, 2.0], "allow_short": [False, True]})
    combos = cfg.combinations()
    folds = cfg.folds(len(hourly))
    bounds = fold_bounds(folds, len(hourly))
    moments, used = sweep_moments(cfg, hourly, combos, bounds)
    assert used == "fused"
    full, _ = sweep_returns(cfg, hourly, combos)  # the vectorbt path, whole matrix
    for f in folds:
        np.testing.assert_allclose(moments.sharpe(f.train_lo, f.test_lo), sharpe_ratios(full[f.train_lo:f.test_lo]),
                                   rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(moments.sharpe(folds[0].test_lo, len(hourly)),
                               sharpe_ratios(full[folds[0].test_lo:]), rtol=1e-9)
    trial = pd.DataFrame(full, index=hourly.index)
    daily = (1.0 + trial).resample("60min", label="left", closed="left", origin="epoch").prod() - 1.0
    assert list(moments.evidence.index) == list(daily.index)
    np.testing.assert_allclose(moments.evidence.to_numpy(), daily.to_numpy(), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="segment bounds"):
        moments.sharpe(1, len(hourly))


def test_both_engines_give_the_same_backtest(tmp_path: Path) -> None:
    bars = load_bars("BTC/USDT", "1h", "2023-01-01", "2024-06-30")
    cfg = config_from_params(strategy="donchian", timeframe="1h", start="2023-01-01", end="2024-06-30",
                             grid={"window": [24, 48, 96], "exit_window": [12, 24]})
    a = run_backtest(cfg, bars, ledger=TrialLedger(tmp_path / "a.db"), progress=False, engine="fused")
    b = run_backtest(cfg, bars, ledger=TrialLedger(tmp_path / "b.db"), progress=False, engine="vectorbt")
    assert (a.engine["sweep"], b.engine["sweep"]) == ("fused", "vectorbt")
    assert [f["chosen_index"] for f in a.folds] == [f["chosen_index"] for f in b.folds]
    assert a.chosen == b.chosen
    pd.testing.assert_frame_equal(a.sweep, b.sweep, rtol=1e-9)
    pd.testing.assert_frame_equal(a.trial_returns, b.trial_returns, rtol=1e-5, atol=1e-8)
    pd.testing.assert_series_equal(a.returns, b.returns)
    for result in (a, b):  # the chosen record, simulated by vectorbt, checked against the kernel every run
        assert 0.0 <= result.engine["kernel_vs_vectorbt_max_abs_diff"] <= TOL
    saved = save_bundle(a, bars, certify(bars, "BTC/USDT", "1h").to_dict(), tmp_path / "bundle")
    assert load_bundle(saved).engine["sweep"] == "fused"
    assert "the fused kernel" in engine_note(a.engine) and "no fused kernel" in engine_note(b.engine)


def test_gates_resimulations_equal_the_vectorbt_path(hourly: pd.DataFrame) -> None:
    cfg = config_from_params(strategy="ma_cross", timeframe="1h")
    combos = [{"fast": 10, "slow": 100}, {"fast": 20, "slow": 200, "allow_short": True}]
    ours = path_returns(cfg, hourly, combos)
    theirs, _ = sweep_returns(cfg, hourly, combos)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


class _AlwaysLongParams(StrategyParams):
    pass


class _AlwaysLong(Strategy):
    """A strategy without a fused kernel (not a built-in)."""

    name = "always_long_test"
    strategy_type = "swing"
    Params = _AlwaysLongParams

    @property
    def warmup(self) -> int:
        return 0

    @property
    def required_history(self) -> int:
        return 1

    def signal(self, bars: pd.DataFrame) -> pd.Series:
        return pd.Series(1.0, index=bars.index)


def test_a_strategy_without_a_kernel_falls_back_to_vectorbt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(BUILTINS, _AlwaysLong.name, _AlwaysLong)
    bars = load_bars("BTC/USDT", "1h", "2024-01-01", "2024-04-30")
    cfg = config_from_params(strategy=_AlwaysLong.name, timeframe="1h", sizing=Sizing(vol_window_days=7.0))
    result = run_backtest(cfg, bars, ledger=TrialLedger(tmp_path / "t.db"), progress=False)
    assert result.engine["sweep"] == "vectorbt"
    assert result.engine["kernel_vs_vectorbt_max_abs_diff"] <= TOL  # the kernel's loop still checks the record
    assert result.trial_returns.shape[1] == 1 and np.isfinite(result.trial_returns.to_numpy()).all()
    with pytest.raises(ConfigurationError, match="fused kernel"):
        fused.engine_for(_AlwaysLong.name, "fused")


def test_the_engine_override_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_SWEEP_ENGINE", "numba")
    with pytest.raises(ConfigurationError, match="TOOLKIT_SWEEP_ENGINE"):
        fused.engine_for("ma_cross")
    monkeypatch.setenv("TOOLKIT_SWEEP_ENGINE", "vectorbt")
    assert fused.engine_for("ma_cross") == "vectorbt"

"""run_backtest: next-open execution, in-sample selection, out-of-sample figures, the trial ledger, costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest import TrialLedger, config_from_params, ledger_key, run_backtest
from toolkit.backtest.bundle import bundle_sha256, load_bundle, save_bundle
from toolkit.backtest.costs import CostModel, slippage_rates
from toolkit.backtest.engine import sweep_returns
from toolkit.data import load_bars
from toolkit.data.quality import certify
from toolkit.errors import ConfigurationError, DataError

GRID = {"fast": [5, 10], "slow": [30, 60]}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1h", "2024-01-01", "2024-02-29")


@pytest.fixture(scope="module")
def result(bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", start="2024-01-01", end="2024-02-29",
                             grid=GRID)
    ledger = TrialLedger(tmp_path_factory.mktemp("ledger") / "trials.db")
    return run_backtest(cfg, bars, ledger=ledger, progress=False)


def test_orders_fill_at_the_open_after_the_decision(result, bars: pd.DataFrame) -> None:
    decided = result.positions
    changed = decided.ne(decided.shift(1).fillna(0.0))
    expected = [bars.index[bars.index.get_loc(t) + 1] for t in decided.index[changed] if t != bars.index[-1]]
    orders = result.orders
    assert list(orders["timestamp"]) == expected
    sign = np.where(orders["side"] == "buy", 1.0, -1.0)
    np.testing.assert_allclose(orders["price"], orders["bar_open"] * (1.0 + sign * orders["slippage"]), rtol=1e-12)
    assert (orders["slippage"] > 0).all()


def test_selection_is_in_sample_and_figures_out_of_sample(result, bars: pd.DataFrame) -> None:
    sweep = result.sweep
    assert len(sweep) == 4 and sweep["chosen"].sum() == 1
    assert sweep.loc[sweep["chosen"], "sharpe_is"].iloc[0] == sweep["sharpe_is"].max()
    n_split = int(len(bars) * result.config.split)
    assert result.split_at == bars.index[n_split]
    assert result.metrics["n_obs"] == len(bars) - n_split
    assert result.metrics_is["n_obs"] == n_split
    assert (result.trades["entry_time"] >= result.split_at).all()
    oos_total = float(np.prod(1.0 + result.returns[result.returns.index >= result.split_at]) - 1.0)
    assert result.metrics["total_return"] == pytest.approx(oos_total, rel=1e-9)


def test_chosen_returns_equal_its_sweep_column(result, bars: pd.DataFrame) -> None:
    cfg = result.config
    returns, _ = sweep_returns(cfg, bars, cfg.combinations())
    np.testing.assert_allclose(returns[:, result.chosen_index], result.returns.to_numpy(), atol=1e-12)


def test_ledger_accumulates_across_runs(bars: pd.DataFrame, tmp_path: Path) -> None:
    ledger = TrialLedger(tmp_path / "trials.db")
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", grid={"fast": [5, 10], "slow": [30]})
    first = run_backtest(cfg, bars, ledger=ledger, progress=False)
    second = run_backtest(cfg, bars, ledger=ledger, progress=False)
    assert first.n_trials == 2 and second.n_trials == 4
    assert ledger.count(ledger_key("ma_cross", "BTC/USDT")) == 4
    assert set(second.ledger["backtest_id"]) == {first.backtest_id, second.backtest_id}
    other = config_from_params(strategy="donchian", timeframe="1h", grid={"window": [20]})
    run_backtest(other, bars, ledger=ledger, progress=False)
    assert ledger.count(ledger_key("ma_cross", "BTC/USDT")) == 4
    assert ledger.count(ledger_key("donchian", "BTC/USDT")) == 1


def test_too_few_bars_for_the_split_is_a_data_error(bars: pd.DataFrame, tmp_path: Path) -> None:
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", params={"fast": 5, "slow": 30})
    with pytest.raises(DataError, match="at least 30 bars on each side"):
        run_backtest(cfg, bars.iloc[:50], ledger=TrialLedger(tmp_path / "t.db"), progress=False)
    assert TrialLedger(tmp_path / "t.db").count(ledger_key("ma_cross", "BTC/USDT")) == 0


def test_bundle_round_trip_and_hash(result, bars: pd.DataFrame, tmp_path: Path) -> None:
    d = save_bundle(result, bars, certify(bars, "BTC/USDT", "1h").to_dict(), tmp_path / "b")
    loaded = load_bundle(d)
    assert loaded.chosen == result.chosen
    assert loaded.config == result.config
    pd.testing.assert_series_equal(loaded.returns["return"], result.returns, check_freq=False)
    sha = bundle_sha256(d)
    (d / "trades.parquet").write_bytes((d / "trades.parquet").read_bytes() + b"x")
    assert bundle_sha256(d) != sha
    (d / "sweep.parquet").unlink()
    with pytest.raises(DataError, match=r"sweep\.parquet"):
        load_bundle(d)


@pytest.mark.parametrize("model", [CostModel(), CostModel(spread_model="corwin_schultz")], ids=["fixed", "cs"])
def test_slippage_uses_only_past_bars_and_grows_with_size(bars: pd.DataFrame, model: CostModel) -> None:
    delta = np.zeros(len(bars))
    delta[100] = 1.0
    base = slippage_rates(bars, delta, 100_000.0, model)
    changed = bars.copy()
    changed.iloc[100:, changed.columns.get_loc("high")] *= 1.05  # the future (from the fill bar on) changes
    changed.iloc[100:, changed.columns.get_loc("quote_volume")] *= 0.01
    assert slippage_rates(changed, delta, 100_000.0, model)[100] == base[100]
    bigger = slippage_rates(bars, delta, 10_000_000.0, model)
    assert bigger[100] > base[100]
    stressed = slippage_rates(bars, delta, 100_000.0, model.stressed(2.0))
    assert stressed[100] == pytest.approx(2.0 * base[100])


@pytest.mark.parametrize(("params", "field"), [
    ({"strategy": "nope"}, "strategy"),
    ({"strategy": "ma_cross", "start": "2024-02-30"}, "start"),
    ({"strategy": "ma_cross", "start": "2024-03-01", "end": "2024-01-01"}, "end"),
    ({"strategy": "ma_cross", "grid": {"fats": [1]}}, "fats"),
    ({"strategy": "ma_cross", "grid": {"fast": [0, 5]}}, "ma_cross.fast"),
    ({"strategy": "ma_cross", "grid": {"fast": [60], "slow": [50]}}, "grid"),
    ({"strategy": "ma_cross", "capital": 0}, "capital"),
    ({"strategy": "ma_cross", "taker_fee": 0.5}, "taker_fee"),
    ({"strategy": "ma_cross", "colour": "red"}, "colour"),
    ({"strategy": "ma_cross", "timeframe": "15x"}, "timeframe"),
])
def test_bad_parameters_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        config_from_params(**params)
    assert field in str(err.value)

"""run_backtest: next-open execution, in-sample selection, out-of-sample figures, the trial ledger, costs."""

from __future__ import annotations

import itertools
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
from toolkit.strategies import make_strategy

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


def test_walk_forward_chooses_in_sample_before_each_block(result, bars: pd.DataFrame) -> None:
    cfg = result.config
    assert cfg.selection == "walk_forward"
    folds = cfg.folds(len(bars))
    assert len(result.folds) == len(folds) == cfg.walk_forward.folds
    returns, _ = sweep_returns(cfg, bars, cfg.combinations())
    sharpe = lambda x: x.mean(0) / x.std(0, ddof=1)  # noqa: E731
    for f, row in zip(folds, result.folds, strict=True):
        assert (row["train_lo"], row["test_lo"], row["test_hi"]) == (f.train_lo, f.test_lo, f.test_hi)
        assert row["chosen_index"] == int(np.argmax(sharpe(returns[f.train_lo:f.test_lo])))  # in-sample only
    assert result.chosen_index == result.folds[-1]["chosen_index"]  # the version deploys the latest choice
    # the blocks tile everything after the first window: out-of-sample covers 1 - train_share of the bars
    assert folds[0].test_lo == int(len(bars) * cfg.walk_forward.train_share)
    assert all(a.test_hi == b.test_lo for a, b in itertools.pairwise(folds))
    assert folds[-1].test_hi == len(bars)
    assert result.split_at == bars.index[folds[0].test_lo]
    assert result.metrics["n_obs"] == len(bars) - folds[0].test_lo
    assert (result.trades["entry_time"] >= result.split_at).all()
    oos_total = float(np.prod(1.0 + result.returns[result.returns.index >= result.split_at]) - 1.0)
    assert result.metrics["total_return"] == pytest.approx(oos_total, rel=1e-9)


def test_the_record_is_the_folds_choices_replayed(result, bars: pd.DataFrame) -> None:
    from toolkit.backtest.config import Fold
    from toolkit.backtest.engine import replay

    cfg = result.config
    folds = [Fold(**{k: f[k] for k in ("train_lo", "test_lo", "test_hi")}) for f in result.folds]
    again = replay(cfg, bars, folds, [f["chosen"] for f in result.folds])
    np.testing.assert_array_equal(again.returns, result.returns.to_numpy())
    np.testing.assert_array_equal(again.positions, result.positions.to_numpy())
    # inside each block the direction is the block's choice
    for f in result.folds:
        own = make_strategy(cfg.strategy, f["chosen"]).positions(bars).to_numpy()
        np.testing.assert_array_equal(result.directions.to_numpy()[f["test_lo"]:f["test_hi"]],
                                      own[f["test_lo"]:f["test_hi"]])


def test_single_split_stays_an_option(bars: pd.DataFrame, tmp_path: Path) -> None:
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", grid=GRID, selection="split")
    result = run_backtest(cfg, bars, ledger=TrialLedger(tmp_path / "t.db"), progress=False)
    sweep = result.sweep
    assert len(sweep) == 4 and sweep["chosen"].sum() == 1
    assert sweep.loc[sweep["chosen"], "sharpe_is"].iloc[0] == sweep["sharpe_is"].max()
    n_split = int(len(bars) * cfg.split)
    assert result.split_at == bars.index[n_split] and len(result.folds) == 1
    assert result.metrics["n_obs"] == len(bars) - n_split and result.metrics_is["n_obs"] == n_split
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
    with pytest.raises(DataError, match="at least 30 bars in every in-sample window"):
        run_backtest(cfg, bars.iloc[:150], ledger=TrialLedger(tmp_path / "t.db"), progress=False)
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

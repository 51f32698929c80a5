"""The vectorbt adapter: the only module that imports vectorbt.

vectorbt is handed tz-naive UTC timestamps (it is about 10× slower on a
tz-aware index under pandas 3); results come back tz-aware.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from toolkit.backtest.costs import BarCostInputs, CostModel

__all__ = ["SimResult", "simulate"]


@dataclass(frozen=True)
class SimResult:
    """Per-bar returns of every column, and the trades and orders of the requested columns."""

    returns: np.ndarray  # T × N simple returns of equity, close to close
    trades: dict[int, pd.DataFrame]
    orders: dict[int, pd.DataFrame]


def simulate(bars: pd.DataFrame, targets: np.ndarray, slippage: np.ndarray, fee: float,
             capital: float, detail_columns: tuple[int, ...] = (),
             cost_inputs: BarCostInputs | None = None) -> SimResult:
    """Simulate target-percent orders filled at each bar's open.

    Parameters
    ----------
    bars
        Bars with a tz-aware UTC index.
    targets
        T × N target positions (fraction of equity, -1..1) to hold from each bar's open.
    slippage
        T × N slippage fractions applied to the fill price of an order at that bar.
    fee
        Fee as a fraction of notional (taker: orders at the open are market orders).
    capital
        Initial cash of every column.
    detail_columns
        Columns whose trades and orders are returned.
    cost_inputs
        The cost model's per-bar inputs: the orders table records each order's
        participation over their execution horizon (default: ``CostModel()``'s).
    """
    import vectorbt as vbt

    index = bars.index.tz_convert("UTC").tz_localize(None)
    n = targets.shape[1]
    # hold: only send an order when the target changes (NaN = no order)
    change = np.vstack([np.ones((1, n), dtype=bool), np.diff(targets, axis=0) != 0])
    columns = pd.RangeIndex(n)
    pf = vbt.Portfolio.from_orders(
        close=pd.Series(bars["close"].to_numpy(dtype="float64"), index=index),  # broadcast to every column
        size=pd.DataFrame(np.where(change, targets, np.nan), index=index, columns=columns),
        size_type="targetpercent",
        price=bars["open"].to_numpy(dtype="float64")[:, None],
        fees=fee,
        slippage=slippage,
        init_cash=capital,
        direction="both",
        cash_sharing=False,
        max_orders=int(change.sum()) + 1,  # all columns; vectorbt otherwise preallocates one per bar and column
        freq=pd.Timedelta(index[1] - index[0]) if len(index) > 1 else None,
    )
    # returns from the equity curve directly (pf.returns() computes the same, several times slower)
    value = pf.value().to_numpy(dtype="float64")
    previous = np.vstack([np.full((1, n), capital), value[:-1]])
    returns = value / previous - 1.0
    trades, orders = {}, {}
    if detail_columns:
        inputs = cost_inputs if cost_inputs is not None else BarCostInputs.from_bars(bars, CostModel())
        for col in detail_columns:
            trades[col] = _trades(pf[col])
            orders[col] = _orders(pf[col], slippage[:, col], bars, inputs)
    return SimResult(returns=returns, trades=trades, orders=orders)


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).dt.tz_localize("UTC")


def _trades(pf: object) -> pd.DataFrame:
    rec = pf.trades.records_readable  # type: ignore[attr-defined]
    out = pd.DataFrame({
        "entry_time": _utc(rec["Entry Timestamp"]),
        "exit_time": _utc(rec["Exit Timestamp"]),
        "direction": rec["Direction"].astype(str).str.lower(),
        "size": rec["Size"].astype("float64"),
        "entry_price": rec["Avg Entry Price"].astype("float64"),
        "exit_price": rec["Avg Exit Price"].astype("float64"),
        "fees": (rec["Entry Fees"] + rec["Exit Fees"]).astype("float64"),
        "pnl": rec["PnL"].astype("float64"),
        "return": rec["Return"].astype("float64"),
        "status": rec["Status"].astype(str).str.lower(),
    })
    return out.reset_index(drop=True)


def _orders(pf: object, slippage: np.ndarray, bars: pd.DataFrame, inputs: BarCostInputs) -> pd.DataFrame:
    rec = pf.orders.records_readable  # type: ignore[attr-defined]
    ts = _utc(rec["Timestamp"])
    pos = bars.index.get_indexer(pd.DatetimeIndex(ts))
    out = pd.DataFrame({
        "timestamp": ts,
        "side": rec["Side"].astype(str).str.lower(),
        "size": rec["Size"].astype("float64"),
        "price": rec["Price"].astype("float64"),
        "bar_open": bars["open"].to_numpy()[pos],
        "fees": rec["Fees"].astype("float64"),
        "slippage": slippage[pos],
    })
    out["notional"] = out["size"] * out["price"]
    # participation over the execution horizon: notional / quote volume of the k closed bars before the
    # order (NaN: that volume was zero, unbounded participation)
    out["horizon_minutes"] = inputs.horizon_minutes
    out["horizon_bars"] = inputs.horizon_bars
    out["horizon_quote_volume"] = inputs.horizon_quote_volume[pos]
    out["participation"] = out["notional"] / out["horizon_quote_volume"]
    return out.reset_index(drop=True)

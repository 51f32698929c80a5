"""Live PnL against the backtest of the same version over the same bars, split into its causes.

The backtest is the version's own decisions (``direction``, computed by the caller with
the version's strategy code) through the backtest's kernel (``toolkit.backtest.fused_path.
simulate_path``: the version's sizing and band, next-open fills, the fill model's
slippage, the taker fee), started with the live equity at the first decision of the period.

Both records obey the same identity, per decision bar t with close C_t (the decision
price), holdings q_t after the decision's fills, and the fills x at p of that decision::

    PnL(t → t+1) = q_t · (C_{t+1} − C_t) − Σ s·x·(p − C_t) − fees_t

(the backtest's fill at the next open lands in its execution term: the close-to-open gap
plus its slippage). The live − backtest gap is therefore split into

- **signal**: (q_live − q_backtest) · (C_{t+1} − C_t) — different holdings, with the reason
  of the bar where the difference began, carried while it lasts: ``version switch``
  (another version decided), ``stale data`` (the bar decided on differs from the
  exchange's archived bar, or a stale-feed incident was open), ``late bar``, ``risk block``
  (the decision was refused, rejected, left incomplete or superseded, or a blocking incident
  was open), ``target differs`` (none of these: the code or the data disagree),
  ``sizing drift`` (same target, other quantity: rounding, minimum notional, equity drift);
- **execution**: live fills against their decision price minus the backtest's;
- **fees**: live fees minus the modelled fees;
- **residual**: the gap measured from the equities (live: journaled fills marked at the
  closes; backtest: the kernel's equity) minus the three; it holds fees paid in the base
  asset valued at the decision price rather than the fill's, and fills no decision of the
  period owns. It is shown, and small when the reconstruction is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.errors import JournalError
from toolkit.attribution.journal import JournalData, Order
from toolkit.errors import DataError

__all__ = ["REASONS", "PnLSplit", "infer_capital", "model_costs_bps", "split_pnl"]

REASONS = ("version switch", "stale data", "late bar", "risk block", "target differs", "sizing drift")
_BLOCKED_STATES = ("refused", "rejected", "incomplete", "superseded")
_STALE_KINDS = ("stale_feed", "bar_revised", "bar_missing", "exchange_unavailable")


@dataclass(frozen=True)
class PnLSplit:
    """The per-bar reconstruction and the split of live − backtest PnL (quote currency)."""

    frame: pd.DataFrame               # one row per decision bar of the period
    totals: dict[str, float]          # live, backtest, gap, signal, execution, fees, residual
    reasons: pd.DataFrame             # per reason: bars, signal PnL
    start_equity: float
    capital: float
    notes: list[str] = field(default_factory=list)


def infer_capital(jd: JournalData, target_tolerance: float = 1e-12) -> float | None:
    """Return the deployment's capital from its first order from flat (delta · arrival / target), else None.

    The journal does not record the deployment's capital; the runner sized the first order from
    flat as ``target × capital / arrival``, so it follows exactly from that order.
    """
    first = next((d for d in jd.decisions if d["order_delta"] is not None), None)
    if first is None or Decimal(first["position_qty"]) != 0 or abs(float(first["target"])) <= target_tolerance:
        return None
    prior = [o for o in jd.orders if o.bar_time < int(first["bar_time"]) and o.fills]
    if prior:
        return None
    leg0 = next((o for o in jd.orders if o.bar_time == int(first["bar_time"]) and o.leg == 0), None)
    if leg0 is None:
        return None
    return float(first["order_delta"] * leg0.arrival_price / Decimal(repr(float(first["target"]))))


def _fill_flows(orders: Sequence[Order], base: str, quote: str) -> dict[int, tuple[Decimal, Decimal, Decimal,
                                                                                   Decimal]]:
    """Per bar: (Σ s·x, Σ s·x·p, fees in quote, fees in base), exact."""
    out: dict[int, tuple[Decimal, Decimal, Decimal, Decimal]] = {}
    zero = Decimal(0)
    for o in orders:
        sx, sxp, fq, fb = out.get(o.bar_time, (zero, zero, zero, zero))
        for f in o.fills:
            sx += o.sign * f.amount
            sxp += o.sign * f.amount * f.price
            if f.fee_asset == quote:
                fq += f.fee
            elif f.fee_asset == base:
                fb += f.fee
            elif f.fee:
                raise JournalError(f"fills[trade_id={f.trade_id}].fee_asset", f"{base} or {quote}", f.fee_asset)
        out[o.bar_time] = (sx, sxp, fq, fb)
    return out


def _incident_open(incidents: Sequence[dict[str, Any]], kinds: tuple[str, ...] | None, severities: tuple[str, ...]
                   | None, at: int) -> bool:
    for i in incidents:
        if kinds is not None and i["kind"] not in kinds:
            continue
        if severities is not None and i["severity"] not in severities:
            continue
        if int(i["at"]) <= at and (i["resolved_at"] is None or int(i["resolved_at"]) > at):
            return True
    return False


def model_costs_bps(bars: pd.DataFrame, cost_model: Any, exec_index: np.ndarray, notional: np.ndarray) -> np.ndarray:
    """Return the fill model's cost (slippage + taker fee, bps) of orders of ``notional`` at bars ``exec_index``."""
    from toolkit.backtest.costs import BarCostInputs, slippage_rates

    inputs = BarCostInputs.from_bars(bars, cost_model)
    delta = np.zeros(len(bars))
    out = np.empty(len(exec_index))
    for j, (k, n) in enumerate(zip(exec_index, notional, strict=True)):
        delta[:] = 0.0
        delta[k] = abs(n)
        out[j] = (slippage_rates(inputs, delta, 1.0, cost_model)[k] + cost_model.taker_fee) * 10_000
    return out


def split_pnl(jd: JournalData, bars: pd.DataFrame, direction: np.ndarray, cfg: Any, capital: float,
              bar_ms: int, version: str | None = None, start_ms: int | None = None,
              end_ms: int | None = None) -> PnLSplit:
    """Reconstruct live and backtest PnL per decision bar over the period and split the gap.

    Parameters
    ----------
    jd
        The journal (every decision and order of the deployment; the period selects among them).
    bars
        The version's bars from the archive (tz-aware UTC index), from at least the first decision's
        required history to one bar after the last decision when it exists.
    direction
        The version's direction on each of ``bars`` (its own strategy code).
    cfg
        The version's ``BacktestConfig`` (sizing, costs); its capital is replaced by the live equity.
    capital
        The deployment's capital (see :func:`infer_capital`).
    bar_ms
        The bar length in milliseconds.
    version
        The version attributed (decisions by another are a ``version switch``).

    Raises
    ------
    DataError
        A decision's bar is not among ``bars``.
    """
    from toolkit.backtest.fused_path import simulate_path

    notes: list[str] = []
    base, _, quote = (jd.orders[0].symbol if jd.orders else "BASE/QUOTE").partition("/")
    lo = -(2**62) if start_ms is None else start_ms
    hi = 2**62 if end_ms is None else end_ms
    window = [d for d in jd.decisions if lo <= int(d["bar_time"]) < hi]
    if not window:
        raise JournalError("period", "at least one decision in the period", f"{start_ms}..{end_ms}")
    opens = (pd.DatetimeIndex(bars.index).as_unit("ms").asi8).astype(np.int64)
    pos = {int(t): i for i, t in enumerate(opens)}
    missing = [int(d["bar_time"]) for d in window if int(d["bar_time"]) not in pos]
    if missing:
        raise DataError(f"bars: expected the archived bar of every decision, found none for "
                        f"{pd.Timestamp(missing[0], unit='ms', tz='UTC')} ({len(missing)} missing)")
    flows = _fill_flows(jd.orders, base, quote)
    close = bars["close"].to_numpy(dtype=np.float64)
    first_t = int(window[0]["bar_time"])
    q0 = cash0 = Decimal(0)
    for t, (sx, sxp, fq, fb) in flows.items():
        if t < first_t:
            q0 += sx - fb
            cash0 -= sxp + fq
    c0 = window[0]["decision_price"]
    start_equity = float(Decimal(repr(capital)) + cash0 + q0 * c0)
    if q0 != 0:
        notes.append(f"the period starts holding {q0} {base} (the backtest starts flat)")
    sim_cfg = cfg.model_copy(update={"capital": start_equity})
    sim = simulate_path(sim_cfg, bars, np.asarray(direction, dtype=np.float64))
    qb_delta = np.zeros(len(bars) + 1)
    exec_b = np.zeros(len(bars) + 1)
    fees_b = np.zeros(len(bars) + 1)
    for b, size, price, fee in sim.orders[["bar", "size", "price", "fees"]].itertuples(index=False):
        qb_delta[int(b)] += size
        exec_b[int(b)] += size * price
        fees_b[int(b)] += fee
    qb = np.cumsum(qb_delta)[: len(bars)]  # holdings after the orders executed at bar j's open
    archived = bars[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)
    journal_bars = {int(b["open_time"]): (float(b["open"]), float(b["high"]), float(b["low"]), float(b["close"]))
                    for b in jd.bars}
    switch_times = [int(s["at"]) for s in jd.switches if s["from_version"] is not None]
    rows: list[dict[str, Any]] = []
    q, cash = q0, cash0
    carried = ""
    for d in window:
        t = int(d["bar_time"])
        k = pos[t]
        sx, sxp, fq, fb = flows.get(t, (Decimal(0), Decimal(0), Decimal(0), Decimal(0)))
        c = d["decision_price"]
        q += sx - fb
        cash -= sxp + fq
        nxt = close[k + 1] if k + 1 < len(bars) else float(c)
        dc = nxt - float(c)
        q_l = float(q)
        live_exec = -float(sxp - sx * c)
        live_fees = float(fq + fb * c)
        q_b = float(qb[k + 1]) if k + 1 < len(bars) else float(qb[k])
        size_b = qb_delta[k + 1] if k + 1 < len(bars) else 0.0
        bt_exec = -(exec_b[k + 1] - size_b * float(c)) if k + 1 < len(bars) else 0.0
        bt_fee = fees_b[k + 1] if k + 1 < len(bars) else 0.0
        equity_l = float(Decimal(repr(capital)) + cash + q * c)
        target_b = float(sim.positions[k])
        target_l = float(d["target"])
        differs = abs(q_l - q_b) > 1e-12
        reason = ""
        if differs:
            if carried and rows and rows[-1]["differs"] and abs(target_l - float(rows[-1]["target_live"])) < 1e-12 \
                    and abs(target_b - float(rows[-1]["target_backtest"])) < 1e-12:
                reason = carried
            elif (version is not None and str(d["version"]) != str(version)) or \
                    any(t - bar_ms <= s <= int(d["decided_at"]) for s in switch_times):
                reason = "version switch"
            elif (t in journal_bars and not np.allclose(journal_bars[t], archived[k], rtol=0, atol=1e-9)) or \
                    _incident_open(jd.incidents, _STALE_KINDS, None, int(d["decided_at"])):
                reason = "stale data"
            elif int(d["late"]):
                reason = "late bar"
            elif d["exec_state"] in _BLOCKED_STATES or _incident_open(jd.incidents, None, ("blocking", "halt"),
                                                                      int(d["decided_at"])):
                reason = "risk block"
            elif abs(target_l - target_b) > 1e-9:
                reason = "target differs"
            else:
                reason = "sizing drift"
        carried = reason
        rows.append({
            "bar_time": pd.Timestamp(t, unit="ms", tz="UTC"), "close": float(c), "next_close": nxt, "move": dc,
            "target_live": target_l, "target_backtest": target_b, "q_live": q_l, "q_backtest": q_b,
            "live_position_pnl": q_l * dc, "backtest_position_pnl": q_b * dc,
            "live_execution": live_exec, "backtest_execution": bt_exec, "live_fees": live_fees, "backtest_fees": bt_fee,
            "signal": (q_l - q_b) * dc, "execution": live_exec - bt_exec, "fees": -(live_fees - bt_fee),
            "differs": differs, "reason": reason, "live_equity": equity_l, "version": str(d["version"]),
            "late": bool(d["late"]), "exec_state": d["exec_state"],
            "live_return_dp": q_l * dc / equity_l if equity_l > 0 else np.nan, "has_next": k + 1 < len(bars),
        })
    frame = pd.DataFrame(rows).set_index("bar_time")
    k_first, k_last = pos[first_t], pos[int(window[-1]["bar_time"])]
    k_end = min(k_last + 1, len(bars) - 1)
    bt_equity = sim.values
    frame["backtest_equity"] = [bt_equity[min(pos[int(t.value // 1_000_000)] + 1, len(bars) - 1)]
                                for t in frame.index]
    frame["backtest_return_dp"] = frame["q_backtest"] * frame["move"] / frame["backtest_equity"].shift(
        1, fill_value=start_equity)
    end_mark = Decimal(repr(float(frame["next_close"].iloc[-1])))
    live_total = float(Decimal(repr(capital)) + cash + q * end_mark) - start_equity
    bt_total = float(bt_equity[k_end] - bt_equity[k_first])
    comp = {c: float(frame[c].sum()) for c in ("signal", "execution", "fees")}
    gap = live_total - bt_total
    totals = {"live": live_total, "backtest": bt_total, "gap": gap, **comp,
              "residual": gap - sum(comp.values())}
    frame["live_pnl"] = frame["live_position_pnl"] + frame["live_execution"] - frame["live_fees"]
    frame["backtest_pnl"] = frame["backtest_position_pnl"] + frame["backtest_execution"] - frame["backtest_fees"]
    reasons = (frame[frame["differs"]].groupby("reason")["signal"].agg(["size", "sum"])
               .rename(columns={"size": "bars", "sum": "signal_pnl"}).reindex(REASONS).fillna(0.0))
    reasons["bars"] = reasons["bars"].astype(int)
    if jd.foreign_fills:
        notes.append(f"{jd.foreign_fills} fill(s) of the deployment belong to no journaled order (left out)")
    return PnLSplit(frame=frame, totals=totals, reasons=reasons, start_equity=start_equity, capital=float(capital),
                    notes=notes)

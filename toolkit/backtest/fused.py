"""The fused sweep kernel: one compiled pass per combination, equal to the vectorbt path.

A sweep over a grid used to build, per chunk of combinations, the bars × combos arrays of
directions, sized targets, slippage and vectorbt's per-column state, and to keep the
bars × combos matrix of returns. Here one numba function runs, per combination and in
parallel over combinations (``prange``): the strategy's direction rule on feature series
shared by the grid (moving averages, channels, bands — computed once per distinct window
by the strategy's own functions), the volatility-targeted size and the rebalancing band
(``toolkit.strategies.sizing.band_step``), next-open fills with vectorbt's order
arithmetic (target percent of equity valued at the fill bar's open, taker fee, the
slippage model, partial fills when cash runs short, the near-zero snapping of
``vectorbt.utils.math_``), equity at each close, the borrow charge on shorts, and then
only reductions: per-segment moments of the per-bar returns (the walk-forward folds'
Sharpe ratios come from them) and the returns compounded to the evidence frequency (the
trial returns PBO and the DSR read). Memory is the bars, the feature series and
``combos × evidence buckets``; nothing of size bars × combos is held.

Equality with the vectorbt path is a requirement, not an approximation: ``simulate_path``
(``toolkit.backtest.fused_path``) runs the same loop on one direction series and returns the
equity, the returns and the order records, which the tests compare with
``vectorbt.Portfolio.from_orders`` to 1e-9 on combinations drawn at random on real bars, and
which every backtest compares with the vectorbt record of its chosen walk-forward path
(``BacktestResult.engine``).

A strategy without a direction rule here (``SUPPORTED``) is swept by the vectorbt path.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd
from numba import njit, prange

from toolkit.backtest.config import BacktestConfig, GridValue
from toolkit.backtest.costs import BarCostInputs
from toolkit.backtest.features import combo_features, feature_groups, feature_rows
from toolkit.backtest.moments import Moments, evidence_buckets
from toolkit.strategies import sizing

# the band rule the backtest's loop runs (``sizing.band_step``), compiled and inlined into the kernel
band_step = njit(cache=True, nogil=True, inline="always")(sizing.band_step)

__all__ = ["SUPPORTED", "Moments", "engine_for", "sweep_moments"]

Combo = dict[str, GridValue]

#: strategies with a compiled direction rule, and their rule's code in the kernel
SUPPORTED = {"ma_cross": 0, "donchian": 1, "bollinger": 2}

#: combinations per kernel call (a progress step each)
BATCH = 128

# vectorbt.utils.math_'s tolerances (the simulator snaps values this close to zero)
_REL_TOL = 1e-9
_ABS_TOL = 1e-12


def engine_for(strategy: str, requested: str = "auto") -> str:
    """Return the sweep engine to use: ``fused`` when the strategy has a rule and it is allowed.

    ``requested`` (or the environment variable ``TOOLKIT_SWEEP_ENGINE``) is ``auto``,
    ``fused`` or ``vectorbt``; ``fused`` for a strategy without a rule is an error.
    """
    from toolkit.errors import ConfigurationError

    choice = os.environ.get("TOOLKIT_SWEEP_ENGINE", "") or requested
    if choice not in ("auto", "fused", "vectorbt"):
        raise ConfigurationError("TOOLKIT_SWEEP_ENGINE", "auto, fused or vectorbt", choice)
    if choice == "vectorbt":
        return "vectorbt"
    if strategy in SUPPORTED:
        return "fused"
    if choice == "fused":
        raise ConfigurationError("engine", f"a strategy with a fused kernel: {sorted(SUPPORTED)}", strategy)
    return "vectorbt"


# --------------------------------------------------------------------------------------------
# vectorbt's order arithmetic (vectorbt.portfolio.nb.buy_nb / sell_nb / execute_order_nb for
# size_type=targetpercent, direction=both, no fixed fees, no lock_cash, allow_partial)


@njit(cache=True, error_model="numpy")
def _is_close(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b) or np.isinf(a) or np.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), _ABS_TOL)


@njit(cache=True, error_model="numpy")
def _add(a: float, b: float) -> float:
    if np.sign(a) != np.sign(b):
        zero = _is_close(abs(a), abs(b))
    else:
        zero = _is_close(a + b, 0.0)
    return 0.0 if zero else a + b


@njit(cache=True, error_model="numpy")
def _order(cash: float, pos: float, target: float, price: float, fee: float, slip: float) -> tuple[
        float, float, float, float, float]:
    """Execute a target-percent order at ``price``; return (cash, position, size (signed), fill price, fees).

    A size of 0 means nothing was filled (ignored or rejected, as vectorbt would).
    """
    if _is_close(cash, 0.0):
        cash = 0.0
    if _is_close(pos, 0.0):
        pos = 0.0
    value = cash + pos * price if pos != 0.0 else cash
    if _is_close(value, 0.0):
        value = 0.0
    if np.isnan(value) or value <= 0.0:
        return cash, pos, 0.0, np.nan, 0.0
    size = target * value / price - pos
    if size > 0.0:  # buy_nb
        adj_price = price * (1.0 + slip)
        if cash == 0.0:
            return cash, pos, 0.0, np.nan, 0.0
        req_cash = size * adj_price
        req_fees = req_cash * fee
        total = req_cash + req_fees
        if _is_close(total, cash) or total < cash:
            final_size, fees_paid, final_req = size, req_fees, total
        else:
            max_req = _add(cash, -0.0) / (1.0 + fee)
            if max_req <= 0.0:
                return cash, pos, 0.0, np.nan, 0.0
            final_size, fees_paid, final_req = max_req / adj_price, cash - max_req, cash
        if _is_close(size, 0.0):
            return cash, pos, 0.0, np.nan, 0.0
        return _add(cash, -final_req), _add(pos, final_size), final_size, adj_price, fees_paid
    # sell_nb
    adj_price = price * (1.0 - slip)
    amount = -size
    if _is_close(amount, 0.0):
        return cash, pos, 0.0, np.nan, 0.0
    acq = amount * adj_price
    fees_paid = acq * fee
    final_acq = _add(acq, -fees_paid)
    if final_acq < 0.0:
        return cash, pos, 0.0, np.nan, 0.0
    return cash + final_acq, _add(pos, -amount), -amount, adj_price, fees_paid


# --------------------------------------------------------------------------------------------
# direction rules: the strategies' ``positions`` on the features they share with this module


@njit(cache=True, inline="always", error_model="numpy")
def _held(event: float, t: int, level: float, last: int, limit: int) -> tuple[float, float, int]:
    """``hold``: return (direction at t, level, bar of the last event) after bar t's event (NaN: none)."""
    if not np.isnan(event):
        return event, event, t
    if last >= 0 and t - last <= limit:
        return level, level, last
    return 0.0, level, last


@njit(cache=True, inline="always", error_model="numpy")
def _step(kind: int, t: int, c: float, fa: np.ndarray, fb: np.ndarray, fc: np.ndarray, fd: np.ndarray,
          k: float, short: bool, limit: int, lv: float, ll: int, sv: float, sl: int) -> tuple[
        float, float, int, float, int]:
    """Return the direction decided on bar ``t``'s close ``c`` and the hold state (levels, last events).

    ``fa`` … ``fd`` are the combination's feature series; ``k`` is Bollinger's band width.
    Before warm-up ends the caller sets the direction to 0 (``Strategy.positions``).
    """
    if kind == 0:  # ma_cross: a = fast SMA, b = slow SMA
        slow = fb[t]
        if np.isnan(slow):
            return 0.0, lv, ll, sv, sl
        if fa[t] > slow:
            return 1.0, lv, ll, sv, sl
        return (-1.0 if short else 0.0), lv, ll, sv, sl
    if kind == 1:  # donchian: a = upper, b = lower (entry channel), c = exit upper, d = exit lower
        long_in = c > fa[t]
        below_exit = c < fd[t]
        if not short:
            ev = 1.0 if long_in else (0.0 if below_exit else np.nan)
            d, lv, ll = _held(ev, t, lv, ll, limit)
            return d, lv, ll, sv, sl
        short_in = c < fb[t]
        ev = 1.0 if long_in else (0.0 if (below_exit or short_in) else np.nan)
        d_long, lv, ll = _held(ev, t, lv, ll, limit)
        ev = -1.0 if short_in else (0.0 if (c > fc[t] or long_in) else np.nan)
        d_short, sv, sl = _held(ev, t, sv, sl, limit)
        return min(1.0, max(-1.0, d_long + d_short)), lv, ll, sv, sl
    # bollinger: a = mean, b = std
    std = fb[t]
    z = (c - fa[t]) / std if std > 0.0 else np.nan
    long_in = z < -k
    if not short:
        ev = 1.0 if long_in else (0.0 if z >= 0.0 else np.nan)
        d, lv, ll = _held(ev, t, lv, ll, limit)
        return d, lv, ll, sv, sl
    short_in = z > k
    ev = 1.0 if long_in else (0.0 if (z >= 0.0 or short_in) else np.nan)
    d_long, lv, ll = _held(ev, t, lv, ll, limit)
    ev = -1.0 if short_in else (0.0 if (z <= 0.0 or long_in) else np.nan)
    d_short, sv, sl = _held(ev, t, sv, sl, limit)
    return min(1.0, max(-1.0, d_long + d_short)), lv, ll, sv, sl


# --------------------------------------------------------------------------------------------
# the simulation of one direction path


#: per-combination state carried from one tile of bars to the next (see ``_new_state``)
_STATE = 14


@njit(cache=True, error_model="numpy")
def _new_state(capital: float, first_bucket: int) -> np.ndarray:
    """Return a fresh state: cash, position, valuation cash and position, previous equity, position
    decided, last target, orders, hold levels and last events (long, short), bucket product, bucket."""
    st = np.zeros(_STATE)
    st[0], st[2], st[4] = capital, capital, capital
    st[9], st[11] = -1.0, -1.0
    st[12], st[13] = 1.0, first_bucket
    return st


@njit(cache=True, error_model="numpy")
def _loop(kind: int, feats: np.ndarray, fi: np.ndarray, fx: np.ndarray, direction: np.ndarray,
          bar: np.ndarray, prm: np.ndarray, bounds: np.ndarray, bucket: np.ndarray, seg: np.ndarray,
          evid: np.ndarray, detail: bool, rets: np.ndarray, values: np.ndarray, decided: np.ndarray,
          orders: np.ndarray, t_lo: int, t_hi: int, st: np.ndarray) -> int:
    """Simulate one path over bars ``t_lo … t_hi − 1`` from the state ``st`` (updated in place).

    The direction on each close comes from the rule ``kind`` on ``feats`` (``_step``), or from
    ``direction`` when ``kind`` is −1 (a given path, e.g. a walk-forward splice). ``bar`` rows:
    open, close, sizing scale, spread, σ_h, horizon quote volume (``_bar_rows``).

    prm = [capital, taker fee, spread share, impact coef, impact exponent, max slippage,
    rebalance band, borrow rate per bar]. ``seg`` (S × 6), per segment: count, shift (its
    first return), Σ(r−shift), Σ(r−shift)², min, max — accumulated across calls. ``evid``
    gets each evidence bucket's compounded return once the bucket is complete (the last one
    when ``t_hi`` is the end). With ``detail`` the per-bar returns, equity, decided positions
    and the orders (bar, signed size, fill price, fees, slippage) are written too; returns the
    number of orders so far.
    """
    capital, fee, share, impact, expo, max_slip, band, borrow = (
        prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7])
    opens, closes, scale, spread, sigma, hqv = bar[0], bar[1], bar[2], bar[3], bar[4], bar[5]
    # vectorbt reports equity from its order records (cash and asset flows summed with its snapping),
    # not from the simulation state: the equity is kept the same way (cash_v, pos_v)
    cash, pos, cash_v, pos_v, prev_value, held, last_target = st[0], st[1], st[2], st[3], st[4], st[5], st[6]
    n_orders = int(st[7])
    lv, ll, sv, sl = st[8], int(st[9]), st[10], int(st[11])
    acc, b_prev = st[12], int(st[13])
    short, warmup, limit, k = fi[4] == 1, fi[5], fi[6] - 1, fx[0]
    fa, fb, fc, fd = feats[fi[0]], feats[fi[1]], feats[fi[2]], feats[fi[3]]
    for s in range(bounds.shape[0] - 1):
        lo, hi = max(bounds[s], t_lo), min(bounds[s + 1], t_hi)
        if lo >= hi:
            continue
        # the segment's moments in registers (memory-carried sums would serialise the loop)
        cnt, shift, s1, s2 = seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3]
        lo_r, hi_r = (seg[s, 4], seg[s, 5]) if cnt > 0.0 else (np.inf, -np.inf)
        for t in range(lo, hi):
            target = held
            if t == 0 or target != last_target:
                delta = abs(target - last_target)
                notional = delta * capital
                part = notional / hqv[t]
                if np.isnan(part):
                    part = 1.0 if notional > 0.0 else 0.0
                slip = min(share * spread[t] + impact * sigma[t] * part ** expo, max_slip)
                cash, pos, size, price, fees = _order(cash, pos, target, opens[t], fee, slip)
                if detail and size != 0.0:
                    orders[n_orders, 0] = t
                    orders[n_orders, 1] = size
                    orders[n_orders, 2] = price
                    orders[n_orders, 3] = fees
                    orders[n_orders, 4] = slip
                if size != 0.0:
                    n_orders += 1
                    cash_v = _add(cash_v, _add(0.0, -size * price - fees))
                    pos_v = _add(pos_v, _add(0.0, size))
            last_target = target
            value = cash_v + pos_v * closes[t]
            r = value / prev_value - 1.0
            if target < 0.0:
                r -= borrow * -target
            prev_value = value
            # decide on this close: direction -> sized target -> band
            if kind < 0:
                dirn = direction[t]
            else:
                dirn, lv, ll, sv, sl = _step(kind, t, closes[t], fa, fb, fc, fd, k, short, limit, lv, ll, sv, sl)
                if t < warmup:
                    dirn = 0.0
            held = band_step(dirn * scale[t], held, band)
            # reductions
            if cnt == 0.0:
                shift = r
            d = r - shift
            cnt += 1.0
            s1 += d
            s2 += d * d
            lo_r = min(lo_r, r)
            hi_r = max(hi_r, r)
            b = bucket[t]
            if b != b_prev:
                evid[b_prev] = acc - 1.0
                acc = 1.0
                b_prev = b
            acc *= 1.0 + r
            if detail:
                rets[t] = r
                values[t] = value
                decided[t] = held
        seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3], seg[s, 4], seg[s, 5] = cnt, shift, s1, s2, lo_r, hi_r
    if t_hi >= closes.shape[0]:
        evid[b_prev] = acc - 1.0
    st[0], st[1], st[2], st[3], st[4], st[5], st[6] = cash, pos, cash_v, pos_v, prev_value, held, last_target
    st[7], st[8], st[9], st[10], st[11], st[12], st[13] = n_orders, lv, ll, sv, sl, acc, b_prev
    return n_orders


@njit(cache=True, error_model="numpy")
def _simulate(kind: int, feats: np.ndarray, fi: np.ndarray, fx: np.ndarray, direction: np.ndarray,
              bar: np.ndarray, prm: np.ndarray, bounds: np.ndarray, bucket: np.ndarray, seg: np.ndarray,
              evid: np.ndarray, detail: bool, rets: np.ndarray, values: np.ndarray, decided: np.ndarray,
              orders: np.ndarray, t_lo: int, t_hi: int, st: np.ndarray) -> int:
    """``_loop`` called with ``kind`` a constant per branch: the compiler specialises the rule per strategy."""
    if kind == 0:
        return _loop(0, feats, fi, fx, direction, bar, prm, bounds, bucket, seg, evid, detail, rets, values,
                     decided, orders, t_lo, t_hi, st)
    if kind == 1:
        return _loop(1, feats, fi, fx, direction, bar, prm, bounds, bucket, seg, evid, detail, rets, values,
                     decided, orders, t_lo, t_hi, st)
    if kind == 2:
        return _loop(2, feats, fi, fx, direction, bar, prm, bounds, bucket, seg, evid, detail, rets, values,
                     decided, orders, t_lo, t_hi, st)
    return _loop(-1, feats, fi, fx, direction, bar, prm, bounds, bucket, seg, evid, detail, rets, values,
                 decided, orders, t_lo, t_hi, st)


#: bars per tile: every combination passes over one tile (its bar rows and features stay in cache) before the next
TILE = 4096


@njit(cache=True, parallel=True, error_model="numpy")
def _sweep(kind: int, bar: np.ndarray, prm: np.ndarray, bounds: np.ndarray, bucket: np.ndarray,
           feats: np.ndarray, fi: np.ndarray, fx: np.ndarray, seg: np.ndarray, evid: np.ndarray) -> None:
    """Simulate every combination (rows of ``fi``/``fx``) in parallel, tile by tile: ``seg[j]``, ``evid[j]``."""
    n_combos, n = fi.shape[0], bar.shape[1]
    state = np.empty((n_combos, _STATE))
    for j in range(n_combos):
        state[j] = _new_state(prm[0], bucket[0] if n else 0)
    empty1 = np.empty(0)
    empty2 = np.empty((0, 5))
    for t0 in range(0, n, TILE):
        t1 = min(n, t0 + TILE)
        for j in prange(n_combos):
            _simulate(kind, feats, fi[j], fx[j], empty1, bar, prm, bounds, bucket, seg[j], evid[j],
                      False, empty1, empty1, empty1, empty2, t0, t1, state[j])


# --------------------------------------------------------------------------------------------
# Python side: inputs, features, batches, results


def _params(cfg: BacktestConfig) -> np.ndarray:
    c = cfg.costs
    borrow = cfg.borrow_rate_annual_pct / 100.0 * cfg.bar_minutes() / (365.0 * 1440.0)
    return np.array([cfg.capital, c.taker_fee, c.spread_share, c.impact_coef, c.impact_exponent,
                     c.max_slippage, cfg.sizing.rebalance_band, borrow], dtype=np.float64)


def _bar_rows(cfg: BacktestConfig, bars: pd.DataFrame, cost_inputs: BarCostInputs | None = None) -> np.ndarray:
    """Return the 6 × T per-bar inputs: open, close, sizing scale (0 while unknown), spread, σ_h, horizon volume."""
    ci = cost_inputs if cost_inputs is not None else BarCostInputs.from_bars(bars, cfg.costs)
    scale = cfg.sizing.scale(bars["close"], cfg.bar_minutes()).fillna(0.0)
    return np.ascontiguousarray(np.vstack([
        bars["open"].to_numpy(dtype=np.float64), bars["close"].to_numpy(dtype=np.float64),
        scale.to_numpy(dtype=np.float64), np.asarray(ci.spread, dtype=np.float64),
        np.asarray(ci.sigma, dtype=np.float64), np.asarray(ci.horizon_quote_volume, dtype=np.float64),
    ]))


def sweep_moments(cfg: BacktestConfig, bars: pd.DataFrame, combos: list[Combo], bounds: np.ndarray,
                  freq: str, on_batch: Callable[[int], None] | None = None) -> Moments:
    """Sweep ``combos`` with the fused kernel; return their segment moments and evidence returns.

    Parameters
    ----------
    cfg
        The backtest configuration (strategy in ``SUPPORTED``; costs, sizing, capital, borrow).
    bars
        The bars (tz-aware UTC index).
    combos
        The parameter sets, in grid order.
    bounds
        Sorted segment boundaries, 0 first and ``len(bars)`` last.
    freq
        Evidence frequency (e.g. ``"60min"``).
    on_batch
        Called with the number of combinations done after each kernel call.
    """
    kind = SUPPORTED[cfg.strategy]
    rows, prm = _bar_rows(cfg, bars), _params(cfg)
    bucket, labels = evidence_buckets(pd.DatetimeIndex(bars.index), freq)
    bounds = np.unique(np.asarray(bounds, dtype=np.int64))
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != len(bars):
        raise ValueError(f"bounds: expected 0 … {len(bars)}, found {bounds.tolist()}")
    seg = np.zeros((len(combos), len(bounds) - 1, 6))
    evid = np.zeros((len(combos), len(labels)))
    done = 0
    for members, keys in feature_groups(cfg.strategy, combos, len(bars)):
        feats = feature_rows(bars, keys)
        index = {key: row for row, key in enumerate(keys)}
        fi = np.zeros((len(members), 7), dtype=np.int64)
        fx = np.zeros((len(members), 1))
        for row, j in enumerate(members):
            fkeys, ints, floats = combo_features(cfg.strategy, combos[j])
            fi[row, :len(fkeys)] = [index[key] for key in fkeys]
            fi[row, 4:7] = ints
            fx[row, :] = floats
        for lo in range(0, len(members), BATCH):  # one kernel call per progress step
            part = members[lo:lo + BATCH]
            part_seg = np.zeros((len(part), len(bounds) - 1, 6))
            part_evid = np.zeros((len(part), len(labels)))
            _sweep(kind, rows, prm, bounds, bucket, feats, fi[lo:lo + BATCH], fx[lo:lo + BATCH], part_seg, part_evid)
            seg[part] = part_seg
            evid[part] = part_evid
            done += len(part)
            if on_batch is not None:
                on_batch(done)
    evidence = pd.DataFrame(evid.T.astype("float32"), index=labels,
                            columns=[f"t{j:04d}" for j in range(len(combos))])
    return Moments(bounds=bounds, seg=seg, evidence=evidence)

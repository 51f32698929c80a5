"""Implementation shortfall of a whole journal at once: the vectorised path attribution runs.

The same decomposition as :mod:`toolkit.attribution.shortfall` (Perold per decision: delay,
trading, opportunity, fees, half-spread/impact where quotes exist), computed on columns
(:mod:`toolkit.attribution.frames`: the journal read and checked, or a journal already read
exactly) instead of one ``Decimal`` order at a time. That module stays the definition (exact);
the tests hold this one equal to it. :func:`fast_shortfall_frame` returns the frame of
:func:`~toolkit.attribution.shortfall.shortfall_frame`.

Precision: components are float64 sums over an order's fills (trading as Σ x_j · (p_j − P_0), which
keeps the cancellation small), so they agree with the exact path to about 1e-12 relative on
desk-sized orders (the tests hold them to 1e-9 relative or 1e-6 quote).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.attribution.errors import JournalError
from toolkit.attribution.frames import JournalFrames, journal_frames, read_journal_frames
from toolkit.attribution.journal import period_bounds
from toolkit.attribution.shortfall import QuoteBook, frame_from_columns

__all__ = ["JournalFrames", "fast_shortfall_frame", "journal_frames", "read_journal_frames"]


def fast_shortfall_frame(jf: JournalFrames, bar_ms: int, quotes: QuoteBook | None = None,
                         regime: pd.Series | None = None, start_ms: int | None = None,
                         end_ms: int | None = None) -> pd.DataFrame:
    """Return :func:`~toolkit.attribution.shortfall.shortfall_frame` of every decision that sent an order.

    Orders whose bar opened in ``[start_ms, end_ms)`` are decomposed, one row per bar (all its legs).

    Raises
    ------
    JournalError
        As the exact path: an order whose bar has no journaled decision, a leg on the other side
        than leg 0, a fee in an asset that is neither the symbol's base nor its quote.
    """
    lo, hi = period_bounds(start_ms, end_ms)
    o = jf.orders
    keep = np.flatnonzero((o["bar_time"].to_numpy() >= lo) & (o["bar_time"].to_numpy() < hi))
    o = o.iloc[keep]
    order = np.lexsort((o["leg"].to_numpy(), o["bar_time"].to_numpy()))
    o = o.iloc[order]
    if o.empty:
        return pd.DataFrame()
    n = len(o)
    remap = np.full(len(jf.orders), -1, dtype=np.intp)
    remap[keep[order]] = np.arange(n)
    f = jf.fills
    f_o = remap[f["order"].to_numpy()]
    f_pos = np.flatnonzero(f_o >= 0)  # rows of jf.fills
    f = f.iloc[f_pos]
    f_o = f_o[f_pos]

    bt = o["bar_time"].to_numpy()
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = bt[1:] != bt[:-1]
    gid = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, n - 1)
    g = len(first)
    cid = o["client_order_id"].to_numpy()
    g_bt = bt[first]

    d_bt = jf.decisions["bar_time"].to_numpy()
    d_order = np.argsort(d_bt, kind="stable")
    pos = np.searchsorted(d_bt[d_order], g_bt)
    found = pos < len(d_bt)
    found[found] = d_bt[d_order][pos[found]] == g_bt[found]
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        raise JournalError(f"orders[{cid[first[k]]}].bar_time", "the bar of a journaled decision", int(g_bt[k]))
    p_d = jf.decisions["decision_price"].to_numpy()[d_order][pos]

    side = o["side"].to_numpy()
    sign_o = np.where(side == "buy", 1.0, -1.0)
    s = sign_o[first]
    leg_wrong = sign_o != s[gid]
    symbol = o["symbol"].to_numpy()
    uniq, inv = np.unique(symbol.astype(str), return_inverse=True)
    parts = [str(u).partition("/") for u in uniq]
    base_u = np.array([pt[0] for pt in parts], dtype=object)
    quote_u = np.array([pt[2] for pt in parts], dtype=object)
    f_g = gid[f_o]
    f_sym = inv[first[f_g]]  # the symbol of the order's first leg
    price = f["price"].to_numpy()
    amount = f["amount"].to_numpy()
    fee = f["fee"].to_numpy()
    asset = f["fee_asset"].to_numpy()
    in_quote = asset == quote_u[f_sym]
    in_base = asset == base_u[f_sym]
    fee_q = np.where(fee == 0, 0.0, np.where(in_quote, fee, fee * price))
    bad_asset = (fee != 0) & ~in_quote & ~in_base
    if leg_wrong.any() or bad_asset.any():
        bad_g = min(int(gid[np.flatnonzero(leg_wrong)[0]]) if leg_wrong.any() else g,
                    int(f_g[bad_asset].min()) if bad_asset.any() else g)
        legs_bad = np.flatnonzero(leg_wrong & (gid == bad_g))
        if len(legs_bad):
            i = int(legs_bad[0])
            raise JournalError(f"orders[{cid[i]}].side", f"{side[first[bad_g]]} (as leg 0 of its bar)", side[i])
        cand = np.flatnonzero(bad_asset & (f_g == bad_g))
        at = f["at"].to_numpy()
        tid, j = min((int(f_o[c]), int(at[c]), t, int(c)) for c, t in zip(cand, jf.trade_ids(f_pos[cand]),
                                                                             strict=True))[2:]  # legs, then time
        sym = symbol[first[bad_g]]
        raise JournalError(f"fills[trade_id={tid}].fee_asset",
                           f"{base_u[f_sym[j]]} or {quote_u[f_sym[j]]} (of {sym})", asset[j])

    size = o["amount"].to_numpy()[first]
    p0 = o["arrival_price"].to_numpy()[first]
    x = np.bincount(f_g, weights=amount, minlength=g)
    dev = np.bincount(f_g, weights=amount * (price - p0[f_g]), minlength=g)  # Σ x_j (p_j − P_0)
    fees = np.bincount(f_g, weights=fee_q, minlength=g)
    n_fills = np.bincount(f_g, minlength=g)

    bars = jf.bars
    closes_at = bars["open_time"].to_numpy() + int(bar_ms)
    closes = bars["close"].to_numpy()
    fallback = np.full(g, closes[-1]) if len(closes) else p0
    ended = o["ended_at"].to_numpy()[last]
    open_ = np.isnan(ended)
    kb = np.searchsorted(closes_at, np.where(open_, 0, ended).astype(np.int64), side="left")
    kb[open_] = len(closes)
    p_n = np.where(kb < len(closes), closes[np.minimum(kb, len(closes) - 1)], fallback) if len(closes) else fallback

    delay = s * x * (p0 - p_d)
    trading = s * dev
    opportunity = s * (size - x) * (p_n - p_d)
    half = np.full(g, np.nan)
    if quotes is not None and len(f):
        hs = quotes.half_spread_array(f["at"].to_numpy())
        missing = np.bincount(f_g, weights=np.isnan(hs).astype(np.float64), minlength=g)
        split = np.bincount(f_g, weights=amount * np.nan_to_num(hs), minlength=g)
        half = np.where((missing == 0) & (n_fills > 0), split, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        average = np.where(x > 0, p0 + dev / np.where(x > 0, x, 1.0), np.nan)
    return frame_from_columns({
        "bar_time": g_bt, "side": s, "size": size, "filled": x, "decision_price": p_d, "arrival_price": p0,
        "end_price": p_n, "average_price": average, "notional": size * p_d, "delay": delay, "trading": trading,
        "opportunity": opportunity, "fees": fees, "half_spread": half, "impact": trading - half,
        "legs": last - first + 1, "state": o["state"].to_numpy()[last], "version": o["version"].to_numpy()[first],
        "total": delay + trading + opportunity + fees,
    }, regime)

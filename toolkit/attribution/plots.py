"""Figures and tables of the attribution report (matplotlib; the template displays them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.report import Attribution

__all__ = ["drawdown_figure", "drawdown_table", "equity_figure", "gap_table", "header", "heatmap_figure",
           "orders_table", "reasons_table", "waterfall_figure"]

_COLOURS = {"edge intact": "#1a7f37", "not enough data yet": "#9a6700", "edge decaying": "#cf222e",
            "execution worse than modelled": "#cf222e"}


def header(att: Attribution) -> str:
    """Return the opening Markdown: the verdict in one sentence, then what was read."""
    v = att.verdict
    colour = _COLOURS.get(v.verdict, "#000")
    p = att.pnl.totals
    return (f"# Attribution: {att.model} v{att.version}\n\n"
            f"<p style='font-size:1.3em;color:{colour}'><b>{v.sentence}</b></p>\n\n"
            f"**Record**: deployment `{att.deployment}`, {att.period[0]:%Y-%m-%d %H:%M} → "
            f"{att.period[1]:%Y-%m-%d %H:%M} UTC ({v.days:.1f} days, {len(att.orders)} orders). "
            f"**Live PnL** {p['live']:+,.2f}, **backtest of the same version over the same bars** "
            f"{p['backtest']:+,.2f}, "
            f"gap {p['gap']:+,.2f} = signal {p['signal']:+,.2f} + execution {p['execution']:+,.2f} + fees "
            f"{p['fees']:+,.2f} + residual {p['residual']:+.2g} (quote currency).  \n"
            f"**Edge**: live Sharpe {_f(v.live_sharpe)} vs backtest {_f(v.backtest_sharpe)} (annualised, at decision "
            f"prices); PSR against the backtest {_f(v.psr_vs_backtest, '.3f')}, block bootstrap p "
            f"{_f(v.bootstrap_p, '.3f')}. **Execution**: {_f(v.mean_excess_cost_bps, '+.1f')} bps against the fill "
            f"model (p {_f(v.execution_p, '.3f')}, tolerance {v.tolerance_bps:g} bps). **Length**: "
            f"{v.days:.1f} of {v.required_days:.0f} days needed (MinTRL {_f(v.mintrl_days, '.0f')} days).  \n"
            f"Journal sha256 `{att.journal_sha256[:16]}…`, evidence `{att.bundle_sha256[:16]}…`."
            + "".join(f"  \n*Note*: {n}" for n in att.summary()["notes"]))


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def waterfall_figure(att: Attribution) -> Any:
    """Return the implementation-shortfall waterfall (bps of X·P_d over all orders)."""
    import matplotlib.pyplot as plt

    wf = att.waterfall()
    notional = float(att.orders["notional"].sum()) if not att.orders.empty else 0.0
    parts = ["delay", "half_spread", "impact", "opportunity", "fees"] if "half_spread" in wf else \
        ["delay", "trading", "opportunity", "fees"]
    vals = [wf[k] / notional * 1e4 if notional else 0.0 for k in parts]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bottom = 0.0
    for i, v in enumerate(vals):
        ax.bar(i, v, bottom=bottom, color="#cf222e" if v > 0 else "#1a7f37")
        ax.text(i, bottom + v, f"{v:+.2f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
        bottom += v
    ax.bar(len(parts), bottom, color="#57606a")
    ax.text(len(parts), bottom, f"{bottom:+.2f}", ha="center", va="bottom" if bottom >= 0 else "top", fontsize=8)
    ax.set_xticks(range(len(parts) + 1), [*parts, "total"])
    ax.set_ylabel("bps of X·P_d (cost > 0)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(f"Implementation shortfall over {len(att.orders)} orders")
    fig.tight_layout()
    return fig


def heatmap_figure(att: Attribution) -> Any:
    """Return the mean shortfall (bps) by hour of day × weekday (UTC)."""
    import matplotlib.pyplot as plt

    heat = att.heatmap.reindex(index=range(24))
    fig, ax = plt.subplots(figsize=(6, 6))
    data = heat.to_numpy(dtype=float) if not heat.empty else np.full((24, 7), np.nan)
    vmax = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    im = ax.imshow(data, aspect="auto", cmap="RdYlGn_r", vmin=-vmax, vmax=vmax)
    ax.set_xticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    ax.set_yticks(range(0, 24, 2), [f"{h:02d}h" for h in range(0, 24, 2)])
    ax.set_title("Shortfall by hour × weekday (bps, mean per order; blank: no order)")
    fig.colorbar(im, ax=ax, shrink=0.7)
    fig.tight_layout()
    return fig


def equity_figure(att: Attribution) -> Any:
    """Return live vs backtest cumulative PnL with the gap split into signal, execution and fees."""
    import matplotlib.pyplot as plt

    f = att.pnl.frame
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    a1.plot(f.index, f["live_pnl"].cumsum(), label="live", color="#0969da")
    a1.plot(f.index, f["backtest_pnl"].cumsum(), label="backtest (same version, same bars)", color="#57606a",
            ls="--")
    a1.set_ylabel("cumulative PnL (quote)")
    a1.legend(loc="best")
    a1.set_title("Live against the backtest")
    for col, colour in (("signal", "#8250df"), ("execution", "#cf222e"), ("fees", "#9a6700")):
        a2.plot(f.index, f[col].cumsum(), label=col, color=colour)
    a2.plot(f.index, (f["live_pnl"] - f["backtest_pnl"]).cumsum(), label="gap", color="black", lw=1.5)
    a2.axhline(0, color="black", lw=0.5)
    a2.set_ylabel("gap split (quote)")
    a2.legend(loc="best", ncol=4, fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def drawdown_figure(att: Attribution) -> Any:
    """Return the live drawdown with the top episodes shaded, and its place in the backtest's bootstrap."""
    import matplotlib.pyplot as plt

    f = att.pnl.frame
    eq = att.pnl.start_equity + f["live_pnl"].cumsum()
    dd = eq / eq.cummax() - 1.0
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.fill_between(f.index, dd * 100, 0, color="#cf222e", alpha=0.4)
    for e in att.episodes:
        ax.axvspan(e.peak, e.recovery or f.index[-1], color="#9a6700", alpha=0.1)
    for name, q in att.backtest_drawdown_quantiles.items():
        if name in ("q95", "q99"):
            ax.axhline(-q * 100, ls="--", color="#57606a", lw=0.8)
            ax.text(f.index[0], -q * 100, f" backtest {name}", fontsize=7, va="bottom")
    ax.set_ylabel("drawdown (%)")
    ax.set_title(f"Live drawdown (max {att.live_max_drawdown:.2%}; p within the backtest's bootstrap "
                 f"{_f(att.drawdown_p, '.2f')})")
    fig.tight_layout()
    return fig


def drawdown_table(att: Attribution) -> pd.DataFrame:
    """Return the top drawdown episodes as a table."""
    rows = [{"peak": e.peak.strftime("%Y-%m-%d %H:%M"), "trough": e.trough.strftime("%Y-%m-%d %H:%M"),
             "recovery": e.recovery.strftime("%Y-%m-%d %H:%M") if e.recovery is not None else "not yet",
             "depth": f"{e.depth:.2%}", "hours": f"{e.duration_hours:.0f}", "signal": f"{e.signal:+,.2f}",
             "execution": f"{e.execution:+,.2f}", "fees": f"{e.fees:+,.2f}",
             "worst hours (UTC)": ", ".join(f"{h:02d}h" for h in e.worst_hours),
             "weekend share": f"{e.weekend_share:.0%}", "class": ", ".join(e.classification)} for e in att.episodes]
    return pd.DataFrame(rows)


def gap_table(att: Attribution) -> pd.DataFrame:
    """Return the live − backtest split as a one-column table (quote currency)."""
    p = att.pnl.totals
    return pd.DataFrame({"quote": [p[k] for k in ("live", "backtest", "gap", "signal", "execution", "fees",
                                                  "residual")]},
                        index=["live PnL", "backtest PnL", "gap", "signal", "execution", "fees", "residual"]).round(4)


def reasons_table(att: Attribution) -> pd.DataFrame:
    """Return the signal differences by reason (bars affected, PnL)."""
    return att.pnl.reasons.round(4)


def orders_table(att: Attribution, by: str) -> pd.DataFrame:
    """Return the shortfall aggregated by ``by`` (hour, weekend, regime, size_bucket), in bps."""
    t = att.by[by]
    cols = [c for c in ("orders", "notional", "delay_bps", "trading_bps", "opportunity_bps", "fees_bps", "total_bps")
            if c in t.columns]
    return t[cols].round(2)


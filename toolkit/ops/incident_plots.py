"""The incident report as the desk reads it: the opening paragraph, the timeline table, the market-context and
PnL-impact figures (matplotlib; ``templates/incident.ipynb`` displays them)."""

from __future__ import annotations

import html
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from toolkit.ops.incident import CONTEXT_METRICS, IncidentReport

__all__ = ["actions_markdown", "context_figure", "context_table", "header", "pnl_figure", "timeline_table"]

_STATE_COLOURS = {"open": "#cf222e", "acknowledged": "#9a6700", "resolved": "#1a7f37"}
_SOURCE_COLOURS = {"incident": "#fff1e5", "fill": "#eef6ff", "order": "#f6f8fa", "switch": "#fbefff",
                   "reconciliation": "#f6f8fa"}


def header(report: IncidentReport) -> str:
    """Return the opening Markdown: the title, the state, the summary sentence and what was read."""
    inc = report.incident
    colour = _STATE_COLOURS.get(report.state, "#000")
    w0, w1 = report.window
    first, _, rest = report.summary().partition(". ")
    return (f"# Incident #{report.id}: {inc['kind']}\n\n"
            f"<p style='font-size:1.25em'><span style='color:{colour}'><b>{report.state.upper()}</b></span> · "
            f"<b>{html.escape(first)}.</b> {html.escape(rest)}</p>\n\n"
            f"**Message**: {html.escape(str(inc['message']))}  \n"
            f"**Window**: {w0:%Y-%m-%d %H:%M} → {w1:%Y-%m-%d %H:%M} UTC · **market** {report.symbol} · "
            f"**journal** `{report.journal}`. All times are UTC.")


def actions_markdown(report: IncidentReport) -> str:
    """Return what the runner did as a Markdown list (nothing to list says so)."""
    a = report.actions
    items = [("Decisions held back (no order sent while this incident blocked)",
              [f"bar {t:%Y-%m-%d %H:%M}" for t in a.held_back]),
             ("Orders cancelled", a.cancelled), ("Orders refused or never placed", a.refused),
             ("Flatten orders", a.flatten), ("Rollbacks", a.rollbacks), ("Halts", a.halts)]
    lines = [f"- **{title}**: " + (", ".join(f"`{x}`" if title.startswith(("Orders", "Flatten")) else x
                                            for x in values) if values else "none")
             for title, values in items]
    return "\n".join(lines)


def timeline_table(report: IncidentReport) -> Any:
    """Return the timeline as a styled table: this incident's rows in bold, rows shaded by source."""
    frame = report.timeline_frame()
    this = frame.pop("this")

    def shade(row: pd.Series) -> list[str]:
        style = f"background-color:{_SOURCE_COLOURS.get(str(row['source']), '#fff')}"
        if bool(this.loc[row.name]):
            style += ";font-weight:bold;border-left:4px solid #cf222e"
        return [style] * len(row)

    return (frame.style.apply(shade, axis=1).hide(axis="index")
            .set_properties(**{"text-align": "left", "font-size": "0.85em"})
            .set_table_styles([{"selector": "th", "props": "text-align:left"},
                               {"selector": "td", "props": "padding:2px 8px;max-width:38em"}]))


def context_table(report: IncidentReport) -> pd.DataFrame:
    """Return the incident hour's figures against its bucket's quantiles (one row per figure)."""
    c = report.context
    rows = []
    for m, name in CONTEXT_METRICS.items():
        if m not in c.figures:
            continue
        rows.append({"figure": name, f"hour {c.hour:%H:%M} (median)": _fmt(c.figures[m]),
                     **{q: _fmt(v) for q, v in c.quantiles[m].items()}, "where": c.bands[m]})
    return pd.DataFrame(rows).set_index("figure") if rows else pd.DataFrame()


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:,.2f}"


def _mark_incident(ax: Any, report: IncidentReport) -> None:
    inc = report.incident
    opened = report.opened.tz_localize(None)
    end = (pd.Timestamp(int(inc["resolved_at"]), unit="ms") if inc["resolved_at"] is not None
           else report.window[1].tz_localize(None))
    ax.axvspan(opened, end, color="#cf222e", alpha=0.08, lw=0)
    ax.axvline(opened, color="#cf222e", lw=1)


def context_figure(report: IncidentReport) -> Figure | None:
    """Plot each hour of the window's median spread, volume and volatility against its bucket's p10–p90 band."""
    hours = report.context.hours
    if hours is None or hours.empty:
        return None
    t = pd.DatetimeIndex(hours.index).tz_localize(None)
    fig, axes = plt.subplots(len(CONTEXT_METRICS), 1, figsize=(12, 2.3 * len(CONTEXT_METRICS)), sharex=True)
    for ax, (m, name) in zip(axes, CONTEXT_METRICS.items(), strict=True):
        ax.fill_between(t, hours[f"{m}_p10"], hours[f"{m}_p90"], step="post", color="#8c959f", alpha=0.25,
                        label="bucket p10–p90")
        ax.step(t, hours[f"{m}_p50"], where="post", color="#57606a", lw=1, ls="--", label="bucket median")
        ax.step(t, hours[m], where="post", color="#0969da", lw=1.8, label="this hour (median of 1m bars)")
        _mark_incident(ax, report)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=7, loc="upper left", ncol=3)
    axes[-1].set_xlabel("UTC")
    c = report.context
    axes[0].set_xlim(*[w.tz_localize(None) for w in report.window])
    fig.suptitle(f"{report.symbol} around the incident against its hour-of-week buckets "
                 f"(incident in {c.bucket_label}, {c.regime}-volume regime; shaded: open → resolved)", fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def pnl_figure(report: IncidentReport) -> Figure | None:
    """Plot the deployment's PnL over the window against holding flat (zero), with its position and the fills."""
    p = report.pnl
    if p is None or p.path.empty:
        return None
    t = pd.DatetimeIndex(p.path["at"]).tz_localize(None)
    fig, (ax, axq) = plt.subplots(2, 1, figsize=(12, 4.6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax.plot(t, p.path["pnl"], "o-", color="#0969da", lw=1.8, ms=3,
            label="PnL of the deployment (window start, then each bar close; fees included)")
    ax.axhline(0.0, color="#57606a", lw=1, ls="--", label="holding flat")
    _mark_incident(ax, report)
    ax.set_ylabel(f"PnL ({p.quote})", fontsize=8)
    bps = "" if p.total_bps is None else f" = {p.total_bps:+.1f} bps of capital"
    ax.set_title(f"PnL impact over the window: {float(p.total):+,.2f} {p.quote}{bps} (carry "
                 f"{float(p.carry):+,.2f}, trading {float(p.trading):+,.2f}, fees {float(p.fees):,.2f})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    axq.step(t, p.path["position"], where="post", color="#8250df", lw=1.5)
    window = [w.tz_localize(None) for w in report.window]
    if p.marked_at is not None and p.marked_at < report.window[1]:
        for a in (ax, axq):
            a.axvspan(p.marked_at.tz_localize(None), window[1], color="#8c959f", alpha=0.15, lw=0)
        ax.text(p.marked_at.tz_localize(None), ax.get_ylim()[1], " no journaled bar after this", fontsize=7,
                va="top", color="#57606a")
    ax.set_xlim(*window)
    _mark_incident(axq, report)
    axq.set_ylabel(f"position ({report.symbol.split('/')[0]})", fontsize=8)
    axq.set_xlabel("UTC (bar closes)")
    for a in (ax, axq):
        a.tick_params(labelsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig

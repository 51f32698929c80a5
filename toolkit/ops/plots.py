"""The regime map as the desk reads it: weekday × UTC hour heatmaps (the gates report shows it)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from toolkit.ops.regimes import REGIMES, RegimeMap

__all__ = ["regime_figure", "regime_summary"]


def regime_summary(regimes: RegimeMap) -> str:
    """Return a Markdown paragraph: where the map comes from and how far apart quiet and busy hours are."""
    doc = regimes.document
    med = regimes.frame("quote_volume_per_min").to_numpy().ravel()
    spread = regimes.frame("spread_bps", 0.9).to_numpy().ravel()
    labels = np.array(doc["regime"])
    quiet, busy = labels == REGIMES[0], labels == REGIMES[2]
    lo_b, hi_b = int(np.nanargmin(med)), int(np.nanargmax(med))
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    data = doc["data"]
    return (
        f"Liquidity regimes of **{doc['symbol']}** by hour of the week, measured on {data['bars']:,} "
        f"{data['bar_minutes']:g}-minute bars ({data['first_bar'][:10]} … {data['last_bar'][:10]}; map "
        f"`{regimes.sha256[:12]}`, stored with this verdict as `regime_map.json`). Median volume per minute "
        f"ranges from {med[lo_b]:,.0f} ({days[lo_b // 24]} {lo_b % 24:02d}:00 UTC) to {med[hi_b]:,.0f} "
        f"({days[hi_b // 24]} {hi_b % 24:02d}:00 UTC), {med[hi_b] / med[lo_b]:.1f}×; the spread estimate's p90 "
        f"averages {np.nanmean(spread[quiet]):.2f} bps in the low-volume third of the week against "
        f"{np.nanmean(spread[busy]):.2f} bps in the high third. The runner's alert thresholds can be "
        "quantiles of the current hour's bucket."
    )


def regime_figure(regimes: RegimeMap) -> Figure:
    """Plot median volume per minute and the spread estimate's p90 by weekday × UTC hour, regimes marked."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    panels = (("quote_volume_per_min", 0.5, "median quote volume per minute", "viridis"),
              ("spread_bps", 0.9, "spread estimate p90 (bps, Corwin–Schultz)", "magma_r"))
    labels = np.array(regimes.document["regime"]).reshape(7, 24)
    for ax, (metric, q, title, cmap) in zip(axes, panels, strict=True):
        table = regimes.frame(metric, q)
        im = ax.imshow(table.to_numpy(), aspect="auto", cmap=cmap)
        ax.set_yticks(range(7), table.index)
        ax.set_xticks(range(0, 24, 3), [f"{h:02d}" for h in range(0, 24, 3)])
        ax.set_xlabel("hour (UTC)")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        rows, cols = np.nonzero(labels == REGIMES[0])
        ax.scatter(cols, rows, s=6, color="white", edgecolors="black", linewidths=0.3,
                   label="low-volume third of the week")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18))
    fig.suptitle("Liquidity regimes by hour of the week", fontsize=11)
    fig.tight_layout()
    return fig

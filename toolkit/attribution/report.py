"""Attribute one version's live (or paper) record: shortfall, PnL split, verdict, drawdowns, paper record.

:func:`attribute` is the whole analysis, given what the caller loaded (the journal, the
archived bars, the version's directions on them from its own code, its backtest bundle);
it talks to no registry and renders nothing, so the template, the CLI workflow and the
tests call the same function. :class:`Attribution` holds every table and figure, its
``summary()`` the JSON the CLI prints and MLflow keeps, and its ``paper_record()`` the block
the ``live`` stage's ``paper_record`` gate reads (re-derivable: ``toolkit.attribution.record``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.drawdowns import Episode, bootstrap_max_drawdowns, drawdown_episodes, max_drawdown_of
from toolkit.attribution.fast import fast_shortfall_frame, journal_frames
from toolkit.attribution.journal import JournalData
from toolkit.attribution.pnl import PnLSplit, infer_capital, model_costs_bps, split_pnl
from toolkit.attribution.record import paper_record_block
from toolkit.attribution.shortfall import COMPONENTS, QuoteBook, aggregate, liquidity_regime
from toolkit.attribution.verdict import (
    EXECUTION_TOLERANCE_BPS,
    RecordInputs,
    RecordVerdict,
    evaluate_record,
    validate_tolerance_bps,
)
from toolkit.errors import ConfigurationError

__all__ = ["Attribution", "attribute", "backtest_decision_returns"]


def backtest_decision_returns(returns: pd.DataFrame, bars: pd.DataFrame, split_at: Any) -> np.ndarray:
    """Return the backtest's out-of-sample per-bar returns at decision prices (position × next close move)."""
    close = bars["close"].reindex(returns.index).to_numpy(dtype=np.float64)
    position = returns["position"].to_numpy(dtype=np.float64)
    move = np.empty_like(close)
    move[:-1] = close[1:] / close[:-1] - 1.0
    move[-1] = np.nan
    r = position * move
    keep = (returns.index >= pd.Timestamp(split_at)) & np.isfinite(r)
    return np.asarray(r[keep], dtype=np.float64)


@dataclass
class Attribution:
    """Everything attribution measured on one record."""

    model: str
    version: str
    deployment: str
    period: tuple[pd.Timestamp, pd.Timestamp]
    bar_ms: int
    orders: pd.DataFrame
    by: dict[str, pd.DataFrame]
    heatmap: pd.DataFrame
    pnl: PnLSplit
    inputs: RecordInputs
    verdict: RecordVerdict
    episodes: list[Episode]
    live_max_drawdown: float
    backtest_drawdown_quantiles: dict[str, float]
    drawdown_p: float | None
    journal_sha256: str
    bundle_sha256: str
    quotes_used: bool
    notes: list[str] = field(default_factory=list)
    #: live slippage by hour-of-week bucket beside the version's regime map (``toolkit.ops.slippage``)
    slippage: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the JSON artifact of ``slippage`` (``live_slippage_by_bucket.json``), None until measured
    slippage_document: dict[str, Any] | None = None

    @property
    def sentence(self) -> str:
        return f"{self.model} v{self.version}: {self.verdict.sentence}"

    def waterfall(self) -> dict[str, float]:
        """Return the shortfall components summed over orders (quote), with half-spread/impact where split."""
        o = self.orders
        if o.empty:
            return {c: 0.0 for c in (*COMPONENTS, "total")}
        out = {c: float(o[c].sum()) for c in (*COMPONENTS, "total")}
        if o["half_spread"].notna().all():
            out["half_spread"] = float(o["half_spread"].sum())
            out["impact"] = float(o["impact"].sum())
        return out

    def summary(self) -> dict[str, Any]:
        """Return the JSON-safe summary (the CLI's ``--json``, MLflow's ``attribution.json``)."""
        o = self.orders
        notional = float(o["notional"].sum()) if not o.empty else 0.0
        wf = self.waterfall()
        return _clean({
            "model": self.model, "version": self.version, "deployment": self.deployment,
            "period": {"start": self.period[0].isoformat(), "end": self.period[1].isoformat(),
                       "days": self.verdict.days},
            "verdict": self.verdict.verdict, "sentence": self.sentence, "record": self.verdict.to_dict(),
            "shortfall": {"orders": len(o), "notional": notional, **wf,
                          "total_bps": wf["total"] / notional * 10_000 if notional else None,
                          "quotes_used": self.quotes_used},
            "pnl": {**self.pnl.totals, "start_equity": self.pnl.start_equity, "capital": self.pnl.capital,
                    "reasons": {str(k): {"bars": int(r["bars"]), "signal_pnl": float(r["signal_pnl"])}
                                for k, r in self.pnl.reasons.iterrows()}},
            "drawdowns": {"live_max_drawdown": self.live_max_drawdown, "p_within_backtest": self.drawdown_p,
                          "backtest_quantiles": self.backtest_drawdown_quantiles,
                          "episodes": [e.to_dict() for e in self.episodes]},
            "journal_sha256": self.journal_sha256, "bundle_sha256": self.bundle_sha256,
            "notes": self.notes + self.pnl.notes + self.verdict.notes,
        })

    def metrics(self) -> dict[str, float]:
        """Return the numeric figures MLflow logs as metrics (finite ones only)."""
        s = self.summary()
        flat = {
            "days": self.verdict.days, "orders": float(len(self.orders)),
            "is_total": s["shortfall"]["total"], "is_total_bps": s["shortfall"]["total_bps"],
            **{f"is_{c}": s["shortfall"][c] for c in COMPONENTS},
            **{f"pnl_{k}": v for k, v in self.pnl.totals.items()},
            "live_sharpe": self.verdict.live_sharpe, "backtest_sharpe": self.verdict.backtest_sharpe,
            "psr_vs_backtest": self.verdict.psr_vs_backtest, "bootstrap_p": self.verdict.bootstrap_p,
            "consistency_p": self.verdict.consistency_p, "execution_p": self.verdict.execution_p,
            "mean_excess_cost_bps": self.verdict.mean_excess_cost_bps, "required_days": self.verdict.required_days,
            "more_days": self.verdict.more_days, "live_max_drawdown": self.live_max_drawdown,
            "drawdown_p": self.drawdown_p,
        }
        return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and math.isfinite(v)}

    def paper_record(self) -> dict[str, Any]:
        """Return the block the ``paper_record`` gate reads (inputs + the verdict derived from them)."""
        return paper_record_block(self.inputs, model=self.model, version=self.version,
                                  journal_sha256=self.journal_sha256, bundle_sha256=self.bundle_sha256,
                                  period=(self.period[0].isoformat(), self.period[1].isoformat()))


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return v


def _ms(t: Any) -> int | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def attribute(jd: JournalData, bars: pd.DataFrame, direction: np.ndarray, cfg: Any, bundle: Any,
              bundle_sha256: str, version: str, capital: float | None = None, start: Any = None, end: Any = None,
              quotes: pd.DataFrame | None = None, alpha: float = 0.05, min_days: float = 30.0,
              top_drawdowns: int = 5, regime: pd.Series | None = None,
              execution_tolerance_bps: float = EXECUTION_TOLERANCE_BPS) -> Attribution:
    """Attribute the record of ``version`` in journal ``jd`` over ``[start, end)`` (default: all of it).

    Parameters
    ----------
    jd
        The journal (``toolkit.attribution.journal.read_journal``).
    bars
        The version's bars from the archive, from the first decision's required history to one bar
        past the last decision when it exists (tz-aware UTC index).
    direction
        The version's direction on each of ``bars``, computed by its own strategy code.
    cfg, bundle, bundle_sha256
        The version's ``BacktestConfig``, its evidence bundle and the bundle's sha256.
    version
        The version attributed.
    capital
        The deployment's capital; None infers it from the first order from flat.
    quotes
        Best bid/ask by time; where they cover the fills, trading cost is split in half-spread and impact.
    regime
        The liquidity regime per bar (``shortfall.liquidity_regime`` of bars reaching 30 days further back);
        default: computed from ``bars``.
    alpha, min_days, execution_tolerance_bps
        The paper policy's ``min_consistency_p``, ``min_days`` and ``execution_tolerance_bps``.

    The shortfall is the vectorised decomposition (``toolkit.attribution.fast``) of the orders
    read exactly in ``jd``; ``toolkit.attribution.shortfall`` is its exact reference.

    Raises
    ------
    ConfigurationError
        No capital given and none can be inferred; a tolerance that is not a finite number >= 0.
    """
    tolerance = validate_tolerance_bps(execution_tolerance_bps)
    bar_ms = round(cfg.bar_minutes() * 60_000)
    start_ms, end_ms = _ms(start), _ms(end)
    notes: list[str] = []
    if capital is None:
        capital = infer_capital(jd)
        if capital is None:
            raise ConfigurationError("capital", "the deployment's capital (the journal does not record it, and it "
                                     "cannot be inferred without an order from flat)", None)
        notes.append(f"capital {capital:,.2f} inferred from the first order from flat (the journal does not record "
                     "it)")
    split = split_pnl(jd, bars, direction, cfg, capital, bar_ms, version=version, start_ms=start_ms, end_ms=end_ms)
    regime = liquidity_regime(bars) if regime is None else regime
    split.frame["regime"] = [str(regime.get(t, "unknown")) for t in split.frame.index]
    book = QuoteBook(quotes) if quotes is not None and len(quotes) else None
    frame = fast_shortfall_frame(journal_frames(jd), bar_ms, book, regime, start_ms, end_ms)
    excess = np.zeros(0)
    if not frame.empty:
        opens = pd.DatetimeIndex(bars.index)
        k = opens.get_indexer(frame["bar_time"])
        exec_k = np.minimum(k + 1, len(bars) - 1)
        frame["model_bps"] = model_costs_bps(bars, cfg.costs, exec_k, frame["notional"].to_numpy())
        frame["excess_bps"] = frame["total_bps"] - frame["model_bps"]
        excess = frame["excess_bps"].to_numpy(dtype=np.float64)
    by = {key: aggregate(frame, key) for key in ("hour", "weekend", "regime", "size_bucket")}
    heat = (frame.pivot_table(index="hour", columns="weekday", values="total_bps", aggfunc="mean")
            .reindex(columns=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]) if not frame.empty else pd.DataFrame())
    f = split.frame
    live_r = f.loc[f["has_next"], "live_return_dp"].to_numpy(dtype=np.float64)
    live_r = live_r[np.isfinite(live_r)]
    bt_r = backtest_decision_returns(bundle.returns, bundle.bars, bundle.split_at)
    bars_per_day = 86_400_000 / bar_ms
    days = (f.index[-1] - f.index[0]).total_seconds() / 86_400.0 + bar_ms / 86_400_000
    inputs = RecordInputs(live_returns=[float(x) for x in live_r], backtest_returns=[float(x) for x in bt_r],
                          excess_cost_bps=[float(x) for x in excess], bars_per_day=bars_per_day, days=float(days),
                          alpha=float(alpha), min_days=float(min_days), tolerance_bps=tolerance)
    verdict = evaluate_record(inputs)
    net = bundle.returns["return"].to_numpy(dtype=np.float64)
    net = net[(bundle.returns.index >= pd.Timestamp(bundle.split_at)) & np.isfinite(net)]
    live_equity = np.concatenate([[split.start_equity], split.start_equity + f["live_pnl"].cumsum().to_numpy()])
    live_mdd = max_drawdown_of(live_equity)
    sims = bootstrap_max_drawdowns(net, len(f), max(1, round(bars_per_day)))
    quant = {f"q{int(q * 100)}": float(np.quantile(sims, q)) for q in (0.5, 0.9, 0.95, 0.99)} if len(sims) else {}
    dd_p = float((1 + np.sum(sims >= live_mdd)) / (len(sims) + 1)) if len(sims) else None
    closes = bars["close"].to_numpy(dtype=np.float64)
    first_k = pd.DatetimeIndex(bars.index).get_loc(f.index[0])
    hist = np.diff(np.log(closes[max(0, int(first_k) - 30 * int(bars_per_day)): int(first_k) + 1]))
    sigma = float(np.std(hist, ddof=1)) if len(hist) > 2 else None
    episodes = drawdown_episodes(f, jd.incidents, bar_ms, top=top_drawdowns, sigma=sigma)
    if book is not None and not frame.empty and frame["half_spread"].isna().any():
        notes.append(f"{int(frame['half_spread'].isna().sum())} of {len(frame)} orders have no quote at their "
                     "fills: trading cost left unsplit there")
    return Attribution(
        model=jd.model, version=str(version), deployment=jd.deployment, period=(f.index[0], f.index[-1]),
        bar_ms=bar_ms, orders=frame, by=by, heatmap=heat, pnl=split, inputs=inputs, verdict=verdict,
        episodes=episodes, live_max_drawdown=live_mdd, backtest_drawdown_quantiles=quant, drawdown_p=dd_p,
        journal_sha256=jd.sha256, bundle_sha256=bundle_sha256,
        quotes_used=bool(book is not None and not frame.empty and frame["half_spread"].notna().all()), notes=notes)

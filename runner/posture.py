"""The intraday risk posture, per deployment and for the account, computed from the journal alone.

``runner status`` reads it with the runner stopped; the loop publishes the same figures on ``/metrics``
(``desk_posture_*``, deployment ``account`` for the account). Per deployment, as of the journal's latest
time (the heartbeat's exchange time, or the last journaled bar's close):

* **exposure**: position (net of fees, from the fills) × the last journaled bar's close, quote currency;
* **intraday PnL**: equity now minus equity at 00:00 UTC of that day (fills before 00:00 valued at the
  close of the last bar that closed by 00:00; without one, the day's first bar);
* **drawdown**: from the peak equity since the version started (the rollback guard's journaled peak),
  against the stage policy's ``capital.max_drawdown_pct`` (or the tighter ``rollback.max_drawdown_pct``);
* **one-day VaR (99 %)**: *parametric*: 2.326 × σ × |exposure|, σ the standard deviation of the log
  returns of the journal's last 168 bars scaled to one day by √(1440 / bar minutes); none with fewer than
  10 returns. Its limit: the stage policy's ``capital.var_99_1d_pct`` of the deployment's equity;
* **open orders**: orders in the journal whose outcome is not final (intent, unknown, open);
* **reconciliation**: the time of the last reconciliation and its drift (exchange − journal per asset),
  journaled each cycle (meta ``reconciliation``), and the drift in % of the capital.

The account sums exposures, PnL, VaR (no diversification credit: an upper bound) and their limits.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.journal import OPEN_STATES, Journal

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from runner.config import Deployment, RunnerConfig

__all__ = ["DeploymentPosture", "PostureGauges", "account_posture", "deployment_posture", "drawdown_limit",
           "posture", "record_reconciliation"]

DAY_MS = 86_400_000
Z_99 = 2.3263478740408408  # the standard normal's 99 % quantile
VAR_BARS = 168
MIN_RETURNS = 10


@dataclass(frozen=True)
class DeploymentPosture:
    """A deployment's posture (amounts in its quote currency; None: not computable from the journal yet)."""

    deployment: str
    as_of: int | None
    position: str
    last_price: float | None
    exposure: float | None
    equity: float | None
    intraday_pnl: float | None
    drawdown_pct: float | None
    drawdown_limit_pct: float
    drawdown_limit_source: str
    var_1d: float | None
    var_limit: float | None
    open_orders: int
    last_reconciliation: int | None
    drift: dict[str, str]
    drift_pct: float | None
    derisk: dict[str, float]


def drawdown_limit(cfg: RunnerConfig, d: Deployment) -> tuple[float, str, float]:
    """Return the drawdown limit %, where it comes from, and the stage policy's one-day VaR limit %."""
    from toolkit.gates.policy import load_policy

    capital = load_policy(None, stage=d.stage).capital
    pct, source = float(capital.max_drawdown_pct), f"{d.stage} policy"
    own = cfg.rollback.max_drawdown_pct
    if own is not None and own < pct:
        pct, source = own, "rollback.max_drawdown_pct"
    return pct, source, float(capital.var_99_1d_pct)


def record_reconciliation(journal: Journal, now: int, drift: dict[str, Decimal]) -> None:
    """Journal the time and drift of the cycle's reconciliation (what the posture shows)."""
    journal.set_meta("reconciliation", json.dumps({"at": now, "drift": {a: str(v) for a, v in sorted(drift.items())}}))


def _as_of(journal: Journal) -> int | None:
    beat = journal.get_meta("heartbeat")
    last_bar = journal.rows("SELECT MAX(open_time) AS t FROM bars")[0]["t"]
    times = [int(json.loads(beat)["exchange_ms"])] if beat else []
    return max(times) if times else (None if last_bar is None else int(last_bar))


def _equity(journal: Journal, d: Deployment, price: float, before: int | None = None) -> float:
    qty, flow = Decimal(0), Decimal(0)
    for f in journal.fills(d.name):
        if before is not None and int(f["at"]) >= before:
            continue
        sign = 1 if f["side"] == "buy" else -1
        qty += sign * Decimal(f["amount"])
        flow -= sign * Decimal(f["cost"])
        if f["fee_asset"] == d.base:
            qty -= Decimal(f["fee"])
        elif f["fee_asset"] == d.quote:
            flow -= Decimal(f["fee"])
    return d.capital + float(flow) + float(qty) * price


def deployment_posture(cfg: RunnerConfig, journal: Journal, d: Deployment,
                       limits: tuple[float, str, float] | None = None) -> DeploymentPosture:
    """Return ``d``'s posture from the journal (see the module docstring)."""
    from runner.alerting import derisk_factors

    dd_limit, dd_source, var_pct = limits or drawdown_limit(cfg, d)
    as_of = _as_of(journal)
    bars = journal.rows("SELECT open_time, close FROM bars WHERE deployment = ? ORDER BY open_time DESC LIMIT ?",
                        (d.name, VAR_BARS + 1))[::-1]
    pos = journal.position(d.name, d.base, d.quote)
    opens = len(journal.orders(d.name, states=OPEN_STATES))
    rec = journal.get_meta("reconciliation")
    rec_doc = json.loads(rec) if rec else {"at": None, "drift": {}}
    last_price = exposure = equity = pnl = dd = var = var_limit = drift_pct = None
    if bars:
        last_price = float(bars[-1]["close"])
        bar_ms = int(np.median(np.diff([b["open_time"] for b in bars]))) if len(bars) > 1 else None
        exposure = float(pos.base) * last_price
        equity = d.capital + float(pos.quote_flow) + exposure
        drift = rec_doc["drift"]
        drift_pct = ((abs(float(drift.get(d.base, 0))) * last_price + abs(float(drift.get(d.quote, 0))))
                     / d.capital * 100)
        if as_of is not None:
            day = as_of - as_of % DAY_MS
            closed = [b for b in journal.rows("SELECT open_time, close FROM bars WHERE deployment = ? "
                                              "ORDER BY open_time", (d.name,))
                      if bar_ms is None or b["open_time"] + bar_ms <= day]
            today = [b for b in bars if b["open_time"] >= day]
            ref = closed[-1]["close"] if closed else (today[0]["close"] if today else last_price)
            pnl = equity - _equity(journal, d, float(ref), before=day)
        switches = journal.switches(d.name)
        peak_raw = journal.get_meta(f"peak_equity:{d.name}:{int(switches[-1]['seq']) if switches else 0}")
        peak = max(float(peak_raw), equity) if peak_raw is not None else equity
        dd = (peak - equity) / peak * 100 if peak > 0 else 0.0
        returns = np.diff(np.log([float(b["close"]) for b in bars]))
        if len(returns) >= MIN_RETURNS and bar_ms:
            sigma_day = float(np.std(returns, ddof=1)) * math.sqrt(DAY_MS / bar_ms)
            var = Z_99 * sigma_day * abs(exposure)
        var_limit = var_pct / 100 * equity
    return DeploymentPosture(
        deployment=d.name, as_of=as_of, position=str(pos.base), last_price=last_price, exposure=exposure,
        equity=equity, intraday_pnl=pnl, drawdown_pct=dd, drawdown_limit_pct=dd_limit,
        drawdown_limit_source=dd_source, var_1d=var, var_limit=var_limit, open_orders=opens,
        last_reconciliation=rec_doc["at"], drift=dict(rec_doc["drift"]), drift_pct=drift_pct,
        derisk=derisk_factors(journal, d.name))


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def account_posture(items: list[DeploymentPosture]) -> dict[str, Any]:
    """Return the account's posture: sums of the deployments' figures (VaR without diversification)."""
    recs = [p.last_reconciliation for p in items if p.last_reconciliation is not None]
    return {"exposure": _sum([p.exposure for p in items]), "intraday_pnl": _sum([p.intraday_pnl for p in items]),
            "var_1d": _sum([p.var_1d for p in items]), "var_limit": _sum([p.var_limit for p in items]),
            "open_orders": sum(p.open_orders for p in items),
            "last_reconciliation": max(recs) if recs else None,
            "drift": items[0].drift if items else {}}


def posture(cfg: RunnerConfig, journal: Journal) -> dict[str, Any]:
    """Return the posture document ``runner status --json`` shows: ``deployments`` and ``account``."""
    items = [deployment_posture(cfg, journal, d) for d in cfg.deployments]
    return {"var_method": f"parametric 99 % one-day: {Z_99:.3f} × σ(log returns of the last {VAR_BARS} journal bars)"
                          " × √(bars per day) × |exposure|",
            "deployments": {p.deployment: asdict(p) for p in items}, "account": account_posture(items)}


class PostureGauges:
    """The posture on ``/metrics``: ``desk_posture_<figure>{deployment}`` (``account`` for the account)."""

    FIGURES = ("exposure", "intraday_pnl", "drawdown_pct", "drawdown_limit_pct", "var_1d", "var_limit",
               "open_orders", "last_reconciliation", "drift_pct")

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Gauge

        self.gauges = {f: Gauge(f"desk_posture_{f}", f"intraday risk posture: {f} (runner.posture)", ["deployment"],
                                registry=registry) for f in self.FIGURES}
        self._limits: dict[str, tuple[float, str, float]] = {}

    def publish(self, cfg: RunnerConfig, journal: Journal) -> None:
        items = []
        for d in cfg.deployments:
            if d.stage not in self._limits:
                self._limits[d.stage] = drawdown_limit(cfg, d)
            items.append(deployment_posture(cfg, journal, d, self._limits[d.stage]))
        rows: dict[str, dict[str, Any]] = {p.deployment: asdict(p) for p in items}
        rows["account"] = account_posture(items)
        for name, row in rows.items():
            for f, gauge in self.gauges.items():
                value = row.get(f)
                if value is not None:
                    gauge.labels(name).set(float(value) / (1000.0 if f == "last_reconciliation" else 1.0))

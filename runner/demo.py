"""The demo's paper trading: the real runner trades the ``paper`` version against the loopback emulator over a
replayed stretch of real bundled bars, one hour at a time, then stops.

Everything is the production path: ``runner.engine.Runner`` (the version loaded from the registry through
the alias and its audited promotion, one decision per closed bar, orders journaled before they are sent,
reconciliation every cycle) and the real ccxt ``binance`` client over HTTP to ``toolkit emulator``, whose
replay clock is stepped by the demo (an hour of market per step) instead of running at wall speed. The
credentials are demo values handed to the runner directly, never exported to the environment.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from toolkit.errors import ExecutionFailed

__all__ = ["PaperStretch", "paper_trade", "replay_hours"]

DEMO_KEY, DEMO_SECRET = "demo-api-key", "demo-api-secret"  # the demo's emulator accepts these, nothing else does
DEMO_CREDENTIALS = {"TOOLKIT_EXCHANGE_API_KEY": DEMO_KEY, "TOOLKIT_EXCHANGE_SECRET": DEMO_SECRET}


@dataclass(frozen=True)
class PaperStretch:
    """What the paper-trading step did."""

    journal: Path
    start: str
    hours: int
    decisions: int
    orders: int
    fills: int
    fees_quote: Decimal
    position_base: Decimal
    equity_change_quote: Decimal
    open_incidents: int


def _config_text(url: str, journal: Path, model: str, capital: float) -> str:
    return f"""journal = "{journal}"

[exchange]
url = "{url}"
rate_limit = false
timeout_ms = 10000

[risk]
max_position_notional = {capital * 1.05}
max_order_notional = {capital * 1.05}
price_band_pct = 5.0
daily_loss_limit = {capital * 0.1}

[poll]
cycle_seconds = 0.05
retry_initial_seconds = 0.05
retry_max_seconds = 0.5

[[deployments]]
name = "demo"
model = "{model}"
alias = "paper"
symbol = "BTC/USDT"
capital = {capital}
"""


def replay_hours(runner: Any, url: str, hours: int) -> None:
    """Open ``runner`` and run one cycle per replayed hour of the stepped emulator at ``url`` (``hours`` + 1 cycles)."""
    from toolkit.emulator.testing import step_clock

    runner.open()
    for _ in range(hours):
        runner.cycle()
        step_clock(url, 60)
    runner.cycle()


def paper_trade(model: str, work: Path, start: str = "2024-03-01", hours: int = 96, capital: float = 20_000.0,
                echo: Callable[[str], None] | None = print) -> PaperStretch:
    """Paper-trade ``model@paper`` for ``hours`` replayed hours from ``start`` (UTC); return what it did.

    The emulator serves the bundled BTC/USDT minute bars from 45 days before ``start`` (the version's
    history) and holds 100,000 USDT; emulator and runner are stopped before this returns, also on error.
    """
    import pandas as pd

    from runner.config import load_config
    from runner.engine import Runner
    from runner.journal import Journal
    from toolkit.emulator.testing import EmulatorPool, make_store

    say = echo or (lambda _m: None)
    t0 = pd.Timestamp(start, tz="UTC")
    store = make_store(Path(tempfile.mkdtemp(prefix="bars-", dir=work)),
                       {"BTC/USDT": ((t0 - pd.Timedelta(days=45)).strftime("%Y-%m-%d"),
                                     (t0 + pd.Timedelta(hours=hours + 24)).strftime("%Y-%m-%d"))})
    pool = EmulatorPool(work, start=start, store_roots=(store,), symbols=("BTC/USDT",))
    journal_path = work / "journal.sqlite"
    runner = None
    try:
        from pydantic import SecretStr

        emu = pool.start(api_key=DEMO_KEY, api_secret=SecretStr(DEMO_SECRET))
        cfg_path = work / "runner.toml"
        cfg_path.write_text(_config_text(emu.url, journal_path, model, capital), encoding="utf-8")
        runner = Runner(load_config(cfg_path), environ=DEMO_CREDENTIALS)
        replay_hours(runner, emu.url, hours)
    finally:
        if runner is not None:
            runner.close()
        left = pool.stop_all()
    if left:
        raise ExecutionFailed(f"the demo's emulator did not release its port: {left}")
    j = Journal(journal_path)
    try:
        decisions = j.decisions("demo")
        orders = [o for o in j.orders() if o["state"] != "not_placed"]
        fills = j.fills()
        pos = j.position("demo", "BTC", "USDT")
        last_close = Decimal(str(decisions[-1]["decision_price"])) if decisions else Decimal(0)
        fees = sum((Decimal(f["fee"]) * (Decimal(f["price"]) if f["fee_asset"] == "BTC" else Decimal(1))
                    for f in fills), Decimal(0))
        incidents = [i for i in j.incidents() if i["resolved_at"] is None]
    finally:
        j.close()
    stretch = PaperStretch(journal=journal_path, start=start, hours=hours, decisions=len(decisions),
                           orders=len(orders), fills=len(fills), fees_quote=fees, position_base=pos.base,
                           equity_change_quote=pos.quote_flow + pos.base * last_close, open_incidents=len(incidents))
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    say(f"    {hours} replayed hours from {start} UTC against the emulator: {n(stretch.decisions, 'decision')}, "
        f"{n(stretch.orders, 'order')}, {n(stretch.fills, 'fill')}, fees {fees:.2f} USDT")
    say(f"    position {pos.base.normalize()} BTC on a {capital:,.0f} USDT allocation (PnL and its split: the "
        f"attribution below); reconciled with the exchange every cycle: {n(stretch.open_incidents, 'open incident')}")
    return stretch

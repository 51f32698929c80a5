"""The runner's execution: the latest decision's next order, the pre-trade limits, and sending an order once.

Functions of a :class:`runner.engine.Runner` (as :mod:`runner.protect` is): :func:`execute` turns the
latest decision into the next order's side and amount (the same sizing as the backtest, exchange
precision and minimum notional, at most ``max_legs_per_bar`` orders), :func:`risk_refusal` applies the
pre-trade limits, and :func:`place` journals an order's intent, sends it once and journals the answer
by the shared adapter's reaction classes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pandas as pd

from runner import failpoints
from runner.config import Deployment
from runner.journal import OPEN_STATES
from runner.reconcile import Reconciler
from runner.version import LoadedVersion
from toolkit.exchange import (
    ExchangeOperationalError,
    ExchangeRejected,
    ExchangeTemporaryError,
    OutcomeUnknown,
)
from toolkit.exchange.errors import InvalidOrderRejected, TimestampRejected
from toolkit.exchange.orders import Order

if TYPE_CHECKING:
    from runner.engine import Runner

__all__ = ["client_order_id", "dec", "execute", "iso_utc", "last_price", "place", "risk_refusal", "send"]


def client_order_id(deployment: str, bar_time: int, leg: int) -> str:
    """Return the client order id of a deployment's ``leg``-th order for the bar opening at ``bar_time``."""
    return f"{deployment}-{bar_time}-{leg}"


def dec(x: Any) -> Decimal:
    """Return ``x`` as an exact Decimal (through its shortest repr for a float)."""
    return Decimal(str(x))


def iso_utc(ms: int) -> str:
    """Return epoch milliseconds as an ISO 8601 UTC timestamp."""
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()



def execute(r: Runner, d: Deployment, v: LoadedVersion, decision: dict[str, Any], now: int) -> None:
    """Send the next order of the latest decision, if one is needed and allowed."""
    assert r.journal is not None and r.session is not None
    t = int(decision["bar_time"])
    legs = r.journal.orders(d.name, bar_time=t, purpose="trade")
    if any(o["state"] in OPEN_STATES for o in legs):
        return  # an order's outcome is not known yet: reconciliation first
    if r.journal.blocking(d.name):
        return  # stays pending: executed when the incident is resolved, unless a newer bar closes first
    arrival = last_price(r, d)
    pos = r.journal.position(d.name, d.base, d.quote)
    equity = dec(d.capital) + pos.quote_flow + pos.base * arrival
    if decision["order_delta"] is None:
        delta = dec(decision["target"]) * dec(r.alerting.size_factor(d.name)) * equity / arrival - pos.base
        remaining = delta
    else:
        delta = dec(decision["order_delta"])
        done = sum((dec(o["filled"]) * (1 if o["side"] == "buy" else -1) for o in legs), Decimal(0))
        remaining = delta - done
        if remaining * delta <= 0:
            r.journal.set_exec_state(d.name, t, "done")
            r.metrics.decision_latency(d.name, r._bar_seen_at.pop(d.name, None), "no_order")
            return
    side = "buy" if remaining > 0 else "sell"
    if side == "sell":
        remaining = max(remaining, -max(pos.base, Decimal(0)))  # never sell what the deployment does not hold
    try:
        amount, _ = r.session.to_precision(d.symbol, abs(remaining))
    except InvalidOrderRejected:
        amount = Decimal(0)
    if amount <= 0 or amount * arrival < r.min_notional[d.name]:
        r.journal.set_exec_state(d.name, t, "done", f"remaining {remaining} below the market's minimum")
        if not legs and abs(remaining) > 0:
            r._incident("below_min_notional", "info", f"{d.symbol} bar {iso_utc(t)}: an order of {remaining} at "
                           f"{arrival} is under the market's minimum notional {r.min_notional[d.name]}: "
                           "not sent", d.name)
        r.metrics.decision_latency(d.name, r._bar_seen_at.pop(d.name, None), "no_order")
        return
    if len(legs) >= r.cfg.risk.max_legs_per_bar:
        r.journal.set_exec_state(d.name, t, "incomplete", f"{len(legs)} legs sent, {remaining} left")
        r._incident("incomplete_execution", "warning", f"{d.symbol} bar {iso_utc(t)}: {remaining} left after "
                       f"{len(legs)} orders", d.name)
        return
    refusal = risk_refusal(r, d, decision, side, amount, arrival, pos.base, equity, now)
    if refusal:
        r.journal.set_exec_state(d.name, t, "refused", refusal)
        r._incident("risk_refused", "warning", f"{d.symbol} bar {iso_utc(t)}: {refusal}", d.name)
        return
    send(r, d, v, t, len(legs), side, amount, arrival, delta if decision["order_delta"] is None else None)

def last_price(r: Runner, d: Deployment) -> Decimal:
    """Return the arrival price: the last trade as the cycle's klines read saw it (the forming bar's close),
    or read from the exchange (``ticker/price``) when that read is older than ``exchange.clock_max_age_ms``."""
    assert r.session is not None
    seen = r.feeds[d.name].last_trade(r.clock.now_ms(), r.cfg.exchange.clock_max_age_ms)
    return seen if seen is not None else r.session.fetch_last_price(d.symbol)


def risk_refusal(r: Runner, d: Deployment, decision: dict[str, Any], side: str, amount: Decimal, arrival: Decimal,
                 held: Decimal, equity: Decimal, now: int) -> str:
    """Return why the order is refused by the pre-trade limits ('' when it passes)."""
    limits = r.cfg.risk
    notional = amount * arrival
    after = held + (amount if side == "buy" else -amount)
    reduces = abs(after) < abs(held)
    if notional > dec(limits.max_order_notional):
        return f"order notional {notional:.2f} above max_order_notional {limits.max_order_notional}"
    if not reduces and abs(after) * arrival > dec(limits.max_position_notional):
        return (f"position notional {abs(after) * arrival:.2f} above max_position_notional "
                f"{limits.max_position_notional}")
    ref = dec(decision["decision_price"])
    band, limit = abs(arrival - ref) / ref * 100, dec(limits.price_band_pct) * dec(r.alerting.band_factor(d.name))
    if band > limit:
        return f"arrival price {arrival} is {band:.2f} % from the last trade {ref} (band {float(limit):g} %)"
    assert r.journal is not None
    day = pd.Timestamp(now, unit="ms", tz="UTC").strftime("%Y-%m-%d")
    key = f"day_start_equity:{d.name}:{day}"
    start = r.journal.get_meta(key)
    if start is None:
        r.journal.set_meta(key, str(equity), durable=False)  # made durable by the intent that follows a pass
        start = str(equity)
    loss = dec(start) - equity
    if loss > dec(limits.daily_loss_limit) and not reduces:
        r._incident("daily_loss", "blocking", f"{d.name}: lost {loss:.2f} today, limit {limits.daily_loss_limit}",
                    d.name)
        return f"daily loss {loss:.2f} above daily_loss_limit {limits.daily_loss_limit}"
    return ""


def send(r: Runner, d: Deployment, v: LoadedVersion, t: int, leg: int, side: str, amount: Decimal, arrival: Decimal,
          first_delta: Decimal | None) -> None:
    from runner import protect

    protect.cancel_stop(r, d)  # a protective stop locks the base asset: it is placed again after the fill
    order = place(r, d, cid=client_order_id(d.name, t, leg), bar_time=t, leg=leg, side=side, amount=amount,
                       arrival=arrival, version=v.version, purpose="trade", first_delta=first_delta)
    if order is not None and order.status == "closed":  # filled in full: the decision is executed
        r.journal.set_exec_state(d.name, t, "done", f"filled by {order.client_order_id}")  # type: ignore[union-attr]
    if order is not None:
        r.reconcile()

def place(r: Runner, d: Deployment, *, cid: str, bar_time: int, leg: int, side: str, amount: Decimal, arrival: Decimal,
          version: str, purpose: str, order_type: str = "market", price: Decimal | None = None,
          params: dict[str, Any] | None = None, first_delta: Decimal | None = None) -> Order | None:
    """Journal an order's intent, send it once, journal the answer; return the order (None: not placed now).

    ``OutcomeUnknown`` → looked up by client id (reconciliation settles it); a timestamp refusal → not
    placed (the clock is resynced); temporary → not placed, raised; rejected → recorded, incident, no
    retry; operational → recorded, raised.
    """
    assert r.journal is not None and r.session is not None
    now = r.clock.recent(r.session, r.cfg.exchange.clock_max_age_ms)
    r.journal.record_intent({
        "client_order_id": cid, "deployment": d.name, "bar_time": bar_time, "leg": leg, "symbol": d.symbol,
        "side": side, "type": order_type, "amount": str(amount), "arrival_price": str(arrival), "intent_at": now,
        "state": "intent", "updated_at": now, "version": version, "purpose": purpose}, order_delta=first_delta)
    r._event("order", deployment=d.name, client_order_id=cid, side=side, amount=str(amount),
                arrival=str(arrival), type=order_type, purpose=purpose, price=None if price is None else str(price))
    failpoints.hit("before_send")
    if purpose == "trade":
        r.metrics.decision_latency(d.name, r._bar_seen_at.pop(d.name, None), "order")
    try:
        order = r.session.place_order(d.symbol, side, order_type, amount, price, client_order_id=cid,
                                         params=params)
    except OutcomeUnknown as exc:
        r.journal.update_order(cid, "unknown", r.clock.now_ms(), detail=str(exc))
        r._incident("outcome_unknown", "warning", f"{cid}: {exc}", d.name)
        Reconciler(r.cfg, r.journal, r.session).resolve_pending(r.clock.now_ms())
        return None
    except TimestampRejected as exc:  # nothing executed; the adapter resynced the clock
        r.journal.update_order(cid, "not_placed", r.clock.now_ms(), detail=str(exc))
        r._incident("timestamp_rejected", "warning", f"{cid}: {exc}", d.name)
        return None
    except ExchangeTemporaryError as exc:  # a 429/418: refused, nothing executed
        r.journal.update_order(cid, "not_placed", r.clock.now_ms(), detail=str(exc))
        raise
    except ExchangeRejected as exc:
        r.journal.update_order(cid, "rejected", r.clock.now_ms(), detail=str(exc))
        if purpose == "trade":
            r.journal.set_exec_state(d.name, bar_time, "rejected", str(exc)[:500])
        r._incident("order_rejected", "warning", f"{cid}: {type(exc).__name__}: {exc}", d.name)
        return None
    except ExchangeOperationalError as exc:
        r.journal.update_order(cid, "rejected", r.clock.now_ms(), detail=str(exc))
        raise
    failpoints.hit("after_send")
    r.journal.update_order(cid, order.status or "open", r.clock.now_ms(), exchange_id=order.id,
                              filled=order.filled, average=order.average, detail="answer to the order request")
    failpoints.hit("after_order")
    return order

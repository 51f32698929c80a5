"""Protection: the kill switch (flatten and halt), flattening a deployment, and the exchange-side stop.

**Kill switch.** ``runner kill --config … --reason …`` opens an account-wide ``kill_switch``
incident (severity ``halt``) in the journal and signals the running runner (``SIGUSR1``),
which, at once: settles the orders whose outcome is unknown, cancels every open order
(protective stops included), sells every deployment's position (market orders, journaled
and sent once like any other, purpose ``flatten``), and exits with status 9. With no runner
running, ``runner kill`` does the same itself. The incident stays open: a runner started
while it is open flattens again (nothing to do when flat) and exits 9 before any decision —
so a supervisor restarting the runner cannot bring trading back; ``runner resolve ID`` does.
The journal holds the request, so it survives a crash of either process.

**Protective stop** (``[protective_stop]``, optional). After each cycle a deployment holding
a position (at least the market's minimum notional) keeps one ``STOP_LOSS_LIMIT`` sell order
for exactly its journaled position on the exchange: stop ``stop_pct`` under the last close,
limit ``limit_pct`` under it. It is cancelled before any other order of the deployment (it
locks the base asset) and placed again, for the new position, after it. If the runner dies,
the exchange still sells at the stop. Its fills are journaled like any other.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from runner import execution, failpoints
from runner.config import Deployment
from runner.journal import OPEN_STATES
from runner.reconcile import Reconciler
from toolkit.exchange import ExchangeTemporaryError, OutcomeUnknown
from toolkit.exchange.errors import ExchangeRejected, InvalidOrderRejected, OrderNotFoundRejected

if TYPE_CHECKING:
    from runner.engine import Runner

__all__ = ["FLATTEN_LEG", "STOP_LEG", "cancel_open", "cancel_stop", "check_kill", "flatten", "keep_stop"]

#: ``orders.leg`` of flatten orders (100, 101, …) and protective stops (200, 201, …): they are stamped with the
#: exchange's time, which may be the open time of a bar a decision later trades (legs 0, 1, …)
FLATTEN_LEG = 100
STOP_LEG = 200


def check_kill(r: Runner) -> bool:
    """Execute an open kill-switch incident (flatten everything, stop); return True when one was found."""
    from runner.engine import KILL

    assert r.journal is not None
    kills = [i for i in r.journal.incidents(open_only=True) if i["kind"] == KILL]
    if not kills:
        return False
    inc = kills[-1]
    r._event("kill_switch", incident=inc["id"], message=inc["message"], note="flattening every deployment")
    with failpoints.scope("kill"):
        failpoints.hit("kill_begin")
        r.reconcile()
        for d in r.cfg.deployments:
            flatten(r, d, f"kill switch (incident {inc['id']})")
        r.reconcile()
        failpoints.hit("kill_flattened")
    left = {d.name: str(r.journal.position(d.name, d.base, d.quote).base) for d in r.cfg.deployments}
    r.journal.set_meta(f"kill_done:{inc['id']}", str(r.clock.now_ms()))
    failpoints.hit("kill_done")
    r._event("killed", incident=inc["id"], positions=left)
    r.killed = int(inc["id"])
    r.stop()
    return True


def cancel_open(r: Runner, d: Deployment) -> None:
    """Cancel every open order of ``d`` on the exchange (the protective stop included); settle what is unknown."""
    assert r.journal is not None and r.session is not None
    for o in r.journal.orders(d.name, states=("open",)):
        _cancel(r, d, o["client_order_id"])
    Reconciler(r.cfg, r.journal, r.session).resolve_pending(r.clock.now_ms(), count_misses=False)


def cancel_stop(r: Runner, d: Deployment) -> None:
    """Cancel ``d``'s protective stop, if it has one open."""
    assert r.journal is not None and r.session is not None
    stops = r.journal.orders(d.name, states=("open",), purpose="stop")
    for o in stops:
        _cancel(r, d, o["client_order_id"])
    if stops:
        Reconciler(r.cfg, r.journal, r.session).resolve_pending(r.clock.now_ms(), count_misses=False)


def _cancel(r: Runner, d: Deployment, cid: str) -> None:
    assert r.journal is not None and r.session is not None
    try:
        order = r.session.cancel_order(d.symbol, client_order_id=cid)
    except OrderNotFoundRejected:  # already gone (filled or cancelled): reconciliation finds out which
        return
    except OutcomeUnknown as exc:
        r._incident("cancel_unknown", "warning", f"{cid}: {exc}", d.name)
        return
    r.journal.update_order(cid, order.status or "canceled", r.clock.now_ms(), exchange_id=order.id,
                           filled=order.filled, average=order.average, detail="cancelled by the runner")


def flatten(r: Runner, d: Deployment, why: str) -> None:
    """Sell ``d``'s whole journaled position now (market, up to ``risk.max_legs_per_bar`` orders).

    Raises the exchange's temporary errors (the caller retries); a position under the market's
    minimum notional is left (it cannot be sold).
    """
    with failpoints.scope("flatten"):
        _flatten(r, d, why)


def _flatten(r: Runner, d: Deployment, why: str) -> None:
    assert r.journal is not None and r.session is not None
    failpoints.hit("flatten_begin")
    cancel_open(r, d)
    if r.journal.orders(d.name, states=OPEN_STATES):
        raise ExchangeTemporaryError("flatten", r.session.exchange, f"{d.name}: an order's outcome is unknown: "
                                     "settled before flattening")
    last = r.journal.last_decision(d.name)
    if last is not None and last["exec_state"] in ("pending", "executing"):
        r.journal.set_exec_state(d.name, int(last["bar_time"]), "superseded", f"flattened: {why}"[:500])
    r.mark_fresh(d.name)
    version = r.versions[d.name].version if d.name in r.versions else "-"
    stamp = r.clock.sync(r.session)
    # legs after those already journaled at this exchange time (a flatten a crash interrupted, on a venue whose
    # clock has not moved since): each order its own client id
    done = len(r.journal.orders(d.name, bar_time=stamp, purpose="flatten"))
    for leg in range(done, done + r.cfg.risk.max_legs_per_bar):
        pos = r.journal.position(d.name, d.base, d.quote).base
        if pos <= 0:
            break
        arrival = r.session.fetch_last_price(d.symbol)
        try:
            amount, _ = r.session.to_precision(d.symbol, pos)
        except InvalidOrderRejected:
            amount = Decimal(0)
        if amount <= 0 or amount * arrival < r.min_notional.get(d.name, Decimal(0)):
            break
        order = execution.place(r, d, cid=f"{d.name}-{stamp}-x{leg}", bar_time=stamp, leg=FLATTEN_LEG + leg,
                                side="sell", amount=amount, arrival=arrival, version=version, purpose="flatten")
        failpoints.hit("flatten_leg")
        r.reconcile()
        if order is None and r.journal.orders(d.name, states=OPEN_STATES):
            raise ExchangeTemporaryError("flatten", r.session.exchange, f"{d.name}: the flatten order's outcome is "
                                         "unknown: settled on the next cycle")
    r._event("flattened", deployment=d.name, why=why,
             position=str(r.journal.position(d.name, d.base, d.quote).base))


def keep_stop(r: Runner, d: Deployment) -> None:
    """Keep one protective ``STOP_LOSS_LIMIT`` sell for ``d``'s position on the exchange (when configured)."""
    ps = r.cfg.protective_stop
    if ps is None or r.journal is None or r.session is None or r.killed is not None:
        return
    feed = r.feeds.get(d.name)
    if feed is None or not len(feed.bars) or d.name in r.pending_switch:
        return
    stops = r.journal.orders(d.name, states=OPEN_STATES, purpose="stop")
    if any(o["state"] != "open" for o in stops) or r.journal.orders(d.name, states=("intent", "unknown")):
        return  # an outcome is unknown: reconciliation first
    last = Decimal(repr(float(feed.bars["close"].iloc[-1])))
    pos = r.journal.position(d.name, d.base, d.quote).base
    try:
        amount, _ = r.session.to_precision(d.symbol, max(pos, Decimal(0)))
    except InvalidOrderRejected:
        amount = Decimal(0)
    limit_raw = last * (1 - Decimal(str(ps.limit_pct)) / 100)
    want = amount if amount > 0 and amount * limit_raw >= r.min_notional.get(d.name, Decimal(0)) else Decimal(0)
    have = Decimal(stops[0]["amount"]) if stops else Decimal(0)
    if have == want and len(stops) <= 1:
        return
    if r._stop_refused.get(d.name) == want:
        return  # refused for this amount already: not sent again until the position changes
    cancel_stop(r, d)
    if want <= 0:
        return
    stop_price = _tick(r, d, last * (1 - Decimal(str(ps.stop_pct)) / 100))
    limit_price = _tick(r, d, limit_raw)
    stamp = r.clock.sync(r.session)
    version = r.versions[d.name].version if d.name in r.versions else "-"
    # after the stops already journaled at this exchange time (one cancelled by hand, or an intent a crash left
    # unsent, on a venue whose clock has not moved since): each stop its own client id
    n = len(r.journal.orders(d.name, bar_time=stamp, purpose="stop"))
    try:
        with failpoints.scope("stop"):
            order = execution.place(r, d, cid=f"{d.name}-{stamp}-s{n}", bar_time=stamp, leg=STOP_LEG + n,
                                    side="sell", amount=want, arrival=last, version=version, purpose="stop",
                                    order_type="limit", price=limit_price,
                                    params={"stopPrice": format(stop_price, "f")})
    except ExchangeRejected:
        order = None
    if order is None:
        r._stop_refused[d.name] = want
    else:
        r._stop_refused.pop(d.name, None)
        r._event("protective_stop", deployment=d.name, amount=str(want), stop=str(stop_price),
                 limit=str(limit_price))


def _tick(r: Runner, d: Deployment, price: Decimal) -> Decimal:
    assert r.session is not None
    r.session.load_markets()
    tick = r.session.client.markets[d.symbol]["precision"].get("price")
    if not tick:
        return price
    step = Decimal(str(tick))
    return (price / step).to_integral_value(rounding=ROUND_DOWN) * step

"""Reconciliation of the journal with the exchange: pending orders, fills, open orders, balances.

Run on start and every cycle, before any new order:

1. every journaled order not known to be final (``intent``, ``unknown``, ``open``) is looked
   up by its client order id; one the exchange does not know at ``risk.not_found_lookups``
   lookups (one per reconciliation: Binance's order index can lag) becomes ``not_placed``;
2. the account's fills since the last one seen (``fetch_my_trades``) are journaled, each
   linked to its order (fills that happened while the runner was down are backfilled); a
   fill of an order the journal does not know opens a blocking incident;
3. an open order of a deployment's symbol that the journal does not know opens a blocking incident;
4. each asset's balance is compared with the baseline plus the journaled fills; a
   difference beyond the tolerance opens a blocking ``balance_drift`` incident, resolved
   when a later reconciliation finds none.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from runner.config import RunnerConfig
from runner.journal import OPEN_STATES, Journal
from toolkit.exchange import ExchangeSession

__all__ = ["Reconciler"]

log = logging.getLogger("runner.reconcile")
TRADES_PAGE = 1000


def fills_key(symbol: str) -> str:
    return f"fills_since:{symbol}"


class Reconciler:
    """Compares the journal with the exchange for every deployment of a runner."""

    def __init__(self, config: RunnerConfig, journal: Journal, session: ExchangeSession) -> None:
        self.cfg = config
        self.journal = journal
        self.session = session
        #: exchange minus journal per asset at the last balance check
        self.drift: dict[str, Decimal] = {}

    # --- 0. baseline ---------------------------------------------------------------------------------
    def ensure_baseline(self, now: int) -> bool:
        """On the first start: journal the account's balances as the baseline and start the fill watermarks."""
        if self.journal.baseline():
            return False
        balances = self._balances()
        with self.journal.tx() as con:
            for asset, (free, used, total) in sorted(balances.items()):
                con.execute("INSERT INTO balances (at, kind, asset, free, used, total) "
                            "VALUES (?, 'baseline', ?, ?, ?, ?)",
                            (now, asset, str(free), str(used), str(total)))
            for d in self.cfg.deployments:
                for asset in (d.base, d.quote):
                    if asset not in balances:
                        con.execute("INSERT INTO balances (at, kind, asset, free, used, total) "
                                    "VALUES (?, 'baseline', ?, '0', '0', '0')", (now, asset))
                self.journal.set_meta(fills_key(d.symbol), str(now), con)
        return True

    def _balances(self) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
        raw = self.session.fetch_balance()
        out: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        for asset, row in raw.items():
            if isinstance(row, dict) and "total" in row and row.get("total") is not None:
                out[str(asset)] = (Decimal(str(row.get("free") or 0)), Decimal(str(row.get("used") or 0)),
                                   Decimal(str(row["total"])))
        return out

    # --- 1. orders whose outcome the journal does not know -----------------------------------------
    def resolve_pending(self, now: int, count_misses: bool = True) -> int:
        """Look up every order not known to be final by its client id; return how many changed state."""
        changed = 0
        for o in self.journal.orders(states=OPEN_STATES):
            found = self.session.find_order(o["symbol"], o["client_order_id"])
            if found is None:
                if o["state"] in ("intent", "unknown") and count_misses:
                    # Binance's order index can lag its matching engine: ask again on later cycles before
                    # concluding that the order was never placed
                    cid = o["client_order_id"]
                    self.journal.note_order_event(cid, "lookup_miss", now, "the exchange does not know this "
                                                  "client order id (yet)")
                    misses = self.journal.order_event_count(cid, "lookup_miss")
                    if misses >= self.cfg.risk.not_found_lookups:
                        self.journal.update_order(cid, "not_placed", now, detail=f"the exchange did not know this "
                                                  f"client order id at {misses} lookups")
                        changed += 1
                continue
            state = found.status or "open"
            if state != o["state"] or str(found.filled or 0) != o["filled"]:
                self.journal.update_order(o["client_order_id"], state, now, exchange_id=found.id, filled=found.filled,
                                          average=found.average, detail="reconciled by client order id")
                changed += 1
        return changed

    # --- 2. fills ----------------------------------------------------------------------------------
    def sync_fills(self, now: int) -> int:
        """Journal the fills since the watermark of every deployment's symbol; return how many were new."""
        new = 0
        for d in self.cfg.deployments:
            key = fills_key(d.symbol)
            since = int(self.journal.get_meta(key) or now)
            while True:
                trades = self.session.fetch_my_trades(d.symbol, since=since, limit=TRADES_PAGE)
                rows = [self._fill_row(d.name, d.symbol, t, now) for t in trades]
                top = max([since, *(int(t["timestamp"]) for t in trades)])
                new += self.journal.record_fills(rows, watermark=(key, top))
                if len(trades) < TRADES_PAGE or top == since:
                    break
                since = top
        return new

    def _fill_row(self, deployment: str, symbol: str, t: dict[str, Any], now: int) -> dict[str, Any]:
        order_id = None if t.get("order") is None else str(t["order"])
        order = self.journal.order_by_exchange_id(order_id) if order_id else None
        if order is None and order_id:
            found = self.session.fetch_order(symbol, order_id)
            cid = found.client_order_id
            known = self.journal.rows("SELECT * FROM orders WHERE client_order_id = ?", (cid,)) if cid else []
            if known:
                order = known[0]
                self.journal.update_order(order["client_order_id"], found.status or order["state"], now,
                                          exchange_id=order_id, filled=found.filled, average=found.average,
                                          detail="linked by a fill")
        if order is None:
            self.journal.open_incident(now, "foreign_fill", "blocking",
                                       f"{symbol}: fill {t.get('id')} of order {order_id} that this runner did not "
                                       "send (another client trades this account?)", deployment)
        fee = t.get("fee") or {}
        return {"symbol": symbol, "trade_id": str(t["id"]), "exchange_order_id": order_id,
                "client_order_id": None if order is None else order["client_order_id"],
                "deployment": deployment if order is not None else None, "side": str(t["side"]),
                "price": str(t["price"]), "amount": str(t["amount"]), "cost": str(t["cost"]),
                "fee": str(fee.get("cost") or 0), "fee_asset": str(fee.get("currency") or ""),
                "at": int(t["timestamp"]), "recorded_at": now}

    # --- 3. open orders ----------------------------------------------------------------------------
    def check_open_orders(self, now: int) -> None:
        for d in self.cfg.deployments:
            for o in self.session.fetch_open_orders(d.symbol):
                known = o.client_order_id and self.journal.rows(
                    "SELECT 1 FROM orders WHERE client_order_id = ?", (o.client_order_id,))
                if not known:
                    self.journal.open_incident(now, "foreign_order", "blocking",
                                               f"{d.symbol}: open order {o.id} ({o.client_order_id}) not in the "
                                               "journal", d.name)

    # --- 4. balances -------------------------------------------------------------------------------
    def expected_balances(self) -> dict[str, Decimal]:
        expected = dict(self.journal.baseline())
        for d in self.cfg.deployments:
            pos = self.journal.position(d.name, d.base, d.quote)
            expected[d.base] = expected.get(d.base, Decimal(0)) + pos.base
            expected[d.quote] = expected.get(d.quote, Decimal(0)) + pos.quote_flow
        return expected

    def check_balances(self, now: int, snapshot: bool) -> list[str]:
        """Compare balances with the journal; return the differences found (empty: reconciled)."""
        actual = self._balances()
        expected = self.expected_balances()
        tol = Decimal(str(self.cfg.risk.balance_tolerance))
        assets = {a for d in self.cfg.deployments for a in (d.base, d.quote)}
        diffs = []
        for asset in sorted(assets):
            have = actual.get(asset, (Decimal(0), Decimal(0), Decimal(0)))[2]
            want = expected.get(asset, Decimal(0))
            self.drift[asset] = have - want
            if abs(have - want) > tol:
                diffs.append(f"{asset}: exchange {have}, journal {want} (difference {have - want})")
        if snapshot or diffs:
            self.journal.record_balances(now, "reconcile", {a: v for a, v in actual.items() if a in assets}, expected)
        if diffs:
            self.journal.open_incident(now, "balance_drift", "blocking",
                                       "balances differ from the journal: " + "; ".join(diffs))
            log.warning("balance drift: %s", "; ".join(diffs))
        else:
            self.journal.resolve_incidents(now, "balance_drift", None, "reconciled: the difference is gone")
        return diffs

    def run(self, now: int, snapshot: bool = False) -> int:
        """Reconcile everything; return the number of new fills."""
        self.resolve_pending(now)
        new = self.sync_fills(now)
        self.resolve_pending(now, count_misses=False)  # fills may have linked orders to their final state
        self.check_open_orders(now)
        self.check_balances(now, snapshot or new > 0)
        return new

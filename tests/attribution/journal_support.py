"""Hand-built journals for attribution tests, written through the runner's own ``Journal`` (the real schema)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner.journal import Journal

HOUR = 3_600_000
T0 = 1_709_251_200_000  # 2024-03-01 00:00 UTC


@dataclass
class HandFill:
    price: str
    amount: str
    fee: str
    fee_asset: str


@dataclass
class HandLeg:
    amount: str
    arrival: str
    state: str
    fills: Sequence[HandFill] = ()
    ended_after_ms: int = 5_000


@dataclass
class HandDecision:
    bar: int                      # bar index from T0 (hours)
    price: str                    # decision price = the bar's close
    side: str = "buy"
    legs: Sequence[HandLeg] = ()
    target: float = 0.5
    held: float = 0.0
    late: int = 0
    exec_state: str = "done"
    version: str = "1"
    extra: dict[str, Any] = field(default_factory=dict)


def write_journal(path: Path, decisions: Sequence[HandDecision], closes: dict[int, float] | None = None,
                  deployment: str = "btc", model: str = "ma_cross.BTC-USDT.1h") -> Path:
    """Write a journal: one bar and one decision per ``HandDecision``, its legs and fills; extra bars' closes."""
    j = Journal(path)
    trade = 0
    try:
        bars = {d.bar: float(d.price) for d in decisions} | dict(closes or {})
        j.record_bars(deployment, [(T0 + b * HOUR, c, c, c, c, 10.0) for b, c in sorted(bars.items())])
        j.record_switch(T0, deployment, model, "paper", None, decisions[0].version, "start")
        for d in decisions:
            t = T0 + d.bar * HOUR
            j.record_decision({"deployment": deployment, "bar_time": t, "decided_at": t + HOUR + 1_000,
                               "decision_price": d.price, "direction": 1.0, "raw_target": d.target,
                               "target": d.target, "held_before": d.held, "position_qty": "0", "model": model,
                               "version": d.version, "late": d.late, "exec_state": "pending", "note": "", **d.extra})
            for leg, h in enumerate(d.legs):
                cid = f"{deployment}-{t}-{leg}"
                at = t + HOUR + 2_000 + leg * 10_000
                j.record_intent({"client_order_id": cid, "deployment": deployment, "bar_time": t, "leg": leg,
                                 "symbol": "BTC/USDT", "side": d.side, "type": "market", "amount": h.amount,
                                 "arrival_price": h.arrival, "intent_at": at, "state": "intent", "updated_at": at,
                                 "version": d.version},
                                order_delta=Decimal(h.amount) * (1 if d.side == "buy" else -1) if leg == 0 else None)
                rows = []
                for f in h.fills:
                    trade += 1
                    rows.append({"symbol": "BTC/USDT", "trade_id": str(trade), "exchange_order_id": f"x{trade}",
                                 "client_order_id": cid, "deployment": deployment, "side": d.side, "price": f.price,
                                 "amount": f.amount, "cost": str(Decimal(f.price) * Decimal(f.amount)), "fee": f.fee,
                                 "fee_asset": f.fee_asset, "at": at + 500, "recorded_at": at + 600})
                if rows:
                    j.record_fills(rows)
                filled = sum((Decimal(f.amount) for f in h.fills), Decimal(0))
                j.update_order(cid, h.state, at + h.ended_after_ms, filled=filled)
            j.set_exec_state(deployment, t, d.exec_state)
    finally:
        j.close()
    return path

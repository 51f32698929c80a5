"""Implementation shortfall of 1 M fills: a journal written through the runner's schema, read and decomposed.

250,000 decisions, each one order of 4 fills (partial fills, fees in the base or quote asset),
written into a real journal (``runner.journal`` schema), then timed: ``read_journal`` (exact
decimals, checked) and ``shortfalls`` + ``shortfall_frame`` (Perold per decision, exact).
The issue's goal: 1 M fills decomposed in under 10 s.

    .venv/bin/python bench/bench_attribution.py [--fills 1000000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "attribution.json"


def write(path: Path, n_fills: int, per_order: int = 4) -> None:
    from runner.journal import Journal

    Journal(path).close()  # the schema
    rng = np.random.default_rng(0)
    n = n_fills // per_order
    t0, hour = 1_704_067_200_000, 3_600_000
    con = sqlite3.connect(path)
    price = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.005, n)))
    dec, orders, fills, bars = [], [], [], []
    trade = 0
    for i in range(n):
        t = t0 + i * hour
        p = round(float(price[i]), 2)
        side = "buy" if i % 2 == 0 else "sell"
        amount = "0.0400"
        bars.append(("btc", t, p, p, p, p, 10.0))
        dec.append(("btc", t, t + hour, repr(p), 1.0, 0.5, 0.5, 0.0, "0", "m", "1", 0, "done", amount, ""))
        cid = f"btc-{t}-0"
        orders.append((cid, "btc", t, 0, "BTC/USDT", side, "market", amount, f"{p + 0.5:.2f}", t + hour, "closed",
                       f"x{i}", amount, None, t + hour + 100, "1"))
        for j in range(per_order):
            trade += 1
            fp = f"{p + 0.5 + 0.01 * j:.2f}"
            fees = ("0.00001", "BTC") if side == "buy" else ("0.40", "USDT")
            fills.append(("BTC/USDT", str(trade), f"x{i}", cid, "btc", side, fp, "0.0100", "0", *fees,
                          t + hour + 50, t + hour + 60))
    con.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", bars)
    con.executemany("INSERT INTO decisions (deployment, bar_time, decided_at, decision_price, direction, raw_target, "
                    "target, held_before, position_qty, model, version, late, exec_state, order_delta, note) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", dec)
    con.executemany("INSERT INTO orders (client_order_id, deployment, bar_time, leg, symbol, side, type, amount, "
                    "arrival_price, intent_at, state, exchange_id, filled, average, updated_at, version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", orders)
    con.executemany("INSERT INTO fills (symbol, trade_id, exchange_order_id, client_order_id, deployment, side, price, "
                    "amount, cost, fee, fee_asset, at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    fills)
    con.executemany("INSERT INTO order_events (client_order_id, at, state) VALUES (?, ?, 'closed')",
                    [(o[0], o[14]) for o in orders])
    con.commit()
    con.close()


def main() -> int:
    from toolkit.attribution import read_journal, shortfalls
    from toolkit.attribution.shortfall import shortfall_frame

    ap = argparse.ArgumentParser()
    ap.add_argument("--fills", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        write(path, args.fills)
        c0, t0 = time.process_time(), time.perf_counter()
        jd = read_journal(path)
        t1 = time.perf_counter()
        items = shortfalls(jd.orders, jd.decisions, jd.bars, 3_600_000)
        t2 = time.perf_counter()
        frame = shortfall_frame(items)
        t3, c3 = time.perf_counter(), time.process_time()
    n_fills = sum(len(o.fills) for o in jd.orders)
    res = {"fills": n_fills, "orders": len(items), "read_s": round(t1 - t0, 2), "decompose_s": round(t2 - t1, 2),
           "frame_s": round(t3 - t2, 2), "total_s": round(t3 - t0, 2), "cpu_s": round(c3 - c0, 2),
           "total_bps_mean": float(frame["total_bps"].mean())}
    print(json.dumps(res))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

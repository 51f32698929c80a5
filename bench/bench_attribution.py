"""Implementation shortfall of 1 M fills: a journal written through the runner's schema, read and decomposed.

250,000 decisions, each one order of 4 fills (partial fills, fees in the base or quote asset),
written into a real journal (``runner.journal`` schema), then timed, each path in its own
process (so its peak RSS is its own):

- **fast** (what ``toolkit attribute`` runs): ``read_journal_frames`` (one query per table,
  checked with vectorised masks; three quarters of the fills read by a process of its own meanwhile,
  whose CPU is counted in ``cpu_s``) + ``fast_shortfall_frame``, on the 1 M fills;
- **exact** (the reference, ``Decimal``): ``read_journal`` + ``shortfalls`` + ``shortfall_frame``,
  on a smaller journal (``--exact-fills``; it is linear in the fills), where the fast path is
  also run and both frames are compared.

The issue's goal: 1 M fills decomposed in under 10 s. Writes ``bench/results/attribution.json``.

    .venv/bin/python bench/bench_attribution.py [--fills 1000000] [--exact-fills 100000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
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


def measure(path: Path, kind: str, out: Path | None) -> dict[str, object]:
    """Time one path on ``path`` in this process; return its figures (and pickle its frame to ``out``)."""
    import resource

    from toolkit.attribution import read_journal, shortfalls
    from toolkit.attribution.fast import fast_shortfall_frame, read_journal_frames
    from toolkit.attribution.shortfall import shortfall_frame

    def children_cpu() -> float:  # the fast path's fill reader runs in a process of its own: its CPU counts too
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    k0, c0, t0 = children_cpu(), time.process_time(), time.perf_counter()
    if kind == "exact":
        jd = read_journal(path)
        t1 = time.perf_counter()
        frame = shortfall_frame(shortfalls(jd.orders, jd.decisions, jd.bars, 3_600_000))
        fills = sum(len(o.fills) for o in jd.orders)
    else:
        jf = read_journal_frames(path)
        t1 = time.perf_counter()
        frame = fast_shortfall_frame(jf, 3_600_000)
        fills = len(jf.fills)
    t2, c2, k2 = time.perf_counter(), time.process_time(), children_cpu()
    if out is not None:
        frame.to_pickle(out)
    return {"fills": fills, "orders": len(frame), "read_s": round(t1 - t0, 2), "decompose_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2), "cpu_s": round(c2 - c0 + k2 - k0, 2),
            "cpu_children_s": round(k2 - k0, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "total_bps_mean": float(frame["total_bps"].mean())}


def _child(path: Path, kind: str, out: Path | None = None) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--measure", kind, "--journal", str(path)] + (["--out", str(out)] if out else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fills", type=int, default=1_000_000)
    ap.add_argument("--exact-fills", type=int, default=100_000)
    ap.add_argument("--measure", choices=("exact", "fast"), help=argparse.SUPPRESS)
    ap.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.journal, args.measure, args.out)))
        return 0
    import os

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small.sqlite", Path(tmp) / "big.sqlite"
        write(small, args.exact_fills)
        exact = _child(small, "exact", Path(tmp) / "exact.pkl")
        fast_small = _child(small, "fast", Path(tmp) / "fast.pkl")
        a, b = pd.read_pickle(Path(tmp) / "exact.pkl"), pd.read_pickle(Path(tmp) / "fast.pkl")
        cols = ["delay", "trading", "opportunity", "fees", "total"]
        diff_quote = float((a[cols] - b[cols]).abs().to_numpy().max())
        diff_bps = float((a["total_bps"] - b["total_bps"]).abs().max())
        write(big, args.fills)
        load = os.getloadavg()
        fast = _child(big, "fast")
        load_after = os.getloadavg()
    res = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m": [round(load[0], 2), round(load_after[0], 2)],
        "fast": fast, "exact_on_small": exact, "fast_on_small": fast_small,
        "exact_s_per_1m_fills_extrapolated": round(float(exact["total_s"]) * 1_000_000 / float(exact["fills"]), 1),
        "max_abs_diff_quote_small": diff_quote, "max_abs_diff_total_bps_small": diff_bps,
        "previous_exact_1m_total_s": 193.8,
        "previous_fast_1m": {"total_s": 11.66, "cpu_s": 11.87, "load_average_1m": 0.7,
                             "note": "one process, before the fills were read in a process of their own"},
    }
    rows = [("fast (1 M fills)", fast), ("exact, small", exact), ("fast, small", fast_small)]
    print(f"{'path':<18}{'fills':>10}{'read s':>9}{'decomp s':>10}{'total s':>9}{'cpu s':>8}{'peak RSS MB':>13}")
    for name, r in rows:
        print(f"{name:<18}{r['fills']:>10}{r['read_s']:>9}{r['decompose_s']:>10}{r['total_s']:>9}{r['cpu_s']:>8}"
              f"{r['peak_rss_mb']:>13}")
    print(f"fast vs exact on the small journal: max |diff| {diff_quote:.2e} quote, {diff_bps:.2e} bps; "
          f"load average (1 min) {load[0]:.2f} before, {load_after[0]:.2f} after the 1 M run")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

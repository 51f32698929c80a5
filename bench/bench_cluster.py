"""The same study on a Dask cluster of 1 and 2 worker processes: wall time and the scaling ratio.

The study: ma_cross (380 combinations), donchian (40) and bollinger (30) grids on BTC/USDT 1m, 5m and 15m
(2024-01..04), ETH/USDT 1m and 5m (one month) and BTC/USDT 1h (2017-08..2025-11), all bundled: 18 cells,
2,700 combinations, swept in tasks of ``--chunk`` combinations; each cell appends its
trials to a throwaway SQLite ledger. Each timed run starts and stops its own LocalCluster, and its worker
processes load numba's on-disk caches: both are included (a one-cell study before each run compiles nothing
new but warms the disk). Alternated runs (1, 2, 1, 2, …), median of ``--repeat``.
Results: ``bench/results/cluster.json``.

    .venv/bin/python bench/bench_cluster.py [--repeat 3] [--chunk 64] [--scheduler tcp://HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench_support import machine

from toolkit.backtest import config_from_params
from toolkit.backtest.cluster import run_study

RESULTS = Path(__file__).resolve().parent / "results" / "cluster.json"
GRIDS = {"ma_cross": {"fast": list(range(2, 42, 2)), "slow": list(range(50, 525, 25))},
         "donchian": {"window": list(range(10, 410, 10))},
         "bollinger": {"window": list(range(10, 160, 5)), "k": [2.0]}}
CELLS = [("BTC/USDT", "1m", "2024-01-01", "2024-04-30"), ("BTC/USDT", "5m", "2024-01-01", "2024-04-30"),
         ("BTC/USDT", "15m", "2024-01-01", "2024-04-30"), ("ETH/USDT", "1m", "2024-07-27", "2024-08-24"),
         ("ETH/USDT", "5m", "2024-07-27", "2024-08-24"), ("BTC/USDT", "1h", "2017-09-01", "2025-10-31")]


def study() -> list:
    return [config_from_params(strategy=s, symbol=sym, timeframe=tf, start=a, end=b, grid=g)
            for s, g in GRIDS.items() for sym, tf, a, b in CELLS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--scheduler", default=None, help="a running scheduler (tcp://…); default LocalCluster")
    args = ap.parse_args()
    configs = study()
    combos = sum(len(c.combinations()) for c in configs)
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = str(Path(tmp) / "trials.db")
        for _ in range(args.repeat):
            for n in (1, 2):
                run_study(configs[:1], workers=n, chunk=args.chunk, ledger_path=ledger, scheduler=args.scheduler)
                t0 = time.perf_counter()
                res = run_study(configs, study_id=uuid.uuid4().hex, workers=n, chunk=args.chunk, ledger_path=ledger,
                                scheduler=args.scheduler)
                times[n].append(time.perf_counter() - t0)
                assert sum(c.trials_added for c in res.cells) == combos
                print(f"{n} worker(s): {times[n][-1]:.1f} s ({res.tasks} tasks, {combos} combinations)")
    med = {n: statistics.median(v) for n, v in times.items()}
    out = {"date": datetime.now(UTC).date().isoformat(), "machine": machine() + " (shared)",
           "cells": len(configs), "combinations": combos, "chunk": args.chunk, "repeat": args.repeat,
           "seconds": {str(n): v for n, v in times.items()}, "median_seconds": {str(n): round(m, 2) for n, m in
                                                                                  med.items()},
           "scaling_1_to_2": round(med[1] / med[2], 3), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
           "note": "includes each run's LocalCluster start and stop"}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

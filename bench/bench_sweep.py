"""Benchmark: sweep throughput (bar·combos/s) on one year of 1m BTC/USDT bars, peak RSS, demo time.

Usage: .venv/bin/python bench/bench_sweep.py [--data-dir DIR] [--demo]

One year of BTC/USDT 1m bars (2024) is needed; the clone bundles only 2024-01..04. The
script takes the year from, in order:

1. the bar store, when it holds all of 2024 — fetch it once (Binance's public API, about
   530 requests) with ``toolkit data fetch --symbol BTC/USDT --timeframe 1m --since 2024-01-01
   --until 2025-01-01``;
2. ``--data-dir`` holding ``binance_BTCUSDT_1m_2024-01.parquet`` … ``-12.parquet`` (the desk's
   shared data set, built from Binance's daily kline archive on data.binance.vision);
3. otherwise the four bundled months, and the result says so.

The sweep is timed warm (a first small run compiles vectorbt's numba kernels). Results are
printed and written to bench/results/sweep.json (no machine paths in it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.backtest.config import config_from_params  # noqa: E402
from toolkit.backtest.engine import sweep_returns  # noqa: E402
from toolkit.data.store import _frame_from_table, load_bars  # noqa: E402
from toolkit.errors import ToolkitError  # noqa: E402


def year_of_bars(data_dir: Path | None) -> tuple[pd.DataFrame, str]:
    try:
        stored = load_bars("BTC/USDT", "1m", "2024-01-01", "2024-12-31")
    except ToolkitError:
        stored = None
    if stored is not None and len(stored) >= 527_000:
        return stored, "bar store: BTC/USDT 1m 2024-01..2024-12"
    files = sorted(data_dir.glob("binance_BTCUSDT_1m_2024-*.parquet")) if data_dir else []
    if len(files) == 12:
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        return _frame_from_table(frame, "2024"), "shared data set: binance_BTCUSDT_1m_2024-01..12.parquet"
    return load_bars("BTC/USDT", "1m"), "bundled 2024-01..2024-04 only (no year of 1m bars found)"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="directory with binance_BTCUSDT_1m_2024-MM.parquet files (default: ../shared/data if present)")
    ap.add_argument("--demo", action="store_true", help="also time `make demo` (warm environment)")
    args = ap.parse_args()

    shared = ROOT.parent / "shared" / "data"
    bars, source = year_of_bars(args.data_dir or (shared if shared.is_dir() else None))
    grid = {"fast": [5, 10, 20, 30, 50, 80], "slow": [100, 200, 400, 800]}
    cfg = config_from_params(strategy="ma_cross", timeframe="1m", grid=grid)
    combos = cfg.combinations()

    sweep_returns(cfg, bars.iloc[:5000], combos[:2])  # warm-up: numba compilation
    t0 = time.perf_counter()
    sweep_returns(cfg, bars, combos)
    seconds = time.perf_counter() - t0
    bar_combos = len(bars) * len(combos)
    result = {
        "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "data": source,
        "bars": len(bars),
        "combinations": len(combos),
        "sweep_seconds": round(seconds, 2),
        "bar_combos_per_second": round(bar_combos / seconds),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    if args.demo:
        t0 = time.perf_counter()
        subprocess.run(["make", "demo"], cwd=ROOT, check=True, capture_output=True)
        result["make_demo_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "sweep.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

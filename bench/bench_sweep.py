"""Benchmark: sweep throughput (bar·combos/s) on one year of 1m BTC/USDT bars, peak RSS, demo time.

Usage: .venv/bin/python bench/bench_sweep.py [--data-dir ../shared/data] [--combos 24] [--demo]

One year of 1m bars (2024) is read from ``--data-dir`` (the shared data set); a
clone without it falls back to the four bundled months and says so. The sweep is
timed warm (a first small run compiles vectorbt's numba kernels). Results are
printed and written to bench/results/sweep.json.
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


def year_of_bars(data_dir: Path) -> tuple[pd.DataFrame, str]:
    files = sorted(data_dir.glob("binance_BTCUSDT_1m_2024-*.parquet"))
    if len(files) == 12:
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        return _frame_from_table(frame, "2024"), f"{data_dir} (2024-01..2024-12)"
    return load_bars("BTC/USDT", "1m"), "bundled 2024-01..2024-04 (shared data not found)"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--demo", action="store_true", help="also time `make demo` (warm environment)")
    args = ap.parse_args()

    bars, source = year_of_bars(args.data_dir)
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

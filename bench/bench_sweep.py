"""Benchmark: sweep throughput (bar·combos/s) of the fused kernel, the project's vectorbt path and raw vectorbt.

Usage: .venv/bin/python bench/bench_sweep.py [--data-dir DIR] [--combos N] [--sample N]

In one process, on the same year of BTC/USDT 1m bars (2024) and the same MA-cross grid:

1. **fused**: ``toolkit.backtest.fused`` over the whole grid (``--combos``, default 1000) —
   signals, sizing, the rebalancing band, next-open fills with fees and the slippage model,
   equity, per-fold moments and hourly trial returns. Peak RSS is read right after it (the
   process holds nothing larger before). Then Donchian and Bollinger grids of ≥ 500 combinations.
2. **project vectorbt**: the same pipeline through ``vectorbt.Portfolio.from_orders``
   (``TOOLKIT_SWEEP_ENGINE=vectorbt``) on a random sample of the grid (``--sample``, default
   32; its cost per combination does not depend on the grid's size). The sample's fold
   Sharpe ratios are compared with the kernel's.
3. **raw vectorbt**: vectorbt's own fast path for the same signals, as its authors would write
   it — ``vbt.MA.run`` over the windows, crossovers, ``Portfolio.from_signals`` all-in with the
   same taker fee, no sizing and no slippage model — on the same sample.
4. **walk-forward**: ``run_backtest`` over the whole grid (sweep, walk-forward selection, the
   chosen record through vectorbt and the kernel check), against one full sweep.

One year of 1m bars is needed; the clone bundles only 2024-01..04. The script takes it from,
in order: the bar store, when it holds all of 2024 (``toolkit data fetch --symbol BTC/USDT
--timeframe 1m --since 2024-01-01 --until 2025-01-01``, about 530 requests to Binance's public
API); ``--data-dir`` with ``binance_BTCUSDT_1m_2024-01.parquet`` … ``-12.parquet`` (the desk's
shared data set); otherwise the four bundled months, and the result says so.

Every engine is timed warm (a small first run compiles the numba kernels). Results are printed
and written to bench/results/sweep.json (no machine paths in it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.backtest.config import config_from_params  # noqa: E402
from toolkit.backtest.engine import fold_bounds, run_backtest, sweep_moments  # noqa: E402
from toolkit.backtest.ledger import TrialLedger  # noqa: E402
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


def ma_grid(n: int) -> dict[str, list[int]]:
    """An MA-cross grid of at least ``n`` combinations (fast 5.. step 5, slow 250.. step 50)."""
    fast = list(range(5, 205, 5))
    slow_count = max(1, -(-n // len(fast)))
    return {"fast": fast, "slow": list(range(250, 250 + 50 * slow_count, 50))}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def raw_vectorbt(bars: pd.DataFrame, combos: list[dict], fee: float, capital: float) -> float:
    """vectorbt's own path for the same MA-cross signals (all-in, fee only); return seconds."""
    import vectorbt as vbt

    close = pd.Series(bars["close"].to_numpy(), index=bars.index.tz_localize(None))
    opens = bars["open"].to_numpy()
    fast_w = [c["fast"] for c in combos]
    slow_w = [c["slow"] for c in combos]
    t0 = time.perf_counter()
    fast = vbt.MA.run(close, window=fast_w, short_name="fast")
    slow = vbt.MA.run(close, window=slow_w, short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    # decided on the close, filled at the next open: shift the signals one bar, price = open
    entries = entries.shift(1, fill_value=False)
    exits = exits.shift(1, fill_value=False)
    pf = vbt.Portfolio.from_signals(close, entries, exits, price=opens[:, None], fees=fee, init_cash=capital,
                                    freq="1min")
    pf.value()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="directory with binance_BTCUSDT_1m_2024-MM.parquet files (default: ../shared/data if present)")
    ap.add_argument("--combos", type=int, default=1000, help="MA-cross combinations in the fused sweep")
    ap.add_argument("--sample", type=int, default=32, help="combinations run through the vectorbt paths")
    args = ap.parse_args()

    shared = ROOT.parent / "shared" / "data"
    bars, source = year_of_bars(args.data_dir or (shared if shared.is_dir() else None))
    cfg = config_from_params(strategy="ma_cross", timeframe="1m", grid=ma_grid(args.combos))
    combos = cfg.combinations()[: args.combos]
    folds = cfg.folds(len(bars))
    bounds = fold_bounds(folds, len(bars))
    n = len(bars)

    # warm-up: numba compilation of every kernel (cached on disk after the first run on a machine)
    small = bars.iloc[:20_000]
    sweep_moments(cfg, small, combos[:2], np.array([0, len(small)]), engine="fused")
    sweep_moments(cfg, small, combos[:2], np.array([0, len(small)]), engine="vectorbt")
    raw_vectorbt(small, combos[:2], cfg.costs.taker_fee, cfg.capital)

    (fused_m, _), fused_s = timed(sweep_moments, cfg, bars, combos, bounds, engine="fused")
    rss_after_fused = peak_rss_mib()
    result: dict[str, object] = {
        "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "data": source,
        "bars": n,
        "fused": {"strategy": "ma_cross", "combinations": len(combos), "seconds": round(fused_s, 2),
                  "bar_combos_per_second": round(n * len(combos) / fused_s),
                  "peak_rss_mib": round(rss_after_fused, 1)},
    }

    others = {
        "donchian": {"window": [20, 40, 60, 90, 120, 180, 240, 360, 480, 720],
                     "exit_window": [10, 20, 30, 45, 60, 90, 120, 180, 240, 360],
                     "max_hold": [60, 120, 240, 480, 720, 1440, 2880, 4320, 10080, 20160]},
        "bollinger": {"window": [20, 30, 45, 60, 90, 120, 180, 240, 360, 480], "k": [1.0, 1.5, 2.0, 2.5, 3.0],
                      "max_hold": [30, 60, 120, 240, 480, 720, 1440, 2880, 4320, 10080]},
    }
    result["fused_other_strategies"] = {}
    for name, grid in others.items():
        other = config_from_params(strategy=name, timeframe="1m", grid=grid)
        oc = other.combinations()
        sweep_moments(other, small, oc[:2], np.array([0, len(small)]), engine="fused")
        _, secs = timed(sweep_moments, other, bars, oc, bounds, engine="fused")
        result["fused_other_strategies"][name] = {  # type: ignore[index]
            "combinations": len(oc), "seconds": round(secs, 2), "bar_combos_per_second": round(n * len(oc) / secs)}

    rng = np.random.default_rng(7)
    pick = sorted(rng.choice(len(combos), size=min(args.sample, len(combos)), replace=False).tolist())
    sample = [combos[j] for j in pick]
    (vbt_m, _), vbt_s = timed(sweep_moments, cfg, bars, sample, bounds, engine="vectorbt")
    worst = max(float(np.nanmax(np.abs(fused_m.sharpe(f.train_lo, f.test_lo)[pick]
                                       - vbt_m.sharpe(f.train_lo, f.test_lo)))) for f in folds)
    result["project_vectorbt"] = {"combinations": len(sample), "seconds": round(vbt_s, 2),
                                  "bar_combos_per_second": round(n * len(sample) / vbt_s),
                                  "fold_sharpe_max_abs_diff_vs_fused": worst}
    raw_s = raw_vectorbt(bars, sample, cfg.costs.taker_fee, cfg.capital)
    result["raw_vectorbt"] = {"combinations": len(sample), "seconds": round(raw_s, 2),
                              "bar_combos_per_second": round(n * len(sample) / raw_s),
                              "what": "vbt.MA.run + crossovers + Portfolio.from_signals, all-in, fee only"}
    fused_rate = n * len(combos) / fused_s
    result["ratios"] = {
        "fused_over_project_vectorbt": round(fused_rate / (n * len(sample) / vbt_s), 1),
        "fused_over_raw_vectorbt": round(fused_rate / (n * len(sample) / raw_s), 1),
    }

    with tempfile.TemporaryDirectory() as tmp:
        wf, wf_s = timed(run_backtest, cfg, bars,
                         ledger=TrialLedger(Path(tmp) / "trials.db"), progress=False)
    result["walk_forward"] = {"seconds": round(wf_s, 2), "over_one_sweep": round(wf_s / fused_s, 2),
                              "folds": len(folds), "kernel_vs_vectorbt_max_abs_diff":
                                  wf.engine["kernel_vs_vectorbt_max_abs_diff"]}
    result["peak_rss_mib_process"] = round(peak_rss_mib(), 1)

    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "sweep.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

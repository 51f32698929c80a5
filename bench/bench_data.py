"""Benchmark: the data-quality certificate of a year of 1m bars, and PBO at the gates' full size.

Usage: .venv/bin/python bench/bench_data.py [--repeat 3]

- ``certify``: the four bundled months of BTC/USDT 1m bars shifted into three
  consecutive copies (~520k bars, a year's worth), certified warm; goal < 2 s.
- ``pbo_cscv``: 2,000 × 1,000 i.i.d. normal trial returns, 16 splits (12,870 CSCV
  combinations); goal < 15 s.

These figures used to be asserted by tests; as timings on a shared machine they belong
here, where they are measured and reported (bench/results/data.json, README).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_support import machine, timed  # noqa: E402

from toolkit.data.quality import certify  # noqa: E402
from toolkit.data.store import load_bars  # noqa: E402
from toolkit.stats.pbo import pbo_cscv  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    months = load_bars("BTC/USDT", "1m", "2024-01-01", "2024-04-30")
    year = pd.concat([months.set_axis(months.index + pd.Timedelta(days=121 * k)) for k in range(3)])
    certify(year.iloc[:1000], "BTC/USDT", "1m")  # warm imports
    cert_s = timed(lambda: certify(year, "BTC/USDT", "1m"), args.repeat)
    x = np.random.default_rng(0).normal(0, 0.01, (2000, 1000))
    pbo_s = timed(lambda: pbo_cscv(x, n_splits=16), args.repeat)
    result = {
        "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "machine": machine(),
        "certify": {"bars": len(year), "median_s": round(statistics.median(cert_s), 3),
                    "all_s": [round(s, 3) for s in cert_s], "goal_s": 2.0},
        "pbo_cscv": {"shape": [2000, 1000], "splits": 16, "median_s": round(statistics.median(pbo_s), 3),
                     "all_s": [round(s, 3) for s in pbo_s], "goal_s": 15.0},
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "data.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

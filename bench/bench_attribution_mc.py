"""Error rates of the attribution verdict on synthetic records (``toolkit.attribution.synthetic``).

A backtest record (3 years, hourly, Student-t, weekly volatility regimes, true annual Sharpe 3)
and a live record from the same process ("intact") or with the edge removed ("decayed": from the
start, or from the middle of the record), for several live lengths; an execution design adds a
known excess cost. Prints and writes the share of each verdict with Wilson 95 % intervals.

    .venv/bin/python bench/bench_attribution_mc.py --reps 200
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from toolkit.attribution.synthetic import synthetic_inputs
from toolkit.attribution.verdict import VERDICTS, evaluate_record

OUT = Path(__file__).resolve().parent / "results" / "attribution_mc.json"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    designs = [(f"{name}, {days} days", dict(live_days=days, decay_at=decay, excess_bps=excess))
               for days in (120, 240, 400)
               for name, decay, excess in (("intact", None, 0.0), ("decayed from the start", 0.0, 0.0),
                                           ("decayed from the middle", 0.5, 0.0))]
    designs += [("intact, execution +1 bps (within tolerance), 60 days", dict(live_days=60, excess_bps=1.0)),
                ("intact, execution +5 bps, 60 days", dict(live_days=60, excess_bps=5.0))]
    results = {}
    for name, kw in designs:
        labels = [evaluate_record(synthetic_inputs(rng, **kw)).verdict for _ in range(args.reps)]  # type: ignore[arg-type]
        row = {}
        for v in VERDICTS:
            k = labels.count(v)
            lo, hi = wilson(k, len(labels))
            row[v] = {"share": k / len(labels), "ci95": [lo, hi]}
        results[name] = row
        print(f"{name:<58} " + "  ".join(f"{v}: {row[v]['share']:.1%}" for v in VERDICTS), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"reps": args.reps, "seed": args.seed, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

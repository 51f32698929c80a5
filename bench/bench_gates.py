"""Benchmark: evaluate every gate for one version with 1,000 trials and PBO with 16 splits.

Usage: .venv/bin/python bench/bench_gates.py [--trials 1000] [--repeat 3] [--json bench/results/gates.json]

Setup (not timed): a real backtest of ``ma_cross`` on the bundled BTC/USDT 1h bars
2023-01-01..2024-06-30 (13,127 bars) over a grid of exactly ``--trials``
combinations, recorded into a fresh trial ledger and saved as an evidence
bundle in a temporary directory. Timed, warm (one untimed pass first):

- ``collect_evidence``: latency replay (1,000 decisions), lookahead (40 cuts),
  warm-up sensitivity, cost-stress re-simulation and neighbour re-simulation;
- ``evaluate``: all 22 gates, including DSR over the 1,000-trial ledger and PBO
  by CSCV on the 13,128 × 1,000 trial-return matrix with 16 splits (12,870 combinations);
- ``total``: ``evaluate_bundle`` (collect + write + read back + evaluate + write verdict).

The goal is total < 10 s on a 2-core machine. Results are printed and written to
bench/results/gates.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_support import timed  # noqa: E402

from toolkit.backtest import TrialLedger, config_from_params, run_backtest  # noqa: E402
from toolkit.backtest.bundle import save_bundle  # noqa: E402
from toolkit.data.quality import certify  # noqa: E402
from toolkit.gates import collect_evidence, evaluate, evaluate_bundle, load_policy  # noqa: E402
from toolkit.reporting.views import bars_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gates.json"


def _grid(trials: int) -> dict[str, list[int]]:
    fast = list(range(2, 42))                       # 40 values
    slow = list(range(50, 50 + 10 * -(-trials // 40), 10))
    combos = [(f, s) for s in slow for f in fast][:trials]
    return {"fast": sorted({f for f, _ in combos}), "slow": sorted({s for _, s in combos})}


def build_bundle(directory: Path, trials: int) -> tuple[Path, int, float]:
    """Run the real backtest with ``trials`` combinations and save its bundle (untimed setup)."""
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", start="2023-01-01", end="2024-06-30",
                             grid=_grid(trials))
    bars = bars_for(cfg)
    t0 = time.perf_counter()
    result = run_backtest(cfg, bars, ledger=TrialLedger(directory / "trials.db"), progress=False)
    took = time.perf_counter() - t0
    bundle = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), directory / "bundle")
    return bundle, len(result.sweep), took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args()

    policy = load_policy()
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        root = Path(tmp)
        bundle, n_trials, sweep_s = build_bundle(root, args.trials)
        evidence = collect_evidence(bundle, policy)          # warm-up pass (imports, numba caches)
        evaluate(evidence, policy)
        collect = timed(lambda: collect_evidence(bundle, policy), args.repeat)
        evaluate_s = timed(lambda: evaluate(evidence, policy), args.repeat)
        total = timed(lambda: evaluate_bundle(bundle, policy, root / "out"), args.repeat)
        verdict = evaluate(evidence, policy)
        pbo_gate = verdict.gate("pbo")
        bars = pd.read_parquet(bundle / "trial_returns.parquet").shape

    res = {
        "benchmark": "gates: all gates for one version",
        "trials_in_ledger": int(verdict.gate("dsr").inputs["n_trials"]),
        "trials_in_pbo_matrix": int(pbo_gate.inputs.get("n_trials", n_trials)),
        "pbo_matrix_rows": int(bars[0]),
        "pbo_splits": policy.statistics.pbo_splits,
        "pbo_combinations": int(pbo_gate.inputs.get("n_combinations", 0)),
        "latency_samples": len(evidence.extras["latency"]["samples_ns"]),
        "repeat": args.repeat,
        "collect_evidence_s": {"median": statistics.median(collect), "all": collect},
        "evaluate_s": {"median": statistics.median(evaluate_s), "all": evaluate_s},
        "total_s": {"median": statistics.median(total), "all": total},
        "goal_total_s": 10.0,
        "goal_met": statistics.median(total) < 10.0,
        "setup_backtest_s": sweep_s,
        "verdict": verdict.summary(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(res, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

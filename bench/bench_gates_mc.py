"""Benchmark: Monte-Carlo pass rates of the promotion gates on synthetic hourly markets.

Usage: .venv/bin/python bench/bench_gates_mc.py [--reps 40] [--designs noise,trend] [--seed 1]
       [--workers 2] [--gates all|no-replay] [--json bench/results/gates_mc.json]

Per repetition (seeded by ``(seed, design, rep)``, so results do not depend on the workers):

1. draw a market (``synthetic.draw_params``: volatility 40–90 %, Gaussian or Student-t
   innovations, a volume level; for ``trend`` a regime persistence of 100–1000 h and the
   calibrated drift, see ``bench/synthetic.py``) and three years of hourly bars (26,280);
2. draw the researcher's grid (``draw_grid``): 20–50 ``ma_cross`` trials (long/flat) around
   the pair the persistence favours (for ``noise`` a persistence-like horizon is drawn too),
   spaced densely (highly correlated trials) to sparsely;
3. run the project's pipeline through its public API: ``run_backtest`` with a fresh trial
   ledger, ``certify`` the bars, ``save_bundle``, ``collect_evidence``, and
   ``toolkit.gates.checks.run_gates`` under ``load_policy()`` — every gate, of every category
   (``--gates no-replay`` skips the latency, lookahead and warm-up replays and their three gates,
   about 3/4 of the evidence time; the JSON lists the gates run and not run);
4. record each gate's pass/fail, the key inputs and the design parameters, plus the true
   Sharpe (50 simulated years, fee-only) of the chosen and the reference trial.

The configuration comes from ONE function, ``make_config``; the policy from ``gate_policy``.
Aggregates: pass rates of the statistics gates, the risk gates and all gates, per design and
per bucket (volatility, persistence/horizon, trial count, grid correlation, tails), each with
a Wilson 95 % interval; a table is printed and everything (per-rep records included) is
written to ``--json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per worker process

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import synthetic as sy  # noqa: E402
from bench_support import machine  # noqa: E402

from toolkit.backtest import BacktestConfig, TrialLedger, config_from_params, run_backtest  # noqa: E402
from toolkit.backtest.bundle import bundle_sha256, load_bundle, save_bundle  # noqa: E402
from toolkit.data.quality import certify  # noqa: E402
from toolkit.gates import Evidence, GatePolicy, GateResult, collect_evidence, load_policy  # noqa: E402
from toolkit.gates.checks import GATES, run_gates, votes  # noqa: E402
from toolkit.gates.evidence import canonical_json, measure_costs_and_neighbours, measurement_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gates_mc.json"
TARGETS = {"noise": ("at most", 0.02), "trend": ("at least", 0.80)}
#: pass rates reported: name -> gate categories that must all pass (None = every gate the harness ran)
#: "live_before_paper": every gate run except the paper track record, which no backtest can have (the live
#: policy's paper_record gate fails until the version has traded on paper, so "all_run" is 0 % by construction)
GROUPS: dict[str, tuple[str, ...] | None] = {
    "statistics": ("statistics",), "risk": ("risk",),
    "live_before_paper": ("data", "statistics", "risk", "latency", "lookahead", "robustness"), "all_run": None}


# --------------------------------------------------------------------------- the one place to change


def make_config(grid: dict[str, list[int]], capital: float = 100_000.0, **overrides: Any) -> BacktestConfig:
    """Return the backtest configuration of one repetition (the only place the harness builds one).

    Long/flat ``ma_cross`` on hourly bars over ``grid``; ``overrides`` go to ``config_from_params``.
    """
    params: dict[str, Any] = {
        "strategy": "ma_cross", "timeframe": "1h", "symbol": "BTC/USDT", "grid": grid,
        "params": {"allow_short": False}, "capital": capital, "experiment": "bench-gates-mc",
    }
    return config_from_params(**{**params, **overrides})


def gate_policy() -> GatePolicy:
    """Return the policy the gates are run under (the one in force)."""
    return load_policy()


# --------------------------------------------------------------------------- the researcher's grid

#: geometric spacing of neighbouring slow values (1.04: near-duplicates, trials correlated ~0.95;
#: 1.6: far apart, ~0.75 — long/flat trials on one asset share its return whenever both are long)
SPACING_RANGE = (1.04, 1.6)
#: the fast axis is spaced at most this far apart (keeps every fast below every slow)
MAX_FAST_SPACING = 1.25
TRIALS_RANGE = (20, 50)


def _axis(centre: float, n: int, q: float, floor: int) -> list[int]:
    raw = centre * q ** (np.arange(n) - (n - 1) / 2.0)
    out: list[int] = []
    for x in raw:
        v = max(floor, round(float(x)))
        out.append(v if not out or v > out[-1] else out[-1] + 1)
    return out


def draw_grid(rng: np.random.Generator, horizon_h: float) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Draw a grid of 20–50 (fast, slow) pairs around ``synthetic.reference_pair(horizon_h)``.

    The spacing sets how correlated the trials are; the axes' lengths are the feasible ones
    (every fast below every slow, 3–6 fast and 3–10 slow values) whose product is nearest a
    trial count drawn uniformly from 20–50.
    """
    fast_ref, slow_ref = sy.reference_pair(horizon_h)
    target = int(rng.integers(TRIALS_RANGE[0], TRIALS_RANGE[1] + 1))
    q = float(np.exp(rng.uniform(*np.log(SPACING_RANGE))))
    qf = min(q, MAX_FAST_SPACING)
    shapes = []
    for n_fast in range(3, 7):
        for n_slow in range(3, 11):
            fast, slow = _axis(fast_ref, n_fast, qf, 2), _axis(slow_ref, n_slow, q, 3)
            if TRIALS_RANGE[0] <= n_fast * n_slow <= TRIALS_RANGE[1] and fast[-1] < slow[0]:
                shapes.append((abs(n_fast * n_slow - target), n_fast, n_slow))
    best = min(d for d, _, _ in shapes)
    _, n_fast, n_slow = shapes[int(rng.choice([i for i, s in enumerate(shapes) if s[0] == best]))]
    grid = {"fast": _axis(fast_ref, n_fast, qf, 2), "slow": _axis(slow_ref, n_slow, q, 3)}
    meta = {"horizon_h": horizon_h, "spacing": q, "fast_spacing": qf, "reference": [fast_ref, slow_ref],
            "n_fast": n_fast, "n_slow": n_slow, "target_trials": target}
    return grid, meta


# --------------------------------------------------------------------------- evidence and gates

#: --gates: "all" = collect_evidence + run_gates (every gate); "no-replay" = the bundle plus the
#: cost-stress and neighbour re-simulations only, and every gate whose evidence that holds (the
#: latency, lookahead and warm-up replays, properties of the strategy's code rather than of the
#: market and about 3/4 of collect_evidence's time, are not measured and their gates not run)
GATE_MODES = ("all", "no-replay")


def _evidence_without_replay(bundle_dir: Path, policy: GatePolicy) -> Evidence:
    bundle = load_bundle(bundle_dir)
    cost, robust = measure_costs_and_neighbours(bundle, policy)
    sha = bundle_sha256(bundle_dir)
    extras = {"settings": measurement_settings(policy), "bundle_sha256": sha, "cost_stress": cost,
              "robustness": robust, "registry_trials": None}
    return Evidence(bundle_dir=bundle_dir, bundle=bundle, bundle_sha=sha, extras=json.loads(canonical_json(extras)))


def _gates_without_replay(ev: Evidence, policy: GatePolicy) -> tuple[list[GateResult], list[str]]:
    out, skipped = [], []
    for g in GATES:
        try:
            r = g(ev, policy)
            out.append(r if votes(r.name, ev, policy) else dataclasses.replace(r, enforced=False))
        except KeyError:  # its measurement is not in this evidence
            skipped.append(g.__name__)
    return out, skipped


def evaluate_rep(bundle_dir: Path, policy: GatePolicy, mode: str) -> tuple[list[GateResult], list[str], float]:
    """Return the gate results, the gates not run and the seconds spent collecting evidence."""
    t0 = time.perf_counter()
    if mode == "all":
        ev = collect_evidence(bundle_dir, policy)
        took = time.perf_counter() - t0
        return run_gates(ev, policy), [], took
    ev = _evidence_without_replay(bundle_dir, policy)
    took = time.perf_counter() - t0
    results, skipped = _gates_without_replay(ev, policy)
    return results, skipped, took


# --------------------------------------------------------------------------- one repetition


@dataclass(frozen=True)
class Task:
    design: str
    rep: int
    seed: int
    calibration: sy.Calibration
    gates: str = "all"
    years: float = 3.0


def _inp(gates: dict[str, Any], name: str, key: str) -> Any:
    g = gates.get(name)
    return None if g is None else g.inputs.get(key)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(float(x)) else None


def _mean_offdiag_corr(mat: np.ndarray) -> float | None:
    if mat.shape[1] < 2:
        return None
    c = np.corrcoef(np.nan_to_num(mat.astype("float64")), rowvar=False)
    off = c[~np.eye(c.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else None


def run_rep(task: Task) -> dict[str, Any]:
    """Run one repetition end to end and return its record."""
    design_index = sy.DESIGNS.index(task.design)
    rng = np.random.default_rng([task.seed, design_index, task.rep])
    market = sy.draw_params(task.design, rng, task.calibration, n_bars=round(task.years * sy.HOURS_PER_YEAR))
    horizon = market.persistence_h or float(np.exp(rng.uniform(*np.log(sy.PERSISTENCE_RANGE))))
    grid, grid_meta = draw_grid(rng, horizon)
    bars = sy.make_bars(market, rng)
    policy = gate_policy()
    cfg = make_config(grid, capital=policy.capital.allocation_usdt)
    timing: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gates-mc-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        result = run_backtest(cfg, bars, ledger=TrialLedger(root / "trials.db"), progress=False)
        t1 = time.perf_counter()
        bundle = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), root / "bundle")
        t2 = time.perf_counter()
        results, skipped, collect_s = evaluate_rep(bundle, policy, task.gates)
        t4 = time.perf_counter()
    timing = {"backtest_s": t1 - t0, "certify_and_save_s": t2 - t1, "collect_evidence_s": collect_s,
              "run_gates_s": t4 - t2 - collect_s, "total_s": t4 - t0}
    gates = {g.name: g for g in results}
    chosen = (int(result.chosen["fast"]), int(result.chosen["slow"]))
    truth_rng = np.random.default_rng([task.seed, design_index, task.rep, 1])
    ref = tuple(grid_meta["reference"])
    true_chosen, _ = sy.true_sharpe(market, truth_rng, 50, chosen)
    true_ref, _ = sy.true_sharpe(market, truth_rng, 50, ref)  # type: ignore[arg-type]
    return {
        "design": task.design, "rep": task.rep,
        "market": asdict(market), "grid": grid, "grid_meta": grid_meta,
        "n_trials": len(result.sweep),
        "trial_correlation": _mean_offdiag_corr(result.trial_returns.to_numpy()),
        "chosen": list(chosen),
        "true_sharpe_chosen": true_chosen, "true_sharpe_reference": true_ref,
        "gates": {g.name: {"category": g.category, "passed": bool(g.passed), "enforced": bool(g.enforced)}
                  for g in results},
        "gates_not_run": skipped,
        "key": {
            "sharpe_oos_annual": _num(_inp(gates, "oos_sharpe", "sharpe_oos_annual")),
            "sharpe_is_annual_chosen": _num(result.metrics_is.get("sharpe")),
            "psr": _num(_inp(gates, "psr", "psr")),
            "dsr": _num(_inp(gates, "dsr", "dsr")),
            "dsr_n_trials": _inp(gates, "dsr", "n_trials"),
            "pbo": _num(_inp(gates, "pbo", "pbo")),
            "max_drawdown_pct": _num(_inp(gates, "max_drawdown", "max_drawdown_pct_of_allocation")),
            "var_99_1d_pct": _num(_inp(gates, "var_99_1d", "var_pct")),
            "trades_oos": _inp(gates, "min_trades", "trades_oos"),
            "buy_hold_sharpe_oos": _num(result.benchmark.get("sharpe")),
        },
        "timing": timing,
    }


# --------------------------------------------------------------------------- aggregation


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Return the Wilson score interval of ``k`` successes in ``n`` trials (95 % by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def passed(rec: dict[str, Any], categories: tuple[str, ...] | None) -> bool:
    gs = [g for g in rec["gates"].values()
          if (categories is None or g["category"] in categories) and g.get("enforced", True)]  # advisory: no vote
    return bool(gs) and all(g["passed"] for g in gs)


def rate(recs: list[dict[str, Any]], categories: tuple[str, ...] | None) -> dict[str, Any]:
    k = sum(passed(r, categories) for r in recs)
    lo, hi = wilson(k, len(recs))
    return {"passed": k, "n": len(recs), "rate": k / len(recs) if recs else math.nan, "ci95": [lo, hi]}


def _bucket(x: float | None, edges: tuple[float, ...], fmt: str) -> str:
    """Return the label of the bucket ``[lo, hi)`` holding ``x`` (the last one closed: ``[lo, hi]``)."""
    if x is None:
        return "n/a"
    for k, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = k == len(edges) - 2
        if lo <= x < hi or (last and x == hi):
            return f"[{lo:{fmt}}, {hi:{fmt}}" + ("]" if last else ")")
    return f"> {edges[-1]:{fmt}}" if x > edges[-1] else f"< {edges[0]:{fmt}}"


#: sub-design name -> the bucket a record falls in
BUCKETS = {
    "vol": lambda r: _bucket(r["market"]["annual_vol"], (0.40, 0.55, 0.70, 0.90), ".2f"),
    "persistence_or_horizon_h": lambda r: _bucket(r["grid_meta"]["horizon_h"], (100, 250, 500, 1000), ".0f"),
    "trials": lambda r: _bucket(r["n_trials"], (20, 30, 40, 50), ".0f"),
    "trial_correlation": lambda r: _bucket(r["trial_correlation"], (-1.0, 0.7, 0.85, 1.0), ".2f"),
    "tails": lambda r: "gaussian" if r["market"]["tail_df"] is None else "student-t",
}


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for design in sorted({r["design"] for r in records}):
        recs = [r for r in records if r["design"] == design]
        gate_names = list(recs[0]["gates"])
        per_gate = {}
        for g in gate_names:
            k = sum(r["gates"][g]["passed"] for r in recs)
            per_gate[g] = {"category": recs[0]["gates"][g]["category"], "passed": k, "n": len(recs),
                           "rate": k / len(recs), "ci95": list(wilson(k, len(recs)))}
        buckets: dict[str, dict[str, Any]] = {}
        for bname, fn in BUCKETS.items():
            groups: dict[str, list[dict[str, Any]]] = {}
            for r in recs:
                groups.setdefault(fn(r), []).append(r)
            buckets[bname] = {b: {gname: rate(rs, cats) for gname, cats in GROUPS.items()}
                              for b, rs in sorted(groups.items())}
        keys = recs[0]["key"]
        medians = {}
        for k in [*keys, "true_sharpe_chosen", "true_sharpe_reference", "trial_correlation"]:
            vals = [v for r in recs if (v := (r["key"].get(k) if k in keys else r.get(k))) is not None]
            medians[k] = statistics.median(vals) if vals else None
        out[design] = {
            "overall": {gname: rate(recs, cats) for gname, cats in GROUPS.items()},
            "per_gate": per_gate,
            "buckets": buckets,
            "medians": medians,
        }
    return out


def _pct(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:5.1f}% [{100 * lo:5.1f}, {100 * hi:5.1f}]"


def print_table(agg: dict[str, Any]) -> None:
    head = (f"{'':40s} {'n':>4s}  {'statistics gates':24s} {'risk gates':24s} {'live but paper record':24s} "
            f"{'all gates run':24s}")
    for design, a in agg.items():
        target = TARGETS.get(design)
        print(f"\n=== {design}" + (f" (target: statistics pass rate {target[0]} {target[1]:.0%})" if target else ""))
        print(head)
        o = a["overall"]
        print(f"{'overall':40s} {o['all_run']['n']:4d}  {_pct(o['statistics']):24s} {_pct(o['risk']):24s} "
              f"{_pct(o['live_before_paper']):24s} {_pct(o['all_run']):24s}")
        for bname, groups in a["buckets"].items():
            for b, g in groups.items():
                print(f"{bname + ' ' + b:40s} {g['all_run']['n']:4d}  {_pct(g['statistics']):24s} "
                      f"{_pct(g['risk']):24s} {_pct(g['live_before_paper']):24s} {_pct(g['all_run']):24s}")
        print("per gate: " + ", ".join(f"{k} {100 * v['rate']:.0f}%" for k, v in a["per_gate"].items()))
        print("medians: " + ", ".join(f"{k} {v:.3g}" for k, v in a["medians"].items() if v is not None))


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40, help="repetitions per design")
    ap.add_argument("--designs", default="noise,trend", help=f"comma-separated, of {sy.DESIGNS}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--years", type=float, default=3.0, help="years of hourly bars per market (the issue's: 3)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--gates", choices=GATE_MODES, default="all",
                    help="all: collect_evidence + every gate; no-replay: skip the latency/lookahead/warm-up replays")
    args = ap.parse_args()
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    bad = [d for d in designs if d not in sy.DESIGNS]
    if bad:
        ap.error(f"--designs: expected names from {sy.DESIGNS}, found {bad}")

    calibration = sy.load_calibration()
    policy = gate_policy()
    tasks = [Task(d, rep, args.seed, calibration, args.gates, args.years) for d in designs
             for rep in range(args.reps)]
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            for rec in pool.imap_unordered(run_rep, tasks):
                records.append(rec)
                print(f"{len(records)}/{len(tasks)} {rec['design']} rep {rec['rep']}: "
                      f"{rec['timing']['total_s']:.1f} s", flush=True)
    else:
        for task in tasks:
            records.append(run_rep(task))
            print(f"{len(records)}/{len(tasks)} {task.design} rep {task.rep}: "
                  f"{records[-1]['timing']['total_s']:.1f} s", flush=True)
    wall = time.perf_counter() - t0
    records.sort(key=lambda r: (r["design"], r["rep"]))

    agg = aggregate(records)
    print_table(agg)
    per_rep = {k: statistics.median(r["timing"][k] for r in records) for k in records[0]["timing"]}
    gates_run = {name: g["category"] for name, g in records[0]["gates"].items()}
    print(f"\nseconds per rep (median, one worker): {per_rep['total_s']:.2f} "
          f"(backtest {per_rep['backtest_s']:.2f}, collect_evidence {per_rep['collect_evidence_s']:.2f}, "
          f"run_gates {per_rep['run_gates_s']:.2f}); wall {wall:.0f} s for {len(records)} reps "
          f"with {args.workers} workers ({wall / len(records):.2f} s per rep)")
    res = {
        "benchmark": "gates_mc: Monte-Carlo pass rates of the promotion gates on synthetic hourly markets",
        "args": {"reps": args.reps, "designs": designs, "seed": args.seed, "workers": args.workers, "years": args.years,
                 "gates": args.gates},
        "targets": {d: {"statistics_pass_rate": f"{w} {v}"} for d, (w, v) in TARGETS.items()},
        "gates_run": gates_run,
        "gates_mode": args.gates,
        "gates_not_run": records[0]["gates_not_run"],
        "gates_run_note": ("every gate of toolkit.gates.checks.run_gates after collect_evidence" if args.gates == "all"
                           else "every gate whose evidence the bundle and the cost/neighbour re-simulations hold; "
                                "latency, lookahead and warm-up replays not measured (see gates_not_run)"),
        "policy": {"name": policy.name, "version": policy.version, "sha256": policy.sha256()},
        "config_example": make_config({"fast": [5], "slow": [50]}).model_dump(mode="json"),
        "calibration_settings_sha256": calibration.settings.sha256(),
        "aggregate": agg,
        "timing": {"median_per_rep_s": per_rep, "wall_s": wall, "wall_per_rep_s": wall / len(records)},
        "machine": {"summary": machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "records": records,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

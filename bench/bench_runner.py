"""Benchmark: the runner's decision latency on loopback, incremental decisions against recomputing the history,
and a replayed week at full speed (cycles and orders per second, RSS growth).

Usage: .venv/bin/python bench/bench_runner.py [--hours 168] [--pause 1.0] [--emulator process|thread]
       [--json bench/results/runner.json]

1. **A replayed week.** The runner tests' registry (``tests/runner/runner_support.build_registry``: a real
   backtest of ``ma_cross`` 20/50 on the bundled BTC/USDT 1h bars, gated and promoted to ``paper`` in a
   private sqlite store) and the emulator replaying the bundled 1m bars from 2024-03-01 with a stepped
   clock, in a process of its own (``toolkit emulator serve``), as an exchange is: ``--emulator thread``
   runs it inside the bench's process instead, where its request handling shares the runner's GIL and
   is counted in the runner's latency. ``runner.engine.Runner`` runs in this process, one cycle per
   replayed hour (real ccxt over HTTP with the production default ``rate_limit = true``, i.e. the client paced by
   ``toolkit.exchange.pacing.Pacer``; the journal in WAL mode with ``synchronous=FULL``). A runner cycles
   every ``poll.cycle_seconds`` (5 s by default); the bench leaves ``--pause`` (1 s) between cycles, time
   enough for the pacer's bucket to refill what a cycle spends, so each decision meets the pacer as a
   production runner's would. Measured: the
   **decision latency** the runner itself publishes (``runner_decision_latency_seconds``: the loop seeing a
   new closed bar → the order request sent, or the decision journaled when no order is due; the raw
   samples are kept by wrapping the histogram's ``observe``), cycles and orders per second of wall time,
   and the process's RSS before and after the week.
2. **Incremental against recompute.** The deployed decision (``Strategy.last_position`` on the version's
   ``required_history`` window, then ``Sizing.scale`` on its window) against recomputing the positions over
   the whole history (10,000 bars) at every bar, 500 bars each, on the bundled 1h bars.

Results are printed and written to JSON (no paths). Nothing is left running: the emulator is stopped and its
port checked free.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runner"))  # the runner tests' registry builder and config writer
sys.path.insert(0, str(ROOT / "tests" / "emulator"))  # the emulator tests' child process of `serve`

RESULTS = ROOT / "bench" / "results" / "runner.json"
GOAL_P99_MS = 10.0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def replayed_week(hours: int, work: Path, pause: float = 1.0, emulator: str = "process") -> dict[str, Any]:
    from runner_support import CANARY_KEY, CANARY_SECRET, START, build_registry, write_config

    from runner.config import load_config
    from runner.engine import Runner
    from toolkit.emulator.testing import EmulatorPool, free_port, make_store, port_is_free, step_clock

    (work / "registry").mkdir()
    reg = build_registry(work / "registry")
    os.environ.update(reg.env)
    store = make_store(work / "bars", {"BTC/USDT": ("2024-02-20", "2024-03-20")})
    pool = EmulatorPool(work / "emu", start=START, store_roots=(store,), symbols=("BTC/USDT",))
    (work / "emu").mkdir()
    samples: dict[str, list[float]] = {"order": [], "no_order": []}
    runner, children, url = None, list[subprocess.Popen[bytes]](), ""
    try:
        if emulator == "process":  # the bundled store, read by its own process (a few seconds)
            from emulator_support import spawn_emulator

            port = free_port()
            url = f"http://127.0.0.1:{port}"
            spawn_emulator(work / "emu" / "state.sqlite", port, work / "cache", children,
                           {"EMULATOR_API_KEY": CANARY_KEY, "EMULATOR_API_SECRET": CANARY_SECRET})
        else:
            url = pool.start().url
        cfg = load_config(write_config(work / "runner.toml", url, work / "journal.sqlite",
                                       exchange={"rate_limit": True}))
        runner = Runner(cfg, environ={"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY,
                                      "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET})
        publish = runner.metrics.decision_latency

        def record(deployment: str, started: float | None, outcome: str) -> None:
            if started is not None:
                samples[outcome].append((time.perf_counter() - started) * 1e3)
            publish(deployment, started, outcome)

        runner.metrics.decision_latency = record  # type: ignore[method-assign]
        runner.open()
        runner.cycle()  # the first decision: history loaded, caches warm
        step_clock(url, 60)
        for v in samples.values():
            v.clear()
        rss0, t0 = rss_mib(), time.perf_counter()
        assert runner.session is not None
        pacer = runner.session.client.throttle
        waited0, paused = pacer.waited_s, 0.0
        for _ in range(hours):
            time.sleep(pause)
            paused += pause
            runner.cycle()
            step_clock(url, 60)
        wall = time.perf_counter() - t0 - paused
        paced_s = pacer.waited_s - waited0
        rss1 = rss_mib()
        orders = [o for o in runner.journal.orders() if o["state"] != "not_placed"] if runner.journal else []
    finally:
        if runner is not None:
            runner.close()
        for child in children:  # SIGTERM: the emulator answers what is in flight, saves its state and exits
            child.terminate()
            child.wait(timeout=120)
        left = pool.stop_all() + ([url] if children and not port_is_free(url) else [])
    assert not left, f"emulator port still bound: {left}"
    every = samples["order"] + samples["no_order"]
    return {
        "hours": hours, "emulator": emulator, "pause_s": pause, "paced_s": paced_s, "wall_s": wall,
        "cycles_per_s": hours / wall, "orders": len(orders),
        "orders_per_s": len(orders) / wall, "rss_mib_before": rss0, "rss_mib_after": rss1,
        "rss_growth_mib": rss1 - rss0,
        "decision_latency_ms": {
            "all": {"n": len(every), "p50": pct(every, 50), "p99": pct(every, 99), "max": max(every, default=0.0)},
            "with_order": {"n": len(samples["order"]), "p50": pct(samples["order"], 50),
                           "p99": pct(samples["order"], 99)},
            "no_order": {"n": len(samples["no_order"]), "p50": pct(samples["no_order"], 50),
                         "p99": pct(samples["no_order"], 99)},
        },
    }


def incremental_vs_recompute(n_history: int = 10_000, n_bars: int = 500) -> dict[str, Any]:
    from toolkit.data import load_bars
    from toolkit.strategies import Sizing, make_strategy

    bars = load_bars("BTC/USDT", "1h", "2022-01-01", "2024-12-31")
    strategy, sizing = make_strategy("ma_cross", {"fast": 20, "slow": 50}), Sizing(vol_window_days=2.0)
    need = max(strategy.required_history, sizing.required_history(60.0))
    ends = range(n_history, n_history + n_bars)
    inc, full = [], []
    for end in ends:
        t0 = time.perf_counter()
        w = bars.iloc[end - need:end]
        strategy.last_position(w)
        float(sizing.scale(w["close"], 60.0).iloc[-1])
        inc.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        h = bars.iloc[end - n_history:end]
        float(strategy.positions(h).iloc[-1])
        float(sizing.scale(h["close"], 60.0).iloc[-1])
        full.append((time.perf_counter() - t0) * 1e3)
    return {"history_bars": n_history, "window_bars": need, "bars": n_bars,
            "incremental_ms": {"p50": pct(inc, 50), "p99": pct(inc, 99)},
            "recompute_ms": {"p50": pct(full, 50), "p99": pct(full, 99)},
            "ratio_p50": pct(full, 50) / pct(inc, 50)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=int, default=168)
    ap.add_argument("--pause", type=float, default=1.0, help="wall seconds between two cycles")
    ap.add_argument("--emulator", choices=("process", "thread"), default="process",
                    help="the emulator in a process of its own (as an exchange is) or inside this one")
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        week = replayed_week(args.hours, Path(tmp), args.pause, args.emulator)
    compute = incremental_vs_recompute()
    lat = week["decision_latency_ms"]
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "goal_p99_ms": GOAL_P99_MS, "replayed_week": week, "incremental_vs_recompute": compute,
    }
    print(f"decision latency (bar seen -> order sent / decision journaled), {lat['all']['n']} decisions: "
          f"p50 {lat['all']['p50']:.2f} ms, p99 {lat['all']['p99']:.2f} ms (goal p99 < {GOAL_P99_MS:g} ms); "
          f"with an order ({lat['with_order']['n']}): p50 {lat['with_order']['p50']:.2f} ms, "
          f"p99 {lat['with_order']['p99']:.2f} ms")
    print(f"emulator: {week['emulator']}; replayed {week['hours']} h in {week['wall_s']:.1f} s of cycles "
          f"({week['pause_s']:g} s pauses apart; "
          f"the pacer held requests {week['paced_s']:.2f} s in all): {week['cycles_per_s']:.1f} cycles/s, "
          f"{week['orders']} orders ({week['orders_per_s']:.2f}/s); RSS {week['rss_mib_before']:.0f} -> "
          f"{week['rss_mib_after']:.0f} MiB ({week['rss_growth_mib']:+.1f})")
    print(f"decision compute on {compute['window_bars']}-bar windows: p50 {compute['incremental_ms']['p50']:.3f} ms, "
          f"p99 {compute['incremental_ms']['p99']:.3f} ms; recomputing {compute['history_bars']:,} bars: "
          f"p50 {compute['recompute_ms']['p50']:.3f} ms ({compute['ratio_p50']:.1f}x)")
    print(f"load average {result['machine']['load_avg']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

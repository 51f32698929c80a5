"""Benchmark: the cost of one kill of the crash tests, a fresh ``runner start`` process against a runner forked
from the warm pre-forked server (``tests/runner/prefork_server.py``).

Usage: .venv/bin/python bench/bench_crash.py [--cold 5] [--forked 20] [--json bench/results/crash.json]

The runner tests' registry (``build_registry``: ma_cross promoted to paper in a private sqlite store) and an
in-process emulator (stepped clock from 2024-03-01). One kill = start a runner armed at ``decision_tx:1``,
step the replay one hour, wait until the runner dies by SIGKILL inside the transaction journaling its
decision. Measured per kill: wall seconds from the start request to the death (imports, registry, version
load, markets, history, reconciliation, the decision), for ``--cold`` fresh processes and ``--forked``
forked ones, alternating over one journal. The load average is recorded with the figures.

Results are printed and written to JSON (no paths). Nothing is left running.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runner"))

RESULTS = ROOT / "bench" / "results" / "crash.json"


def run(cold: int, forked: int, work: Path) -> dict[str, Any]:
    from runner_support import (
        CANARY_KEY,
        CANARY_SECRET,
        START,
        ForkedRunner,
        Prefork,
        RunnerProcess,
        build_registry,
        runner_env,
        write_config,
    )

    from toolkit.emulator.testing import EmulatorPool, make_store, step_clock

    (work / "registry").mkdir()
    reg = build_registry(work / "registry")
    store = make_store(work / "bars", {"BTC/USDT": ("2024-02-25", "2024-03-10")})
    pool = EmulatorPool(work, start=START, store_roots=(store,), symbols=("BTC/USDT",))
    out: dict[str, list[float]] = {"cold": [], "forked": []}
    try:
        emu = pool.start(api_key=CANARY_KEY, api_secret=CANARY_SECRET, rate_limits=False)
        journal = work / "journal.sqlite"
        config = write_config(work / "runner.toml", emu.url, journal, rollback={"enabled": False})
        env = runner_env(reg, RUNNER_FAILPOINTS="decision_tx:1")
        with Prefork(runner_env(reg), work) as server:
            kinds = ["cold"] * cold + ["forked"] * forked
            for i, kind in enumerate(kinds):
                step_clock(emu.url, 60)  # a new closed bar: the next runner decides it, and dies doing so
                t0 = time.perf_counter()
                proc = (RunnerProcess(config, env, work, name=f"k{i}") if kind == "cold"
                        else ForkedRunner(server, config, env, work, name=f"k{i}"))
                rc = proc.wait()
                out[kind].append(time.perf_counter() - t0)
                assert rc == -9, proc.logs()
    finally:
        assert pool.stop_all() == []
    return {kind: {"kills": len(s), "median_s": round(statistics.median(s), 3), "min_s": round(min(s), 3),
                   "max_s": round(max(s), 3)} for kind, s in out.items() if s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--forked", type=int, default=20)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        figures = run(args.cold, args.forked, Path(tmp))
    doc = {"benchmark": "crash", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], **figures}
    if "cold" in figures and "forked" in figures:
        doc["speedup_median"] = round(figures["cold"]["median_s"] / figures["forked"]["median_s"], 1)
    print(json.dumps(doc, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

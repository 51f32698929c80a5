"""Benchmark: the fixed cost of a template run, as ``toolkit backtest`` and ``toolkit gates`` run it.

Usage: .venv/bin/python bench/bench_template.py [--repeat 3] [--pairs 5] [--baseline PATH] [--warm]
       [--json bench/results/template.json]

The issue's case: ``ma_cross`` on the bundled Binance BTC/USDT 15m bars 2024-01-01..2024-03-31 (resampled
from the bundled 1m bars), grid fast 10,20,40 × slow 100,200 (6 combinations). Everything runs in a fresh
temporary store (``MLFLOW_TRACKING_URI``, ``TOOLKIT_ARTIFACTS``, ``TOOLKIT_LEDGER``, ``TOOLKIT_REPORTS_DIR``,
``TOOLKIT_AUDIT``, as the tests point them), created by one untimed warm-up pair (a backtest and its paper
gates: the store's schema, the numba caches). Then ``--repeat`` times, each timed as a child process of the
installed ``toolkit`` command:

- ``toolkit backtest … --json``, which registers a new version;
- ``toolkit gates <that version> --stage paper --json`` (its first evaluation: latency is measured).

Each wall time is split with the timestamps papermill writes into the executed notebook (its start and end,
each cell's start and end), the HTML report's modification time (nbconvert's end), the moment the command's
JSON reached stdout (``typer.echo`` flushes) and the child's exit:

- ``until_papermill``: process start to papermill's start: imports, validation (backtest: bars and
  certificate; gates: registry reads, evidence download and hash) and, since the kernel starts before
  papermill is imported, the kernel's start-up overlapped with papermill's import (and, for a backtest,
  the registry connection);
- ``kernel_wait``: papermill's start to the first cell's start (waiting for the kernel to be ready);
- ``cells``: first cell's start to the last cell's end (the three longest cells are named);
- ``idle_after_last_cell``: the last cell's end to papermill's end (kernel shutdown);
- ``nbconvert``: papermill's end to the HTML written (includes writing the executed notebook);
- ``record``: HTML written to the JSON printed (MLflow run and version or verdict tags, the report index);
- ``exit``: the JSON printed to the process gone (interpreter finalisation).

The **notebook overhead** compares, each in a fresh process, the backtest template executed by
``toolkit.reporting.notebooks.execute_template`` (papermill import, kernel start, cells, shutdown) with the
same cells executed in plain Python, producing the same outputs (``exec`` of the parameters, the injected
parameters and every code cell; each open matplotlib figure rendered to PNG after its cell, as the inline
backend does; each displayed object formatted by IPython's ``DisplayFormatter``, as the kernel does): the
median over
``--pairs`` back-to-back pairs (alternating which runs first) of ``template / plain − 1``.

``--baseline PATH`` measures another checkout (e.g. ``git archive <commit>`` unpacked) with this
environment, put first on ``PYTHONPATH``, in its own store, **interleaved** with this one (each repetition
runs both, alternating which goes first), so a machine shared with other jobs loads both alike. Figures are
medians of ``--repeat`` runs after one warm-up, with min and max. Results are printed as a table and
written to bench/results/template.json (no paths), with the load average (``os.getloadavg``) before and
after.

``--warm`` measures this checkout a second time, interleaved, through a ``toolkit warm`` server
(``toolkit warm start`` in the bench's temporary state dir, started after that store's cold warm-up pair and
stopped at the end); the cold measurements run with ``TOOLKIT_WARM=0``. Its notebook overhead runs both
sides in a worker forked by the server (the hidden ``toolkit warm python SCRIPT`` command): the template
run (``execute_template``: papermill, a kernel forked by the server, the cells) against the same cells in
plain Python, each timed from the script's first line, with every module already imported by the server.
It also times the entry point's warm client when no server runs (importing it and checking for a socket,
in a fresh interpreter that imported ``toolkit.cli``; median of 7).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "template.json"
TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
CASE = {"strategy": "ma_cross", "symbol": "BTC/USDT", "timeframe": "15m", "start": "2024-01-01",
        "end": "2024-03-31", "grid": ["fast=10,20,40", "slow=100,200"]}
PHASES = ("until_papermill", "kernel_wait", "cells", "idle_after_last_cell", "nbconvert", "record", "exit")
GOALS = {"backtest_s": 8.0, "gates_s": 6.0, "notebook_overhead": 0.15}


def store_env(root: Path) -> dict[str, str]:
    """Return the environment of a child process writing only under ``root``."""
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "TOOLKIT_ARTIFACTS": str(root / "artifacts"), "TOOLKIT_LEDGER": str(root / "trials.db"),
            "TOOLKIT_REPORTS_DIR": str(root / "reports"), "TOOLKIT_AUDIT": str(root / "audit.db"),
            "PYTHONHASHSEED": "0"}


@dataclass(frozen=True)
class CliRun:
    """One child process of the ``toolkit`` command: its output and three wall-clock instants (epoch s)."""

    returncode: int
    stdout: str
    stderr: str
    started: float
    printed: float
    ended: float


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> CliRun:
    """Run ``toolkit *args``; note when it started, when its stdout first delivered data and when it ended."""
    first_output: list[float] = []
    chunks: list[bytes] = []

    started = time.time()
    proc = subprocess.Popen([TOOLKIT, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout, proc.stderr

    def read() -> None:
        while chunk := os.read(out.fileno(), 65536):
            if not first_output:
                first_output.append(time.time())
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stderr = err.read()
    proc.wait()
    ended = time.time()
    reader.join()
    return CliRun(proc.returncode, b"".join(chunks).decode(), stderr.decode(), started,
                  first_output[0] if first_output else ended, ended)


def _epoch(iso: str) -> float:
    t = dt.datetime.fromisoformat(iso)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()  # papermill writes UTC


def phases(notebook: dict[str, Any], run: CliRun, html_written: float) -> dict[str, Any]:
    """Split ``run``'s wall time into :data:`PHASES` (seconds) from the executed notebook's papermill times.

    ``cell_s`` lists every cell's duration (papermill's), in notebook order.
    """
    meta = notebook["metadata"]["papermill"]
    cells = [c["metadata"]["papermill"] for c in notebook["cells"]]
    first, last = _epoch(cells[0]["start_time"]), _epoch(cells[-1]["end_time"])
    nb_start, nb_end = _epoch(meta["start_time"]), _epoch(meta["end_time"])
    return {
        "total": run.ended - run.started,
        "until_papermill": nb_start - run.started,
        "kernel_wait": first - nb_start,
        "cells": last - first,
        "idle_after_last_cell": nb_end - last,
        "nbconvert": html_written - nb_end,
        "record": run.printed - html_written,
        "exit": run.ended - run.printed,
        "cell_s": [float(c.get("duration") or 0.0) for c in cells],
        "cell_labels": cell_labels(notebook),
    }


def cell_labels(notebook: dict[str, Any]) -> list[str]:
    """Return a short label per cell of an executed notebook (its first code line), in notebook order."""
    out = []
    for c in notebook["cells"]:
        lines = [ln for ln in "".join(c["source"]).splitlines() if ln.strip() and not ln.startswith("#")]
        out.append((lines[0] if lines else "")[:48] if c["cell_type"] == "code" else "(markdown)")
    return out


def timed_command(args: list[str], env: dict[str, str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[
        dict[str, Any], dict[str, Any]]:
    """Run one ``toolkit … --json`` command; return its JSON and its phases."""
    run = run_cli([*args, "--json"], env, cwd)
    if run.returncode not in ok:
        raise SystemExit(f"toolkit {' '.join(args)} exited {run.returncode}:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout)
    notebook = json.loads(Path(result["notebook_path"]).read_text(encoding="utf-8"))
    return result, phases(notebook, run, Path(result["report_path"]).stat().st_mtime)


def backtest_args() -> list[str]:
    """Return the CLI arguments of the issue's case."""
    args = ["backtest"]
    for k, v in CASE.items():
        if k != "grid":
            args += [f"--{k}", str(v)]
    for g in CASE["grid"]:
        args += ["--grid", g]
    return args


def backtest_then_gates(env: dict[str, str], cwd: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the case's backtest, then the paper gates of the version it registered."""
    result, bt = timed_command(backtest_args(), env, cwd)
    _, gt = timed_command(["gates", result["model_name"], "--version", str(result["model_version"]),
                           "--stage", "paper"], env, cwd, ok=(0, 5))
    return bt, gt


OVERHEAD_TEMPLATE = """
import json, sys, time
t0 = time.perf_counter()
from toolkit.reporting.notebooks import execute_template, template_path
execute_template(template_path("backtest"), sys.argv[1], json.loads(sys.argv[2]))
print(json.dumps(time.perf_counter() - t0))
"""

OVERHEAD_PLAIN = """
import json, sys, time
t0 = time.perf_counter()
import io
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import IPython.core.display_functions
import IPython.display
from IPython.core.formatters import DisplayFormatter

formatter = DisplayFormatter()


def display(*objs, **kwargs):  # what the kernel does with a displayed object: its rich representations
    for obj in objs:
        formatter.format(obj)


IPython.display.display = IPython.core.display_functions.display = display
with open(sys.argv[1], encoding="utf-8") as f:
    cells = json.load(f)["cells"]  # plain JSON: nbformat would import jsonschema, which the cells do not need
params = json.loads(sys.argv[2])
namespace = {"__name__": "__main__"}
for cell in cells:
    if cell["cell_type"] != "code":
        continue
    exec(compile("".join(cell["source"]), "<cell>", "exec"), namespace)
    if "parameters" in cell["metadata"].get("tags", []):
        namespace.update(params)  # what papermill's injected-parameters cell does
    for num in plt.get_fignums():  # the inline backend renders every open figure after its cell
        plt.figure(num).savefig(io.BytesIO(), format="png", bbox_inches="tight")
    plt.close("all")
print(json.dumps(time.perf_counter() - t0))
"""


@dataclass(frozen=True)
class Checkout:
    """A checkout measured with this environment, in its own temporary store."""

    name: str
    root: Path
    store: Path
    warm: bool = False

    @property
    def env(self) -> dict[str, str]:
        env = store_env(self.store)
        if self.root != ROOT:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        if self.warm:
            env["TOOLKIT_WARM_DIR"] = str(self.store / "warm-state")
        else:
            env["TOOLKIT_WARM"] = "0"
        return env

    @property
    def key(self) -> str:
        return ("this_checkout" if self.root == ROOT else "baseline") + ("_warm" if self.warm else "")

    def warm_server(self, action: str) -> None:
        """``toolkit warm start`` or ``stop`` for this (warm) checkout."""
        run = run_cli(["warm", action, "--json"], self.env, self.store)
        if run.returncode != 0:
            raise SystemExit(f"toolkit warm {action} exited {run.returncode}:\n{run.stderr[-3000:]}")

    def check(self) -> None:
        """Make sure a child imports this checkout's ``toolkit``."""
        found = subprocess.run([sys.executable, "-c", "import toolkit; print(toolkit.__file__)"], env=self.env,
                               cwd=self.store, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(found).resolve().is_relative_to(self.root), found


def overhead_run(checkout: Checkout, kind: str, i: int) -> float:
    """Run the backtest template once through papermill (``template``) or as plain Python (``plain``)."""
    params = {**CASE, "progress": False, "output_dir": str(checkout.store / f"bundle-{kind}-{i}")}
    code, first = ((OVERHEAD_TEMPLATE, str(checkout.store / f"overhead-{i}.ipynb")) if kind == "template"
                   else (OVERHEAD_PLAIN, str(checkout.root / "templates" / "backtest.ipynb")))
    if checkout.warm:  # in a worker forked by the warm server (see the module docstring)
        script = checkout.store / f"overhead-{kind}.py"
        script.write_text(code, encoding="utf-8")
        command = [TOOLKIT, "warm", "python", str(script)]
    else:
        command = [sys.executable, "-c", code]
    proc = subprocess.run([*command, first, json.dumps(params)], env=checkout.env, cwd=checkout.store,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{checkout.name} {kind} run failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


NO_SERVER = """
import time
import toolkit.cli
t0 = time.perf_counter()
from toolkit.warm.client import run_warm
assert run_warm(["backtest"]) is None
print((time.perf_counter() - t0) * 1e3)
"""


def no_server_cost_ms(samples: int = 7) -> float:
    """Return the median cost (ms) of the entry point's warm client when no server runs (import + check)."""
    env = {**os.environ, "TOOLKIT_WARM_DIR": tempfile.mkdtemp(prefix="bench-no-server-")}
    env.pop("TOOLKIT_WARM", None)
    return statistics.median(float(subprocess.run([sys.executable, "-c", NO_SERVER], env=env, capture_output=True,
                                                  text=True, check=True).stdout) for _ in range(samples))


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def _block(runs: list[dict[str, Any]]) -> dict[str, Any]:
    labels = runs[-1]["cell_labels"]
    out: dict[str, Any] = {k: _summary([r[k] for r in runs]) for k in ("total", *PHASES)}
    out["cells_median_s"] = {f"{i:02d} {labels[i]}": statistics.median(r["cell_s"][i] for r in runs)
                             for i in range(len(labels))}
    return out


def _table(name: str, runs: list[dict[str, Any]], goal: float) -> list[str]:
    labels = runs[-1]["cell_labels"]
    lines = [f"  {name} (goal < {goal:g} s)"]
    for key in ("total", *PHASES):
        vals = [r[key] for r in runs]
        lines.append(f"    {key:<22} {statistics.median(vals):6.2f} s   ({min(vals):.2f}–{max(vals):.2f})")
    cells = [statistics.median(r["cell_s"][i] for r in runs) for i in range(len(labels))]
    for i in sorted(range(len(cells)), key=lambda i: -cells[i])[:3]:
        lines.append(f"      cell {i:>2} {cells[i]:6.2f} s  {labels[i]}")
    return lines


def measure(checkouts: list[Checkout], repeat: int, pairs: int) -> dict[str, dict[str, list[Any]]]:
    """Warm each checkout up, then run every measurement, interleaving the checkouts.

    ``repeat`` times: the backtest and its gates, ``toolkit --help``; ``pairs`` times: a template run
    and a plain run back to back (alternating which goes first), whose ratio is one overhead sample.
    """
    runs: dict[str, dict[str, list[Any]]] = {
        c.name: {"backtest": [], "gates": [], "help": [], "template": [], "plain": []} for c in checkouts}
    for c in checkouts:
        c.check()
        if repeat:
            backtest_then_gates(c.env, c.store)  # warm-up: the store's schema, numba caches, OS file cache
            run_cli(["--help"], c.env, c.store)
        if c.warm:
            c.warm_server("start")  # after the (cold) warm-up pair
        if pairs:
            overhead_run(c, "template", -1)
            overhead_run(c, "plain", -1)
    for i in range(max(repeat, pairs)):
        for c in (checkouts if i % 2 == 0 else checkouts[::-1]):
            got = runs[c.name]
            if i < repeat:
                bt, gt = backtest_then_gates(c.env, c.store)
                r = run_cli(["--help"], c.env, c.store)
                got["backtest"].append(bt)
                got["gates"].append(gt)
                got["help"].append(r.ended - r.started)
            if i < pairs:
                for kind in (("template", "plain") if i % 2 == 0 else ("plain", "template")):
                    got[kind].append(overhead_run(c, kind, i))
    return runs


def report(name: str, got: dict[str, list[Any]]) -> tuple[dict[str, Any], list[str]]:
    """Return one checkout's JSON block and table lines (``--repeat 0`` or ``--pairs 0`` leave parts out)."""
    block: dict[str, Any] = {"goals_met": {}}
    lines = [f"{name} (median of {len(got['backtest']) or len(got['template'])}, min–max)"]
    if got["backtest"]:
        bt_total = statistics.median(r["total"] for r in got["backtest"])
        gt_total = statistics.median(r["total"] for r in got["gates"])
        block.update(backtest_s=_block(got["backtest"]), gates_s=_block(got["gates"]),
                     cli_help_s=_summary(got["help"]))
        block["goals_met"].update(backtest_s=bt_total < GOALS["backtest_s"], gates_s=gt_total < GOALS["gates_s"])
        h = block["cli_help_s"]
        lines += [*_table("toolkit backtest", got["backtest"], GOALS["backtest_s"]),
                  *_table("toolkit gates --stage paper", got["gates"], GOALS["gates_s"]),
                  f"  toolkit --help             {h['median']:6.2f} s   ({h['min']:.2f}–{h['max']:.2f})"]
    if got["template"]:
        med = {k: statistics.median(got[k]) for k in ("template", "plain")}
        ratios = [t / p - 1.0 for t, p in zip(got["template"], got["plain"], strict=True)]
        overhead = statistics.median(ratios)
        block["notebook_overhead"] = {"template_s": _summary(got["template"]), "plain_s": _summary(got["plain"]),
                                      "overhead": overhead, "overhead_per_pair": _summary(ratios)}
        block["goals_met"]["notebook_overhead"] = overhead < GOALS["notebook_overhead"]
        lines.append(f"  notebook overhead: template {med['template']:.2f} s vs plain Python {med['plain']:.2f} s "
                     f"(medians); median of {len(ratios)} paired ratios {overhead:+.1%} ({min(ratios):+.1%}–"
                     f"{max(ratios):+.1%}; goal < {GOALS['notebook_overhead']:.0%})")
    return block, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=5, help="template/plain pairs for the notebook overhead")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout to measure the same way, interleaved (e.g. the code before a change)")
    ap.add_argument("--warm", action="store_true",
                    help="also measure this checkout through a `toolkit warm` server, interleaved")
    args = ap.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-template-") as tmp:
        checkouts = [Checkout("this checkout", ROOT, Path(tmp) / "this")]
        if args.baseline is not None:
            checkouts.append(Checkout("baseline", args.baseline.resolve(), Path(tmp) / "baseline"))
        if args.warm:
            checkouts.append(Checkout("this checkout, warm (toolkit warm)", ROOT, Path(tmp) / "warm", warm=True))
        for c in checkouts:
            c.store.mkdir()
        try:
            runs = measure(checkouts, args.repeat, args.pairs)
        finally:
            for c in checkouts:
                if c.warm:
                    c.warm_server("stop")

    res: dict[str, Any] = {
        "benchmark": "template runs: toolkit backtest and toolkit gates as the CLI runs them",
        "case": {**CASE, "combinations": 6, "gates_stage": "paper"},
        "repeat": args.repeat,
        "overhead_pairs": args.pairs,
        "goals": GOALS,
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
    }
    lines = []
    for c in checkouts:
        block, table = report(c.name, runs[c.name])
        res[c.key] = block
        lines += table
    if args.baseline is not None:
        res["baseline_is"] = "another checkout, measured interleaved with this one (--baseline)"
    if args.warm:
        res["this_checkout_warm_is"] = "this checkout through a toolkit warm server, measured interleaved (--warm)"
        res["warm_client_without_server_ms"] = no_server_cost_ms()
        lines.append(f"warm client when no server runs: {res['warm_client_without_server_ms']:.2f} ms "
                     "(median of 7: its import and the socket check; goal < 5 ms)")
    lines.append("load average (1, 5, 15 min): before " + " ".join(f"{x:.2f}" for x in load_before)
                 + ", after " + " ".join(f"{x:.2f}" for x in res["load_average"]["after"]))
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job on the bundled real data: what ``make demo`` runs.

backtest (template -> HTML -> MLflow version) -> paper gates (template -> paper verdict
on the version) -> promote to alias ``paper`` when the paper verdict passed, otherwise
say which gates failed and why -> the runner paper-trades the ``paper`` version against the
loopback emulator over four replayed days of real minute bars (``runner.demo``) ->
post-trade attribution of that journal (template -> HTML -> MLflow; the paper record) ->
live gates -> say in plain words whether the version is eligible for live and why not
(four days are far from the record the live policy asks for: "not enough data yet") ->
index of reports with the desk overview. The demo never promotes to live.

The demo's market, strategy, period and grid live in one place, ``DEMO_BACKTEST``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit import config
from toolkit.clock import SYSTEM_CLOCK, Clock

__all__ = ["DEMO_BACKTEST", "run_demo"]

#: The demo's backtest: real Binance BTC/USDT bars bundled with the project (the one place to change it),
#: chosen by the rule stated in ``notebooks/demo_selection.ipynb`` (last three complete years of the hourly
#: history; of the built-in strategies whose paper verdict passes, the highest deflated Sharpe ratio).
DEMO_BACKTEST: dict[str, Any] = {
    "strategy": "ma_cross",
    "symbol": "BTC/USDT",
    "timeframe": "1h",
    "start": "2022-01-01",
    "end": "2024-12-31",
    "grid": {"fast": [10, 20, 40], "slow": [100, 200, 400]},
}


def _failed_gates(say: Callable[[str], None], gates: Any) -> None:
    for gate in gates.gates:
        if not gate.get("passed"):
            tag = "" if gate.get("enforced", True) else " (advisory)"
            say(f"    - {gate['name']}{tag}: {gate.get('explanation', '')}")


def run_demo(echo: Callable[[str], None] | None = print, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """Run backtest, paper gates, paper promotion (when passed), live gates and the report index.

    Returns what each step produced: ``backtest``, ``paper_gates``, ``paper_promotion`` (None when
    not promoted), ``live_gates``, ``live`` (``eligible`` and ``why_not``, plain words) and ``status``.
    """
    from toolkit.registry.promotion import promote
    from toolkit.registry.status import status
    from toolkit.reporting.index import write_index
    from toolkit.workflows.backtest import run_backtest_workflow
    from toolkit.workflows.gates import run_gates_workflow
    from toolkit.workflows.overview import refresh_overview

    say = echo or (lambda _msg: None)
    say(f"tracking store: {config.tracking_uri()}")
    say(f"1/7 backtest {DEMO_BACKTEST}")
    bt = run_backtest_workflow(dict(DEMO_BACKTEST), progress=echo is not None, clock=clock)
    m = bt.metrics
    name, version = bt.model_name, bt.model_version
    say(f"    registered {name} v{version} (run {bt.run_id}); chosen {bt.chosen}; out-of-sample Sharpe "
        f"{m['sharpe']:.2f}, return {m['total_return']:.2%}, max drawdown {m['max_drawdown']:.2%}; "
        f"{bt.n_trials} trials in the ledger")
    say(f"    report {bt.report_path}")

    say(f"2/7 paper gates on {name} v{version} (the paper policy in force)")
    paper = run_gates_workflow(name, version, "paper", clock=clock)
    n_passed = sum(bool(g.get("passed")) for g in paper.gates)
    say(f"    paper verdict {paper.verdict.upper()} ({n_passed}/{len(paper.gates)} gates passed; "
        f"{len(paper.advisory_failed)} of the failures advisory at this stage), verdict sha {paper.verdict_sha[:12]}")
    _failed_gates(say, paper)
    say(f"    report {paper.report_path}")

    result: dict[str, Any] = {"backtest": bt.to_dict(), "paper_gates": paper.to_dict()}
    if paper.passed:
        say("3/7 promote to paper: the paper verdict passed under the paper policy in force")
        result["paper_promotion"] = promote(name, version, "paper", reason="make demo: the paper gates passed",
                                            actor="demo", clock=clock)
        say(f"    alias paper -> {name} v{version} (was {result['paper_promotion']['from_version'] or 'unset'})")
    else:
        say(f"3/7 promote to paper: not promoted — {len(paper.failed)} gate(s) failed: {', '.join(paper.failed)}. "
            f"`toolkit promote {name} --version {version} --stage paper --reason ...` would refuse for the "
            "same reason.")
        result["paper_promotion"] = None

    if result["paper_promotion"] is not None:
        from runner.demo import paper_trade
        from toolkit.workflows.attribution import demo_attribution

        say(f"4/7 paper trading: the runner trades {name}@paper against the loopback emulator (real ccxt, "
            "replayed real 1m bars, an hour per step)")
        work = config.reports_dir() / "paper" / clock.now().strftime("%Y%m%dT%H%M%SZ")
        work.mkdir(parents=True, exist_ok=True)  # the journal stays for `toolkit attribute` and the reader
        stretch = paper_trade(name, work, echo=say)
        result["paper_trading"] = {"journal": str(stretch.journal), "decisions": stretch.decisions,
                                   "orders": stretch.orders, "fills": stretch.fills}
        say(f"5/7 attribution of the paper-traded stretch (journal {stretch.journal})")
        att = demo_attribution(name, version, stretch.journal, echo=say, clock=clock)
        result["attribution"] = {"verdict": att.verdict, "sentence": att.sentence}
    else:
        say("4/7 paper trading: skipped (not on paper)")
        say("5/7 attribution: skipped (no paper record)")

    say(f"6/7 live gates on {name} v{version} (the live policy in force)")
    live = run_gates_workflow(name, version, "live", clock=clock)
    say(f"    live verdict {live.verdict.upper()}, verdict sha {live.verdict_sha[:12]}"
        + ("" if live.latency_reused_from is None else "; latency samples reused from the paper evaluation"))
    result["live_gates"] = live.to_dict()
    st = status(name)
    row = next(r for r in st["versions"] if r["version"] == version)
    why_not = row["live_blockers"]
    result["live"] = {"version": version, "eligible": not why_not, "why_not": why_not}
    if why_not:
        say("    not eligible for live:")
        for why in why_not:
            say(f"    - {why}")
    else:
        say(f"    eligible for live: `toolkit promote {name} --version {version} --stage live --reason ...` "
            "re-checks everything and moves alias champion (the demo does not)")
    result["status"] = st
    refresh_overview([name])
    index = write_index()
    say(f"7/7 index {index} (the desk overview on top)")
    return result

"""The main job on the bundled real data: what ``make demo`` runs.

backtest (template -> HTML -> MLflow version) -> gates (template -> verdict on the
version) -> promote when the verdict passed, otherwise say which gates failed and
why -> index of reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit import config
from toolkit.clock import SYSTEM_CLOCK, Clock

__all__ = ["DEMO_BACKTEST", "run_demo"]

#: The demo's backtest: real Binance BTC/USDT bars bundled with the project.
DEMO_BACKTEST: dict[str, Any] = {
    "strategy": "ma_cross",
    "symbol": "BTC/USDT",
    "timeframe": "15m",
    "start": "2024-01-01",
    "end": "2024-03-31",
    "grid": {"fast": [5, 10, 20], "slow": [50, 100]},
}


def run_demo(echo: Callable[[str], None] | None = print, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """Run backtest, gates, promotion (when passed) and the report index; return what each step produced."""
    from toolkit.registry.promotion import promote
    from toolkit.registry.status import status
    from toolkit.reporting.index import write_index
    from toolkit.workflows.backtest import run_backtest_workflow
    from toolkit.workflows.gates import run_gates_workflow

    say = echo or (lambda _msg: None)
    say(f"tracking store: {config.tracking_uri()}")
    say(f"1/4 backtest {DEMO_BACKTEST}")
    bt = run_backtest_workflow(dict(DEMO_BACKTEST), progress=echo is not None, clock=clock)
    m = bt.metrics
    name, version = bt.model_name, bt.model_version
    say(f"    registered {name} v{version} (run {bt.run_id}); chosen {bt.chosen}; out-of-sample Sharpe "
        f"{m['sharpe']:.2f}, return {m['total_return']:.2%}, max drawdown {m['max_drawdown']:.2%}; "
        f"{bt.n_trials} trials in the ledger")
    say(f"    report {bt.report_path}")

    say(f"2/4 gates on {name} v{version} (desk default policy)")
    gates = run_gates_workflow(name, version, clock=clock)
    say(f"    verdict {gates.verdict.upper()} ({len(gates.gates) - len(gates.failed)}/{len(gates.gates)}"
        f" gates passed), verdict sha {gates.verdict_sha[:12]}")
    for gate in gates.gates:
        if not gate.get("passed"):
            say(f"    - {gate['name']}: {gate.get('explanation', '')}")
    say(f"    report {gates.report_path}")

    result: dict[str, Any] = {"backtest": bt.to_dict(), "gates": gates.to_dict()}
    if gates.passed:
        say("3/4 promote: the verdict passed under the current policy")
        result["promotion"] = promote(name, version, reason="make demo: all gates passed", actor="demo",
                                      clock=clock)
        say(f"    champion {name} v{version} (was {result['promotion']['from_version'] or 'unset'})")
    else:
        say(f"3/4 promote: not promoted — {len(gates.failed)} gate(s) failed: {', '.join(gates.failed)}. "
            f"`toolkit promote {name} --version {version} --reason ...` would refuse for the same reason.")
        result["promotion"] = None
    result["status"] = status(name)
    index = write_index()
    say(f"4/4 index {index}")
    return result

"""Helpers of the runner tests: a real registry with a version promoted to ``paper``, an emulator, runner processes.

The registry is built once per test module that asks for it (``promoted_registry``): a real
backtest of ``ma_cross`` on the bundled BTC/USDT 1h bars 2023-01..2024-02 (one combination,
fast 20 / slow 50, sized at 15 % volatility over a 2-day window so a decision needs 50 bars),
recorded in a private sqlite MLflow store, evaluated by the real gates under a lenient
paper policy and promoted to ``paper`` through ``toolkit.registry.promotion.promote`` (audited).
Version 2 is the same bundle registered again with the paper verdict recorded but never
promoted (the hand-set alias case).

The emulator replays the bundled 1m bars from 2024-03-01 (stepped clock); a runner process
trades against it; the test steps the clock one bar (60 minutes) at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "ma_cross.BTC-USDT.1h"
PARAMS = {"fast": 20, "slow": 50}
SIZING = {"vol_window_days": 2.0}
START = "2024-03-01"
RUNNER = str(Path(sys.executable).with_name("runner"))
PROCESS_TIMEOUT_S = 120
CANARY_KEY = "emulator-api-key"
CANARY_SECRET = "emulator-api-secret"


@dataclass(frozen=True)
class PromotedRegistry:
    root: Path
    env: dict[str, str]
    bundle: Path


def build_registry(root: Path) -> PromotedRegistry:
    """Backtest, record, gate and promote one version to paper in a private store under ``root``."""
    import yaml

    from toolkit.backtest import config_from_params, run_backtest
    from toolkit.backtest.bundle import save_bundle
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.data.quality import certify
    from toolkit.gates import collect_evidence, evaluate, load_policy
    from toolkit.gates.policy import POLICY_PATHS
    from toolkit.registry.adapter import registry_trial_count
    from toolkit.registry.promotion import promote
    from toolkit.registry.record import record_backtest
    from toolkit.registry.verdicts import record_verdict
    from toolkit.reporting.views import bars_for

    store = root / "store"
    d = yaml.safe_load(Path(POLICY_PATHS["paper"]).read_text())
    d["name"] = "runner-tests-paper"
    d["statistics"].update({"min_oos_sharpe": -10.0, "min_psr": 0.0, "min_dsr": 0.0, "mintrl_alpha": 0.5,
                            "max_pbo": 1.0, "min_trades": 1})
    d["capital"].update({"max_drawdown_pct": 90.0, "max_volume_share": 0.5})
    d["advisory"] = sorted(set(d.get("advisory", [])) | {"cost_stress", "robustness", "latency", "capacity"})
    policy_path = root / "paper_policy.yaml"
    policy_path.write_text(yaml.safe_dump(d, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "TOOLKIT_ARTIFACTS": str(store / "artifacts"),
           "TOOLKIT_AUDIT": str(store / "audit.db"), "TOOLKIT_REPORTS_DIR": str(store / "reports"),
           "TOOLKIT_LEDGER": str(root / "trials.db"), "TOOLKIT_POLICY_PAPER": str(policy_path)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        policy = load_policy(policy_path, stage="paper")
        cfg = config_from_params(strategy="ma_cross", symbol="BTC/USDT", timeframe="1h", start="2023-01-01",
                                 end="2024-02-28", grid={k: [v] for k, v in PARAMS.items()}, sizing=SIZING)
        bars = bars_for(cfg)
        result = run_backtest(cfg, bars, ledger=TrialLedger(root / "trials.db"), progress=False)
        bundle = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), root / "bundle")
        v1 = record_backtest(bundle).model_version
        evidence = collect_evidence(bundle, policy, registry_trial_count(MODEL, v1))
        out = root / "verdict"
        evidence.write(out)
        verdict = evaluate(evidence, policy)
        assert verdict.passed, verdict.summary()
        (out / "verdict.json").write_text(verdict.to_json(), encoding="utf-8")
        record_verdict(MODEL, v1, out / "verdict.json", extra_evidence=out)
        promote(MODEL, v1, "paper", reason="runner tests", actor="tests")
        v2 = record_backtest(bundle).model_version  # same bundle, verdict recorded, never promoted
        record_verdict(MODEL, v2, out / "verdict.json", extra_evidence=out)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return PromotedRegistry(root=root, env=env, bundle=bundle)


def write_config(path: Path, url: str, journal: Path, **overrides: Any) -> Path:
    """Write a runner TOML for one deployment of the test model against ``url``."""
    risk = {"max_position_notional": 50000.0, "max_order_notional": 50000.0, "price_band_pct": 5.0,
            "daily_loss_limit": 5000.0, **overrides.pop("risk", {})}
    deployment = {"name": "btc", "model": MODEL, "alias": "paper", "symbol": "BTC/USDT", "capital": 20000.0,
                  **overrides.pop("deployment", {})}
    poll = {"cycle_seconds": 0.05, "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2, **overrides.pop("poll", {})}
    exchange = {"url": url, "rate_limit": False, "timeout_ms": 5000, **overrides.pop("exchange", {})}

    def table(d: dict[str, Any]) -> str:
        return "\n".join(f"{k} = {_toml(v)}" for k, v in d.items())

    text = (f"journal = {_toml(str(journal))}\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in overrides.items())
            + f"\n[exchange]\n{table(exchange)}\n\n[risk]\n{table(risk)}\n\n[poll]\n{table(poll)}\n\n"
            f"[[deployments]]\n{table(deployment)}\n")
    path.write_text(text)
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def runner_env(reg: PromotedRegistry, **extra: str) -> dict[str, str]:
    env = {**os.environ, **reg.env, "TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY, "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET,
           **extra}
    return {k: v for k, v in env.items() if v is not None}


class RunnerProcess:
    """A real ``runner start`` child process; its stdout and stderr go to files."""

    def __init__(self, config: Path, env: dict[str, str], log_dir: Path, name: str = "runner") -> None:
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen([RUNNER, "start", "--config", str(config)], env=env, stdout=out, stderr=err)

    def wait(self, timeout: float = PROCESS_TIMEOUT_S) -> int:
        return self.proc.wait(timeout=timeout)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=PROCESS_TIMEOUT_S)

    def logs(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def wait_for(predicate: Any, what: str, proc: RunnerProcess | None = None, timeout: float = PROCESS_TIMEOUT_S) -> None:
    """Poll ``predicate`` until true (a generous limit for a loaded machine: not a performance threshold)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.proc.poll() is not None:
            if predicate():
                return
            raise AssertionError(f"runner exited with {proc.proc.returncode} while waiting for {what}:\n{proc.logs()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.logs()}" if proc else ""))

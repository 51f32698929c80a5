"""Fixtures and helpers of the registry tests: a real registry, built once per session, copied per test.

The session fixture runs three real backtests (BTC/USDT 1h, 2023-01..2024-06, small
ma_cross grids), records them in a private sqlite MLflow store and evaluates them
with the real gates (``collect_evidence`` + ``evaluate``) under a lenient test policy:

    v1  grid fast 5,10 / slow 50,100   verdict failed (negative out-of-sample Sharpe)
    v2  grid fast 20 / slow 100,200     verdict passed
    v3  grid fast 15,20 / slow 200      verdict passed (alias candidate: the last passed)
    v4  the v2 bundle registered again  never evaluated

Each test gets a private copy of the store (database, artifacts, audit log); the
absolute artifact locations inside the copied database are rewritten to the copy,
so a test can tamper with artifacts on disk without touching another test.

Test modules import the fixtures from here (``from registry_support import registry``)
rather than from a ``conftest.py``: another test directory imports names from its own
``conftest`` module, and two modules both named ``conftest`` collide in ``sys.modules``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

__all__ = ["GRIDS", "MODEL", "TOOLKIT", "Registry", "audit_trail", "env_for", "lenient_policy", "registry",
           "registry_template", "run_cli", "version_tags"]

MODEL = "ma_cross.BTC-USDT.1h"
GRIDS = {
    "fail": {"fast": [5, 10], "slow": [50, 100]},
    "pass": {"fast": [20], "slow": [100, 200]},
    "pass2": {"fast": [15, 20], "slow": [200]},
}


def lenient_policy(path: Path, **statistics: float) -> Path:
    """Write the shipped policy loosened so that a plain ma_cross can pass; return its path."""
    from toolkit.gates import DEFAULT_POLICY_PATH

    d = yaml.safe_load(Path(DEFAULT_POLICY_PATH).read_text())
    d["name"] = "registry-tests"
    d["statistics"].update({"min_psr": 0.5, "min_dsr": 0.0, "mintrl_alpha": 0.5, "max_pbo": 1.0, **statistics})
    d["capital"].update({"max_drawdown_pct": 70.0, "max_volume_share": 0.05})
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def env_for(store: Path) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "TOOLKIT_ARTIFACTS": str(store / "artifacts"),
        "TOOLKIT_AUDIT": str(store / "audit.db"),
        "TOOLKIT_REPORTS_DIR": str(store / "reports"),
    }


@dataclass(frozen=True)
class Registry:
    """A private copy of the session registry."""

    root: Path
    model: str
    policy: Path
    bundles: dict[str, Path]
    env: dict[str, str]

    @property
    def audit(self) -> Path:
        return Path(self.env["TOOLKIT_AUDIT"])

    def artifacts_of(self, run_id: str) -> Path:
        """Return the local directory holding a run's artifacts."""
        from mlflow import MlflowClient
        from toolkit.registry.adapter import configure

        configure()
        uri = MlflowClient().get_run(run_id).info.artifact_uri
        return Path(uri.removeprefix("file://"))


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Build the session registry once (three backtests, three verdicts, four versions)."""
    from toolkit.backtest import config_from_params, run_backtest
    from toolkit.backtest.bundle import save_bundle
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.data.quality import certify
    from toolkit.gates import collect_evidence, evaluate, load_policy
    from toolkit.registry.record import record_backtest
    from toolkit.registry.verdicts import record_verdict
    from toolkit.reporting.views import bars_for

    root = tmp_path_factory.mktemp("registry")
    store = root / "store"
    policy_path = lenient_policy(root / "policy.yaml")
    policy = load_policy(policy_path)
    ledger = TrialLedger(root / "trials.db")
    bundles: dict[str, Path] = {}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env_for(store).items():
            mp.setenv(k, v)
        for name, grid in GRIDS.items():
            cfg = config_from_params(strategy="ma_cross", symbol="BTC/USDT", timeframe="1h", start="2023-01-01",
                                     end="2024-06-30", grid=grid)
            bars = bars_for(cfg)
            result = run_backtest(cfg, bars, ledger=ledger, progress=False)
            bundles[name] = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(),
                                        root / "bundles" / name)
            version = record_backtest(bundles[name]).model_version
            evidence = collect_evidence(bundles[name], policy)
            out = root / "verdicts" / name
            evidence.write(out)
            verdict = evaluate(evidence, policy)
            assert verdict.passed == (name != "fail"), verdict.summary()
            (out / "verdict.json").write_text(verdict.to_json(), encoding="utf-8")
            record_verdict(MODEL, version, out / "verdict.json", extra_evidence=out)
        record_backtest(bundles["pass"])  # v4, never evaluated
    return Registry(root=store, model=MODEL, policy=policy_path, bundles=bundles, env=env_for(store))


def _rewrite_paths(db: Path, old: str, new: str) -> None:
    """Point every absolute path stored in an MLflow sqlite database from ``old`` to ``new``."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            for col in con.execute(f'PRAGMA table_info("{t}")').fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    con.execute(f'UPDATE "{t}" SET "{col[1]}" = replace("{col[1]}", ?, ?) '
                                f'WHERE "{col[1]}" LIKE ?', (old, new, f"%{old}%"))
        con.commit()
    finally:
        con.close()


@pytest.fixture
def registry(registry_template: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """Give one test a private copy of the session registry, with the environment pointing at it.

    ``TOOLKIT_POLICY`` is set to the lenient test policy (the policy in force for promotion).
    """
    store = tmp_path / "store"
    shutil.copytree(registry_template.root, store, ignore=shutil.ignore_patterns("reports"))
    _rewrite_paths(store / "mlflow.db", str(registry_template.root), str(store))
    env = {**env_for(store), "TOOLKIT_POLICY": str(registry_template.policy)}  # the policy in force
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield Registry(root=store, model=registry_template.model, policy=registry_template.policy,
                   bundles=registry_template.bundles, env={**os.environ, **env})


# ----------------------------------------------------------------------------- helpers of the test modules

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))


def version_tags(reg: Registry, version: str) -> dict[str, str]:
    """Return one version's tags as the registry reads them."""
    from toolkit.registry import adapter

    return dict(adapter.version_info(reg.model, version).tags)


def audit_trail(reg: Registry) -> list[dict[str, object]]:
    """Return the promote and rollback rows of the audit trail (not the candidate rows of the session build)."""
    from toolkit.registry.audit import AuditLog

    return [e for e in AuditLog(reg.audit).events(reg.model) if e["action"] in ("promote", "rollback")]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the toolkit CLI in-process; return (exit code, stdout, stderr)."""
    from toolkit.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err

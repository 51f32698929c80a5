"""Fixtures and helpers of the registry tests: a real registry, built once per session, copied per test.

The session fixture runs three real backtests (BTC/USDT 1h, 2023-01..2024-06, small
ma_cross grids), records them in a private sqlite MLflow store and evaluates them
with the real gates (``collect_evidence`` once, ``evaluate`` per stage) under lenient
test policies of both stages (the live one makes ``paper_record`` advisory, since no
paper record can exist yet):

    v1  grid fast 5,10 / slow 50,100   paper and live verdicts failed (negative out-of-sample Sharpe)
    v2  grid fast 20 / slow 100,200     paper and live verdicts passed
    v3  grid fast 15,20 / slow 200      paper and live verdicts passed
    v4  the v2 bundle registered again  never evaluated

No alias is set: recording a verdict moves none.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = ["GRIDS", "MODEL", "STAGES", "TOOLKIT", "Registry", "audit_trail", "env_for", "forge_extras",
           "lenient_policy", "policy_env", "registry", "registry_template", "run_cli", "version_tags"]

STAGES = ("paper", "live")

MODEL = "ma_cross.BTC-USDT.1h"
GRIDS = {
    "fail": {"fast": [5, 10], "slow": [50, 100]},
    "pass": {"fast": [20], "slow": [100, 200]},
    "pass2": {"fast": [15, 20], "slow": [200]},
}


def lenient_policy(path: Path, stage: str = "live", **statistics: float) -> Path:
    """Write the shipped policy of ``stage`` loosened so that a plain ma_cross can pass; return its path.

    The live one makes ``paper_record`` advisory (attribution does not exist yet).
    """
    from toolkit.gates.policy import POLICY_PATHS

    d = yaml.safe_load(Path(POLICY_PATHS[stage]).read_text())
    d["name"] = f"registry-tests-{stage}"
    d["statistics"].update({"min_oos_sharpe": 0.0, "min_psr": 0.5, "min_dsr": 0.0, "mintrl_alpha": 0.5,
                            "max_pbo": 1.0, **statistics})
    d["capital"].update({"max_drawdown_pct": 70.0, "max_volume_share": 0.05})
    if stage == "live":
        d["advisory"] = ["paper_record"]
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def policy_env(policies: dict[str, Path]) -> dict[str, str]:
    """Return the environment naming ``policies`` as the policies in force."""
    return {f"TOOLKIT_POLICY_{stage.upper()}": str(path) for stage, path in policies.items()}


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
    policies: dict[str, Path]
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
    """Build the session registry once (three backtests, a paper and a live verdict each, four versions)."""
    from toolkit.backtest import config_from_params, run_backtest
    from toolkit.backtest.bundle import save_bundle
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.data.quality import certify
    from toolkit.gates import collect_evidence, evaluate, load_policy
    from toolkit.registry.adapter import registry_trial_count
    from toolkit.registry.record import record_backtest
    from toolkit.registry.verdicts import record_verdict
    from toolkit.reporting.views import bars_for

    root = tmp_path_factory.mktemp("registry")
    store = root / "store"
    policy_paths = {stage: lenient_policy(root / f"{stage}_policy.yaml", stage) for stage in STAGES}
    policies = {stage: load_policy(p, stage=stage) for stage, p in policy_paths.items()}
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
            trials = registry_trial_count(MODEL, version)  # as `toolkit gates` counts them (promote recounts)
            evidence = collect_evidence(bundles[name], policies["paper"], trials)  # one measurement, both stages
            for stage in STAGES:
                out = root / "verdicts" / name / stage
                evidence.write(out)
                verdict = evaluate(evidence, policies[stage])
                assert verdict.passed == (name != "fail"), verdict.summary()
                (out / "verdict.json").write_text(verdict.to_json(), encoding="utf-8")
                record_verdict(MODEL, version, out / "verdict.json", extra_evidence=out)
        record_backtest(bundles["pass"])  # v4, never evaluated
    return Registry(root=store, model=MODEL, policies=policy_paths, bundles=bundles, env=env_for(store))


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

    ``TOOLKIT_POLICY_PAPER`` and ``TOOLKIT_POLICY_LIVE`` name the lenient test policies (the
    policies in force for promotion).
    """
    store = tmp_path / "store"
    shutil.copytree(registry_template.root, store, ignore=shutil.ignore_patterns("reports"))
    _rewrite_paths(store / "mlflow.db", str(registry_template.root), str(store))
    env = {**env_for(store), **policy_env(registry_template.policies)}  # the policies in force
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield Registry(root=store, model=registry_template.model, policies=registry_template.policies,
                   bundles=registry_template.bundles, env={**os.environ, **env})


# ----------------------------------------------------------------------------- helpers of the test modules

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))


def version_tags(reg: Registry, version: str) -> dict[str, str]:
    """Return one version's tags as the registry reads them."""
    from toolkit.registry import adapter

    return dict(adapter.version_info(reg.model, version).tags)


def audit_trail(reg: Registry) -> list[dict[str, object]]:
    """Return the rows of the audit trail for the registry's model (oldest first)."""
    from toolkit.registry.audit import AuditLog

    return AuditLog(reg.audit).events(reg.model)


def forge_extras(reg: Registry, version: str, stage: str, edit: Callable[[dict[str, Any]], None],
                 work: Path) -> str:
    """Edit a version's recorded gate evidence, re-compute the verdict from it honestly and record both.

    The result is a forgery every hash agrees with: the verdict's sha is self-consistent, its
    evidence sha is the edited evidence's, and re-evaluating that evidence reproduces it. Only
    re-deriving the measurements from the bundle can tell. Returns the forged verdict's sha.
    """
    import json

    from toolkit.gates import Evidence, evaluate, load_policy
    from toolkit.gates.evidence import EXTRAS_FILE, canonical_json
    from toolkit.registry import adapter
    from toolkit.registry.verdicts import record_verdict

    files = adapter.download_gate_artifacts(reg.model, version, work / "gates", stage)
    bundle = adapter.download_evidence(reg.model, version, work / "bundle")
    path = files.evidence / EXTRAS_FILE
    extras = json.loads(path.read_text())
    edit(extras)
    path.write_text(canonical_json(extras, indent=1) + "\n", encoding="utf-8")
    verdict = evaluate(Evidence.read(bundle, extras_dir=files.evidence), load_policy(reg.policies[stage],
                                                                                     stage=stage))
    assert verdict.passed, verdict.summary()  # the forgery must still pass, or the test proves nothing
    out = work / "forged" / "verdict.json"
    out.parent.mkdir(parents=True)
    out.write_text(verdict.to_json(), encoding="utf-8")
    record_verdict(reg.model, version, out, extra_evidence=files.evidence)
    return verdict.verdict_sha


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the toolkit CLI in-process; return (exit code, stdout, stderr)."""
    from toolkit.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err

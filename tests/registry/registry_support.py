"""Helpers shared by the registry tests and their fixtures (a unique module name, not ``conftest``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["GRIDS", "MODEL", "Registry", "env_for", "lenient_policy"]

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
    d["capital"].update({"max_drawdown_pct": 70.0, "max_bar_volume_share": 0.05})
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
        from toolkit.registry.mlflow_store import client, configure

        configure()
        uri = client().get_run(run_id).info.artifact_uri
        return Path(uri.removeprefix("file://"))

"""Attribution tests import the hand-built journal helpers beside them and the runner tests' registry helpers."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
from suite_support import import_helpers_from

import_helpers_from(Path(__file__).resolve().parent, "runner")


@pytest.fixture(scope="session")
def attribution_registry(shared_tmp: Path) -> object:
    """The runner tests' promoted registry (``runner_support.shared_registry``: built once for every suite)."""
    from runner_support import shared_registry

    return shared_registry(shared_tmp)


@pytest.fixture(scope="session")
def paper_journals(attribution_registry: object, shared_tmp: Path) -> dict[str, Path]:
    """Real journals of the runner paper-trading the promoted version for 72 replayed hours against the emulator:
    ``plain`` (the emulator's default fill model) and ``wide`` (a 25 bps half-spread: a known extra slippage)."""
    from live_support import paper_journal

    from toolkit.emulator.testing import make_store

    root = shared_tmp / "attribution-journals"
    root.mkdir(exist_ok=True)
    with (root / "build.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not (root / "done").exists():
            store = make_store(root / "bars", {"BTC/USDT": ("2024-02-25", "2024-03-04")})
            for name, matching in (("plain", None), ("wide", {"min_half_spread_bps": 25.0, "spread_coef": 0.0})):
                paper_journal(attribution_registry, root, store, 72, name, matching)  # type: ignore[arg-type]
            (root / "done").write_text("ok")
    return {name: root / f"{name}.sqlite" for name in ("plain", "wide")}


@pytest.fixture
def private_store(attribution_registry: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private copy of the promoted registry (attribution writes runs and tags); the environment points at it."""
    reg = attribution_registry
    src = reg.root / "store"  # type: ignore[attr-defined]
    dst = tmp_path / "store"
    from runner_support import copy_store

    copy_store(src, dst)
    env = {**reg.env, "MLFLOW_TRACKING_URI": f"sqlite:///{dst / 'mlflow.db'}",  # type: ignore[attr-defined]
           "TOOLKIT_ARTIFACTS": str(dst / "artifacts"), "TOOLKIT_AUDIT": str(dst / "audit.db"),
           "TOOLKIT_REPORTS_DIR": str(tmp_path / "reports")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from toolkit.registry import adapter

    adapter.configure()
    return env

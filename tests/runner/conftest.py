"""Fixtures of the runner tests: one promoted registry per test session (shared by the xdist workers), a
small real-data store, emulators on free loopback ports (stepped clock), stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runner_support import (
    CANARY_KEY,
    CANARY_SECRET,
    START,
    PromotedRegistry,
    copy_store,
    shared_registry,
    write_config,
)

from runner.config import load_config
from runner.engine import Runner
from toolkit.emulator import Emulator
from toolkit.emulator.testing import EmulatorPool, make_store


@pytest.fixture(scope="session")
def promoted_registry(shared_tmp: Path) -> PromotedRegistry:
    """The registry with version 1 promoted to paper, built once for all workers (``shared_registry``)."""
    return shared_registry(shared_tmp)


@pytest.fixture
def private_registry(promoted_registry: PromotedRegistry, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> PromotedRegistry:
    """A private copy of the registry (tests that tamper with aliases or tags); the environment points at it."""
    src = promoted_registry.root / "store"
    dst = tmp_path / "store"
    copy_store(src, dst)
    env = {**promoted_registry.env, "MLFLOW_TRACKING_URI": f"sqlite:///{dst / 'mlflow.db'}",
           "TOOLKIT_ARTIFACTS": str(dst / "artifacts"), "TOOLKIT_AUDIT": str(dst / "audit.db")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return PromotedRegistry(root=tmp_path, env=env, bundle=promoted_registry.bundle)


@pytest.fixture
def registry_env(promoted_registry: PromotedRegistry, monkeypatch: pytest.MonkeyPatch) -> PromotedRegistry:
    """Point this process's environment at the shared promoted registry (read only)."""
    for k, v in promoted_registry.env.items():
        monkeypatch.setenv(k, v)
    return promoted_registry


@pytest.fixture(scope="session")
def bar_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Binance BTC/USDT 1m bars 2024-02-25..03-04: history for the first decision, then the replay."""
    return make_store(tmp_path_factory.mktemp("runner-bars"), {"BTC/USDT": ("2024-02-25", "2024-03-04")})


@pytest.fixture
def make_emulator(bar_store: Path, tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Return a factory of started emulators (stepped clock at 2024-03-01, USDT 100000); all stopped at teardown."""
    pool = EmulatorPool(tmp_path, start=START, store_roots=(bar_store,), symbols=("BTC/USDT",))
    try:
        yield pool.start
    finally:
        assert pool.stop_all() == [], "an emulator port is still bound"


ENV = {"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY, "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET}


@pytest.fixture
def make_runner(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """Return a factory of in-process runners against an emulator (config overrides as ``write_config``)."""
    opened: list[Runner] = []

    def _make(emu: Emulator, environ: dict[str, str] | None = None, **overrides: object) -> Runner:
        cfg = load_config(write_config(tmp_path / f"runner{len(opened)}.toml", emu.url,
                                       tmp_path / f"journal{len(opened)}.sqlite", **overrides))
        r = Runner(cfg, environ=ENV if environ is None else environ)
        opened.append(r)
        return r

    yield _make
    for r in opened:
        r.close()

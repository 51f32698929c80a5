"""Crash safety with real processes: a runner SIGKILLed at points of the order lifecycle, in the handover to a
new version, in the automatic rollback and in the kill switch's flatten, restarted, loses and duplicates nothing;
the journal's position equals the emulator's balance; each handover and rollback is done exactly once (one
journaled switch, one audited rollback); a pulled kill switch ends flat. Also: the installed ``runner``
command's status and stop, a clean stop on SIGTERM, and planted canary credentials appear in no output.

A kill is cheap: the runners are forked from a warm pre-forked server (``prefork_server.py``: imports and the
registry loaded once), each a real process dying by a real SIGKILL at its armed point (``runner.failpoints``)
or from outside; every 20th start is a fresh ``runner start`` (the real cold start). ``make test`` runs 50 kill
points, the slow marker 200+, named and at random moments; the plan comes from a seed, printed (``-s`` or on
failure) and replayed with ``RUNNER_CRASH_SEED=<seed>`` (crash_support.py describes the episodes).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from crash_support import CrashMatrix, Kill, plan, registry_env
from runner_support import START, Prefork, PromotedRegistry
from runner_support import Venue as _Venue

from toolkit.emulator import Emulator
from toolkit.emulator.testing import EmulatorPool, make_store

CANARY_KEY = "canary-key-7f3a9c1e5b"
CANARY_SECRET = "canary-secret-d41d8cd98f00b204"


def _scan_for_canary(*paths: Path, texts: tuple[str, ...] = ()) -> None:
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            data = f.read_bytes()
            for canary in (CANARY_KEY, CANARY_SECRET):
                assert canary.encode() not in data, f"{canary[:10]}… found in {f}"
    for t in texts:
        assert CANARY_KEY not in t and CANARY_SECRET not in t


@pytest.fixture
def long_store(tmp_path: Path) -> Path:
    """Real 1m bars 2024-02-25..04-25: ~1,300 hours to trade through."""
    return make_store(tmp_path / "bars", {"BTC/USDT": ("2024-02-25", "2024-04-25")})


@contextmanager
def _emulator(store: Path, tmp_path: Path) -> Iterator[Emulator]:
    pool = EmulatorPool(tmp_path, start=START, store_roots=(store,), symbols=("BTC/USDT",))
    try:
        yield pool.start(api_key=CANARY_KEY, api_secret=CANARY_SECRET, rate_limits=False)
    finally:
        assert pool.stop_all() == [], "an emulator port is still bound"


@pytest.fixture
def emulator(long_store: Path, tmp_path: Path) -> Iterator[Emulator]:
    with _emulator(long_store, tmp_path) as emu:
        yield emu


def _seed(default: int) -> int:
    return int(os.environ.get("RUNNER_CRASH_SEED", default))


def _matrix(kills: list[Kill], seed: int, reg: PromotedRegistry, emu: Emulator, work: Path,
            cold_every: int) -> tuple[CrashMatrix, dict[str, Any]]:
    """Run the plan ``kills`` (printed with its seed); return the matrix and the final figures."""
    from toolkit.registry import adapter

    adapter.configure()
    print(f"crash matrix, seed {seed} (replay: RUNNER_CRASH_SEED={seed}): {len(kills)} kills: "
          + " ".join(map(str, kills)))
    work.mkdir(parents=True, exist_ok=True)
    env = registry_env(reg, CANARY_KEY, CANARY_SECRET)
    with Prefork(env(), work) as server:
        m = CrashMatrix(reg, _Venue(emu, CANARY_KEY, CANARY_SECRET), work, server, env, random.Random(seed),
                        cold_every=cold_every)
        m.run(kills)
        figures = m.finish()
    _scan_for_canary(work, texts=figures.pop("texts"))
    print(f"crash matrix figures: {figures}; seconds by kind: "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(m.seconds.items())))
    return m, figures


def test_fifty_kill_points_lifecycle_handover_rollback_kill_switch_and_stop(
        private_registry: PromotedRegistry, emulator: Emulator, tmp_path: Path) -> None:
    seed = _seed(10)
    kills = plan(seed, swaps=6, kills=10, orders=16, randoms=7, stops=5)
    assert len(kills) == 50
    m, figures = _matrix(kills, seed, private_registry, emulator, tmp_path / "run", cold_every=20)
    assert m.killed == [str(k) for k in kills]  # every planned point reached, in order
    assert m.cold >= 2 and figures["orders"] >= 10


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_two_hundred_kill_points(private_registry: PromotedRegistry, tmp_path: Path) -> None:
    seed = _seed(200)
    kills = plan(seed, swaps=24, kills=30, orders=74, randoms=54, stops=10)
    assert len(kills) == 216
    store = make_store(tmp_path / "bars", {"BTC/USDT": ("2024-02-25", "2024-08-31")})  # ~4,400 hours to trade
    with _emulator(store, tmp_path) as emu:
        m, _ = _matrix(kills, seed, private_registry, emu, tmp_path / "run", cold_every=20)
    assert m.killed == [str(k) for k in kills]
    assert m.cold >= 10


def test_a_failpoint_spec_is_checked() -> None:
    from runner import failpoints

    try:
        with pytest.raises(SystemExit, match="found 'nowhere'"):
            failpoints.arm("after_send:1,nowhere:2")
        with pytest.raises(SystemExit, match=r"scoped by one of .*found 'payday.after_send'"):
            failpoints.arm("payday.after_send")
        with pytest.raises(SystemExit, match=r"count of at least 1 after kill\.after_send:, found .x."):
            failpoints.arm("kill.after_send:x")
        failpoints.arm("kill.after_send:2")
        failpoints.hit("after_send")  # outside the kill switch's scope: not counted
        with failpoints.scope("kill"):
            failpoints.hit("after_send")  # counted: one pass left
        assert failpoints._armed == {"kill.after_send": 1}
    finally:
        failpoints.arm("")
    assert failpoints._armed == {}


def test_the_prefork_server_stops_its_children(promoted_registry: PromotedRegistry, tmp_path: Path,
                                               make_emulator: Callable[..., Emulator]) -> None:
    """A child still running when the server closes is SIGKILLed and reaped; no process is left."""
    from runner_support import ForkedRunner, write_config

    emu = make_emulator(api_key=CANARY_KEY, api_secret=CANARY_SECRET, rate_limits=False)
    env = registry_env(promoted_registry, CANARY_KEY, CANARY_SECRET)()
    config = write_config(tmp_path / "runner.toml", emu.url, tmp_path / "journal.sqlite")
    server = Prefork(env, tmp_path, warm=None)
    try:
        proc = ForkedRunner(server, config, env, tmp_path)
        pid = proc.proc.pid
        assert proc.proc.poll() is None
        os.kill(pid, 0)  # a real process of its own
        assert pid not in (os.getpid(), server.proc.pid)
    finally:
        server.close()
    assert proc.proc.poll() == -9
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


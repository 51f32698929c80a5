"""A real paper record: the real runner trading the promoted test version against the emulator, replayed bars.

``paper_journal`` runs :class:`runner.engine.Runner` in process against an in-process emulator
(stepped clock from 2024-03-01, the bundled BTC/USDT 1m bars) one hour at a time, as the
runner's own parity test does, and returns the journal. ``matching`` overrides the emulator's
fill model (e.g. a wider spread: a known extra slippage the attribution must recover).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner_support import CANARY_KEY, CANARY_SECRET, START, PromotedRegistry, environ, write_config

ENV = {"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY, "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET}
CAPITAL = 20000.0


def paper_journal(reg: PromotedRegistry, work: Path, store: Path, hours: int, name: str,
                  matching: dict[str, Any] | None = None) -> Path:
    """Trade ``hours`` replayed hours on paper; return the journal (emulator and runner stopped)."""
    from runner.config import load_config
    from runner.demo import replay_hours
    from runner.engine import Runner
    from toolkit.emulator.testing import EmulatorPool
    from toolkit.registry import adapter

    with environ(reg.env, after=adapter.configure):
        pool = EmulatorPool(work / f"emu-{name}", start=START, store_roots=(store,), symbols=("BTC/USDT",))
        (work / f"emu-{name}").mkdir(parents=True, exist_ok=True)
        journal = work / f"{name}.sqlite"
        runner = None
        try:
            emu = pool.start(**({"matching": matching} if matching else {}))
            cfg = load_config(write_config(work / f"{name}.toml", emu.url, journal,
                                           deployment={"capital": CAPITAL}))
            runner = Runner(cfg, environ=ENV)
            replay_hours(runner, emu.url, hours)
        finally:
            if runner is not None:
                runner.close()
            assert pool.stop_all() == [], "an emulator port is still bound"
    return journal

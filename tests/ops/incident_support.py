"""A real journal with a real incident: the runner paper-trades the promoted test version against the emulator
(in process, stepped clock from 2024-03-01, the bundled BTC/USDT 1m bars) and the emulator's klines go stale.

The scenario, one replayed hour per step: a first decision with a good feed (the runner buys from flat), then
``stale_klines`` (the feed 180 minutes behind) until the runner opens its blocking ``stale_feed`` incident; the
on-call acknowledges it (``Journal.acknowledge_incident``, as ``runner ack`` does, at the exchange's time);
the fault is cleared, the runner resolves the incident itself ("fresh bars again") and trades on for a few
hours. Emulator and runner are stopped before :func:`stale_feed_journal` returns.
"""

from __future__ import annotations

from pathlib import Path

from runner_support import CANARY_KEY, CANARY_SECRET, START, PromotedRegistry, environ, write_config

ENV = {"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY, "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET}
CAPITAL = 20000.0
ON_CALL = "oncall-alice"


def stale_feed_journal(reg: PromotedRegistry, work: Path, store: Path) -> tuple[Path, int]:
    """Run the scenario above; return the journal and the id of its ``stale_feed`` incident."""
    from runner.config import load_config
    from runner.engine import Runner
    from toolkit.emulator.testing import EmulatorPool, admin, step_clock
    from toolkit.registry import adapter

    with environ(reg.env, after=adapter.configure):
        (work / "emu").mkdir(parents=True, exist_ok=True)
        pool = EmulatorPool(work / "emu", start=START, store_roots=(store,), symbols=("BTC/USDT",))
        journal = work / "incident.sqlite"
        runner = None
        try:
            emu = pool.start()
            cfg = load_config(write_config(work / "runner.toml", emu.url, journal, deployment={"capital": CAPITAL},
                                           poll={"retry_initial_seconds": 0.01, "retry_max_seconds": 0.05}))
            runner = Runner(cfg, environ=ENV)
            runner._sleep = lambda _s: None  # type: ignore[method-assign]
            runner.open()

            def hours(n: int) -> None:
                for _ in range(n):
                    step_clock(emu.url, 60)
                    for _ in range(4):  # a few cycles per bar: settling, the next leg
                        runner.attempt()  # type: ignore[union-attr]

            runner.attempt()  # the first decision, with a good feed
            hours(1)
            admin(emu.url, "POST", "/admin/faults", {"faults": [{"kind": "stale_klines", "lag_minutes": 180}],
                                                     "replace": True})
            hours(3)
            assert runner.journal is not None
            stale = [i for i in runner.journal.incidents(open_only=True) if i["kind"] == "stale_feed"]
            assert stale, runner.journal.incidents()
            incident = int(stale[0]["id"])
            hours(1)
            assert runner.journal.acknowledge_incident(incident, emu.clock.now_ms(), ON_CALL)
            admin(emu.url, "DELETE", "/admin/faults")
            hours(4)
            assert runner.journal.incidents()[incident - 1]["resolved_at"] is not None, runner.journal.incidents()
        finally:
            if runner is not None:
                runner.close()
            assert pool.stop_all() == [], "an emulator port is still bound"
    return journal, incident

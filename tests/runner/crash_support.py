"""The crash matrix of ``test_runner_crash.py``: a plan of kill points (named, scoped, at random moments) and the
driver that SIGKILLs a real runner at each one, restarts it, and checks what must hold after the restart.

Every runner is a real process: forked from a warm :class:`runner_support.Prefork` server (cheap) or, every
``cold_every``-th start, a fresh ``runner start`` (the real cold start). One journal, one emulator account
and one private registry for the whole plan, so the books checked at the end cover every kill.

Episodes by kind:

* ``order`` — a lifecycle point (``after_send``, ``fills_tx``, …) armed; bars stepped until it fires.
* ``random`` — no point armed; SIGKILLed from outside after a random number of bars (seeded).
* ``handover`` — the runner trades version 1, the test promotes version 2 (audited); the runner dies in the
  handover at the next bar boundary. Restarted: version 2 trades, the switch 1 → 2 journaled exactly once.
* ``rollback`` — version 2 trades under a drawdown limit its fees alone break; the runner dies in its
  automatic rollback (before or after the registry's rollback, in the flatten, in the handover to version
  1). Restarted: the rollback done exactly once in the audit trail, version 1 trades, the switch 2 → 1
  journaled once, the flatten owed by the rollback done.
* ``stop`` — the runner keeps an exchange-side protective stop (``[protective_stop]``) and dies while placing one.
  Restarted at the same exchange time (the replay has not moved): one stop open for the position, under a client
  id of its own when the first was never sent. The stop is then cancelled on the exchange, as by hand: the next
  runner reconciles it.
* ``kill`` — the kill switch pulled (a ``kill_switch`` incident journaled, SIGUSR1, as ``runner kill``); the
  runner dies while flattening. Restarted: it finishes the flatten and exits 9; the account is flat; then the
  incident is resolved (``runner resolve``) and trading goes on.

After each handover, rollback and kill episode the runner is stopped (SIGTERM) and the books are checked: no
duplicate client order id, every exchange order journaled in its final state, every fill journaled once, the
journal's position equal to the exchange's balance.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner_support import (
    MODEL,
    PROCESS_TIMEOUT_S,
    RUNNER,
    ForkedRunner,
    Prefork,
    PromotedRegistry,
    RunnerProcess,
    Venue,
    check_books,
    last_decided,
    runner_env,
    wait_for,
    write_config,
)

from runner.journal import Journal

ORDER_POINTS = ("decision_tx", "intent_tx", "before_send", "after_send", "order_update_tx", "after_order",
                "fills_tx")
HANDOVER_POINTS = ("handover_begin", "handover_settled", "switch_tx", "handover_done")
ROLLBACK_POINTS = ("rollback_begin", "rollback_done", "rollback.flatten_begin", "rollback.intent_tx",
                   "rollback.before_send", "rollback.after_send", "rollback.order_update_tx", "rollback.flatten_leg",
                   "rollback.fills_tx", "handover_begin", "switch_tx", "handover_done")
KILL_POINTS = ("kill_begin", "kill.flatten_begin", "kill.intent_tx", "kill.before_send", "kill.after_send",
               "kill.order_update_tx", "kill.flatten_leg", "kill.fills_tx", "kill_flattened", "kill_done")
STOP_POINTS = ("stop.intent_tx", "stop.before_send", "stop.after_send", "stop.order_update_tx", "stop.after_order")
#: points of a rollback or kill episode that need a position to flatten (an order to send)
NEEDS_POSITION = {p for p in (*ROLLBACK_POINTS, *KILL_POINTS) if p.split(".")[-1] in (
    "intent_tx", "before_send", "after_send", "order_update_tx", "flatten_leg", "fills_tx")}


#: hours the replay moves at each step of the order, random and position-seeking episodes (the runner decides
#: every closed bar and executes the latest: fewer round trips per order than one hour at a time)
STEP_HOURS = 3


@dataclass(frozen=True)
class Kill:
    """One kill of the plan: its kind and the point armed (``""``: SIGKILLed from outside at a random bar)."""

    kind: str
    point: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.point or 'random'}"


def _cycle(rng: random.Random, points: tuple[str, ...], n: int) -> list[str]:
    """``n`` points: every point once per round, each round in a seeded order."""
    out: list[str] = []
    while len(out) < n:
        out += rng.sample(points, len(points))
    return out[:n]


def plan(seed: int, swaps: int, kills: int, orders: int, randoms: int, stops: int = 0) -> list[Kill]:
    """Return a seeded plan: ``swaps`` handover kills each followed (not always at once) by a rollback kill,
    ``kills`` kill-switch kills, ``orders`` lifecycle points, ``randoms`` outside kills and ``stops``
    protective-stop points, mixed.

    Handover and rollback kills alternate (each handover finds version 1 trading, each rollback version 2);
    every kind of point comes round once before any comes again.
    """
    rng = random.Random(seed)
    swaps_ = [Kill(kind, p) for h, b in zip(_cycle(rng, HANDOVER_POINTS, swaps), _cycle(rng, ROLLBACK_POINTS, swaps),
                                            strict=True) for kind, p in (("handover", h), ("rollback", b))]
    others = [Kill("kill", p) for p in _cycle(rng, KILL_POINTS, kills)]
    others += [Kill("order", p) for p in _cycle(rng, ORDER_POINTS, orders)] + [Kill("random")] * randoms
    others += [Kill("stop", p) for p in _cycle(rng, STOP_POINTS, stops)]
    rng.shuffle(others)
    out: list[Kill] = []
    while swaps_ or others:  # interleave, the order of the swaps kept
        total = len(swaps_) + len(others)
        if swaps_ and rng.random() < len(swaps_) / total:
            out.append(swaps_.pop(0))
        else:
            out.append(others.pop())
    return out


@dataclass
class CrashMatrix:
    """Run a plan against one journal, one emulator account and one private registry."""

    reg: PromotedRegistry
    venue: Venue
    work: Path
    server: Prefork
    env: Callable[..., dict[str, str]]
    rng: random.Random
    cold_every: int = 0          # every n-th start is a fresh ``runner start`` process (0: never)
    starts: int = 0
    killed: list[str] = field(default_factory=list)
    cold: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.journal = self.work / "journal.sqlite"
        url = self.venue.emu.url
        common: dict[str, Any] = {"exchange": {"rate_limit": False}, "poll": {"alias_check_seconds": 0.05}}
        self.plain = write_config(self.work / "runner.toml", url, self.journal, rollback={"enabled": False},
                                  **common)
        self.guarded = write_config(self.work / "guarded.toml", url, self.journal,
                                    rollback={"enabled": True, "max_drawdown_pct": 0.0001, "action": "flatten"},
                                    **common)
        self.protected = write_config(self.work / "protected.toml", url, self.journal, rollback={"enabled": False},
                                      protective_stop={"stop_pct": 5.0, "limit_pct": 6.0}, **common)

    # --- processes --------------------------------------------------------------------------------
    def start(self, config: Path, point: str = "") -> RunnerProcess:
        self.starts += 1
        extra = {"RUNNER_FAILPOINTS": f"{point}:1"} if point else {}
        name = f"run{self.starts:03d}"
        t0 = time.time()
        proc: RunnerProcess
        if self.cold_every and self.starts % self.cold_every == 0:
            self.cold += 1
            proc = RunnerProcess(config, self.env(**extra), self.work, name=name)
        else:
            proc = ForkedRunner(self.server, config, self.env(**extra), self.work, name=name)
        proc.t0 = t0  # type: ignore[attr-defined]
        return proc

    def died(self, proc: RunnerProcess, what: Kill) -> None:
        assert proc.wait() == -signal.SIGKILL, f"kill point {what} not reached:\n{proc.logs()}"
        self.killed.append(str(what))

    def settle(self, proc: RunnerProcess) -> None:
        """Wait until this runner has finished a cycle and decided (and settled) the latest closed bar."""
        def cycled() -> bool:
            beat = self._j(lambda j: j.get_meta("heartbeat")) if self.journal.exists() else None
            doc = json.loads(beat) if beat else {}
            return bool(doc) and doc["wall"] >= proc.t0 and doc["cycle"] >= 2  # type: ignore[attr-defined]

        wait_for(cycled, "the runner to finish a cycle", proc)
        wait_for(lambda: last_decided(self.journal) == self.venue.latest_closed(), "the runner to settle", proc)

    def stop(self, proc: RunnerProcess) -> None:
        assert proc.terminate() == 0, proc.logs()  # SIGTERM: a clean stop

    # --- journal and registry ---------------------------------------------------------------------
    def _j(self, fn: Callable[[Journal], Any]) -> Any:
        j = Journal(self.journal)
        try:
            return fn(j)
        finally:
            j.close()

    def switches(self) -> list[tuple[str | None, str]]:
        if not self.journal.exists():
            return []
        return [(s["from_version"], s["to_version"]) for s in self._j(lambda j: j.switches("btc"))]

    def position(self) -> Decimal:
        return self._j(lambda j: j.position("btc", "BTC", "USDT").base)  # type: ignore[no-any-return]

    @staticmethod
    def alias() -> str | None:
        from toolkit.registry import adapter

        return adapter.alias_version(MODEL, "paper")

    @staticmethod
    def audited(action: str) -> list[dict[str, Any]]:
        from toolkit.registry.audit import AuditLog

        return [e for e in AuditLog(None).events(MODEL) if e["action"] == action and e["outcome"] == "done"]

    # --- episodes ---------------------------------------------------------------------------------
    def run(self, kills: list[Kill]) -> None:
        for k in kills:
            t0 = time.perf_counter()
            getattr(self, f"_{k.kind}")(k)
            self.seconds[k.kind] = self.seconds.get(k.kind, 0.0) + time.perf_counter() - t0

    def _order(self, k: Kill) -> None:
        proc = self.start(self.plain, k.point)
        self.venue.drive(self.journal, proc, until=lambda: proc.proc.poll() is not None, max_bars=200, hours=STEP_HOURS)
        self.died(proc, k)

    def _random(self, k: Kill) -> None:
        proc = self.start(self.plain)
        self.venue.drive(self.journal, proc, until=lambda: self.rng.random() < 0.2, max_bars=200,
                         hours=STEP_HOURS)
        proc.kill()
        self.died(proc, k)

    def _ensure_position(self, proc: RunnerProcess) -> None:
        """Step bars until the deployment holds something to flatten (the market's minimum notional at least)
        once the runner has settled: a position seen in the middle of a bar's execution may be sold on that bar."""
        def held() -> bool:
            return self.position() * Decimal(60000) >= Decimal(20)

        for _ in range(20):
            self.venue.drive(self.journal, proc, until=held, max_bars=100, hours=STEP_HOURS)
            self.settle(proc)  # no new bar until the test steps the clock: nothing trades after this
            wait_for(lambda: self._j(lambda j: (j.last_decision("btc") or {}).get("exec_state")) not in (
                "pending", "executing"), "the latest decision's execution to finish", proc)
            if held():
                return
        raise AssertionError(f"no position to flatten after 20 settled attempts: {self.position()}")

    def _handover(self, k: Kill) -> None:
        from toolkit.registry.promotion import promote

        if not self.switches():  # a fresh journal: version 1 journaled first
            first = self.start(self.plain)
            self.settle(first)
            self.stop(first)
        assert self.alias() == "1" and self.switches()[-1][1] == "1", self.switches()
        before = self.switches()
        proc = self.start(self.plain, k.point)
        self.settle(proc)
        promote(MODEL, "2", "paper", reason="crash matrix: hand over", actor="tests")
        self.venue.drive(self.journal, proc, until=lambda: proc.proc.poll() is not None, max_bars=50)
        self.died(proc, k)
        again = self.start(self.plain)
        self.settle(again)
        self.stop(again)
        assert self.switches() == [*before, ("1", "2")], self.switches()  # the handover done exactly once
        check_books(self.venue, self.journal)

    def _rollback(self, k: Kill) -> None:
        assert self.alias() == "2" and self.switches()[-1][1] == "2", self.switches()
        before, done = self.switches(), len(self.audited("rollback"))
        if k.point in NEEDS_POSITION:
            warm = self.start(self.plain)
            self._ensure_position(warm)
            self.settle(warm)
            self.stop(warm)
        self._plant_peak()
        proc = self.start(self.guarded, k.point)
        self.venue.drive(self.journal, proc, until=lambda: proc.proc.poll() is not None, max_bars=50)
        self.died(proc, k)
        if self.alias() == "2":  # killed before the registry's rollback: a restart under the same limit does it
            again = self.start(self.guarded)
            # audited, not only the alias moved: a SIGKILL inside the registry's rollback (alias moved, audit row
            # not yet written) leaves an alias the runner refuses at start — the registry's window, not tested here
            wait_for(lambda: len(self.audited("rollback")) > done, "the restarted runner to roll back", again)
            again.kill()  # before version 1 trades under a limit its own fees break
        final = self.start(self.plain)
        self.settle(final)
        self.stop(final)
        rollbacks = self.audited("rollback")
        assert len(rollbacks) == done + 1 and rollbacks[-1]["actor"] == "runner:btc", rollbacks[done:]
        assert self.switches() == [*before, ("2", "1")], self.switches()
        assert not self._j(lambda j: j.get_meta("rollback_flatten_owed:btc")), "a rollback's flatten left owed"
        check_books(self.venue, self.journal)

    def _plant_peak(self) -> None:
        """Journal a peak equity far above the running version's: the guarded runner rolls back at its first
        check, holding what the episode gave it, and so does a runner restarted after a kill before the
        registry's rollback. Left to the market, the equity may stand at a new peak (no drawdown) until the
        strategy has sold, and a kill point in the rollback's flatten is never reached."""
        def plant(j: Journal) -> None:
            seq = int(j.switches("btc")[-1]["seq"])
            j.set_meta(f"peak_equity:btc:{seq}", str(Decimal(10) ** 9))

        self._j(plant)

    def _stop(self, k: Kill) -> None:
        proc = self.start(self.protected, k.point)
        self.venue.drive(self.journal, proc, until=lambda: proc.proc.poll() is not None, max_bars=200,
                         hours=STEP_HOURS)
        self.died(proc, k)
        again = self.start(self.protected)  # the replay has not moved: the same exchange time
        self.settle(again)
        client = self.venue.client
        wait_for(lambda: not self._j(lambda j: j.orders("btc", states=("intent", "unknown"))),
                 "the stop's outcome to be settled", again)
        wait_for(lambda: len(client.fetch_open_orders("BTC/USDT")) == 1, "one protective stop open", again)
        self.stop(again)
        (stop,) = client.fetch_open_orders("BTC/USDT")
        journaled = self._j(lambda j: j.orders("btc", purpose="stop"))
        mine = [o for o in journaled if o["client_order_id"] == stop["clientOrderId"]]
        assert mine and mine[0]["state"] == "open" and stop["side"] == "sell", (stop, journaled[-3:])
        amount = Decimal(client.amount_to_precision("BTC/USDT", float(self.position())))
        assert Decimal(str(stop["amount"])) == amount, (stop, self.position())  # the whole position, once
        check_books(self.venue, self.journal)
        client.cancel_order(stop["id"], "BTC/USDT")  # as by hand: the next runner reconciles it

    def _kill(self, k: Kill) -> None:
        proc = self.start(self.plain, k.point)
        if k.point in NEEDS_POSITION:
            self._ensure_position(proc)
        self.settle(proc)
        incident = self._j(lambda j: j.open_incident(int(time.time() * 1000), "kill_switch", "halt",
                                                     "operator: crash matrix"))
        os.kill(proc.proc.pid, signal.SIGUSR1)  # as `runner kill` does
        self.died(proc, k)
        again = self.start(self.plain)
        assert again.wait() == 9, again.logs()  # finished the flatten, halted
        assert self._j(lambda j: j.get_meta(f"kill_done:{incident}")), "the kill switch not journaled as done"
        assert self.position() * Decimal(60000) < Decimal(5), self.position()  # flat (dust under the minimum)
        check_books(self.venue, self.journal)
        assert self._j(lambda j: j.resolve_incident(incident, int(time.time() * 1000), "operator: crash matrix"))

    # --- the end ----------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """A clean runner: settle, ``runner status``, ``runner stop``; check the books; return the figures."""
        final = self.start(self.plain)
        self.venue.drive(self.journal, final, until=lambda: last_decided(self.journal) is not None, max_bars=5)
        self.settle(final)
        status = subprocess.run([RUNNER, "status", "--config", str(self.plain), "--json"], env=self.env(),
                                capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True and report["deployments"]["btc"]["version"] == self.alias()
        stop = subprocess.run([RUNNER, "stop", "--config", str(self.plain)], env=self.env(), capture_output=True,
                              text=True, timeout=PROCESS_TIMEOUT_S)
        assert stop.returncode == 0, stop.stderr
        assert final.wait() == 0, final.logs()
        figures = check_books(self.venue, self.journal)
        return {"killed": len(self.killed), "starts": self.starts, "cold": self.cold, **figures,
                "texts": (status.stdout, status.stderr, stop.stdout, stop.stderr)}


def registry_env(reg: PromotedRegistry, key: str, secret: str) -> Callable[..., dict[str, str]]:
    def env(**extra: str) -> dict[str, str]:
        return runner_env(reg, TOOLKIT_EXCHANGE_API_KEY=key, TOOLKIT_EXCHANGE_SECRET=secret, **extra)

    return env

"""Helpers of the runner tests: a real registry with a version promoted to ``paper``, an emulator, runner processes.

The registry is built once per test module that asks for it (``promoted_registry``): a real
backtest of ``ma_cross`` on the bundled BTC/USDT 1h bars 2023-01..2024-02 (one combination,
fast 20 / slow 50, sized at 15 % volatility over a 2-day window so a decision needs 50 bars),
recorded in a private sqlite MLflow store, evaluated by the real gates under a lenient
paper policy (its regime map stored with the verdict, as the gates notebook does) and promoted to ``paper``
through ``toolkit.registry.promotion.promote`` (audited).
Version 2 is the same bundle registered again with its own paper verdict recorded but never
promoted (the hand-set alias case; tests that need a promotion and a rollback promote it in a
private copy of the registry).

The emulator replays the bundled 1m bars from 2024-03-01 (stepped clock); a runner process
trades against it; the test steps the clock one bar (60 minutes) at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.emulator import Emulator

MODEL = "ma_cross.BTC-USDT.1h"
PARAMS = {"fast": 20, "slow": 50}
SIZING = {"vol_window_days": 2.0}
START = "2024-03-01"
RUNNER = str(Path(sys.executable).with_name("runner"))
PROCESS_TIMEOUT_S = 120
CANARY_KEY = "emulator-api-key"
CANARY_SECRET = "emulator-api-secret"
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class PromotedRegistry:
    root: Path
    env: dict[str, str]
    bundle: Path


@contextmanager
def environ(env: Mapping[str, str], after: Callable[[], object] | None = None) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the block; then restore each variable (or its absence) and call ``after``
    (e.g. ``adapter.configure``, to point MLflow back at the restored store), also when the block raised."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if after is not None:
            after()


def build_registry(root: Path) -> PromotedRegistry:
    """Backtest, record, gate and promote one version to paper in a private store under ``root``."""
    import yaml

    from toolkit.backtest import config_from_params, run_backtest
    from toolkit.backtest.bundle import save_bundle
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.data.quality import certify
    from toolkit.gates import collect_evidence, evaluate, load_policy
    from toolkit.gates.policy import POLICY_PATHS
    from toolkit.ops.regimes import regime_map
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
    with environ(env):
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
        regimes = regime_map(bars, cfg.symbol, cfg.costs, reference_notional=policy.capital.allocation_usdt)
        (out / "regime_map.json").write_text(regimes.to_json(), encoding="utf-8")  # as the gates notebook does
        verdict = evaluate(evidence, policy)
        assert verdict.passed, verdict.summary()
        (out / "verdict.json").write_text(verdict.to_json(), encoding="utf-8")
        record_verdict(MODEL, v1, out / "verdict.json", extra_evidence=out)
        promote(MODEL, v1, "paper", reason="runner tests", actor="tests")
        v2 = record_backtest(bundle).model_version  # same bundle, its own verdict recorded, never promoted here
        evidence2 = collect_evidence(bundle, policy, registry_trial_count(MODEL, v2))
        out2 = root / "verdict2"
        evidence2.write(out2)
        verdict2 = evaluate(evidence2, policy)
        assert verdict2.passed, verdict2.summary()
        (out2 / "verdict.json").write_text(verdict2.to_json(), encoding="utf-8")
        record_verdict(MODEL, v2, out2 / "verdict.json", extra_evidence=out2)
    return PromotedRegistry(root=root, env=env, bundle=bundle)


def shared_registry(shared: Path) -> PromotedRegistry:
    """Return the promoted registry under ``shared/runner-registry``, built once for every suite and xdist
    worker that asks (a file lock; ~40 s): the runner, ops and attribution tests read the same one."""
    import fcntl
    import pickle

    root = shared / "runner-registry"
    root.mkdir(exist_ok=True)
    done = root / "registry.pickle"
    with (root / "build.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not done.exists():
            done.write_bytes(pickle.dumps(build_registry(root)))
    return pickle.loads(done.read_bytes())  # type: ignore[no-any-return]


def copy_store(src: Path, dst: Path) -> None:
    """Copy a sqlite MLflow store (``mlflow.db``, artifacts, audit) from ``src`` to ``dst``, its recorded paths
    rewritten to ``dst`` so the copy stands alone (tests that tamper with aliases, tags or runs)."""
    import shutil
    import sqlite3

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("reports"))
    con = sqlite3.connect(dst / "mlflow.db")
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            for col in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    con.execute(f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) WHERE "{col[1]}" LIKE ?',
                                (str(src), str(dst), f"%{src}%"))
        con.commit()
    finally:
        con.close()


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

    tables = {k: v for k, v in overrides.items() if isinstance(v, dict)}  # [rollback], [metrics], ...
    scalars = {k: v for k, v in overrides.items() if not isinstance(v, dict)}
    text = (f"journal = {_toml(str(journal))}\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in scalars.items())
            + f"\n[exchange]\n{table(exchange)}\n\n[risk]\n{table(risk)}\n\n[poll]\n{table(poll)}\n\n"
            + "".join(f"[{k}]\n{table(v)}\n\n" for k, v in tables.items())
            + f"[[deployments]]\n{table(deployment)}\n")
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


def last_decided(journal_path: Path) -> int | None:
    if not journal_path.exists():
        return None
    from runner.journal import Journal

    j = Journal(journal_path)
    try:
        last = j.last_decision("btc")
        # an open protective stop is the steady state; a stop whose outcome is not known yet is not
        pending = [o for o in j.orders(states=("intent", "unknown", "open"))
                   if not (o["purpose"] == "stop" and o["state"] == "open")]
        executing = last is not None and last["exec_state"] in ("pending", "executing")
        return None if last is None or pending or executing else int(last["bar_time"])
    finally:
        j.close()


class Venue:
    """An emulator with planted canary credentials and a test-side client of it."""

    def __init__(self, emu: Emulator, key: str = CANARY_KEY, secret: str = CANARY_SECRET) -> None:
        self.emu = emu
        from toolkit.exchange import exchange_client

        self.client = exchange_client(url=emu.url, api_key=key, secret=secret, clock=emu.clock,
                                      enableRateLimit=False)
        self.client.load_markets()

    def latest_closed(self) -> int:
        return (self.emu.clock.now_ms() // HOUR_MS) * HOUR_MS - HOUR_MS

    def drive(self, journal: Path, proc: RunnerProcess, until: Callable[[], bool], max_bars: int = 200,
              hours: int = 1) -> None:
        """Step the replay ``hours`` each time the runner has decided (and settled) the latest closed bar."""
        for _ in range(max_bars):
            if until():
                return
            wait_for(lambda: last_decided(journal) == self.latest_closed() or proc.proc.poll() is not None,
                     "the runner to decide the latest bar", None)
            if proc.proc.poll() is not None or until():
                return
            from toolkit.emulator.testing import step_clock

            step_clock(self.emu.url, 60 * hours)
        raise AssertionError(f"no stop condition within {max_bars} steps:\n{proc.logs()}")


def check_books(venue: Venue, journal_path: Path) -> dict[str, Any]:
    """Assert no duplicate order, no lost fill, journal position == exchange balance; return figures."""
    from runner.journal import Journal

    j = Journal(journal_path)
    try:
        orders = venue.client.fetch_orders("BTC/USDT")
        cids = [o["clientOrderId"] for o in orders]
        assert len(cids) == len(set(cids)), f"duplicate client order ids on the exchange: {cids}"
        journaled = {o["client_order_id"]: o for o in j.orders()}
        assert set(cids) <= set(journaled), "an order on the exchange the journal does not know"
        for o in orders:  # the journal knows each order's final state
            assert journaled[o["clientOrderId"]]["state"] == o["status"], (o, journaled[o["clientOrderId"]])
        placed = {k for k, o in journaled.items() if o["state"] != "not_placed"}
        assert placed == set(cids)
        trades = venue.client.fetch_my_trades("BTC/USDT", since=0, limit=1000)
        fills = j.fills()
        assert sorted(str(t["id"]) for t in trades) == sorted(f["trade_id"] for f in fills), "lost or extra fills"
        assert all(f["deployment"] == "btc" for f in fills)
        pos = j.position("btc", "BTC", "USDT")
        balance = venue.client.fetch_balance()
        base = j.baseline()
        assert Decimal(str(balance["BTC"]["total"])) == base.get("BTC", Decimal(0)) + pos.base
        assert abs(Decimal(str(balance["USDT"]["total"])) - (base["USDT"] + pos.quote_flow)) <= Decimal("1e-8")
        return {"orders": len(cids), "fills": len(fills), "position": pos.base}
    finally:
        j.close()


PREFORK_SERVER = Path(__file__).with_name("prefork_server.py")


class _ForkedProc:
    """The ``Popen``-like face of a runner forked by :class:`Prefork` (``poll``, ``wait``, ``kill``)."""

    def __init__(self, server: Prefork, pid: int) -> None:
        self.server, self.pid = server, pid

    @property
    def returncode(self) -> int | None:
        return self.server.status(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float = PROCESS_TIMEOUT_S) -> int:
        return self.server.wait(self.pid, timeout)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkedRunner(RunnerProcess):
    """A real ``runner start`` process forked from a warm :class:`Prefork` server (same face as RunnerProcess)."""

    def __init__(self, server: Prefork, config: Path, env: dict[str, str], log_dir: Path,
                 name: str = "runner") -> None:
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        self.proc = _ForkedProc(server, server.fork(["start", "--config", str(config)], env, self.out, self.err))  # type: ignore[assignment]


class Prefork:
    """A pre-forked runner server (``prefork_server.py``): imported and warm once, a forked child per runner.

    Every child still running at :meth:`close` is SIGKILLed and reaped by the server, which then exits.
    """

    def __init__(self, env: dict[str, str], log_dir: Path, warm: tuple[str, str, str] | None = (MODEL, "paper",
                                                                                                  "BTC/USDT")) -> None:
        import threading

        self._cond = threading.Condition()
        self._started: list[int] = []
        self._exits: dict[int, int] = {}
        self._ready: int | None = None
        self.log = log_dir / "prefork.err"
        argv = [sys.executable, str(PREFORK_SERVER), *(["--warm", *warm] if warm else [])]
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self._reader = threading.Thread(target=self._read, name="prefork-reader", daemon=True)
        self._reader.start()
        try:
            with self._cond:
                if not self._cond.wait_for(lambda: self._ready is not None or self.proc.poll() is not None,
                                           PROCESS_TIMEOUT_S):
                    raise AssertionError("the prefork server did not get ready")
            if self._ready is None:
                raise AssertionError(f"the prefork server exited with {self.proc.wait()}:\n{self.log.read_text()}")
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        import json

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            doc = json.loads(line)
            with self._cond:
                if "ready" in doc:
                    self._ready = int(doc["ready"])
                elif "started" in doc:
                    self._started.append(int(doc["started"]))
                elif "exited" in doc:
                    self._exits[int(doc["exited"])] = int(doc["status"])
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def fork(self, argv: list[str], env: dict[str, str], out: Path, err: Path) -> int:
        """Fork a child that runs ``runner <argv>`` with ``env``; return its pid."""
        import json

        assert self.proc.stdin is not None
        with self._cond:
            n = len(self._started)
            self.proc.stdin.write((json.dumps({"op": "start", "argv": argv, "env": env, "out": str(out),
                                               "err": str(err)}) + "\n").encode())
            self.proc.stdin.flush()
            if not self._cond.wait_for(lambda: len(self._started) > n or self.proc.poll() is not None,
                                       PROCESS_TIMEOUT_S) or len(self._started) <= n:
                raise AssertionError(f"the prefork server did not fork:\n{self.log.read_text()}")
            return self._started[n]

    def status(self, pid: int) -> int | None:
        with self._cond:
            return self._exits.get(pid)

    def wait(self, pid: int, timeout: float = PROCESS_TIMEOUT_S) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: pid in self._exits, timeout):
                raise subprocess.TimeoutExpired(f"forked runner {pid}", timeout)
            return self._exits[pid]

    def close(self) -> None:
        """SIGKILL the children still running, stop the server, check it exited cleanly."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=PROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=PROCESS_TIMEOUT_S)
        self._reader.join(timeout=PROCESS_TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        with self._cond:
            alive = [p for p in self._started if p not in self._exits]
        assert self.proc.returncode == 0 and not alive, (self.proc.returncode, alive, self.log.read_text())

    def __enter__(self) -> Prefork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

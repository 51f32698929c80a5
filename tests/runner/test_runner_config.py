"""The runner's config (unknown keys named, ranges, distinct symbols), its journal (migrations, a crash
inside a transaction leaves the previous state) and the installed command's exit statuses on bad input."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from runner_support import PROCESS_TIMEOUT_S, RUNNER, write_config

from runner.config import load_config
from runner.journal import MIGRATIONS, Journal
from toolkit.errors import ConfigurationError

URL = "http://127.0.0.1:9"


def _cfg(tmp_path: Path, **overrides: object) -> Path:
    return write_config(tmp_path / "runner.toml", URL, tmp_path / "journal.sqlite", **overrides)


def test_a_valid_config_loads_with_the_journal_beside_it(tmp_path: Path) -> None:
    path = _cfg(tmp_path)
    text = path.read_text().replace(str(tmp_path / "journal.sqlite"), "journal.sqlite")
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.journal == (tmp_path / "journal.sqlite").resolve()
    assert cfg.deployments[0].stage == "paper" and cfg.deployments[0].base == "BTC"
    assert len(cfg.sha256()) == 64


@pytest.mark.parametrize("edit, field", [
    (("[risk]", "[risk]\nmax_leverage = 3"), "risk.max_leverage"),                       # unknown key, named
    (('alias = "paper"', 'alias = "candidate"'), "deployments[0].alias"),
    (('symbol = "BTC/USDT"', 'symbol = "btcusdt"'), "deployments[0].symbol"),
    (("capital = 20000.0", "capital = -1.0"), "deployments[0].capital"),
    (("daily_loss_limit = 5000.0", "daily_loss_limit = nan"), "risk.daily_loss_limit"),
    (('rate_limit = false', 'rate_limit = false\nsandbox = true'), "exchange.sandbox"),   # two venues
    (("journal =", "journl ="), "journl"),
])
def test_bad_config_names_the_field(tmp_path: Path, edit: tuple[str, str], field: str) -> None:
    path = _cfg(tmp_path)
    path.write_text(path.read_text().replace(*edit, 1))
    with pytest.raises(ConfigurationError) as err:
        load_config(path)
    assert err.value.field == field


def test_two_deployments_on_one_symbol_are_refused(tmp_path: Path) -> None:
    path = _cfg(tmp_path)
    block = path.read_text().split("[[deployments]]")[1].replace('name = "btc"', 'name = "btc2"')
    path.write_text(path.read_text() + "\n[[deployments]]" + block)
    with pytest.raises(ConfigurationError) as err:
        load_config(path)
    assert err.value.field == "deployments[1].symbol"


def test_credentials_come_from_the_environment_only(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path))
    with pytest.raises(ConfigurationError) as err:
        cfg.exchange.exchange_config({})
    assert err.value.field == "environment TOOLKIT_EXCHANGE_API_KEY"
    ex = cfg.exchange.exchange_config({"TOOLKIT_EXCHANGE_API_KEY": "k-123", "TOOLKIT_EXCHANGE_SECRET": "s-456"})
    assert ex.secret is not None and ex.secret.get_secret_value() == "s-456"
    assert "s-456" not in repr(ex) and "k-123" not in repr(ex) and ex.options["recvWindow"] == 60_000


@pytest.mark.parametrize("args, env, code, needle", [
    (["start", "--config", "{cfg}"], {"TOOLKIT_EXCHANGE_API_KEY": ""}, 2, "environment TOOLKIT_EXCHANGE_API_KEY"),
    (["status", "--config", "{bad}"], {}, 2, "risk.max_leverage"),
])
def test_the_installed_command_exits_non_zero_with_one_line(tmp_path: Path, args: list[str], env: dict[str, str],
                                                            code: int, needle: str) -> None:
    cfg = _cfg(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("[risk]", "[risk]\nmax_leverage = 3"))
    argv = [a.format(dir=tmp_path, cfg=cfg, bad=bad) for a in args]
    environ = {**os.environ, "TOOLKIT_EXCHANGE_API_KEY": "", "TOOLKIT_EXCHANGE_SECRET": "", **env}
    done = subprocess.run([RUNNER, *argv], env=environ, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == code, done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "journal.sqlite").exists()  # refused before anything was written


def test_journal_schema_is_versioned_and_migrates(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    assert j.schema_version == len(MIGRATIONS)
    assert j.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    j.close()
    with pytest.raises(ConfigurationError, match="newer code") as err:
        Journal(tmp_path / "j.sqlite")
    assert err.value.field == "journal"


def test_a_crash_inside_a_journal_write_leaves_the_previous_state(tmp_path: Path) -> None:
    """A real process SIGKILLed inside the fills transaction, after its first insert: nothing of it remains."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    fill = {"symbol": "BTC/USDT", "trade_id": "1", "exchange_order_id": "9", "client_order_id": "btc-1-0",
            "deployment": "btc", "side": "buy", "price": "60000", "amount": "0.1", "cost": "6000", "fee": "0.0001",
            "fee_asset": "BTC", "at": 1, "recorded_at": 1}
    assert j.record_fills([fill], watermark=("fills_since:BTC/USDT", 1)) == 1
    j.close()
    code = ("import sys\nfrom runner.journal import Journal\nj = Journal(sys.argv[1])\n"
            "f = dict(symbol='BTC/USDT', exchange_order_id='9', client_order_id='btc-1-0', deployment='btc', "
            "side='sell', price='61000', amount='0.05', cost='3050', fee='3.05', fee_asset='USDT', at=2, "
            "recorded_at=2)\n"
            "j.record_fills([dict(f, trade_id='2'), dict(f, trade_id='3')], watermark=('fills_since:BTC/USDT', 2))\n")
    env = {**os.environ, "RUNNER_FAILPOINTS": "fills_tx:1"}
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                          timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == -signal.SIGKILL
    j = Journal(path)
    try:
        assert [f["trade_id"] for f in j.fills()] == ["1"]
        assert j.get_meta("fills_since:BTC/USDT") == "1"
        pos = j.position("btc", "BTC", "USDT")
        assert str(pos.base) == "0.0999" and str(pos.quote_flow) == "-6000"
    finally:
        j.close()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_write_without_fsync_is_kept_through_a_kill_and_leaves_the_next_one_durable(tmp_path: Path) -> None:
    """``tx(durable=False)`` (synchronous NORMAL) only for its own transaction; a real process SIGKILLed
    right after such a commit keeps it (only a power loss may take it, until the next durable commit)."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    level = lambda: j.con.execute("PRAGMA synchronous").fetchone()[0]  # noqa: E731  (2: FULL, 1: NORMAL)
    with j.tx(durable=False) as con:
        con.execute("INSERT INTO meta VALUES ('a', '1')")
    assert level() == 1
    with j.tx() as con:
        con.execute("INSERT INTO meta VALUES ('b', '2')")
    assert level() == 2
    with pytest.raises(ZeroDivisionError), j.tx(durable=False) as con:
        con.execute("INSERT INTO meta VALUES ('c', '3')")
        1 / 0  # noqa: B018
    j.set_meta("d", "4")
    assert level() == 2 and j.get_meta("c") is None
    j.close()
    code = ("import os, signal, sys\nfrom runner.journal import Journal\nj = Journal(sys.argv[1])\n"
            "j.set_meta('heartbeat', 'x', durable=False)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == -signal.SIGKILL, done.stderr
    j = Journal(path)
    try:
        assert [j.get_meta(k) for k in ("a", "b", "d", "heartbeat")] == ["1", "2", "4", "x"]
    finally:
        j.close()


def test_two_processes_opening_a_new_journal_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    code = "import sys\nfrom runner.journal import Journal\nJournal(sys.argv[1]).close()\n"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=PROCESS_TIMEOUT_S)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert Journal(path).schema_version == len(MIGRATIONS)


@pytest.mark.parametrize("overrides, field", [
    ({"protective_stop": {"stop_pct": 5.0, "limit_pct": 4.0}}, "protective_stop.limit_pct"),
    ({"rollback": {"action": "ignore"}}, "rollback.action"),
    ({"rollback": {"max_drawdown_pct": 0.0}}, "rollback.max_drawdown_pct"),
    ({"metrics": {"port": 70000}}, "metrics.port"),
    ({"poll": {"alias_check_seconds": 0}}, "poll.alias_check_seconds"),
    ({"exchange": {"clock_max_age_ms": 20_000}}, "exchange.clock_max_age_ms"),           # above 10 s
    ({"exchange": {"recv_window_ms": 1_000, "clock_max_age_ms": 600}}, "exchange.clock_max_age_ms"),  # > half
    ({"alerts": {"sinks": "log"}}, "alerts.sinks"),
    ({"alerts": {"cut_size_factor": 1.5}}, "alerts.cut_size_factor"),
    ({"alerts": {"widen_band_factor": 1.0}}, "alerts.widen_band_factor"),
    ({"alerts": {"webhook_url_env": "http://hook"}}, "alerts.webhook_url_env"),
])
def test_bad_rollback_stop_and_metrics_settings_name_the_field(tmp_path: Path, overrides: dict[str, object],
                                                               field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_config(_cfg(tmp_path, **overrides))
    assert err.value.field == field


def test_alert_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, alerts={"rules": "my_rules.toml", "file": "out/alerts.jsonl"}))
    assert cfg.alerts is not None
    assert cfg.alerts.rules == (tmp_path / "my_rules.toml").resolve()
    assert cfg.alerts.file == (tmp_path / "out" / "alerts.jsonl").resolve()
    assert cfg.alerts.runbooks.name == "runbooks" and (cfg.alerts.runbooks / "stale_feed.md").is_file()
    (tmp_path / "none").mkdir()
    assert load_config(_cfg(tmp_path / "none")).alerts is None  # no [alerts]: no alerting

"""Alert rules by market context, on the regime map of the bundled Binance BTC/USDT minute bars: the same
raw value gets different severities at a busy and at a quiet hour, de-risking comes before paging,
storms are folded, bad rules files are named, runbooks exist and name only commands that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml

from toolkit.data import load_bars
from toolkit.errors import ConfigurationError
from toolkit.ops.alerts import RULES, AlertRouter, load_rules, prometheus_rules
from toolkit.ops.regimes import RegimeMap, regime_map

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "runner" / "alert_rules.toml"
RUNBOOKS = ROOT / "runner" / "runbooks"
BUSY = pd.Timestamp("2024-05-07 14:20", tz="UTC")   # a Tuesday, US open: bucket 38, high volume
QUIET = pd.Timestamp("2024-05-11 03:20", tz="UTC")  # a Saturday night: bucket 123, low volume


@pytest.fixture(scope="module")
def regimes() -> RegimeMap:
    return regime_map(load_bars("BTC/USDT", "1m", "2024-01-01", "2024-04-30"), "BTC/USDT")


def router(regimes: RegimeMap) -> AlertRouter:
    return AlertRouter(load_rules(RULES_FILE), regimes, RUNBOOKS)


def test_the_same_spread_pages_at_a_busy_hour_and_is_only_logged_at_night(regimes: RegimeMap) -> None:
    assert regimes.regime(38) == "high" and regimes.regime(123) == "low"
    busy_limit = 1.5 * regimes.quantile("spread_bps", 38, 0.99)
    quiet_limit = 1.5 * regimes.quantile("spread_bps", 123, 0.99)
    value = 1.1 * max(busy_limit, quiet_limit)
    busy = router(regimes).check("spread", "d1", value, BUSY)
    quiet = router(regimes).check("spread", "d1", value, QUIET)
    assert busy is not None and quiet is not None
    assert (busy.severity, busy.action, busy.bucket, busy.regime) == ("page", "none", 38, "high")
    assert (quiet.severity, quiet.action, quiet.bucket, quiet.regime) == ("log", "widen_limits", 123, "low")
    assert busy.threshold == pytest.approx(busy_limit) and quiet.threshold == pytest.approx(quiet_limit)
    assert "p99 of spread_bps in bucket 38" in busy.threshold_source
    assert busy.runbook == str(RUNBOOKS / "spread.md")


def test_a_value_normal_at_one_hour_fires_at_another(regimes: RegimeMap) -> None:
    busy_p99 = regimes.quantile("slippage_bps", 38, 0.99)
    quiet_p99 = regimes.quantile("slippage_bps", 123, 0.99)
    lo, hi = sorted([3 * busy_p99, 3 * quiet_p99])
    assert hi > lo * 1.05  # the buckets' thresholds differ
    value = (lo + hi) / 2
    fired = {t: router(regimes).check("slippage", "d1", value, t) for t in (BUSY, QUIET)}
    assert sum(a is not None for a in fired.values()) == 1
    assert fired[BUSY if 3 * busy_p99 < value else QUIET] is not None


def test_low_liquidity_de_risks_first_then_pages(regimes: RegimeMap) -> None:
    r = router(regimes)
    first = r.check("order_reject_rate", "d1", 0.5, QUIET)
    assert first is not None and (first.severity, first.action) == ("ticket", "cut_size")
    assert r.check("order_reject_rate", "d1", 0.5, QUIET + pd.Timedelta(minutes=5)) is None  # folded
    again = r.check("order_reject_rate", "d1", 0.5, QUIET + pd.Timedelta(minutes=20))
    assert again is not None and (again.severity, again.action) == ("page", "none") and again.suppressed == 1
    busy = router(regimes).check("order_reject_rate", "d1", 0.5, BUSY)
    assert busy is not None and (busy.severity, busy.action) == ("page", "none")


def test_an_alert_storm_is_deduplicated_and_rate_limited(regimes: RegimeMap) -> None:
    r = router(regimes)
    sent = [a for k in range(600) if (a := r.check("stale_feed", "d1", 400.0, BUSY + pd.Timedelta(seconds=k)))]
    assert len(sent) == 1  # ten minutes of a stale feed, evaluated every second: one page
    later = r.check("stale_feed", "d1", 400.0, BUSY + pd.Timedelta(minutes=16))
    assert later is not None and later.suppressed == 599
    assert r.check("stale_feed", "d2", 400.0, BUSY + pd.Timedelta(minutes=16)) is not None  # another deployment

    r = router(regimes)  # version_switch: no dedup window, at most 3 an hour
    sent = [a for k in range(10) if (a := r.check("version_switch", "d1", 1.0, BUSY + pd.Timedelta(minutes=k)))]
    assert len(sent) == 4 and sent[-1].message.startswith("alert storm: version_switch fired 4 times")
    assert r.check("version_switch", "d1", 1.0, BUSY + pd.Timedelta(minutes=70)) is not None  # the hour passed


def test_nothing_fires_below_the_threshold_or_on_nan(regimes: RegimeMap) -> None:
    r = router(regimes)
    assert r.check("heartbeat_missing", "d1", 299.0, BUSY) is None
    assert r.check("heartbeat_missing", "d1", float("nan"), BUSY) is None
    alert = r.check("heartbeat_missing", "d1", 301.0, BUSY)
    assert alert is not None and alert.to_dict()["threshold_source"] == "absolute"
    with pytest.raises(ConfigurationError, match="rule: expected one of"):
        r.check("cpu", "d1", 1.0, BUSY)
    with pytest.raises(ConfigurationError, match="regime map"):
        AlertRouter(load_rules(RULES_FILE), None, RUNBOOKS).check("spread", "d1", 99.0, BUSY)


@pytest.mark.parametrize(("edit", "field"), [
    (lambda t: t + '\n[rules.cpu]\nthreshold = 1.0\n', "rules.cpu"),
    (lambda t: t.replace("[rules.spread]", "[rules.spread_old]"), "rules.spread_old"),
    (lambda t: t.replace("bucket_quantile = 0.99\nbucket_factor = 1.5", "bucket_quantile = 0.75"), "rules.spread"),
    (lambda t: t.replace("threshold = 180.0", "threshold = 180.0\nbucket_metric = \"spread_bps\""), "rules.stale_feed"),
    (lambda t: t.replace('low = "page", normal = "page", high = "page" }   # no bars',
                         'low = "page", normal = "page" }   # no bars'), "rules.stale_feed"),
    (lambda t: t.replace("dedup_seconds = 900", "dedup_seconds = -1"), "rules.stale_feed.dedup_seconds"),
    (lambda t: t.replace("dedup_seconds = 900", "dedup_secs = 900"), "rules.stale_feed.dedup_secs"),
])
def test_a_bad_rules_file_names_the_field(tmp_path: Path, edit: object, field: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(edit(RULES_FILE.read_text()))  # type: ignore[operator]
    with pytest.raises(ConfigurationError) as err:
        load_rules(path)
    assert err.value.field == field


def _commands(app: typer.Typer) -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    out: dict[str, set[str]] = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out[name] = {o for p in cmd.params for o in getattr(p, "opts", [])}
    return out


def test_every_rule_has_a_runbook_naming_only_commands_that_exist() -> None:
    from runner.cli import app as runner_app
    from toolkit.cli import _register
    from toolkit.cli import app as toolkit_app

    _register()
    known = {"runner": _commands(runner_app), "toolkit": _commands(toolkit_app)}
    assert {p.stem for p in RUNBOOKS.glob("*.md")} == set(RULES)
    checked = 0
    for path in sorted(RUNBOOKS.glob("*.md")):
        text = path.read_text()
        for section in ("## What it means", "## First checks", "## When to roll back", "## When to flatten"):
            assert section in text, f"{path.name}: no {section!r}"
        for snippet in re.findall(r"`((?:runner|toolkit) [^`]+)`", text):
            program, sub, *rest = snippet.split()
            assert sub in known[program], f"{path.name}: `{snippet}`: no command {program} {sub}"
            for opt in (w for w in rest if w.startswith("--")):
                assert opt in known[program][sub], f"{path.name}: `{snippet}`: {program} {sub} has no {opt}"
            checked += 1
    assert checked >= 20


def test_prometheus_rules_come_from_the_same_file() -> None:
    doc = yaml.safe_load(yaml.safe_dump(prometheus_rules(load_rules(RULES_FILE), for_minutes=2)))
    rules = doc["groups"][0]["rules"]
    assert {r["labels"]["rule"] for r in rules} == set(RULES)
    spread = {r["labels"]["severity"]: r for r in rules if r["labels"]["rule"] == "spread"}
    assert set(spread) == {"page", "ticket"}  # `log` is not sent to Alertmanager
    assert 'regime=~"high"' in spread["page"]["expr"] and 'regime=~"normal"' in spread["ticket"]["expr"]
    assert all(r["for"] == "2m" and r["annotations"]["runbook"].endswith(".md") for r in rules)

"""Alert rules that know the market context: typed rules, thresholds by hour-of-week bucket, severity by
liquidity regime, de-risking before paging, deduplication and storm limits.

A rules file (TOML; the shipped one is ``runner/alert_rules.toml``) lists one ``[rules.<name>]`` table per
rule of :data:`RULES`. A rule compares one measured value with a threshold that is either **absolute**
(``threshold = 0.05``) or a **quantile of the current bucket** of the version's regime map
(``bucket_quantile = 0.99`` of ``bucket_metric = "spread_bps"``, times ``bucket_factor``), in a direction
(``above`` or ``below``). Its severity depends on the regime of the hour it fires in
(``severity = {low = "ticket", normal = "page", high = "page"}``: ``page`` wakes someone, ``ticket`` is
read in the morning, ``log`` is only recorded), and a rule may de-risk first in the low-liquidity regime
(``low_liquidity_action = "cut_size"`` or ``"widen_limits"``, sent at the regime's severity) and pages
when it fires again within three dedup windows.

:class:`AlertRouter` turns measurements into alerts: a rule firing again for the same deployment within
``dedup_seconds`` is counted, not re-sent; more than ``max_per_hour`` alerts of one rule in an hour
become one storm alert. Every alert carries the rule, the measured value, the threshold used, how it
was derived, the bucket and regime it came from, the severity, the action and the runbook to open.

:func:`prometheus_rules` writes the same rules as Prometheus alerting rules for desks that run
Alertmanager: the runner exports each rule's measured value and current threshold as gauges
(``desk_alert_value`` and ``desk_alert_threshold``), so a bucket-relative threshold is the same
comparison there.
"""

from __future__ import annotations

import math
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pydantic

from toolkit.errors import ConfigurationError, from_pydantic
from toolkit.ops.regimes import METRICS, QUANTILES, REGIMES, RegimeMap, bucket_of

__all__ = ["RULES", "Alert", "AlertRouter", "AlertRule", "AlertRules", "load_rules", "prometheus_rules"]

#: every rule the runner measures: what its value is
RULES = {
    "stale_feed": "seconds since the last closed bar arrived",
    "missed_bars": "closed bars missing from the feed in the last hour",
    "reconciliation_drift": "journal position minus exchange balance, in % of the deployment's capital",
    "order_reject_rate": "share of the last hour's orders the exchange rejected",
    "slippage": "a fill's slippage against its arrival price, bps",
    "spread": "the spread estimate of the last closed bar, bps",
    "drawdown": "the deployment's drawdown, % of its capital",
    "decision_latency": "bar close to order sent, ms",
    "exchange_error_rate": "share of the last hour's exchange calls that failed",
    "heartbeat_missing": "seconds since the runner's last completed cycle",
    "version_switch": "1 when the version traded changed (promotion, rollback, alias moved by hand)",
}
Severity = Literal["page", "ticket", "log"]
_PAGE: Severity = "page"


class AlertRule(pydantic.BaseModel):
    """One rule of the rules file (see the module docstring)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    threshold: float | None = pydantic.Field(None, description="absolute threshold")
    bucket_metric: str | None = pydantic.Field(None, description="regime-map metric of the bucket threshold")
    bucket_quantile: float | None = pydantic.Field(None, description="quantile of the current bucket")
    bucket_factor: float = pydantic.Field(1.0, gt=0, description="multiplier of the bucket quantile")
    direction: Literal["above", "below"] = "above"
    severity: dict[str, Severity] = pydantic.Field(
        default_factory=lambda: dict.fromkeys(REGIMES, _PAGE),
        description="severity by the regime of the hour it fires in")
    low_liquidity_action: Literal["none", "cut_size", "widen_limits"] = "none"
    dedup_seconds: float = pydantic.Field(900.0, ge=0)
    max_per_hour: int = pydantic.Field(6, ge=1)
    runbook: str | None = pydantic.Field(None, description="runbook path (default runner/runbooks/<rule>.md)")

    @pydantic.model_validator(mode="after")
    def _one_threshold(self) -> AlertRule:
        bucket = self.bucket_metric is not None or self.bucket_quantile is not None
        if (self.threshold is None) == (not bucket):
            raise ValueError("give either threshold or bucket_metric with bucket_quantile")
        if bucket:
            if self.bucket_metric not in METRICS:
                raise ValueError(f"bucket_metric must be one of {list(METRICS)}, not {self.bucket_metric!r}")
            if self.bucket_quantile not in QUANTILES:
                raise ValueError(f"bucket_quantile must be one of {list(QUANTILES)}, not {self.bucket_quantile!r}")
        if set(self.severity) != set(REGIMES):
            raise ValueError(f"severity must name every regime {list(REGIMES)}, found {sorted(self.severity)}")
        return self


class AlertRules(pydantic.BaseModel):
    """The rules file: ``[rules.<name>]`` for every rule of :data:`RULES`."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    rules: dict[str, AlertRule]

    @pydantic.field_validator("rules")
    @classmethod
    def _known(cls, rules: dict[str, AlertRule]) -> dict[str, AlertRule]:
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ConfigurationError(f"rules.{unknown[0]}", f"one of the rules {sorted(RULES)}", unknown[0])
        missing = sorted(set(RULES) - set(rules))
        if missing:
            raise ConfigurationError(f"rules.{missing[0]}", "a table for every rule", "nothing")
        return rules


def load_rules(path: str | Path) -> AlertRules:
    """Read a rules file; raise ``ConfigurationError`` naming the field (``rules.spread.bucket_quantile``)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError("rules file", "an existing TOML file", str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"rules file {p}", "valid TOML", str(exc)) from None
    try:
        return AlertRules.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, root=f"rules file {p}") from None


@dataclass(frozen=True)
class Alert:
    """An alert as sinks receive it (``to_dict`` is its JSON)."""

    rule: str
    deployment: str
    at: pd.Timestamp
    value: float
    threshold: float
    threshold_source: str
    bucket: int
    regime: str
    severity: Severity
    action: str
    runbook: str
    message: str
    suppressed: int = 0  # repeats of this alert folded into it since the last one sent

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "deployment": self.deployment, "at": self.at.isoformat(), "value": self.value,
                "threshold": self.threshold, "threshold_source": self.threshold_source, "bucket": self.bucket,
                "regime": self.regime, "severity": self.severity, "action": self.action, "runbook": self.runbook,
                "message": self.message, "suppressed": self.suppressed}


def _threshold(rule: AlertRule, bucket: int, regimes: RegimeMap | None) -> tuple[float, str]:
    if rule.threshold is not None:
        return float(rule.threshold), "absolute"
    assert rule.bucket_metric is not None and rule.bucket_quantile is not None
    if regimes is None:
        raise ConfigurationError("regime map", "the version's regime map (its gates run's regime_map.json)",
                                 "none, and a rule's threshold is a bucket quantile")
    q = regimes.quantile(rule.bucket_metric, bucket, rule.bucket_quantile)
    source = f"{rule.bucket_factor:g} × p{rule.bucket_quantile * 100:g} of {rule.bucket_metric} in bucket {bucket}"
    return q * rule.bucket_factor, source


@dataclass
class AlertRouter:
    """Evaluate measurements against the rules; deduplicate and rate-limit what is sent.

    ``regimes`` is the version's regime map (needed by bucket-relative rules); ``runbooks`` the folder
    holding ``<rule>.md``.
    """

    rules: AlertRules
    regimes: RegimeMap | None
    runbooks: Path
    _last_sent: dict[tuple[str, str], pd.Timestamp] = field(default_factory=dict)
    _folded: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _sent_times: dict[str, list[pd.Timestamp]] = field(default_factory=lambda: defaultdict(list))
    _storming: set[str] = field(default_factory=set)

    def threshold(self, rule_name: str, at: pd.Timestamp) -> tuple[float, str, int]:
        """Return the threshold ``rule_name`` uses at ``at``, how it was derived, and the bucket of ``at``."""
        if rule_name not in RULES:
            raise ConfigurationError("rule", f"one of {sorted(RULES)}", rule_name)
        ts = pd.Timestamp(at)
        bucket = int(bucket_of(ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")))
        threshold, source = _threshold(self.rules.rules[rule_name], bucket, self.regimes)
        return threshold, source, bucket

    def check(self, rule_name: str, deployment: str, value: float, at: pd.Timestamp) -> Alert | None:
        """Return the alert to send for one measurement, or None (below threshold, or folded into an earlier one).

        A NaN threshold (a bucket with too few bars) never fires, and says so nowhere: the regime map
        refuses to be built with thin buckets, so it does not happen with a stored map.
        """
        if rule_name not in RULES:
            raise ConfigurationError("rule", f"one of {sorted(RULES)}", rule_name)
        rule = self.rules.rules[rule_name]
        ts = pd.Timestamp(at)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        bucket = int(bucket_of(ts))
        threshold, source = _threshold(rule, bucket, self.regimes)
        fired = value > threshold if rule.direction == "above" else value < threshold
        if not fired or math.isnan(threshold) or math.isnan(value):
            return None
        key = (rule_name, deployment)
        last = self._last_sent.get(key)
        if last is not None and (ts - last).total_seconds() < rule.dedup_seconds:
            self._folded[key] += 1
            return None
        window = [t for t in self._sent_times[rule_name] if (ts - t).total_seconds() < 3600]
        self._sent_times[rule_name] = window
        if len(window) >= rule.max_per_hour:
            self._folded[key] += 1
            if rule_name in self._storming:
                return None
            self._storming.add(rule_name)
            storm = True
        else:
            self._storming.discard(rule_name)
            storm = False
        regime = self.regimes.regime(bucket) if self.regimes is not None else "normal"
        severity = rule.severity[regime]
        action = rule.low_liquidity_action if regime == REGIMES[0] else "none"
        if action != "none" and last is not None and (ts - last).total_seconds() < 3 * max(rule.dedup_seconds, 1.0):
            severity, action = "page", "none"  # de-risked already and it fires again: someone must look
        count = len(window) + 1
        self._last_sent[key] = ts
        self._sent_times[rule_name].append(ts)
        folded, self._folded[key] = self._folded[key], 0
        word = "above" if rule.direction == "above" else "below"
        message = (f"{rule_name} on {deployment}: {value:.6g} {word} {threshold:.6g} ({source}; "
                   f"{regime}-liquidity hour, bucket {bucket})")
        if storm:
            message = f"alert storm: {rule_name} fired {count} times within an hour; " + message
        return Alert(rule=rule_name, deployment=deployment, at=ts, value=float(value), threshold=float(threshold),
                     threshold_source=source, bucket=bucket, regime=regime, severity=severity, action=action,
                     runbook=str(Path(rule.runbook) if rule.runbook else self.runbooks / f"{rule_name}.md"),
                     message=message, suppressed=folded)


def prometheus_rules(rules: AlertRules, for_minutes: int = 0) -> dict[str, Any]:
    """Return the rules as a Prometheus rule file (a dict to dump as YAML), one alert per rule and severity.

    The runner exports ``desk_alert_value{rule,deployment}``, ``desk_alert_threshold{rule,deployment}``
    (the bucket's threshold at the current hour) and ``desk_regime{deployment,regime}`` (1 for the current
    regime), so each severity's alert holds only in the regimes that give it.
    """
    out = []
    for name, rule in sorted(rules.rules.items()):
        op = ">" if rule.direction == "above" else "<"
        for severity in ("page", "ticket"):
            regimes = sorted(r for r, s in rule.severity.items() if s == severity)
            if not regimes:
                continue
            expr = (f'desk_alert_value{{rule="{name}"}} {op} on(rule, deployment) '
                    f'desk_alert_threshold{{rule="{name}"}} and on(deployment) '
                    f'desk_regime{{regime=~"{"|".join(regimes)}"}} == 1')
            entry: dict[str, Any] = {
                "alert": f"desk_{name}_{severity}", "expr": expr,
                "labels": {"severity": severity, "rule": name},
                "annotations": {"summary": f"{name}: {RULES[name]}",
                                "runbook": rule.runbook or f"runner/runbooks/{name}.md"}}
            if for_minutes:
                entry["for"] = f"{int(for_minutes)}m"
            out.append(entry)
    return {"groups": [{"name": "desk-runner", "rules": out}]}

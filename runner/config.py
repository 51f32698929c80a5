"""The runner's typed configuration: one TOML file, frozen pydantic models, unknown keys are errors.

::

    journal = "journal.sqlite"            # relative paths are the config file's directory

    [exchange]
    id = "binance"
    url = "http://127.0.0.1:8899"         # a Binance-compatible venue (the emulator); or sandbox = true
    api_key_env = "TOOLKIT_EXCHANGE_API_KEY"
    secret_env = "TOOLKIT_EXCHANGE_SECRET"

    [risk]
    max_position_notional = 50000.0       # quote currency, per deployment
    max_order_notional = 25000.0
    price_band_pct = 2.0                  # arrival price vs the last trade (the decision bar's close)
    daily_loss_limit = 2500.0             # quote currency, per deployment and UTC day

    [poll]
    cycle_seconds = 5.0
    alias_check_seconds = 30.0            # how often the aliases are re-checked (wall seconds)

    [rollback]                            # automatic rollback (optional table; these are the defaults)
    enabled = true
    max_rejections = 3                    # rejected orders of one version
    unresolved_cycles = 20                # cycles a blocking reconciliation incident may stay open
    action = "flatten"                    # or "handover": the restored version takes the position
    # max_drawdown_pct = 10.0             # tighter than the stage policy's capital.max_drawdown_pct

    [protective_stop]                     # optional: an exchange-side STOP_LOSS_LIMIT under the position
    stop_pct = 5.0                        # stop price: this far under the last close
    limit_pct = 6.0                       # limit price: this far under it (>= stop_pct)

    [metrics]                             # optional: /healthz and /metrics on 127.0.0.1
    port = 9108                           # 0: any free port (written to the journal and the start event)

    [alerts]                              # optional: the alert rules evaluated every cycle (none without it)
    rules = "alert_rules.toml"            # default: the shipped runner/alert_rules.toml
    file = "alerts.jsonl"                 # optional FileSink (the log sink is always on)
    webhook_url_env = "DESK_ALERT_WEBHOOK" # optional WebhookSink: the URL is read from this variable
    webhook_min_severity = "page"
    cut_size_factor = 0.5                 # cut_size: targets scaled by this until the alert's incident is resolved
    widen_band_factor = 2.0               # widen_limits: price_band_pct multiplied by this, likewise

    [[deployments]]
    name = "btc-ma"
    model = "ma_cross.BTC-USDT.1h"
    alias = "paper"                       # or "champion"
    symbol = "BTC/USDT"
    capital = 10000.0

Credentials are never in the file: the environment variables named by
``exchange.api_key_env`` / ``exchange.secret_env`` hold them
(``toolkit.exchange.ExchangeConfig.from_env``). One exchange account per runner;
deployments trade distinct symbols.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pydantic

from toolkit.canonical import canonical_sha256
from toolkit.errors import ConfigurationError, from_pydantic

if TYPE_CHECKING:
    from toolkit.exchange import ExchangeConfig

__all__ = ["ALIAS_STAGE", "AlertSettings", "Deployment", "ExchangeSettings", "MetricsSettings", "PollSettings",
           "ProtectiveStop", "RiskLimits", "RollbackSettings", "RunnerConfig", "load_config"]

#: alias -> the promotion stage that moves it (``toolkit.registry.adapter.STAGE_ALIAS`` inverted)
ALIAS_STAGE = {"paper": "paper", "champion": "live"}


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class Deployment(_Frozen):
    """One model traded on one symbol with a capital allocation."""

    name: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,11}$",
                               description="short id (1-12 of a-z 0-9 _ -): prefixes the client order ids")
    model: str = pydantic.Field(min_length=1, max_length=120)
    alias: Literal["paper", "champion"]
    symbol: str = pydantic.Field(pattern=r"^[A-Z0-9]{2,10}/[A-Z0-9]{2,10}$")
    capital: float = pydantic.Field(gt=0.0, allow_inf_nan=False, description="allocation in the quote currency")

    @property
    def stage(self) -> str:
        return ALIAS_STAGE[self.alias]

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]


class ExchangeSettings(_Frozen):
    """The one exchange account: where it is and which environment variables hold its credentials."""

    id: str = "binance"
    url: str | None = pydantic.Field(None, pattern=r"^https?://")
    sandbox: bool = False
    api_key_env: str = pydantic.Field("TOOLKIT_EXCHANGE_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    secret_env: str = pydantic.Field("TOOLKIT_EXCHANGE_SECRET", pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_ms: int = pydantic.Field(10_000, gt=0)
    recv_window_ms: int = pydantic.Field(60_000, gt=0, le=60_000)
    clock_max_age_ms: int = pydantic.Field(
        1_000, ge=0, le=10_000, description="an order is signed with the exchange's time read at most this many ms "
        "of wall time before, else it is read again, and priced (its arrival price) from a klines read at most "
        "this old, else from ticker/price (0: both read before every order; lower it for a replay venue running "
        "faster than wall speed)")
    rate_limit: bool = True

    @pydantic.model_validator(mode="after")
    def _one_venue(self) -> ExchangeSettings:
        if self.url is not None and self.sandbox:
            raise ConfigurationError("exchange.sandbox", "false when exchange.url is set (one venue)", True)
        if 2 * self.clock_max_age_ms > self.recv_window_ms:
            raise ConfigurationError("exchange.clock_max_age_ms", f"at most half of exchange.recv_window_ms "
                                     f"({self.recv_window_ms // 2})", self.clock_max_age_ms)
        return self

    def exchange_config(self, environ: Mapping[str, str] | None = None) -> ExchangeConfig:
        """Return the adapter's config with the credentials read from the environment.

        Raises
        ------
        ConfigurationError
            A credential variable is unset or empty (the field names the variable, never its value).
        """
        from toolkit.exchange import ExchangeConfig

        env = os.environ if environ is None else environ
        for var in (self.api_key_env, self.secret_env):
            if not env.get(var):
                raise ConfigurationError(f"environment {var}", "the exchange credential in this variable", "unset")
        return ExchangeConfig.from_env(env, api_key_var=self.api_key_env, secret_var=self.secret_env,
                                       exchange=self.id, url=self.url, sandbox=self.sandbox,
                                       timeout_ms=self.timeout_ms, rate_limit=self.rate_limit,
                                       options={"recvWindow": self.recv_window_ms})


class RiskLimits(_Frozen):
    """Pre-trade limits, per deployment (amounts in the quote currency)."""

    max_position_notional: float = pydantic.Field(gt=0.0, allow_inf_nan=False)
    max_order_notional: float = pydantic.Field(gt=0.0, allow_inf_nan=False)
    price_band_pct: float = pydantic.Field(2.0, gt=0.0, le=50.0, description="arrival price vs last trade, %")
    daily_loss_limit: float = pydantic.Field(gt=0.0, allow_inf_nan=False)
    max_legs_per_bar: int = pydantic.Field(3, ge=1, le=10, description="orders one decision may take to fill")
    balance_tolerance: float = pydantic.Field(
        1e-8, ge=0.0, description="largest difference between the journal's and the exchange's balance of an asset")
    not_found_lookups: int = pydantic.Field(
        3, ge=1, le=20, description="lookups (one per cycle) of an order the exchange does not know before it is "
        "taken as never placed (Binance's order index can lag)")
    stale_after_bars: int = pydantic.Field(2, ge=1, description="bars without a new closed bar: the feed is stale")
    late_after_pct: float = pydantic.Field(
        50.0, gt=0.0, le=100.0, description="a decision later than this share of a bar after the close is late")


class PollSettings(_Frozen):
    """How often the loop runs (seconds of wall time)."""

    cycle_seconds: float = pydantic.Field(5.0, gt=0.0, le=3600.0)
    retry_initial_seconds: float = pydantic.Field(1.0, gt=0.0)
    retry_max_seconds: float = pydantic.Field(60.0, gt=0.0)
    alias_check_seconds: float = pydantic.Field(30.0, gt=0.0, le=3600.0,
                                                description="wall seconds between two re-checks of the aliases")


class RollbackSettings(_Frozen):
    """When the runner rolls a deployment's alias back by itself, and what it does with the position."""

    enabled: bool = True
    max_drawdown_pct: float | None = pydantic.Field(
        None, gt=0.0, le=100.0, allow_inf_nan=False,
        description="a tighter drawdown limit than the stage policy's capital.max_drawdown_pct (never looser)")
    max_rejections: int = pydantic.Field(3, ge=1, description="rejected orders of one version")
    unresolved_cycles: int = pydantic.Field(
        20, ge=1, description="cycles a blocking reconciliation incident may stay open")
    action: Literal["flatten", "handover"] = "flatten"


class ProtectiveStop(_Frozen):
    """An exchange-side ``STOP_LOSS_LIMIT`` sell under a long position, so a dead runner still has a floor."""

    stop_pct: float = pydantic.Field(gt=0.0, lt=50.0, allow_inf_nan=False)
    limit_pct: float = pydantic.Field(gt=0.0, lt=60.0, allow_inf_nan=False)

    @pydantic.model_validator(mode="after")
    def _limit_under_stop(self) -> ProtectiveStop:
        if self.limit_pct < self.stop_pct:
            raise ConfigurationError("protective_stop.limit_pct", f"at least stop_pct ({self.stop_pct})",
                                     self.limit_pct)
        return self


class MetricsSettings(_Frozen):
    """``/healthz`` and ``/metrics`` (Prometheus) on 127.0.0.1; no port: off, 0: any free port."""

    port: int | None = pydantic.Field(None, ge=0, le=65535)


_RUNNER_DIR = Path(__file__).resolve().parent


class AlertSettings(_Frozen):
    """The alert rules the loop evaluates, where alerts go, and how far a de-risk action goes."""

    rules: Path = pydantic.Field(_RUNNER_DIR / "alert_rules.toml", description="the rules file (toolkit.ops.alerts)")
    runbooks: Path = pydantic.Field(_RUNNER_DIR / "runbooks", description="the folder of <rule>.md")
    file: Path | None = pydantic.Field(None, description="a JSON-lines file every alert is appended to")
    webhook_url_env: str | None = pydantic.Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$",
                                                 description="the environment variable holding the webhook URL")
    webhook_min_severity: Literal["page", "ticket", "log"] = "ticket"
    cut_size_factor: float = pydantic.Field(0.5, gt=0.0, lt=1.0, description="cut_size: targets scaled by this")
    widen_band_factor: float = pydantic.Field(2.0, gt=1.0, le=10.0,
                                              description="widen_limits: the price band × this")


class RunnerConfig(_Frozen):
    """The whole runner: journal, exchange, risk, poll intervals, deployments."""

    journal: Path
    exchange: ExchangeSettings
    risk: RiskLimits
    poll: PollSettings = PollSettings()
    rollback: RollbackSettings = RollbackSettings()
    protective_stop: ProtectiveStop | None = None
    metrics: MetricsSettings = MetricsSettings()
    alerts: AlertSettings | None = None
    deployments: tuple[Deployment, ...] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _distinct(self) -> RunnerConfig:
        for key in ("name", "symbol"):
            seen: set[str] = set()
            for i, d in enumerate(self.deployments):
                value = getattr(d, key)
                if value in seen:
                    raise ConfigurationError(f"deployments[{i}].{key}",
                                             f"a {key} no other deployment has (one account, distinct symbols)",
                                             value)
                seen.add(value)
        return self

    def sha256(self) -> str:
        """Return the config's identity (no credentials are in it)."""
        return canonical_sha256(self.model_dump(mode="json"), ascii_only=True)

    def deployment(self, name: str) -> Deployment:
        for d in self.deployments:
            if d.name == name:
                return d
        raise ConfigurationError("deployment", f"one of {[d.name for d in self.deployments]}", name)


def load_config(path: str | Path) -> RunnerConfig:
    """Read and validate a runner TOML file; relative ``journal`` paths are the file's directory.

    Raises
    ------
    ConfigurationError
        The file is missing or not TOML, a key is unknown (named), a value is out of range.
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError("config", "a readable runner TOML file", str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError("config", "a readable runner TOML file", f"{p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError("config", "valid TOML", f"{p}: {exc}") from None
    journal = doc.get("journal")
    if isinstance(journal, str) and journal and not Path(journal).is_absolute():
        doc["journal"] = str((p.parent / journal).resolve())
    alerts = doc.get("alerts")
    if isinstance(alerts, dict):
        for key in ("rules", "runbooks", "file"):
            value = alerts.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                alerts[key] = str((p.parent / value).resolve())
    try:
        return RunnerConfig(**doc)
    except pydantic.ValidationError as exc:
        raise _field_error(exc) from None


def _field_error(exc: pydantic.ValidationError) -> ConfigurationError:
    """Return the first validation error as a ``ConfigurationError`` named ``deployments[0].symbol`` style."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    err = (unknown or errors)[0]  # an unknown key first: a misspelt key also shows up as a missing one
    found = from_pydantic(exc)
    if isinstance((err.get("ctx") or {}).get("error"), ConfigurationError):
        return found  # a validator's own error already names its field
    if unknown:
        found = ConfigurationError("", "no such key (unknown keys are errors)", err.get("input"))
    parts: list[str] = []
    for part in err["loc"]:
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    return ConfigurationError(".".join(parts) or "config", found.expected, found.found)

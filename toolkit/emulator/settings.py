"""The emulator's configuration: one frozen, validated object; bad input names its field."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from toolkit import config
from toolkit.emulator.defaults import DEFAULT_API_KEY, DEFAULT_API_SECRET
from toolkit.emulator.matching import MatchingParams
from toolkit.errors import ConfigurationError, from_pydantic

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "EmulatorConfig", "default_state_path"]

#: What each validated field expects, for the ConfigurationError's message (pydantic's text otherwise).
_EXPECTED = {
    "port": "a TCP port, an integer 0..65535 (0: any free port)",
    "speed": "a finite number >= 0 (replay minutes per wall minute; 0 = stepped)",
    "symbols": "at least one symbol such as BTC/USDT, none empty",
    "balances": "ASSET=AMOUNT with a finite amount >= 0",
}


def default_state_path() -> Path:
    """Return the default state file (next to the user's bar cache)."""
    return config.cache_dir().parent / "emulator" / "state.sqlite"


class EmulatorConfig(BaseModel):
    """Everything the emulator needs; frozen, unknown keys rejected, the secret shown as ***.

    Build it with :meth:`build` to get a ``ConfigurationError`` naming the bad field
    instead of pydantic's ``ValidationError``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    host: str = "127.0.0.1"
    port: int = Field(8899, ge=0, le=65535)
    speed: float = Field(60.0, ge=0)
    symbols: tuple[str, ...] = ("BTC/USDT",)
    start: str | None = None
    balances: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": Decimal(100000)})
    api_key: str = DEFAULT_API_KEY
    api_secret: SecretStr = SecretStr(DEFAULT_API_SECRET)
    state_path: Path | None = None
    faults_path: Path | None = None
    store_roots: tuple[Path, ...] | None = None
    matching: MatchingParams = MatchingParams()
    #: enforce Binance's request-weight and order-count limits (off for throughput benchmarks)
    rate_limits: bool = True
    allow_remote: bool = False
    log_requests: bool = False

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(s.strip() for s in value)
        if not cleaned or any(not s for s in cleaned):
            raise ValueError("at least one symbol such as BTC/USDT, none empty")
        return cleaned

    @field_validator("balances")
    @classmethod
    def _balances(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for asset, amount in value.items():
            if not asset.isalnum() or not amount.is_finite() or amount < 0:
                raise ValueError(f"ASSET=AMOUNT with a finite amount >= 0 (found {asset}={amount})")
        return value

    @classmethod
    def build(cls, **values: Any) -> EmulatorConfig:
        """Return a validated config; raise ``ConfigurationError`` naming the first bad field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            error = from_pydantic(exc)
            found = error.found
            if isinstance(found, float) and not math.isfinite(found):
                found = str(found)
            raise ConfigurationError(error.field, _EXPECTED.get(error.field, error.expected), found) from exc

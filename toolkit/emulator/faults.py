"""Fault injection: rules from a JSON file or the admin endpoint, every injection counted.

A faults file is ``{"seed": 7, "faults": [rule, ...]}``; a rule is::

    {"kind": "rate_limit", "path": "/api/v3/order", "method": "POST",
     "skip": 2, "times": 1, "probability": 1.0, "retry_after": 3}

Kinds and their own fields:

=================  ===========================================================================
latency            ``ms`` added before the request is handled
http_5xx           answer ``status`` (default 503) with an HTML body (ccxt: ExchangeNotAvailable)
rate_limit         429 with code -1003 and ``Retry-After: retry_after`` (ccxt: DDoSProtection)
ban                418 with code -1003 and ``Retry-After`` (ccxt: DDoSProtection)
timeout            hold the request ``seconds`` (default 30), then close without an answer
drop_after_order   accept a new order, then close the connection without an answer
clock_skew         shift the server's clock by ``skew_ms`` (signature timestamps, /time)
maintenance        503 "System is under maintenance." (ccxt: OnMaintenance); use ``start``/``end``
stale_klines       serve market data as of ``lag_minutes`` earlier
=================  ===========================================================================

Common fields: ``path`` and ``method`` (shell patterns, default ``*``; admin paths are never
faulted), ``skip`` (let the first N matching requests pass), ``times`` (inject at most N
times; null = always), ``probability`` (seeded), ``start``/``end`` (a window on the replay
clock, ISO time or epoch ms).
"""

from __future__ import annotations

import fnmatch
import json
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.clock import timestamp_to_ms
from toolkit.errors import ConfigurationError, from_pydantic

__all__ = ["FaultInjector", "FaultRule", "load_faults", "parse_rules"]

Kind = Literal["latency", "http_5xx", "rate_limit", "ban", "timeout", "drop_after_order",
               "clock_skew", "maintenance", "stale_klines"]
#: Kinds that answer the request instead of letting it through.
TERMINAL = {"http_5xx", "rate_limit", "ban", "timeout", "maintenance"}


class FaultRule(BaseModel):
    """One fault rule (see the module docstring for the fields)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    path: str = "*"
    method: str = "*"
    skip: int = Field(0, ge=0)
    times: int | None = Field(None, ge=0)
    probability: float = Field(1.0, ge=0, le=1)
    start: int | None = None
    end: int | None = None
    ms: int = Field(0, ge=0)
    status: int = Field(503, ge=500, le=599)
    retry_after: int = Field(1, ge=0)
    seconds: float = Field(30.0, ge=0)
    skew_ms: int = 0
    lag_minutes: int = Field(0, ge=0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: object) -> int | None:
        if value is None or isinstance(value, int):
            return value
        return timestamp_to_ms(pd.Timestamp(str(value)))


class FaultInjector:
    """Decide per request which rules fire, and count them (thread-safe)."""

    def __init__(self, rules: list[FaultRule] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.rules: list[FaultRule] = []
        self._seen: list[int] = []
        self._fired: list[int] = []
        self.counts: Counter[str] = Counter()
        self.add(rules or [])

    def add(self, rules: list[FaultRule]) -> None:
        """Append rules."""
        with self._lock:
            self.rules.extend(rules)
            self._seen.extend(0 for _ in rules)
            self._fired.extend(0 for _ in rules)

    def clear(self, reset_counts: bool = False) -> None:
        """Remove every rule (the totals are kept unless ``reset_counts``)."""
        with self._lock:
            self.rules, self._seen, self._fired = [], [], []
            if reset_counts:
                self.counts.clear()

    def fire(self, method: str, path: str, replay_ms: int, kinds: set[str] | None = None) -> list[FaultRule]:
        """Return the rules that fire for this request, counting each.

        Modifiers (latency, clock_skew, stale_klines) all fire; of the terminal
        kinds only the first that fires is returned.
        """
        out: list[FaultRule] = []
        with self._lock:
            terminal = False
            for i, rule in enumerate(self.rules):
                if kinds is not None and rule.kind not in kinds:
                    continue
                if kinds is None and rule.kind == "drop_after_order":
                    continue
                if not (fnmatch.fnmatchcase(path, rule.path)
                        and fnmatch.fnmatchcase(method, rule.method.upper())):
                    continue
                if (rule.start is not None and replay_ms < rule.start) or \
                        (rule.end is not None and replay_ms >= rule.end):
                    continue
                if rule.kind in TERMINAL and terminal:
                    continue
                self._seen[i] += 1
                if self._seen[i] <= rule.skip:
                    continue
                if rule.times is not None and self._fired[i] >= rule.times:
                    continue
                if rule.probability < 1 and self._rng.random() >= rule.probability:
                    continue
                self._fired[i] += 1
                self.counts[rule.kind] += 1
                terminal = terminal or rule.kind in TERMINAL
                out.append(rule)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Return the rules with their counters and the totals per kind."""
        with self._lock:
            return {
                "rules": [r.model_dump() | {"seen": s, "fired": f}
                          for r, s, f in zip(self.rules, self._seen, self._fired, strict=True)],
                "counts": dict(self.counts),
                "total": sum(self.counts.values()),
            }


def parse_rules(doc: object, source: str) -> tuple[list[FaultRule], int]:
    """Parse ``{"seed": .., "faults": [...]}`` (or a bare list) into rules and a seed."""
    if isinstance(doc, list):
        doc = {"faults": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("faults", []), list):
        raise ConfigurationError(source, 'a JSON object {"seed": 0, "faults": [rule, ...]}',
                                 type(doc).__name__)
    rules = []
    for i, raw in enumerate(doc.get("faults", [])):
        try:
            rules.append(FaultRule.model_validate(raw))
        except ValidationError as exc:
            raise from_pydantic(exc, f"{source} faults[{i}]") from exc
    return rules, int(doc.get("seed", 0))


def load_faults(path: str | Path) -> FaultInjector:
    """Read a faults file and return a ready injector.

    Raises
    ------
    ConfigurationError
        When the file is missing, not JSON, or a rule has an unknown kind or field.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigurationError("faults", "an existing JSON file", str(p))
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigurationError("faults", "valid JSON", f"{p}: {exc}") from exc
    rules, seed = parse_rules(doc, str(p))
    return FaultInjector(rules, seed=seed)

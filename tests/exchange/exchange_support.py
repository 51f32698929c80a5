"""Helpers of the exchange tests (imported as ``from exchange_support import …``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.emulator import Emulator
from toolkit.emulator.testing import admin
from toolkit.exchange import RetryEvent, RetryPolicy

START = "2024-03-01"
#: Retries without real waiting: tests inject a sleep that only records.
FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, jitter=0)
#: One attempt only: shows the converted class of a single failure.
ONCE = RetryPolicy(attempts=1)


@dataclass
class Probe:
    """What the sessions of a test asked for: sleeps (never slept) and retry events."""

    sleeps: list[float] = field(default_factory=list)
    events: list[RetryEvent] = field(default_factory=list)


def faults(emu: Emulator, *rules: dict[str, Any]) -> None:
    """Replace the emulator's fault rules."""
    admin(emu.url, "POST", "/admin/faults", {"faults": list(rules), "replace": True})


def fault_counts(emu: Emulator) -> dict[str, int]:
    """Return how many times each fault kind fired."""
    return admin(emu.url, "GET", "/admin/faults")["counts"]  # type: ignore[no-any-return]


def requests_seen(emu: Emulator, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
    """Return the API requests the emulator answered (oldest first), optionally filtered."""
    rows: list[dict[str, Any]] = admin(emu.url, "GET", "/admin/requests")
    return [r for r in rows if (method is None or r["method"] == method) and (path is None or r["path"] == path)]


def forget_requests(emu: Emulator) -> None:
    admin(emu.url, "DELETE", "/admin/requests")

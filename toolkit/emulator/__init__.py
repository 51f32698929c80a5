"""A Binance-compatible spot exchange on loopback, replaying real 1m bars.

Used as the paper-trading venue, as the target of the ccxt-based fetcher in
tests, and as the fault injector of the reliability tests. Start it with
``toolkit emulator serve`` or, in Python, ``Emulator(EmulatorConfig(...)).start()``.

The names below are imported on first use (PEP 562): mounting ``toolkit emulator`` on the
``toolkit`` entry point imports neither the server nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.lazy import lazy_attributes

if TYPE_CHECKING:
    from toolkit.emulator.faults import FaultInjector, FaultRule, load_faults
    from toolkit.emulator.matching import MatchingParams
    from toolkit.emulator.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator, EmulatorConfig

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "Emulator",
    "EmulatorConfig",
    "FaultInjector",
    "FaultRule",
    "MatchingParams",
    "load_faults",
]

_HOME = {"FaultInjector": "faults", "FaultRule": "faults", "load_faults": "faults", "MatchingParams": "matching",
         "DEFAULT_API_KEY": "server", "DEFAULT_API_SECRET": "server", "Emulator": "server",
         "EmulatorConfig": "server"}


__getattr__ = lazy_attributes(__name__, _HOME)

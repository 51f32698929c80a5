"""A Binance-compatible spot exchange on loopback, replaying real 1m bars.

Used as the paper-trading venue, as the target of the ccxt-based fetcher in
tests, and as the fault injector of the reliability tests. Start it with
``toolkit emulator serve`` or, in Python, ``Emulator(EmulatorConfig(...)).start()``.
"""

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

"""What the benchmarks share: timing a call repeatedly and naming the machine (no paths)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Return the wall-clock seconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def machine() -> str:
    """Return ``<arch>, <n> cores, Python <version>``."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"

"""One gate's outcome and the small helpers every gate uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["GateResult", "finite", "fmt", "gate"]


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome."""

    name: str
    category: str
    passed: bool
    inputs: dict[str, Any]
    threshold: dict[str, Any]
    explanation: str
    enforced: bool = True  # False: advisory at this stage (shown, not voting)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "passed": bool(self.passed),
            "enforced": bool(self.enforced),
            "inputs": self.inputs,
            "threshold": self.threshold,
            "explanation": self.explanation,
        }


def finite(x: float | None) -> bool:
    """Return True for a finite int or float (False for None, NaN, inf)."""
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def fmt(x: float | None, spec: str = ".3f") -> str:
    """Format a finite number with ``spec``; anything else reads ``undefined``."""
    return format(x, spec) if finite(x) else "undefined"


def gate(
    name: str, cat: str, passed: bool, inputs: dict[str, Any], threshold: dict[str, Any], why: str
) -> GateResult:
    """Build a ``GateResult`` (``passed`` coerced to bool)."""
    return GateResult(name, cat, bool(passed), inputs, threshold, why)

"""Named crash points for the crash-safety tests: ``RUNNER_FAILPOINTS=after_send:2`` SIGKILLs the runner
the second time it passes ``after_send``.

Unset (production), :func:`hit` is a dictionary lookup and nothing else. The points sit
where a crash matters: inside journal transactions (``intent_tx``, ``order_update_tx``,
``fills_tx``, ``decision_tx``), between journaling an intent and sending it
(``before_send``), between the exchange accepting an order and the journal recording it
(``after_send``), and after an order's outcome is journaled (``after_order``).
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "POINTS", "hit"]

ENV = "RUNNER_FAILPOINTS"
POINTS = ("decision_tx", "intent_tx", "before_send", "after_send", "order_update_tx", "after_order", "fills_tx")

_armed: dict[str, int] = {}
for _item in filter(None, os.environ.get(ENV, "").split(",")):
    _name, _, _count = _item.partition(":")
    if _name not in POINTS:
        raise SystemExit(f"{ENV}: expected points among {POINTS}, found {_name!r}")
    _armed[_name] = int(_count or 1)


def hit(name: str) -> None:
    """Count a pass through the point ``name``; SIGKILL this process on the armed pass."""
    if name in _armed:
        _armed[name] -= 1
        if _armed[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

"""Named crash points for the crash-safety tests: ``RUNNER_FAILPOINTS=after_send:2`` SIGKILLs the runner
the second time it passes ``after_send``.

Unset (production), :func:`hit` is a dictionary lookup and nothing else. The points sit
where a crash matters: inside journal transactions (``intent_tx``, ``order_update_tx``,
``fills_tx``, ``decision_tx``), between journaling an intent and sending it
(``before_send``), between the exchange accepting an order and the journal recording it
(``after_send``), and after an order's outcome is journaled (``after_order``); in the
handover to a new version (``handover_begin`` before anything is settled, ``handover_settled``
once the old version's orders are settled and its decision superseded, ``switch_tx`` inside the
transaction that journals the switch, ``handover_done`` after it); in the automatic rollback
(``rollback_begin`` before the registry's rollback, ``rollback_done`` after it); in the kill
switch and flattening (``kill_begin``, ``flatten_begin``, ``flatten_leg`` after each flatten
order, ``kill_flattened`` before the kill is journaled as done, ``kill_done`` after).

A point may be scoped: ``kill.after_send:1`` fires only at an ``after_send`` passed while the
kill switch flattens (:func:`scope`; scopes ``handover``, ``rollback``, ``flatten``, ``kill``, and ``stop``
while a protective stop is placed).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ENV", "POINTS", "SCOPES", "arm", "hit", "scope"]

ENV = "RUNNER_FAILPOINTS"
POINTS = ("decision_tx", "intent_tx", "before_send", "after_send", "order_update_tx", "after_order", "fills_tx",
          "handover_begin", "handover_settled", "switch_tx", "handover_done", "rollback_begin", "rollback_done",
          "kill_begin", "flatten_begin", "flatten_leg", "kill_flattened", "kill_done")
SCOPES = ("handover", "rollback", "flatten", "kill", "stop")

_armed: dict[str, int] = {}
_scopes: list[str] = []


def arm(spec: str) -> None:
    """Arm the points of ``spec`` (``name[:count],…``, the format of ``RUNNER_FAILPOINTS``), disarming the others.

    Called at import with the environment's value; a pre-forked runner calls it again in the child.
    """
    armed: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, count = item.partition(":")
        where, _, point = name.rpartition(".")
        if point not in POINTS or (where and where not in SCOPES):
            raise SystemExit(f"{ENV}: expected points among {POINTS}, optionally scoped by one of {SCOPES} "
                             f"(scope.point), found {name!r}")
        if count and (not count.isdigit() or int(count) < 1):
            raise SystemExit(f"{ENV}: expected a pass count of at least 1 after {name}:, found {count!r}")
        armed[name] = int(count or 1)
    _armed.clear()
    _armed.update(armed)
    _scopes.clear()


arm(os.environ.get(ENV, "") or "")


@contextmanager
def scope(name: str) -> Iterator[None]:
    """Count the points passed inside the block under ``name`` too (``name.point``)."""
    _scopes.append(name)
    try:
        yield
    finally:
        _scopes.pop()


def hit(name: str) -> None:
    """Count a pass through the point ``name``; SIGKILL this process on the armed pass."""
    if not _armed:
        return
    for key in (name, *(f"{s}.{name}" for s in _scopes)):
        if key in _armed:
            _armed[key] -= 1
            if _armed[key] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

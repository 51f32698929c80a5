"""Retries of idempotent exchange calls, through tenacity: the only retry logic of the toolkit.

Policy (:class:`RetryPolicy`): only temporary errors are retried, with exponential
backoff plus jitter under a cap, a bounded number of attempts and an optional overall
deadline. A rate limit (429) or ban (418) waits at least the server's ``Retry-After``;
a ``Retry-After`` longer than ``max_retry_after`` fails at once with the rate-limit
error instead of sleeping. A timestamp refusal (``InvalidNonce``) resyncs the clock once
(``load_time_difference()``) and calls once more. Never use this for order placement
or cancellation (see ``toolkit.exchange.orders``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any
from tenacity import wait_exponential_jitter as backoff_with_jitter
from tenacity.stop import stop_base

from toolkit.exchange.convert import exchange_call
from toolkit.exchange.errors import ClockOutOfSync, ExchangeCallError, ExchangeTemporaryError, RateLimited

__all__ = ["Retrier", "RetryEvent", "RetryPolicy"]

logger = logging.getLogger("toolkit.exchange")

T = TypeVar("T")


class RetryPolicy(pydantic.BaseModel):
    """How idempotent calls are retried (all times in seconds).

    Parameters
    ----------
    attempts
        Attempts per call, the first included (1 = no retry).
    initial_wait, max_wait
        The first backoff wait, doubled after each failure, and its cap (jitter included).
    jitter
        Up to this many seconds added at random to each backoff wait.
    max_retry_after
        A ``Retry-After`` longer than this is not waited for: the call fails at once.
    deadline
        Stop retrying once this long has passed since the first attempt (None: attempts only).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    attempts: int = pydantic.Field(5, ge=1)
    initial_wait: float = pydantic.Field(0.5, ge=0)
    max_wait: float = pydantic.Field(8.0, gt=0)
    jitter: float = pydantic.Field(0.25, ge=0)
    max_retry_after: float = pydantic.Field(60.0, ge=0)
    deadline: float | None = pydantic.Field(None, gt=0)


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen: after ``attempt`` failed with ``error``, wait ``wait`` seconds."""

    operation: str
    attempt: int
    error: ExchangeCallError
    wait: float


class Retrier:
    """Call idempotent exchange operations, converting ccxt errors and retrying temporary ones.

    Parameters
    ----------
    policy
        Attempts, backoff, ``Retry-After`` ceiling and deadline.
    sleep, monotonic
        How to wait and how to read elapsed time (inject fakes in tests).
    on_retry
        Called with a :class:`RetryEvent` before each retry (also logged on ``toolkit.exchange``).
    """

    def __init__(self, policy: RetryPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_retry: Callable[[RetryEvent], None] | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.monotonic = monotonic
        self.on_retry = on_retry
        #: Retries made so far by this retrier (clock resyncs included).
        self.retries = 0

    def __repr__(self) -> str:
        return f"Retrier({self.policy!r})"

    def call(self, fn: Callable[[], T], operation: str, *, client: Any = None, exchange: str | None = None,
             resync_clock: bool = True) -> T:
        """Return ``fn()``; convert ccxt errors at the call and retry what is temporary.

        Parameters
        ----------
        fn
            The idempotent call, without arguments.
        operation
            What it does, for messages and the retry log (``fetch_ohlcv BTC/USDT 1m``).
        client
            The ccxt client ``fn`` uses: its ``Retry-After`` headers are read and its
            ``load_time_difference()`` resyncs the clock after ``InvalidNonce``.
        exchange
            The exchange id for messages when there is no client.
        resync_clock
            On ``InvalidNonce``, resync the client's clock once and call once more.

        Raises
        ------
        ExchangeTemporaryError
            Every attempt failed temporarily (``attempts`` says how many were made), or the
            server asked to wait longer than ``max_retry_after`` (:class:`RateLimited`).
        ClockOutOfSync
            A timestamp refusal that one resync of the clock did not cure.
        ExchangeCallError
            Any other failure, converted at once and never retried.
        """
        tries = 0

        def attempt() -> T:
            nonlocal tries
            tries += 1
            with exchange_call(operation, idempotent=True, client=client, exchange=exchange):
                return fn()

        try:
            try:
                return self._retrying(operation)(attempt)
            except ClockOutOfSync as exc:
                if not resync_clock or client is None or not hasattr(client, "load_time_difference"):
                    raise
                self._notify(RetryEvent(operation, tries, exc, 0.0))
                self.call(client.load_time_difference, "load_time_difference", client=client, exchange=exchange,
                          resync_clock=False)
                return self._retrying(operation)(attempt)
        except ExchangeCallError as exc:
            if exc.operation == operation:  # not a failed resync, which counts its own attempts
                exc.attempts = tries
            raise

    def _retrying(self, operation: str) -> Retrying:
        policy = self.policy
        backoff = backoff_with_jitter(multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.jitter)
        started = self.monotonic()

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                return exc.retry_after <= policy.max_retry_after
            return isinstance(exc, ExchangeTemporaryError)

        def wait(state: RetryCallState) -> float:
            seconds = float(backoff(state))
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                seconds = max(seconds, exc.retry_after)  # the server's word beats the backoff cap
            return seconds

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if not isinstance(exc, ExchangeCallError):  # unreachable: only converted errors are retried
                return
            seconds = state.next_action.sleep if state.next_action is not None else 0.0
            self._notify(RetryEvent(operation, state.attempt_number, exc, float(seconds)))

        return Retrying(sleep=self.sleep, stop=stop_any(stop_after_attempt(policy.attempts),
                                                         _PastDeadline(policy.deadline, started, self.monotonic)),
                        wait=wait, retry=retry_if_exception(retryable), before_sleep=before_sleep, reraise=True)

    def _notify(self, event: RetryEvent) -> None:
        self.retries += 1
        logger.warning("%s: attempt %d failed (%s), retrying in %.2f s", event.operation, event.attempt,
                       event.error.ccxt_class or type(event.error).__name__, event.wait)
        if self.on_retry is not None:
            self.on_retry(event)


class _PastDeadline(stop_base):
    """Stop once ``deadline`` seconds have passed since ``started`` on the injected clock."""

    def __init__(self, deadline: float | None, started: float, monotonic: Callable[[], float]) -> None:
        self.deadline, self.started, self.monotonic = deadline, started, monotonic

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.deadline is not None and self.monotonic() - self.started >= self.deadline

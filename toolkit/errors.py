"""Errors of the toolkit, named for the reaction they call for.

Every error carries typed fields and a message that says what was expected and
what was found. The CLI maps each class to an exit code in one place
(``toolkit.cli``); nothing else decides how an error is reported.

Exit codes: 1 ``ToolkitError`` (and a check that ran and failed), 2 ``ConfigurationError``,
3 ``DataError``, 4 ``RegistryError``, 5 ``GateFailed``, 6 ``PromotionRefused``,
7 ``ExecutionFailed``, 11 ``AccessDenied``, 75 ``TemporaryError``; the exchange adapter adds 8 (rejected),
9 (operational: halt) and 10 (outcome unknown: reconcile) in ``toolkit.exchange.errors``;
130 is an interruption (Ctrl-C).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDenied",
    "ConfigurationError",
    "DataError",
    "DataQualityError",
    "ExecutionFailed",
    "GateFailed",
    "PromotionRefused",
    "RegistryError",
    "TemporaryError",
    "ToolkitError",
    "ValidationError",
    "from_pydantic",
    "interrupted",
]


class ToolkitError(Exception):
    """Base class: an operator-facing error with a clear message."""

    exit_code = 1


class ConfigurationError(ToolkitError):
    """A configuration or parameter is wrong: fix the input and run again."""

    exit_code = 2

    def __init__(self, field: str, expected: str, found: Any) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{field}: expected {expected}, found {found!r}")


class ValidationError(ConfigurationError):
    """A user-supplied value failed validation (an alias kept for readability)."""


class DataError(ToolkitError):
    """Market data is missing, unreadable or malformed: nothing was written."""

    exit_code = 3


class DataQualityError(DataError):
    """Data was read but fails the quality certificate's thresholds."""


class RegistryError(ToolkitError):
    """The MLflow registry is unreachable or in an unexpected state."""

    exit_code = 4


class AccessDenied(RegistryError):
    """The registry server refused this account the operation (HTTP 403): use an account that may, or ask for it."""

    exit_code = 11

    def __init__(self, what: str, user: str | None, message: str) -> None:
        self.what = what
        self.user = user
        who = user or "(none: MLFLOW_TRACKING_USERNAME unset)"
        super().__init__(f"the registry server refused {what} to account {who} (HTTP 403): {message}")


class GateFailed(ToolkitError):
    """A promotion gate failed: the version is not eligible."""

    exit_code = 5


class PromotionRefused(ToolkitError):
    """A promote or rollback was refused; the registry was left unchanged."""

    exit_code = 6


class TemporaryError(ToolkitError):
    """A transient failure (network, rate limit): retrying may succeed."""

    exit_code = 75


class ExecutionFailed(ToolkitError):
    """A notebook or subprocess failed; the message names the failing step."""

    exit_code = 7


def from_pydantic(exc: Any, prefix: str = "", known: Any = None, root: str = "config") -> ConfigurationError:
    """Return the ``ConfigurationError`` for the first error of a ``pydantic.ValidationError``.

    The field is ``prefix.loc`` (pydantic's location, ``[key]`` parts dropped; ``root`` when both
    are empty, i.e. a model-level check without a prefix); an unknown key
    says which keys are known (``known``, any iterable of names) or that unknown keys are errors;
    a missing key says it is required; a validator's own ``ConfigurationError`` is returned as
    raised (and an error with the same ``field/expected/found`` shape, such as a strategy's
    ``ParameterError``, converted); otherwise pydantic's message, lower-cased, is what was expected.
    """
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p != "[key]")
    field = ".".join(p for p in (prefix, loc) if p) or root
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigurationError):
        return cause
    if cause is not None and all(hasattr(cause, a) for a in ("field", "expected", "found")):
        return ConfigurationError(cause.field, cause.expected, cause.found)  # e.g. a strategy's ParameterError
    if err["type"] == "extra_forbidden":
        expected = (f"a known key: {sorted(known)}" if known is not None
                    else "no such key (unknown keys are errors)")
        return ConfigurationError(field, expected, err.get("input"))
    if err["type"] == "missing":
        return ConfigurationError(field, "a value (required)", "nothing")
    msg = str(cause) if cause is not None else str(err["msg"])
    return ConfigurationError(field, msg[:1].lower() + msg[1:], err.get("input"))


def interrupted(exc: BaseException) -> bool:
    """Return whether ``exc`` is a Ctrl-C, or an error a Ctrl-C caused on its way out.

    Python 3.11 reports a ``KeyboardInterrupt`` raised inside ``__set_name__`` while a class is created (a
    Ctrl-C during a module's import: ``import mlflow`` builds hundreds of classes) as ``RuntimeError: Error
    calling __set_name__ …``, its ``__cause__`` the interrupt: the command was interrupted all the same.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__
    return False

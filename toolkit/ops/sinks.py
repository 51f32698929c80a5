"""Where alerts go: the log, a JSON-lines file, a JSON webhook (Slack/Teams/PagerDuty bridges, Alertmanager's
webhook receiver format is not needed: each alert is posted as its own JSON object).

A sink never raises into the runner's loop: a webhook that fails after its retries is reported by
:meth:`WebhookSink.send` returning False (the runner then records it in its journal and the log sink
still has the alert). Secrets: an alert carries figures and names, never credentials; a webhook URL
with a token comes from the environment (``url_env``), not from the rules file.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from toolkit.errors import ConfigurationError
from toolkit.ops.alerts import Alert

__all__ = ["FileSink", "LogSink", "Sink", "WebhookSink"]

_log = logging.getLogger("toolkit.alerts")
_LEVELS = {"page": logging.CRITICAL, "ticket": logging.WARNING, "log": logging.INFO}


class Sink(Protocol):
    def send(self, alert: Alert) -> bool: ...


@dataclass(frozen=True)
class LogSink:
    """Log the alert as one JSON line at a level by severity (page: CRITICAL, ticket: WARNING, log: INFO)."""

    logger: logging.Logger = _log

    def send(self, alert: Alert) -> bool:
        self.logger.log(_LEVELS[alert.severity], json.dumps(alert.to_dict(), sort_keys=True))
        return True


@dataclass(frozen=True)
class FileSink:
    """Append the alert as one JSON line to ``path`` (flushed and fsynced: an alert is not lost in a crash)."""

    path: Path

    def send(self, alert: Alert) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(alert.to_dict(), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True


@dataclass(frozen=True)
class WebhookSink:
    """POST the alert as JSON to a URL read from the environment variable ``url_env``.

    ``min_severity`` leaves out lesser alerts (a pager receives pages only). Retries ``retries`` times
    on a connection error or a 5xx/429 with exponential backoff from ``backoff`` seconds; a 4xx other
    than 429 is not retried.
    """

    url_env: str
    min_severity: str = "ticket"
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.5

    def __post_init__(self) -> None:
        if self.min_severity not in _LEVELS:
            raise ConfigurationError("webhook.min_severity", f"one of {sorted(_LEVELS)}", self.min_severity)

    def url(self) -> str:
        url = os.environ.get(self.url_env, "")
        if not url.startswith(("http://", "https://")):
            shown = "nothing" if not url else "a value that is not an http(s) URL"
            raise ConfigurationError(f"${self.url_env}", "the webhook's http(s) URL", shown)  # never echo it
        return url

    def send(self, alert: Alert) -> bool:
        if _LEVELS[alert.severity] < _LEVELS[self.min_severity]:
            return True
        body = json.dumps(alert.to_dict(), sort_keys=True).encode()
        request = urllib.request.Request(self.url(), data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    _log.error("webhook refused the alert %s: HTTP %s", alert.rule, exc.code)
                    return False
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                _log.warning("webhook attempt %d for %s failed: %s", attempt + 1, alert.rule, type(exc).__name__)
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        _log.error("webhook gave up on the alert %s after %d attempts", alert.rule, self.retries + 1)
        return False

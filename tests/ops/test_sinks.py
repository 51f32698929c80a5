"""Alert sinks against real receivers: a JSON webhook served on loopback (retries on 5xx, no retry on 4xx,
nothing lost when it comes back), a JSON-lines file, the log; the webhook's secret URL never logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from ops_support import CANARY, Receiver

from toolkit.errors import ConfigurationError
from toolkit.ops.alerts import Alert
from toolkit.ops.sinks import FileSink, LogSink, WebhookSink


def _alert(severity: str = "page", rule: str = "stale_feed") -> Alert:
    return Alert(rule=rule, deployment="d1", at=pd.Timestamp("2024-05-11 03:20", tz="UTC"), value=400.0,
                 threshold=180.0, threshold_source="absolute", bucket=123, regime="low", severity=severity,  # type: ignore[arg-type]
                 action="none", runbook="runner/runbooks/stale_feed.md", message="stale_feed on d1")


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver()
    monkeypatch.setenv("DESK_ALERT_WEBHOOK", r.url)
    yield r
    r.close()


def test_the_webhook_receives_each_alert_as_json(receiver: Receiver) -> None:
    sink = WebhookSink("DESK_ALERT_WEBHOOK", backoff=0.01)
    assert sink.send(_alert()) and sink.send(_alert("ticket", "spread"))
    assert sink.send(_alert("log", "spread"))  # below min_severity: not sent, not an error
    assert [b["rule"] for b in receiver.bodies] == ["stale_feed", "spread"]
    assert receiver.bodies[0]["threshold"] == 180.0 and receiver.bodies[0]["bucket"] == 123
    assert receiver.paths[0] == f"/hook?token={CANARY}"


def test_the_webhook_retries_server_errors_and_not_refusals(receiver: Receiver,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    sink = WebhookSink("DESK_ALERT_WEBHOOK", backoff=0.01, retries=2)
    receiver.script = [503, 429]
    assert sink.send(_alert()) and len(receiver.bodies) == 1  # third attempt delivered
    receiver.script = [503, 503, 503]
    with caplog.at_level(logging.WARNING):
        assert not sink.send(_alert())
    receiver.script = [400]
    assert not sink.send(_alert()) and receiver.script == []  # one attempt only
    assert len(receiver.bodies) == 1
    assert CANARY not in caplog.text and "gave up" in caplog.text


def test_an_unreachable_webhook_fails_without_raising_or_leaking(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    r = Receiver()
    url = r.url
    r.close()  # nothing listens on that port any more
    monkeypatch.setenv("DESK_ALERT_WEBHOOK", url)
    with caplog.at_level(logging.WARNING):
        assert not WebhookSink("DESK_ALERT_WEBHOOK", backoff=0.01, retries=1, timeout=2.0).send(_alert())
    assert CANARY not in caplog.text and "attempt 2" in caplog.text


def test_a_missing_or_bad_webhook_url_is_named_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESK_ALERT_WEBHOOK", raising=False)
    with pytest.raises(ConfigurationError, match=r"\$DESK_ALERT_WEBHOOK: expected the webhook's http\(s\) URL"):
        WebhookSink("DESK_ALERT_WEBHOOK").send(_alert())
    monkeypatch.setenv("DESK_ALERT_WEBHOOK", f"ftp://x/{CANARY}")
    with pytest.raises(ConfigurationError) as err:
        WebhookSink("DESK_ALERT_WEBHOOK").send(_alert())
    assert CANARY not in str(err.value)
    with pytest.raises(ConfigurationError, match="min_severity"):
        WebhookSink("DESK_ALERT_WEBHOOK", min_severity="urgent")


def test_file_and_log_sinks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alerts" / "alerts.jsonl"
    sink = FileSink(path)
    assert sink.send(_alert()) and sink.send(_alert("ticket", "spread"))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["rule"] for x in lines] == ["stale_feed", "spread"] and lines[0]["at"] == "2024-05-11T03:20:00+00:00"
    with caplog.at_level(logging.INFO, logger="toolkit.alerts"):
        LogSink().send(_alert())
        LogSink().send(_alert("log", "spread"))
    levels = [(r.levelname, json.loads(r.getMessage())["rule"]) for r in caplog.records]
    assert levels == [("CRITICAL", "stale_feed"), ("INFO", "spread")]

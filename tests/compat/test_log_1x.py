"""balog 1.x's tests/unit/test_log.py, ported to pytest against today's API.

Deliberate differences (docs/migrating.md): events are schema 0.1.0 with 32-hex-digit ids and
metric values as the numbers given; a record's message is the log call's suffix, and
:class:`balog.EventFormatter` (not the record's message) gives the event's JSON; a raw event is
validated before a handler sends it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

import balog
from balog import FACILITY_VERSION, EventFormatter, get_logger
from balog.transports.memory import MemoryBroker, MemoryTransport

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
SEVERITIES = [
    ("debug", "debug"),
    ("info", "info"),
    ("warn", "warning"),
    ("error", "error"),
    ("fatal", "critical"),
]


class DummyHandler(logging.Handler):
    """Keeps every record and its formatted text, as balog 1.x's test handler did."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.msgs: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.msgs.append(self.format(record))


@pytest.fixture
def handler(caplog: pytest.LogCaptureFixture) -> Iterator[DummyHandler]:
    """A DummyHandler on the root logger, which takes every level."""
    caplog.set_level(logging.DEBUG)
    dummy = DummyHandler()
    root = logging.getLogger()
    root.addHandler(dummy)
    try:
        yield dummy
    finally:
        root.removeHandler(dummy)


def test_log(handler: DummyHandler) -> None:
    """get_logger() with no name logs on the calling module's channel; the record carries the
    event, and EventFormatter writes it as JSON."""
    balog.configure(MemoryTransport(MemoryBroker()), "t")
    logger = get_logger()
    logger.info(
        "foobar",
        payload={
            "cls_type": "metrics",
            "values": [{"name": "foo", "value": 1234}, {"name": "bar", "value": 5678}],
        },
    )
    assert len(handler.records) == 1
    log_dict = json.loads(EventFormatter().format(handler.records[0]))
    assert log_dict["schema"] == FACILITY_VERSION
    assert HEX_ID.match(log_dict["header"]["id"])
    assert log_dict["header"]["channel"] == f"{__name__}.foobar"
    assert log_dict["payload"] == {
        "cls_type": "metrics",
        "values": [{"name": "foo", "value": 1234}, {"name": "bar", "value": 5678}],
    }


def test_formatter(handler: DummyHandler) -> None:
    """A plain record formatted by EventFormatter is a log event on the logger's channel, with
    the severity of its level."""
    handler.setFormatter(EventFormatter())
    root_logger = logging.getLogger()
    root_logger.info("Hello world")

    assert len(handler.msgs) == 1
    log_dict = json.loads(handler.msgs[0])
    assert log_dict["schema"] == FACILITY_VERSION
    assert HEX_ID.match(log_dict["header"]["id"])
    assert log_dict["header"]["channel"] == "root"
    assert log_dict["payload"] == {"cls_type": "log", "message": "Hello world", "severity": "info"}

    for method_name, severity in SEVERITIES:
        method = getattr(root_logger, method_name)
        if method_name == "warn":  # logging itself deprecates Logger.warn
            with pytest.deprecated_call():
                method("foobar")
        else:
            method("foobar")
        assert json.loads(handler.msgs[-1])["payload"]["severity"] == severity


def test_balog_logger_has_every_1x_method(handler: DummyHandler) -> None:
    """balog's own logger has debug, info, warn, error and fatal, with those severities."""
    handler.setFormatter(EventFormatter())
    logger = get_logger()
    for method_name, severity in SEVERITIES:
        getattr(logger, method_name)("foobar")
        assert json.loads(handler.msgs[-1])["payload"]["severity"] == severity


def test_formatter_with_exc(handler: DummyHandler) -> None:
    """A record logged with exc_info carries the traceback in exc_text."""
    handler.setFormatter(EventFormatter())
    root_logger = logging.getLogger()
    try:
        raise ValueError("test")
    except ValueError:
        root_logger.error("test exec", exc_info=True)

    assert len(handler.msgs) == 1
    log_dict = json.loads(handler.msgs[0])
    assert "exc_text" in log_dict["payload"]
    assert "ValueError" in log_dict["payload"]["exc_text"]


def test_raw_event(handler: DummyHandler) -> None:
    """raw_event= is the whole event, as given; an EventHandler validates it before sending
    (this one is not an event, so it is dropped and counted, not sent)."""
    broker = MemoryBroker()
    event_handler = balog.configure(MemoryTransport(broker), "t")
    handler.setFormatter(EventFormatter())
    logger = get_logger()
    logger.info("foobar", raw_event={"foo": "bar"})
    assert len(handler.records) == 1
    assert json.loads(handler.msgs[0]) == {"foo": "bar"}
    assert balog.flush(5) is False
    assert (event_handler.stats.invalid, broker.size("t")) == (1, 0)

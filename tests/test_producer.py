"""Producing events through the standard logging module."""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

import balog
from balog import EventFormatter, EventHandler, get_logger
from balog.events import decode
from balog.exceptions import TransportConnectionError
from balog.transports.base import Delivery, Transport
from balog.transports.memory import MemoryBroker, MemoryTransport

TOPIC = "events-test"
METRICS = {"cls_type": "metrics", "values": [{"name": "total", "value": 1}]}


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def sent(broker: MemoryBroker) -> Iterator[list[dict]]:
    """Configure balog on a private memory broker; yields the decoded events sent so far."""
    transport = MemoryTransport(broker)
    balog.configure(transport, TOPIC)
    events: list[dict] = []

    class View(list):  # a list that refreshes itself from the transport after a flush
        def refresh(self) -> list[dict]:
            assert balog.flush(5)
            self[:] = [decode(body) for topic, body in transport.sent if topic == TOPIC]
            return self

    view = View(events)
    return view


class FailingTransport(Transport):
    """A transport whose backend is down: every send raises."""

    def __init__(self) -> None:
        self.calls = 0

    def send(
        self, topic: str, bodies: Sequence[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.calls += 1
        raise TransportConnectionError("broker unreachable")

    def receive(self, topic: str, **kw: object) -> list[Delivery]:
        return []

    def ack(self, delivery: Delivery) -> None:
        pass

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        pass


class SlowTransport(FailingTransport):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.bodies: list[bytes] = []

    def send(
        self, topic: str, bodies: Sequence[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        time.sleep(self.seconds)
        self.bodies.extend(bodies)


def test_channel_is_logger_name_plus_suffix(sent: list[dict]) -> None:
    """The seed README's rule: channel = logger name + '.' + suffix."""
    get_logger("justitia.scripts.process_results").info("done", payload=METRICS)
    (event,) = sent.refresh()  # type: ignore[attr-defined]
    assert event["header"]["channel"] == "justitia.scripts.process_results.done"
    assert event["payload"] == METRICS


def test_channel_override_and_context(sent: list[dict]) -> None:
    """channel= replaces the derived channel; context= adds to the header context."""
    get_logger("myapp").info("done", payload=METRICS, channel="custom.chan", context={"job": 7})
    (event,) = sent.refresh()  # type: ignore[attr-defined]
    assert event["header"]["channel"] == "custom.chan"
    assert event["header"]["context"]["job"] == 7
    assert {"fqdn", "application"} <= set(event["header"]["context"])


@pytest.mark.parametrize("method", ["debug", "info", "warning", "error", "critical", "exception"])
def test_every_level_method_sends(sent: list[dict], method: str) -> None:
    """Each level method sends an event."""
    getattr(get_logger("myapp"), method)("done", payload=METRICS)
    assert [e["header"]["channel"] for e in sent.refresh()] == ["myapp.done"]  # type: ignore[attr-defined]


def test_no_payload_means_a_log_event(sent: list[dict]) -> None:
    """Without a payload the event is a log event with the suffix as message."""
    get_logger("myapp").warning("disk low")
    (event,) = sent.refresh()  # type: ignore[attr-defined]
    assert event["payload"] == {"cls_type": "log", "message": "disk low", "severity": "warning"}


def test_exception_adds_exc_text_to_log_payload(sent: list[dict]) -> None:
    """exception() attaches the traceback to a log payload."""
    try:
        raise KeyError("boom")
    except KeyError:
        get_logger("myapp").exception("failed")
    (event,) = sent.refresh()  # type: ignore[attr-defined]
    assert event["payload"]["severity"] == "error"
    assert "KeyError: 'boom'" in event["payload"]["exc_text"]


def test_logger_levels_filter_events(sent: list[dict]) -> None:
    """A level set on the app's logger (as dictConfig does) filters balog events below it."""
    logging.getLogger("quietapp").setLevel(logging.WARNING)
    try:
        log = get_logger("quietapp.jobs")
        log.info("skipped", payload=METRICS)
        log.error("kept", payload=METRICS)
    finally:
        logging.getLogger("quietapp").setLevel(logging.NOTSET)
    assert [e["header"]["channel"] for e in sent.refresh()] == ["quietapp.jobs.kept"]  # type: ignore[attr-defined]


def test_configure_level_applies_when_app_sets_none(broker: MemoryBroker) -> None:
    """With no level on the app's loggers, configure(level=...) is the threshold."""
    transport = MemoryTransport(broker)
    balog.configure(transport, TOPIC, level=logging.ERROR)
    log = get_logger("freshapp")
    log.info("skipped", payload=METRICS)
    log.error("kept", payload=METRICS)
    assert balog.flush(5)
    assert [decode(b)["header"]["channel"] for _, b in transport.sent] == ["freshapp.kept"]


def test_plain_records_become_log_events_when_captured(broker: MemoryBroker) -> None:
    """With capture_logs, logging.getLogger(...).error('x', exc_info=True) becomes a log event."""
    transport = MemoryTransport(broker)
    balog.configure(transport, TOPIC, capture_logs=True)
    plain = logging.getLogger("plainapp.module")
    try:
        int("not a number")
    except ValueError:
        plain.error("division failed for %s", "user-1", exc_info=True)
    assert balog.flush(5)
    (event,) = [decode(b) for _, b in transport.sent]
    assert event["header"]["channel"] == "plainapp.module"
    assert event["payload"]["message"] == "division failed for user-1"
    assert event["payload"]["severity"] == "error"
    assert "ValueError" in event["payload"]["exc_text"]


def test_plain_records_ignored_without_capture(sent: list[dict]) -> None:
    """Without capture_logs, plain log records are not sent."""
    logging.getLogger("plainapp").error("not an event")
    assert sent.refresh() == []  # type: ignore[attr-defined]


def test_balog_own_records_never_become_events(broker: MemoryBroker) -> None:
    """balog's own log records are not turned into events (no feedback loop)."""
    transport = MemoryTransport(broker)
    balog.configure(transport, TOPIC, capture_logs=True)
    logging.getLogger("balog.engine").error("internal trouble")
    logging.getLogger("balog").warning("more")
    assert balog.flush(5)
    assert transport.sent == []


def test_dictconfig_wires_the_handler(broker: MemoryBroker) -> None:
    """EventHandler works from logging.config.dictConfig, with a topic template."""
    transport = MemoryTransport(broker)
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "events": {
                    "class": "balog.EventHandler",
                    "transport": transport,
                    "topic": "myproj-events-{env}",
                    "topic_vars": {"env": "develop"},
                }
            },
            "loggers": {"dictapp": {"handlers": ["events"], "level": "INFO"}},
        }
    )
    handler = logging.getLogger("dictapp").handlers[0]
    try:
        get_logger("dictapp.jobs").info("done", payload=METRICS)
        get_logger("dictapp.jobs").debug("below level", payload=METRICS)
        assert isinstance(handler, EventHandler)
        assert handler.flush(5)
        assert [(t, decode(b)["header"]["channel"]) for t, b in transport.sent] == [
            ("myproj-events-develop", "dictapp.jobs.done")
        ]
    finally:
        logging.getLogger("dictapp").removeHandler(handler)
        handler.close()


def test_producer_never_raises_when_transport_fails() -> None:
    """A failing transport: logging returns normally, drops are counted and reported."""
    transport = FailingTransport()
    handler = balog.configure(transport, TOPIC, max_retries=2, retry_delay=0.01)
    log = get_logger("myapp")
    for _ in range(5):
        log.info("done", payload=METRICS)
    assert handler.flush(5)
    stats = handler.stats
    assert stats.sent == 0
    assert stats.dropped_failed == 5
    assert transport.calls >= 3  # the first try and two retries, at least


def test_drops_are_reported_in_balog_log(caplog: pytest.LogCaptureFixture) -> None:
    """What was dropped is reported in balog's own log, not lost silently."""
    handler = balog.configure(FailingTransport(), TOPIC, max_retries=0)
    with caplog.at_level(logging.WARNING, logger="balog.producer"):
        get_logger("myapp").info("done", payload=METRICS)
        handler.flush(5)
        handler.close()
    assert any("dropped 1 event" in r.getMessage() for r in caplog.records)


def test_full_buffer_drops_without_blocking() -> None:
    """When the buffer is full, logging does not wait: the event is dropped and counted."""
    transport = SlowTransport(0.2)
    handler = balog.configure(transport, TOPIC, buffer_size=5, batch_size=1)
    log = get_logger("myapp")
    started = time.monotonic()
    for _ in range(50):
        log.info("done", payload=METRICS)
    elapsed = time.monotonic() - started
    stats = handler.stats
    assert stats.dropped_full >= 40
    assert stats.enqueued + stats.dropped_full == 50
    assert elapsed < 5.0  # generous: 50 blocking sends would take 10 s
    assert handler.flush(10)


def test_invalid_payload_is_dropped_and_counted(sent: list[dict]) -> None:
    """An event failing its payload schema is not sent; it is counted as invalid."""
    get_logger("myapp").info("bad", payload={"cls_type": "metrics", "values": "nope"})
    get_logger("myapp").info("good", payload=METRICS)
    assert [e["header"]["channel"] for e in sent.refresh()] == ["myapp.good"]  # type: ignore[attr-defined]
    assert balog.producer.state.handler is not None
    assert balog.producer.state.handler.stats.invalid == 1


def test_unserialisable_payload_never_raises(sent: list[dict]) -> None:
    """A payload that cannot be JSON-encoded is dropped, never raised into the app."""
    get_logger("myapp").info("bad", payload={"cls_type": "x", "obj": object()})
    assert sent.refresh() == []  # type: ignore[attr-defined]


def test_flush_waits_for_everything_logged_from_threads(broker: MemoryBroker) -> None:
    """flush() returns once every event logged so far, from any thread, was handed over."""
    transport = MemoryTransport(broker)
    balog.configure(transport, TOPIC)
    log = get_logger("threaded")

    def produce() -> None:
        for _ in range(500):
            log.info("tick", payload=METRICS)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert balog.flush(10)
    assert len(transport.sent) == 2000


def test_configure_again_replaces_and_flushes(broker: MemoryBroker) -> None:
    """Calling configure again flushes the previous setup and replaces it."""
    first, second = MemoryTransport(broker), MemoryTransport(broker)
    balog.configure(first, "one")
    get_logger("app").info("a", payload=METRICS)
    balog.configure(second, "two")
    get_logger("app").info("b", payload=METRICS)
    assert balog.flush(5)
    assert [t for t, _ in first.sent] == ["one"]
    assert [t for t, _ in second.sent] == ["two"]
    root_handlers = [h for h in logging.getLogger().handlers if isinstance(h, EventHandler)]
    assert len(root_handlers) == 1


def test_configure_by_name_with_transport_options(broker: MemoryBroker) -> None:
    """configure takes a transport name plus transport options by keyword."""
    handler = balog.configure("memory", "named", broker=broker, topic_vars={})
    get_logger("app").info("a", payload=METRICS)
    assert handler.flush(5)
    assert broker.size("named") == 1


def test_event_formatter_writes_one_json_line() -> None:
    """EventFormatter turns a record into one line of event JSON."""
    record = logging.LogRecord("fmtapp", logging.INFO, __file__, 1, "hello\nworld", (), None)
    line = EventFormatter().format(record)
    assert "\n" not in line
    event = decode(line)
    assert event["payload"]["message"] == "hello\nworld"
    assert event["header"]["channel"] == "fmtapp"


def test_handler_whose_transport_cannot_be_built_leaves_nothing_behind() -> None:
    """A handler that failed to build its transport is not left registered with logging, so the
    interpreter's shutdown does not trip over it."""
    import subprocess
    import sys

    code = (
        "import balog\n"
        "from balog.exceptions import PluginNotFound\n"
        "try:\n"
        "    balog.configure('no-such-transport', 't')\n"
        "except PluginNotFound as exc:\n"
        "    kept = exc  # its traceback keeps the half-built handler alive until exit\n"
        "    print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "refused", "")


def test_default_producer_meets_default_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no backend named on either side, producer and engine both use the sqlite file."""
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines import DEFAULT_ENGINE, engine_from_settings
    from balog.handler import DEFAULT_TRANSPORT

    assert DEFAULT_TRANSPORT == DEFAULT_ENGINE == "sqlite"
    monkeypatch.chdir(tmp_path)  # the default database file lives in the working directory
    balog.configure(topic="defaults")
    get_logger("app").info("done", payload=METRICS)
    assert balog.flush(5)
    seen: list[dict] = []
    engine = engine_from_settings({}, hub=ConsumerHub([Consumer(seen.append, "defaults")]))
    try:
        assert engine.drain() == 1  # type: ignore[attr-defined]
    finally:
        engine.close()
    assert [e["header"]["channel"] for e in seen] == ["app.done"]

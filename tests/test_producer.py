"""Producing events through the standard logging module."""

from __future__ import annotations

import json
import logging
import logging.config
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

import balog
from balog import EventFormatter, EventHandler, get_logger
from balog.consumers import Consumer, ConsumerHub
from balog.engines.memory import MemoryEngine
from balog.events import decode
from balog.exceptions import ConfigurationError, TransportConnectionError
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
        flushed: bool | None = None  # what the last flush returned: False after a drop

        def refresh(self) -> list[dict]:
            self.flushed = balog.flush(5)
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
    assert handler.flush(5) is False  # settled, but everything was dropped
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
    assert handler.flush(10) is False  # settled, but with drops
    assert handler.stats.sent == stats.enqueued


def test_invalid_payload_is_dropped_and_counted(sent: list[dict]) -> None:
    """An event failing its payload schema is not sent; it is counted as invalid."""
    get_logger("myapp").info("bad", payload={"cls_type": "metrics", "values": "nope"})
    get_logger("myapp").info("good", payload=METRICS)
    assert [e["header"]["channel"] for e in sent.refresh()] == ["myapp.good"]  # type: ignore[attr-defined]
    assert sent.flushed is False  # type: ignore[attr-defined]
    assert balog.producer.state.handler is not None
    assert balog.producer.state.handler.stats.invalid == 1


def test_unserialisable_payload_never_raises(sent: list[dict]) -> None:
    """A payload that cannot be JSON-encoded is dropped, never raised into the app."""
    get_logger("myapp").info("bad", payload={"cls_type": "x", "obj": object()})
    assert sent.refresh() == []  # type: ignore[attr-defined]
    assert sent.flushed is False  # type: ignore[attr-defined]


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


# -- balog 1.x's logger API, and log calls that never raise ------------------------------------


def test_get_logger_without_a_name_uses_the_calling_module(sent: list[dict]) -> None:
    """get_logger() with no name is the calling module's logger, as balog 1.x gave it."""
    log = get_logger()
    assert log.name == __name__
    log.info("done", payload=METRICS)
    assert [e["header"]["channel"] for e in sent.refresh()] == [f"{__name__}.done"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "severity"), [("warn", "warning"), ("fatal", "critical")])
def test_warn_and_fatal(sent: list[dict], method: str, severity: str) -> None:
    """warn and fatal log at WARNING and CRITICAL, as balog 1.x (through structlog) did."""
    getattr(get_logger("myapp"), method)("disk low")
    (event,) = sent.refresh()  # type: ignore[attr-defined]
    assert event["payload"]["severity"] == severity


def test_unknown_keywords_go_into_the_context(sent: list[dict]) -> None:
    """structlog-style keywords are added to the header's context; what JSON cannot carry is
    given as its repr; context= and keywords merge."""

    class User:
        def __repr__(self) -> str:
            return "<User 5>"

    get_logger("myapp").info(
        "done", payload=METRICS, context={"job": 7}, user_id=5, user=User(), tags=["a"]
    )
    (event,) = sent.refresh()  # type: ignore[attr-defined]
    context = event["header"]["context"]
    assert {k: context[k] for k in ("job", "user_id", "user", "tags")} == {
        "job": 7,
        "user_id": 5,
        "user": "<User 5>",
        "tags": ["a"],
    }


def test_logging_keywords_and_structlog_names(sent: list[dict]) -> None:
    """level= and self= are context like any other keyword; event= is the suffix, as structlog
    names it; log() takes the same keywords."""
    log = get_logger("myapp")
    log.info("done", payload=METRICS, level="high", self="me")
    log.info(event="structlog", user_id=5)
    log.log(logging.ERROR, "direct", METRICS, user_id=6)
    events = sent.refresh()  # type: ignore[attr-defined]
    assert [e["header"]["channel"] for e in events] == [
        "myapp.done",
        "myapp.structlog",
        "myapp.direct",
    ]
    assert [
        {k: e["header"]["context"].get(k) for k in ("level", "self", "user_id")} for e in events
    ] == [
        {"level": "high", "self": "me", "user_id": None},
        {"level": None, "self": None, "user_id": 5},
        {"level": None, "self": None, "user_id": 6},
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload": ["not", "a", "mapping"]},
        {"context": 5},
        {"extra": "not a mapping"},
        {"extra": {"message": "clash"}},
        {"raw_event": 3},
        {"stacklevel": "high"},
        {"exc_info": "yes", "stack_info": True},
        {"channel": 12},
        {"topic": object()},
        {"level": 5, "suffix_missing": True},
    ],
)
def test_a_log_call_never_raises(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture, kwargs: dict
) -> None:
    """Whatever keyword a log call gets, it returns normally; what it cannot use is reported
    once on balog's own logger, however often it happens."""
    balog.configure(MemoryTransport(broker), TOPIC)
    log = get_logger("myapp")
    with caplog.at_level(logging.WARNING, logger="balog.producer"):
        if kwargs.pop("suffix_missing", False):
            log.info(**kwargs)
            log.info(**kwargs)
        else:
            log.info("done", **kwargs)
            log.info("done", **kwargs)
        assert balog.flush(5) in (True, False)
    said = [r.getMessage() for r in caplog.records if r.name == "balog.producer"]
    reports = [m for m in said if "reported once" in m]
    # Each call either sent its event, or balog said why not: once for the log call's problem,
    # or as a drop by the sender.
    assert len(reports) <= 1
    assert broker.size(TOPIC) == 2 or reports or any("dropped" in m for m in said)


def test_what_a_log_call_cannot_use_is_reported_once(
    sent: list[dict], caplog: pytest.LogCaptureFixture
) -> None:
    """A payload that is not a mapping is reported once, naming the logger, not once per call."""
    log = get_logger("myapp.jobs")
    with caplog.at_level(logging.WARNING, logger="balog.producer"):
        for _ in range(3):
            log.info("done", ["values"])  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records if r.name == "balog.producer"]
    assert len(messages) == 1
    assert "payload" in messages[0]
    assert "myapp.jobs" in messages[0]
    assert sent.refresh() == []  # type: ignore[attr-defined]


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The records reaching the logger 'recordapp', as a handler of the application sees them."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    keep = Keep()
    logging.getLogger("recordapp").addHandler(keep)
    yield kept
    logging.getLogger("recordapp").removeHandler(keep)


def test_extra_sets_record_attributes(records: list[logging.LogRecord]) -> None:
    """extra= works as logging's does: attributes of the record that handlers see."""
    get_logger("recordapp").info("done", payload=METRICS, extra={"request_id": "r1"})
    assert [getattr(r, "request_id", None) for r in records] == ["r1"]


def test_raw_event_is_sent_as_given(sent: list[dict]) -> None:
    """raw_event= sends that mapping as the whole event, as balog 1.x did."""
    event = balog.events.new_event("raw.channel", METRICS)
    get_logger("myapp").info("ignored", raw_event=event)
    (got,) = sent.refresh()  # type: ignore[attr-defined]
    assert got["header"]["channel"] == "raw.channel"
    assert got["header"]["id"] == event["header"]["id"]


def test_record_points_at_the_caller(records: list[logging.LogRecord]) -> None:
    """The record's file, line and function are those of the log call, as logging's are."""
    get_logger("recordapp").info("done", payload=METRICS)
    line = sys._getframe().f_lineno - 1
    assert [(r.filename, r.lineno, r.funcName) for r in records] == [
        ("test_producer.py", line, "test_record_points_at_the_caller")
    ]


# -- a producer whose failures are seen ---------------------------------------------------------


def test_flush_is_false_after_drops_and_says_how_many(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """balog.flush() returns False when an event was dropped since the previous flush, with the
    count in a log line; the next flush with nothing dropped is True again."""
    balog.configure(MemoryTransport(broker), TOPIC)
    log = get_logger("myapp")
    log.info("bad", payload={"cls_type": "metrics", "values": "nope"})
    log.info("bad", payload={"cls_type": "metrics", "values": "nope"})
    log.info("good", payload=METRICS)
    with caplog.at_level(logging.WARNING, logger="balog.producer"):
        assert balog.flush(5) is False
    assert any(
        "dropped 2 event(s) since the previous flush" in r.getMessage() for r in caplog.records
    )
    log.info("good", payload=METRICS)
    assert balog.flush(5) is True
    assert broker.size(TOPIC) == 2


@pytest.mark.parametrize(
    ("kwargs", "nearest"),
    [
        ({"bufer_size": 5}, "buffer_size"),
        ({"topic_var": {}}, "topic_vars"),
        ({"brokr": None}, "broker"),
        ({"colour": "blue"}, None),
    ],
)
def test_unknown_configure_keyword_names_the_nearest(kwargs: dict, nearest: str | None) -> None:
    """A keyword neither the handler nor the transport takes is a ConfigurationError naming the
    nearest valid one, from either."""
    with pytest.raises(ConfigurationError) as info:
        balog.configure("memory", TOPIC, **kwargs)
    assert repr(next(iter(kwargs))) in str(info.value)
    if nearest:
        assert f"did you mean {nearest!r}" in str(info.value)
    assert balog.producer.state.handler is None


def test_unknown_event_handler_keyword_is_refused(broker: MemoryBroker) -> None:
    """EventHandler refuses unknown keywords too, and transport keywords need a transport name."""
    with pytest.raises(ConfigurationError, match="did you mean 'batch_size'"):
        EventHandler("memory", TOPIC, bacth_size=5)
    with pytest.raises(ConfigurationError, match="need a transport name"):
        EventHandler(MemoryTransport(broker), TOPIC, broker=broker)
    with pytest.raises(ConfigurationError, match="given twice"):
        EventHandler("memory", TOPIC, broker=broker, transport_options={"broker": broker})


def test_event_handler_takes_transport_keywords_from_dictconfig(broker: MemoryBroker) -> None:
    """Transport options can be flat keywords of the handler, checked against the transport."""
    handler = EventHandler("memory", TOPIC, broker=broker)
    try:
        get_logger("x").info("done", payload=METRICS)
        logging.getLogger("x").addHandler(handler)
        get_logger("x").info("done", payload=METRICS)
        assert handler.flush(5)
    finally:
        logging.getLogger("x").removeHandler(handler)
        handler.close()
    assert broker.size(TOPIC) == 1


def _consume_all(topic: str) -> list[dict]:
    seen: list[dict] = []
    engine = MemoryEngine(ConsumerHub([Consumer(seen.append, topic)]))
    try:
        engine.drain(raise_errors=True)
    finally:
        engine.close()
    return seen


def test_configure_reads_balog_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no transport named, configure() takes it from BALOG_* as `balog consume` does, so a
    worker and a producer started with the same environment meet."""
    monkeypatch.setenv("BALOG_ENGINE", "memory")
    monkeypatch.setenv("BALOG_OPTION_WAIT", "0.5")  # an engine option: not the transport's
    handler = balog.configure(topic="env-events")
    assert type(handler.transport).__name__ == "MemoryTransport"
    get_logger("app").info("done", payload=METRICS)
    assert balog.flush(5)
    assert [e["header"]["channel"] for e in _consume_all("env-events")] == ["app.done"]


def test_configure_from_the_file_balog_consume_reads(tmp_path: Path) -> None:
    """configure(config=file) builds the transport, URL and topic from the same file the
    engine is built from: the producer and the consumer side cannot disagree."""
    from balog.config import load_config
    from balog.engines import create_engine

    database = tmp_path / "events.sqlite3"
    config = tmp_path / "balog.toml"
    config.write_text(
        "[balog]\n"
        'engine = "sqlite"\n'
        f'url = "sqlite:///{database}"\n'
        'topic = "orders-{env}"\n'
        "[balog.topic_vars]\n"
        'env = "test"\n'
        "[balog.options]\n"
        "wait = 0.1\n"
        "lease = 5\n"
    )
    handler = balog.configure(config=config)
    assert handler.topic == "orders-test"
    get_logger("shop").info("paid", payload=METRICS)
    assert balog.flush(5)
    seen: list[dict] = []
    loaded = load_config(file=str(config))
    hub = ConsumerHub([Consumer(seen.append, "orders-test")])
    engine = create_engine(loaded.engine, hub=hub, **loaded.engine_options())
    try:
        assert engine.drain() == 1  # type: ignore[attr-defined]
    finally:
        engine.close()
    assert [e["header"]["channel"] for e in seen] == ["shop.paid"]


def test_configure_from_a_mapping(broker: MemoryBroker) -> None:
    """configure(config=mapping) takes the [balog] table's keys; explicit keywords win; an
    unknown key names the nearest."""
    handler = balog.configure(
        config={"engine": "memory", "topic": "m-{env}", "topic_vars": {"env": "a"}},
        broker=broker,
    )
    assert (handler.topic, handler.transport.broker) == ("m-a", broker)  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="did you mean 'engine'"):
        balog.configure(config={"engin": "memory"})


def test_configure_refuses_a_transport_and_a_config() -> None:
    """A transport given beside a configuration is refused, not silently preferred."""
    with pytest.raises(ConfigurationError, match="not both"):
        balog.configure("memory", TOPIC, config={"engine": "memory"})


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


_DROP_ONE = (
    "import balog\n"
    "balog.configure('memory', 't')\n"
    "balog.get_logger('app').info('bad', payload={'cls_type': 'metrics', 'values': 'x'})\n"
    "print(balog.flush(5))\n"
)


def test_balog_warnings_reach_stderr_when_nothing_shows_them() -> None:
    """With configure() on the root logger and no handler of the application, a dropped event
    is still said on stderr, as logging.lastResort would; nothing goes out as an event."""
    out = _run(_DROP_ONE)
    assert out.stdout.strip() == "False"
    assert "balog.producer: ERROR: balog dropped an invalid event for t" in out.stderr
    assert "dropped 1 event(s) since the previous flush" in out.stderr


def test_balog_warnings_are_not_doubled_when_the_application_shows_them() -> None:
    """An application handler that shows the warning gets it, and stderr stays quiet."""
    code = "import logging, sys\nlogging.basicConfig(stream=sys.stdout)\n" + _DROP_ONE
    out = _run(code)
    assert "balog dropped an invalid event for t" in out.stdout
    assert out.stderr == ""


def test_legacy_values_logged_by_hand_are_read_as_floats(broker: MemoryBroker) -> None:
    """An event a balog 1.x producer wrote (raw_event) is accepted by today's producer and
    validated in the shape its upcasters give it."""
    balog.configure(MemoryTransport(broker), TOPIC)
    legacy = {
        "schema": "0.0.1",
        "header": {
            "id": "LGk37Fo3xLLVx9GrfnyTuvBd",
            "channel": "old.app.done",
            "timestamp": "2014-10-07T15:06:51.641083+00:00",
            "context": {},
        },
        "payload": {"cls_type": "metrics", "values": [{"name": "n", "value": "nan"}]},
    }
    get_logger("old.app").info("done", raw_event=legacy)
    assert balog.flush(5)
    (body,) = [json.loads(b) for b in broker.queued(TOPIC)]
    assert body["payload"]["values"][0]["value"] == "nan"
    upcast = balog.events.default_registry.upcast(decode(json.dumps(body)))
    assert math.isnan(upcast["payload"]["values"][0]["value"])

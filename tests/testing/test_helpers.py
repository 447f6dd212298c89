"""balog.testing helpers: capture_events, EngineHarness and its one-call forms, BackendChoice."""

from __future__ import annotations

import logging
import threading

import pytest

import balog
from balog.consumers import Consumer, ConsumerHub
from balog.engines.base import Engine, TransportEngine
from balog.engines.memory import MemoryEngine
from balog.events import EventDict, encode, new_event
from balog.exceptions import ConfigurationError, ConsumerError, InvalidEvent
from balog.testing import (
    BackendChoice,
    EngineHarness,
    capture_events,
    drain,
    parse_options,
    run_until,
    wait_for_dead_letters,
    wait_for_events,
)
from balog.transports.memory import MemoryBroker, MemoryTransport

TOPIC = "helpers-events"


def _body(n: int, cls_type: str = "order") -> bytes:
    return encode(new_event("shop.orders", {"cls_type": cls_type, "n": n}))


def _engine(broker: MemoryBroker, func: object, **options: object) -> MemoryEngine:
    hub = ConsumerHub([Consumer(func, TOPIC, name="helpers.consumer")])  # type: ignore[arg-type]
    return MemoryEngine(hub, broker=broker, handle_signals=False, **options)  # type: ignore[arg-type]


class ThreadOnlyEngine(Engine):
    """An engine with only run()/stop(), like a push-style backend engine."""

    def __init__(self, hub: ConsumerHub, broker: MemoryBroker) -> None:
        super().__init__(hub)
        self.inner = MemoryEngine(hub, broker=broker, handle_signals=False, wait=0.05)
        self.transport = self.inner.transport

    def run(self) -> None:
        self.inner.consumer_operator = self.consumer_operator
        self.inner.run()

    def stop(self) -> None:
        self.inner.stop()


# -- capture_events ---------------------------------------------------------------------------


def test_capture_events_collects_logged_events_without_a_broker() -> None:
    """Events logged in the block are captured as decoded wire events, in order."""
    log = balog.get_logger("shop.orders")
    with capture_events() as events:
        log.info("paid", payload={"cls_type": "order", "id": 7})
        log.info("shipped", payload={"cls_type": "order", "id": 7}, topic="other-topic")
    assert events.channels() == ["shop.orders.paid", "shop.orders.shipped"]
    assert events.payloads("order") == [{"cls_type": "order", "id": 7}] * 2
    assert events.topics == [None, "other-topic"]
    assert events[0]["schema"] == "0.1.0"


def test_capture_events_stops_capturing_after_the_block() -> None:
    """Nothing logged after the block is captured."""
    log = balog.get_logger("shop.orders")
    with capture_events() as events:
        log.info("paid", payload={"cls_type": "order"})
    log.info("refunded", payload={"cls_type": "order"})
    assert events.channels() == ["shop.orders.paid"]


def test_capture_events_filters_by_channel_and_cls_type() -> None:
    """filter() selects by channel and by cls_type."""
    log = balog.get_logger("shop")
    with capture_events() as events:
        log.info("a", payload={"cls_type": "order"})
        log.info("b", payload={"cls_type": "refund"})
    assert [e["header"]["channel"] for e in events.filter(cls_type="refund")] == ["shop.b"]
    assert [e["payload"]["cls_type"] for e in events.filter(channel="shop.a")] == ["order"]


def test_capture_events_raises_for_an_event_the_producer_would_drop() -> None:
    """An event that fails its payload schema is reported at the end of a strict block."""
    log = balog.get_logger("shop")
    with pytest.raises(InvalidEvent, match="would have been dropped"), capture_events():
        log.info("bad", payload={"cls_type": "log", "message": "x", "severity": "loud"})


def test_capture_events_lenient_keeps_invalid_events_aside() -> None:
    """With strict=False an invalid event lands in .invalid, not in the list."""
    log = balog.get_logger("shop")
    with capture_events(strict=False) as events:
        log.info("bad", payload={"cls_type": "metrics", "values": "not a list"})
    assert list(events) == []
    assert len(events.invalid) == 1


def test_capture_events_can_turn_plain_records_into_log_events() -> None:
    """capture_plain captures ordinary log records as log events."""
    with capture_events(capture_plain=True) as events:
        logging.getLogger("shop.legacy").warning("disk at %d%%", 91)
    assert [{k: v for k, v in p.items() if k != "exc_text"} for p in events.payloads("log")] == [
        {"cls_type": "log", "message": "disk at 91%", "severity": "warning"}
    ]


def test_balog_events_fixture_captures(balog_events: list[EventDict]) -> None:
    """The balog_events fixture is capture_events() around the test."""
    balog.get_logger("shop").info("done", payload={"cls_type": "order"})
    assert [e["header"]["channel"] for e in balog_events] == ["shop.done"]


# -- EngineHarness ----------------------------------------------------------------------------


def test_wait_for_events_runs_until_enough_were_processed() -> None:
    """wait_for_events returns the events once the consumers processed that many."""
    broker = MemoryBroker()
    seen: list[int] = []
    engine = _engine(broker, lambda e: seen.append(e["payload"]["n"]))
    MemoryTransport(broker=broker).send(TOPIC, [_body(n) for n in range(3)])
    events = wait_for_events(engine, 3, timeout=5)
    assert [e["payload"]["n"] for e in events] == [0, 1, 2]
    assert seen == [0, 1, 2]


def test_wait_for_events_times_out_with_a_clear_message() -> None:
    """Too few events before the deadline is an AssertionError naming what was awaited."""
    engine = _engine(MemoryBroker(), lambda e: None)
    with pytest.raises(AssertionError, match=r"2 successful consumer call\(s\) did not hold"):
        wait_for_events(engine, 2, timeout=0.3)


def test_raise_errors_reraises_the_consumers_exception() -> None:
    """With raise_errors, a consumer's exception comes back as ConsumerError from it."""
    broker = MemoryBroker()

    def fails(event: EventDict) -> None:
        raise KeyError("customer")

    engine = _engine(broker, fails, max_attempts=1)
    MemoryTransport(broker=broker).send(TOPIC, [_body(1)])
    with pytest.raises(ConsumerError, match="KeyError") as info:
        drain(engine, raise_errors=True)
    assert isinstance(info.value.__cause__, KeyError)


def test_without_raise_errors_failures_are_only_recorded() -> None:
    """Without raise_errors, the failure is recorded and the message dead-lettered as usual."""
    broker = MemoryBroker()

    def fails(event: EventDict) -> None:
        raise ValueError("nope")

    engine = _engine(broker, fails, max_attempts=2)
    MemoryTransport(broker=broker).send(TOPIC, [_body(1)])
    with EngineHarness(engine) as harness:
        letters = harness.wait_for_dead_letters(TOPIC, 1, timeout=5)
    assert len(harness.errors) == 2
    assert "ValueError: nope" in letters[0].reason


def test_wait_for_dead_letters_one_call() -> None:
    """wait_for_dead_letters returns the dead letters of a malformed body."""
    broker = MemoryBroker()
    engine = _engine(broker, lambda e: None)
    MemoryTransport(broker=broker).send(TOPIC, [b"not json"])
    letters = wait_for_dead_letters(engine, TOPIC, timeout=5)
    assert [d.body for d in letters] == [b"not json"]


def test_run_until_waits_for_a_condition() -> None:
    """run_until keeps the engine going until the condition holds."""
    broker = MemoryBroker()
    seen: list[int] = []
    engine = _engine(broker, lambda e: seen.append(e["payload"]["n"]))
    MemoryTransport(broker=broker).send(TOPIC, [_body(n) for n in range(5)])
    run_until(engine, lambda: len(seen) == 5, timeout=5)
    assert seen == [0, 1, 2, 3, 4]


def test_harness_restores_the_operator() -> None:
    """Closing the harness puts the engine's own consumer operator back."""
    engine = _engine(MemoryBroker(), lambda e: None)
    operator = engine.consumer_operator
    with EngineHarness(engine):
        assert operator is not engine.consumer_operator
    assert operator is engine.consumer_operator


def test_harness_runs_an_engine_without_drain_in_a_thread() -> None:
    """An engine with only run()/stop() is run in a thread and stopped on close."""
    broker = MemoryBroker()
    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: seen.append(e["payload"]["n"]), TOPIC)])
    engine = ThreadOnlyEngine(hub, broker)
    MemoryTransport(broker=broker).send(TOPIC, [_body(n) for n in range(4)])
    with EngineHarness(engine) as harness:
        assert harness.threaded
        harness.wait_for_events(4, timeout=5)
    assert sorted(seen) == [0, 1, 2, 3]
    assert not any(t.name == "balog-test-engine" and t.is_alive() for t in threading.enumerate())


def test_threaded_drain_waits_for_quiet() -> None:
    """drain() on a threaded engine returns once nothing more was processed for a while."""
    broker = MemoryBroker()
    hub = ConsumerHub([Consumer(lambda e: None, TOPIC)])
    MemoryTransport(broker=broker).send(TOPIC, [_body(n) for n in range(6)])
    with EngineHarness(ThreadOnlyEngine(hub, broker)) as harness:
        assert harness.drain(timeout=5, quiet=0.3) == 6


def test_harness_refuses_a_non_engine() -> None:
    """EngineHarness takes an Engine only."""
    with pytest.raises(ConfigurationError):
        EngineHarness(object())  # type: ignore[arg-type]


# -- BackendChoice ----------------------------------------------------------------------------


def test_backend_choice_from_env() -> None:
    """BALOG_TEST_ENGINE/URL/OPTIONS choose the backend and its options."""
    choice = BackendChoice.from_env(
        {
            "BALOG_TEST_ENGINE": "kombu",
            "BALOG_TEST_URL": "amqp://guest:secret@127.0.0.1:5672//",
            "BALOG_TEST_OPTIONS": "prefetch=4 wait=0.5 durable=true region=us-east-1",
        }
    )
    assert choice.name == "kombu"
    assert choice.options == {"prefetch": 4, "wait": 0.5, "durable": True, "region": "us-east-1"}
    assert "secret" not in repr(choice)
    assert "secret" not in choice.describe()
    assert {"prefetch": 4, "durable": True, "region": "us-east-1", "url": choice.url} == (
        choice.transport_options()
    )


def test_backend_choice_defaults_to_memory() -> None:
    """With nothing set, the backend is memory."""
    assert BackendChoice.from_env({}).is_memory


def test_parse_options_refuses_a_bare_word() -> None:
    """An option without '=' is a configuration error."""
    with pytest.raises(ConfigurationError, match="KEY=VALUE"):
        parse_options(["verbose"])


def test_backend_choice_builds_memory_engine_and_transport_on_one_broker() -> None:
    """The memory choice builds a transport and an engine sharing the given broker."""
    broker = MemoryBroker()
    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: seen.append(e["payload"]["n"]), TOPIC)])
    choice = BackendChoice()
    transport = choice.create_transport(broker=broker)
    engine = choice.create_engine(hub, broker=broker, handle_signals=False)
    transport.send(TOPIC, [_body(5)])
    assert drain(engine) == 1
    assert seen == [5]


def test_backend_choice_builds_a_named_transport_engine() -> None:
    """A non-memory name goes through create_engine (here the memory transport by name)."""
    hub = ConsumerHub([Consumer(lambda e: None, TOPIC)])
    engine = BackendChoice(name="memory-by-name-does-not-exist").create_engine
    with pytest.raises(ConfigurationError, match="memory-by-name-does-not-exist"):
        engine(hub)
    assert isinstance(BackendChoice().create_engine(hub), TransportEngine)


def test_public_names_are_pinned() -> None:
    """balog.testing's public API; a change here is a change to the documented test API."""
    import balog.testing
    import balog.testing.conformance

    assert sorted(balog.testing.__all__) == sorted(
        [
            "ENGINE_ENV",
            "OPTIONS_ENV",
            "URL_ENV",
            "BackendChoice",
            "CapturedEvents",
            "CapturingHandler",
            "EngineHarness",
            "Processed",
            "await_dead_letters",
            "await_events",
            "capture_events",
            "drain",
            "parse_options",
            "reset",
            "run_until",
            "wait_for_dead_letters",
            "wait_for_events",
        ]
    )
    for name in balog.testing.__all__:
        assert hasattr(balog.testing, name), name
    assert balog.testing.conformance.__all__ == ["TransportConformance"]


def test_importing_balog_testing_does_not_import_pytest() -> None:
    """capture_events and the helpers work without pytest: the package does not import it."""
    import subprocess
    import sys

    code = "import sys, balog.testing; assert 'pytest' not in sys.modules, 'pytest imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

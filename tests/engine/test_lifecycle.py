"""Starting, stopping and failing: stops are never lost, fatal errors stop the engine loudly,
transient ones are retried and reported sparingly, options are explicit, outcomes all counted."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from backends import Backend

from balog.consumers import Consumer, ConsumerHub
from balog.engines import create_engine
from balog.engines.base import Backoff, TransportEngine
from balog.engines.memory import MemoryEngine
from balog.events import EventDict, encode, new_event
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    TopicNotFound,
    TransportConnectionError,
    TransportError,
)
from balog.transports.base import Delivery
from balog.transports.memory import MemoryBroker, MemoryTransport


def event_body(n: int, cls_type: str = "lifecycle") -> bytes:
    return encode(new_event("tests.lifecycle.done", {"cls_type": cls_type, "n": n}))


def hub_of(topic: str, consume: Any = None) -> ConsumerHub:
    return ConsumerHub([Consumer(consume or (lambda e: None), topic, name="tests.lifecycle")])


def run_in_thread(engine: Any) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def target() -> None:
        try:
            engine.run()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, raised


# -- stops ----------------------------------------------------------------------------------------


def test_a_stop_before_run_makes_run_return_at_once() -> None:
    """stop() before run(): run() returns at once without taking an event; the next run()
    works as usual."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])
    done: list[int] = []
    engine = MemoryEngine(hub_of("t", lambda e: done.append(e["payload"]["n"])), broker=broker)
    engine.stop()
    started = time.monotonic()
    engine.run()
    assert time.monotonic() - started < 1.0
    assert done == []
    thread, raised = run_in_thread(engine)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()
    thread.join(5)
    assert done == [1]
    assert raised == []


def test_a_stop_right_after_starting_is_never_lost(backend: Backend) -> None:
    """Ten engines each stopped the moment run() was called in another thread: every run()
    returns, none hangs."""
    for _ in range(10):
        engine = backend.make_engine(hub_of(backend.topic), handle_signals=False)
        thread, raised = run_in_thread(engine)
        engine.stop()
        thread.join(15)
        alive = thread.is_alive()
        engine.close()
        assert not alive, "run() did not return after a stop() that came as it started"
        assert raised == []


# -- fatal and transient errors -------------------------------------------------------------------


class Scripted(MemoryTransport):
    """A memory transport whose verify/receive/dead_letter raise what a test tells them to."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.verify_errors: list[BaseException] = []
        self.receive_errors: list[BaseException] = []
        self.dead_letter_error: BaseException | None = None
        self.nack_error: BaseException | None = None
        self.released: list[str] = []
        self.verified = 0

    def verify(self, topic: str) -> None:
        self.verified += 1
        if self.verify_errors:
            raise self.verify_errors.pop(0)

    def receive(self, topic: str, **kwargs: Any) -> list[Delivery]:
        if self.receive_errors:
            raise self.receive_errors.pop(0)
        return super().receive(topic, **kwargs)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if self.dead_letter_error is not None:
            raise self.dead_letter_error
        super().dead_letter(delivery, reason)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        if self.nack_error is not None:
            raise self.nack_error
        super().nack(delivery, delay=delay)

    def release(self, delivery: Delivery) -> None:
        self.released.append(delivery.message_id)
        super().release(delivery)


def test_refused_credentials_at_start_up_stop_run_at_once() -> None:
    """A fatal error from verify() (credentials refused) ends run() at once with that error;
    no consumer is called."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])
    transport = Scripted(broker)
    transport.verify_errors = [AuthenticationError("login refused: check the password option")]
    done: list[Any] = []
    engine = TransportEngine(hub_of("t", done.append), transport=transport, handle_signals=False)
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="check the password"):
        engine.run()
    assert time.monotonic() - started < 2.0
    assert done == []
    assert broker.size("t") == 1


def test_an_unreachable_backend_at_start_up_is_retried_briefly_then_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend that cannot be reached at start-up is retried for startup_timeout seconds,
    said once in the log, then run() raises the connection error."""
    transport = Scripted(MemoryBroker())
    transport.verify_errors = [TransportConnectionError("connection refused")] * 100
    engine = TransportEngine(
        hub_of("t"), transport=transport, startup_timeout=0.6, handle_signals=False
    )
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="balog.engine"),
        pytest.raises(TransportConnectionError, match="connection refused"),
    ):
        engine.run()
    assert 0.5 <= time.monotonic() - started < 5.0
    assert transport.verified >= 2
    warnings = [r for r in caplog.records if "retrying for up to" in r.getMessage()]
    assert len(warnings) == 1


def test_a_backend_that_comes_up_during_start_up_is_used() -> None:
    """Transient start-up failures within startup_timeout are not an error."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])
    transport = Scripted(broker)
    transport.verify_errors = [TransportConnectionError("not yet")] * 2
    done: list[Any] = []
    engine = TransportEngine(hub_of("t", done.append), transport=transport, handle_signals=False)
    thread, raised = run_in_thread(engine)
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()
    thread.join(10)
    assert len(done) == 1
    assert raised == []


def test_a_fatal_receive_error_while_running_stops_the_engine() -> None:
    """Credentials revoked while running: the worker's receive gets a fatal error, the engine
    stops, and run() raises it."""
    transport = Scripted(MemoryBroker())
    transport.receive_errors = [AuthenticationError("token expired")]
    engine = TransportEngine(hub_of("t"), transport=transport, wait=0.05, handle_signals=False)
    thread, raised = run_in_thread(engine)
    thread.join(10)
    assert not thread.is_alive()
    assert [AuthenticationError] == [type(e) for e in raised]


def test_a_missing_dead_letter_place_stops_the_engine_and_keeps_the_message() -> None:
    """A dead-letter place that vanished mid-run is fatal: the engine stops and says so, and
    the message it could not dead-letter is still on its topic."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [b"not json"])
    transport = Scripted(broker)
    transport.dead_letter_error = TopicNotFound("queue t-dead-letter does not exist")
    engine = TransportEngine(hub_of("t"), transport=transport, wait=0.05, handle_signals=False)
    thread, raised = run_in_thread(engine)
    thread.join(10)
    assert not thread.is_alive()
    assert [TopicNotFound] == [type(e) for e in raised]
    assert broker.size("t") == 1


def test_transient_receive_failures_are_reported_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receive that keeps failing is retried with backoff and reported once (not once per
    failure); when it works again that is said too, and the events flow."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])
    transport = Scripted(broker)
    transport.receive_errors = [TransportConnectionError("broker restarting")] * 3
    done: list[Any] = []
    engine = TransportEngine(hub_of("t", done.append), transport=transport, handle_signals=False)
    with caplog.at_level(logging.INFO, logger="balog.engine"):
        thread, raised = run_in_thread(engine)
        deadline = time.monotonic() + 15
        while not done and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.stop()
        thread.join(10)
    assert raised == []
    assert len(done) == 1
    failed = [r for r in caplog.records if "broker restarting" in r.getMessage()]
    assert len(failed) == 1
    assert any("works again after 3 failure(s)" in r.getMessage() for r in caplog.records)


def test_a_nack_that_fails_where_leases_do_not_expire_releases_the_message() -> None:
    """Where the broker holds an unacked message for its live receiver (AMQP), a failed nack
    must not leave it unacked: the engine releases it instead, and it comes back."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])
    transport = Scripted(broker)
    transport.capabilities = dataclasses.replace(transport.capabilities, lease_expiry=False)
    transport.nack_error = TransportError("republish refused")

    def fails(event: EventDict) -> None:
        raise RuntimeError("fails")

    engine = TransportEngine(hub_of("t", fails), transport=transport, handle_signals=False)
    engine.drain()
    assert len(transport.released) == 1
    assert broker.size("t") == 1
    assert broker.in_flight("t") == 0
    assert engine.stats()["t"].errors == 1


# -- options --------------------------------------------------------------------------------------


def test_a_misspelt_engine_option_names_the_one_meant() -> None:
    """An engine option spelt wrong is refused naming the engine option meant, not reported as
    a transport's."""
    hub = hub_of("t")
    with pytest.raises(ConfigurationError, match="did you mean 'max_attempts'"):
        create_engine("memory", hub=hub, max_attemps=3)
    with pytest.raises(ConfigurationError, match="did you mean 'max_attempts'"):
        create_engine("kombu", hub=hub, url="memory://", max_attemps=3)
    with pytest.raises(ConfigurationError, match="did you mean 'max_attempts'"):
        TransportEngine(hub, transport="memory", max_attemps=3)


def test_a_misspelt_transport_option_names_the_one_meant(tmp_path: Path) -> None:
    """A transport option spelt wrong is refused naming the transport option meant."""
    with pytest.raises(ConfigurationError, match="did you mean 'poll_interval'"):
        create_engine("sqlite", hub=hub_of("t"), path=str(tmp_path / "x.db"), pol_interval=1)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lease", "abc", "lease must be a number"),
        ("max_attempts", 0, "max_attempts must be at least 1"),
        ("batch_size", 2.5, "batch_size must be a whole number"),
        ("max_in_flight", True, "max_in_flight must be a whole number"),
        ("wait", -1, "wait must be at least 0"),
    ],
)
def test_option_values_are_checked(option: str, value: Any, message: str) -> None:
    """A value of the wrong kind is a clear ConfigurationError when the engine is built."""
    with pytest.raises(ConfigurationError, match=message):
        MemoryEngine(hub_of("t"), broker=MemoryBroker(), **{option: value})


def test_the_engines_lease_reaches_the_transport(tmp_path: Path) -> None:
    """lease= given to an engine is the transport's default lease too."""
    engine = create_engine("sqlite", hub=hub_of("t"), path=str(tmp_path / "x.db"), lease=7)
    assert engine.lease == 7.0
    assert engine.transport.default_lease == 7.0  # type: ignore[attr-defined]
    engine.close()


# -- counting -------------------------------------------------------------------------------------


class Refusing(MemoryTransport):
    """Marks bodies starting with b"\\x00" refused, as a transport does with a content type it
    does not accept."""

    def receive(self, topic: str, **kwargs: Any) -> list[Delivery]:
        got = super().receive(topic, **kwargs)
        for delivery in got:
            if delivery.body.startswith(b"\x00"):
                delivery.refused = "content type 'application/x-python-serialize' not accepted"
        return got


def test_every_outcome_is_counted() -> None:
    """processed, unrouted, retried, dead-lettered (invalid and refused) each counted once per
    delivery; received is their sum."""
    broker = MemoryBroker()
    attempts: list[int] = []

    def consume(event: EventDict) -> None:
        if event["payload"]["n"] == 2:
            attempts.append(2)
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")

    hub = ConsumerHub([Consumer(consume, "t", cls_type="lifecycle", name="tests.counted")])
    engine = TransportEngine(
        hub, transport=Refusing(broker), max_attempts=3, backoff=Backoff(base=0.0, jitter=0.0)
    )
    MemoryTransport(broker).send(
        "t",
        [
            event_body(1),
            event_body(2),
            event_body(3, cls_type="other"),
            b"not json",
            b"\x00pickle",
        ],
    )
    engine.drain()
    stats = engine.stats()["t"]
    assert (
        stats.processed,
        stats.unrouted,
        stats.retried,
        stats.dead_lettered,
        stats.refused,
    ) == (2, 1, 1, 2, 1)
    assert stats.received == 6
    reasons = sorted(letter.reason for letter in broker.dead_letters("t"))
    assert reasons[0].startswith("invalid event")
    assert reasons[1].startswith("refused by the transport: content type")

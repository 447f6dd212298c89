"""The engine pipeline on the memory backend: routing, retries, dead letters, run and stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import balog
from balog import get_logger
from balog.consumers import Consumer, ConsumerHub
from balog.engines import Backoff, TransportEngine, create_engine
from balog.engines._leases import LeaseKeeper
from balog.engines.memory import MemoryEngine
from balog.events import encode, new_event
from balog.exceptions import ConfigurationError, ConsumerError, LeaseExpired
from balog.transports.base import Delivery, Transport
from balog.transports.memory import MemoryBroker, MemoryTransport, default_broker

METRICS = {"cls_type": "metrics", "values": [{"name": "total", "value": 1}]}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    assert wait_for(condition, timeout), f"condition did not hold within {timeout:g} s"


class SeedOperator:
    """The seed README's ConsumerOperator, verbatim in behaviour."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def get_topic(self, consumer: Consumer) -> str:
        env = self.settings["api.sqs.queue_env"]
        return consumer.topic.format(env=env)

    def process_event(self, consumer: Consumer, event: dict) -> Any:
        return consumer.func(self.settings, event)


def body(payload: dict | None = None, schema: str | None = None) -> bytes:
    event = new_event("app.done", payload or METRICS)
    if schema:
        event["schema"] = schema
    return encode(event)


def test_seed_readme_end_to_end_on_memory() -> None:
    """get_logger(...).info('done', payload=...) reaches a scanned consumer via the operator."""
    import seedapp

    seedapp.RECEIVED.clear()
    balog.configure("memory", "myproj-events-{env}", topic_vars={"env": "develop"})
    balogger = get_logger("justitia.scripts.process_results")
    balogger.info(
        "done",
        payload={
            "cls_type": "metrics",
            "values": [
                {"name": "total", "value": 123},
                {"name": "succeeded", "value": 456},
                {"name": "failed", "value": 789},
            ],
        },
    )
    assert balog.flush(5)
    hub = ConsumerHub()
    hub.scan(seedapp)
    engine = create_engine(
        "memory", hub=hub, consumer_operator=SeedOperator({"api.sqs.queue_env": "develop"})
    )
    assert isinstance(engine, MemoryEngine)
    assert engine.drain() == 1
    assert [(kind, e["header"]["channel"]) for kind, e in seedapp.RECEIVED] == [
        ("metrics", "justitia.scripts.process_results.done")
    ]
    assert default_broker.size("myproj-events-develop") == 0


def test_routes_to_every_matching_consumer_and_acks() -> None:
    """One message reaches every consumer that matches it, then is acked."""
    broker = MemoryBroker()
    calls: list[str] = []
    hub = ConsumerHub(
        [
            Consumer(lambda e: calls.append("a"), "t", cls_type="metrics"),
            Consumer(lambda e: calls.append("b"), "t", version="<1.0"),
            Consumer(lambda e: calls.append("c"), "t", cls_type="log"),
        ]
    )
    engine = MemoryEngine(hub, broker=broker)
    MemoryTransport(broker).send("t", [body()])
    assert engine.drain() == 1
    assert sorted(calls) == ["a", "b"]
    assert broker.size("t") == 0
    assert engine.stats()["t"].processed == 1


def test_failing_consumer_is_retried_then_dead_lettered_with_reason() -> None:
    """A consumer that keeps raising: retried up to max_attempts, then dead-lettered."""
    broker = MemoryBroker()
    attempts: list[int] = []

    def flaky(event: dict) -> None:
        attempts.append(1)
        raise RuntimeError("database is down")

    engine = MemoryEngine(ConsumerHub([Consumer(flaky, "t")]), broker=broker, max_attempts=3)
    raw = body()
    MemoryTransport(broker).send("t", [raw])
    engine.drain()
    assert len(attempts) == 3
    (dead,) = broker.dead_letters("t")
    assert dead.body == raw
    assert "RuntimeError: database is down" in dead.reason
    assert "after 3 attempts" in dead.reason
    assert dead.receive_count == 3
    assert broker.size("t") == 0
    stats = engine.stats()["t"]
    assert (stats.retried, stats.dead_lettered) == (2, 1)


def test_consumer_succeeding_on_retry_is_acked() -> None:
    """A consumer that fails once then succeeds: processed, nothing dead-lettered."""
    broker = MemoryBroker()
    outcomes = iter([RuntimeError("once"), None])

    def once(event: dict) -> None:
        error = next(outcomes)
        if error:
            raise error

    engine = MemoryEngine(ConsumerHub([Consumer(once, "t")]), broker=broker)
    MemoryTransport(broker).send("t", [body()])
    engine.drain()
    assert broker.dead_letters("t") == []
    assert broker.size("t") == 0


def test_retry_waits_for_the_backoff() -> None:
    """A nacked message is not available again before its backoff delay."""
    broker = MemoryBroker()
    engine = MemoryEngine(
        ConsumerHub([Consumer(lambda e: 1 / 0, "t")]),
        broker=broker,
        backoff=Backoff(base=0.3, jitter=0.0),
    )
    MemoryTransport(broker).send("t", [body()])
    assert engine.drain() == 1
    assert engine.drain() == 0  # delayed, not available now
    assert broker.size("t") == 1
    assert wait_for(lambda: engine.drain() == 1, timeout=3)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "DecodeError"),
        (b"[1]", "not a JSON object"),
        (body(schema="9.0.0"), "UnsupportedSchemaVersion"),
        (body({"cls_type": "metrics", "values": "nope"}), "InvalidPayload"),
        (b"{" * 10_000, "DecodeError"),
    ],
)
def test_bad_input_is_dead_lettered_at_once_and_next_is_processed(raw: bytes, reason: str) -> None:
    """Bad bodies go to the dead-letter place on first receipt; the next message still flows."""
    broker = MemoryBroker()
    seen: list[dict] = []
    engine = MemoryEngine(ConsumerHub([Consumer(seen.append, "t")]), broker=broker)
    MemoryTransport(broker).send("t", [raw, body()])
    assert engine.drain() == 2
    (dead,) = broker.dead_letters("t")
    assert reason in dead.reason
    assert dead.receive_count == 1
    assert dead.body == raw
    assert len(seen) == 1


def test_unrouted_event_is_acked_and_given_to_default_handler() -> None:
    """An event no consumer wants is acked and passed to default_event_handler."""
    broker = MemoryBroker()
    unrouted: list[dict] = []
    engine = MemoryEngine(
        ConsumerHub([Consumer(lambda e: None, "t", cls_type="log")]),
        broker=broker,
        default_event_handler=unrouted.append,
    )
    MemoryTransport(broker).send("t", [body()])
    engine.drain()
    assert [e["payload"]["cls_type"] for e in unrouted] == ["metrics"]
    assert broker.size("t") == 0
    assert engine.stats()["t"].unrouted == 1


def test_drain_can_reraise_consumer_errors() -> None:
    """drain(raise_errors=True) re-raises what a consumer raised, after settling the message."""
    broker = MemoryBroker()
    engine = MemoryEngine(
        ConsumerHub([Consumer(lambda e: {}["missing"], "t")]), broker=broker, max_attempts=1
    )
    MemoryTransport(broker).send("t", [body()])
    with pytest.raises(ConsumerError) as info:
        engine.drain(raise_errors=True)
    assert isinstance(info.value.__cause__, KeyError)
    assert len(broker.dead_letters("t")) == 1


def test_run_in_a_thread_survives_failures_and_stops() -> None:
    """run() keeps workers alive through consumer errors and returns after stop()."""
    broker = MemoryBroker()
    seen: list[int] = []

    def consumer(event: dict) -> None:
        n = event["payload"]["n"]
        if n % 3 == 0:
            raise ValueError(f"bad {n}")
        seen.append(n)

    engine = MemoryEngine(
        ConsumerHub([Consumer(consumer, "t")]), broker=broker, max_attempts=1, wait=0.05
    )
    thread = threading.Thread(target=engine.run)
    thread.start()
    try:
        MemoryTransport(broker).send("t", [body({"cls_type": "n", "n": n}) for n in range(30)])
        assert wait_for(lambda: broker.size("t") == 0)
    finally:
        engine.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert sorted(seen) == [n for n in range(30) if n % 3]
    assert len(broker.dead_letters("t")) == 10


def test_long_consumer_keeps_its_lease() -> None:
    """While a consumer runs past its lease, the lease keeper extends it: no redelivery."""
    broker = MemoryBroker()
    calls: list[str] = []

    def slow(event: dict) -> None:
        calls.append(event["header"]["id"])
        time.sleep(0.8)

    engines = [
        MemoryEngine(ConsumerHub([Consumer(slow, "t")]), broker=broker, lease=0.3, wait=0.05)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=e.run) for e in engines]
    for t in threads:
        t.start()
    try:
        MemoryTransport(broker).send("t", [body()])
        assert wait_for(lambda: broker.size("t") == 0, timeout=5)
    finally:
        for e in engines:
            e.stop()
        for t in threads:
            t.join(5)
    assert len(calls) == 1


def test_stop_releases_unstarted_messages_at_once() -> None:
    """On stop, received-but-unstarted messages are available again immediately."""
    broker = MemoryBroker()
    started = threading.Event()
    proceed = threading.Event()

    def blocking(event: dict) -> None:
        started.set()
        proceed.wait(5)

    engine = MemoryEngine(
        ConsumerHub([Consumer(blocking, "t")]), broker=broker, batch_size=10, lease=60, wait=0.05
    )
    MemoryTransport(broker).send("t", [body() for _ in range(5)])
    thread = threading.Thread(target=engine.run)
    thread.start()
    assert started.wait(5)
    engine.stop()
    proceed.set()
    thread.join(5)
    assert not thread.is_alive()
    assert broker.size("t") == 4
    assert broker.in_flight("t") == 0  # released, not waiting out a 60 s lease
    other = MemoryTransport(broker).receive("t", max_messages=10, wait=0)
    assert [d.receive_count for d in other] == [1, 1, 1, 1]


def test_generic_engine_runs_any_transport() -> None:
    """A TransportEngine works on any Transport instance, as a third party's would."""
    broker = MemoryBroker()
    seen: list[dict] = []
    engine = TransportEngine(
        ConsumerHub([Consumer(seen.append, "t")]), transport=MemoryTransport(broker)
    )
    MemoryTransport(broker).send("t", [body()])
    assert engine.drain() == 1
    assert len(seen) == 1


def test_run_with_no_consumers_is_a_configuration_error() -> None:
    """An engine with an empty hub refuses to run."""
    with pytest.raises(ConfigurationError, match="no consumers"):
        MemoryEngine(ConsumerHub(), broker=MemoryBroker()).run()


@pytest.mark.parametrize("option", [{"max_attempts": 0}, {"concurrency": 0}, {"batch_size": 0}])
def test_bad_engine_options_are_refused(option: dict) -> None:
    """Nonsense options fail when the engine is built."""
    with pytest.raises(ConfigurationError):
        MemoryEngine(ConsumerHub(), broker=MemoryBroker(), **option)


def test_backoff_grows_and_is_capped() -> None:
    """Backoff doubles per failure up to its maximum."""
    backoff = Backoff(base=1.0, factor=2.0, maximum=5.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = Backoff(base=10.0, jitter=0.1)
    assert all(9.0 <= jittered.delay(1) <= 11.0 for _ in range(50))


class _RecordingTransport(MemoryTransport):
    """A memory transport that records lease extensions and can hold one of them up."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.extended: list[str] = []
        self.stuck: set[str] = set()
        self.release_stuck = threading.Event()

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        if delivery.message_id in self.stuck:
            self.release_stuck.wait(10)
        self.extended.append(delivery.message_id)
        super().extend_lease(delivery, lease)


def test_lease_keeper_renews_leases_a_third_gone_only() -> None:
    """The lease keeper extends a held delivery once a third of its lease has gone, leaves a
    fresh one alone, and never renews one that was settled (dropped)."""
    broker = MemoryBroker()
    transport = _RecordingTransport(broker)
    transport.send("t", [body(), body(), body()])
    due, fresh, settled = transport.receive("t", max_messages=3, wait=0, lease=10)
    due.received_at -= 6
    settled.received_at -= 6
    keeper = LeaseKeeper(transport, lease=10)
    keeper.hold([due, fresh, settled])
    keeper.drop(settled)
    assert keeper.renew_due() == 1
    wait_until(lambda: transport.extended == [due.message_id])
    assert keeper.renew_due() == 0  # renewed: its clock starts again
    keeper.stop()


def test_lease_keeper_says_when_it_renewed_a_lease_that_had_run_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renewal that comes after the lease ran out (the keeper was held up: a process stopped,
    a machine starved of CPU) is still made, and a WARNING says the message may have been
    delivered again; a renewal in time says nothing."""
    broker = MemoryBroker()
    transport = _RecordingTransport(broker)
    transport.send("t", [body(), body()])
    overdue, in_time = transport.receive("t", max_messages=2, wait=0, lease=10)
    overdue.received_at -= 12
    in_time.received_at -= 6
    keeper = LeaseKeeper(transport, lease=10)
    keeper.hold([overdue, in_time])
    with caplog.at_level(logging.WARNING, logger="balog.engine"):
        assert keeper.renew_due() == 2
        wait_until(lambda: len(transport.extended) == 2)
        wait_until(lambda: any("run out" in r.getMessage() for r in caplog.records))
    keeper.stop()
    [warning] = [r.getMessage() for r in caplog.records if "run out" in r.getMessage()]
    assert overdue.message_id in warning
    assert "delivered again" in warning


def test_lease_keeper_extensions_do_not_hold_each_other_up() -> None:
    """One extension that hangs (an SQS call waiting out its timeout) does not delay the
    extension of the other held deliveries."""
    broker = MemoryBroker()
    transport = _RecordingTransport(broker)
    transport.send("t", [body(), body()])
    slow, other = transport.receive("t", max_messages=2, wait=0, lease=10)
    transport.stuck.add(slow.message_id)
    for delivery in (slow, other):
        delivery.received_at -= 6
    keeper = LeaseKeeper(transport, lease=10)
    keeper.hold([slow, other])
    try:
        assert keeper.renew_due() == 2
        wait_until(lambda: transport.extended == [other.message_id])
        assert keeper.renew_due() == 0  # the stuck one is not extended twice at once
    finally:
        transport.release_stuck.set()
    wait_until(lambda: sorted(transport.extended) == sorted([slow.message_id, other.message_id]))
    keeper.stop()


def test_ack_many_default_reports_each_outcome() -> None:
    """Transport.ack_many acks one by one and returns None or the error for each, never raising."""
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    transport.send("t", [body(), body()])
    first, second = transport.receive("t", max_messages=2, wait=0)
    transport.ack(second)  # its receipt is now stale
    outcomes = Transport.ack_many(transport, [first, second])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], LeaseExpired)
    assert broker.size("t") == 0


def test_ack_delay_acks_a_batch_together_after_processing() -> None:
    """With ack_delay, processed messages are acked together once the batch is done, and stay
    leased (not available to others) until then; the counts are the same as acking at once."""
    broker = MemoryBroker()
    seen_sizes: list[int] = []

    def consumer(event: dict) -> None:
        seen_sizes.append(broker.in_flight("t"))

    engine = MemoryEngine(
        ConsumerHub([Consumer(consumer, "t")]), broker=broker, batch_size=5, ack_delay=60.0
    )
    MemoryTransport(broker).send("t", [body() for _ in range(5)])
    assert engine.drain() == 5
    assert seen_sizes == [5, 5, 5, 5, 5]  # none acked while the batch ran
    assert broker.size("t") == 0
    assert engine.stats()["t"].processed == 5

"""``async def`` consumers on every backend: awaited, retried, dead-lettered, mixed with sync ones,
run many at once with ``max_in_flight``, and served inside an application's event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from backends import FAST_RETRY, Backend, run_engine_until

from balog.consumers import Consumer, ConsumerHub
from balog.engines.memory import MemoryEngine
from balog.events import EventDict, encode, new_event
from balog.testing import EngineHarness, await_events
from balog.transports.memory import MemoryBroker, MemoryTransport


def event_body(n: int, cls_type: str = "metrics") -> bytes:
    payload: dict[str, Any] = {"cls_type": cls_type, "n": n}
    if cls_type == "metrics":
        payload["values"] = [{"name": "n", "value": n}]
    return encode(new_event("tests.async.done", payload))


class SeedOperator:
    """The seed README's operator: it returns what the consumer function returns, so for an
    ``async def`` consumer a coroutine the engine must await."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def get_topic(self, consumer: Consumer) -> str:
        return consumer.topic

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        return consumer.func(self.settings, event)


def test_async_consumer_is_awaited_before_the_ack(backend: Backend) -> None:
    """An ``async def`` consumer runs to completion (past an await) before its message is acked;
    nothing is counted processed that did not run."""
    done: list[int] = []

    async def consume(settings: dict[str, Any], event: EventDict) -> None:
        await asyncio.sleep(0.01)
        done.append(event["payload"]["n"])

    hub = ConsumerHub([Consumer(consume, backend.topic, name="tests.async.consume")])
    engine = backend.make_engine(hub, consumer_operator=SeedOperator({}), handle_signals=False)
    backend.send(*[event_body(n) for n in range(5)])
    run_engine_until(engine, lambda: len(done) >= 5)
    assert sorted(done) == [0, 1, 2, 3, 4]
    stats = engine.stats()[backend.topic]
    assert stats.processed == 5
    assert stats.dead_lettered == 0


def test_async_consumer_that_raises_is_retried_then_dead_lettered(backend: Backend) -> None:
    """An exception raised after an await is a failure like any other: retried with backoff,
    then dead-lettered with the consumer's name and error."""
    calls: list[int] = []

    async def fails(event: EventDict) -> None:
        await asyncio.sleep(0)
        calls.append(event["payload"]["n"])
        raise ValueError(f"async consumer refuses n={event['payload']['n']}")

    hub = ConsumerHub([Consumer(fails, backend.topic, name="tests.async.fails")])
    engine = backend.make_engine(hub, max_attempts=2, backoff=FAST_RETRY, handle_signals=False)
    backend.send(event_body(7))
    run_engine_until(engine, lambda: len(backend.dead_letters()) >= 1)
    (letter,) = backend.dead_letters()
    assert "tests.async.fails" in letter.reason
    assert "async consumer refuses n=7" in letter.reason
    assert calls == [7, 7]
    assert engine.stats()[backend.topic].retried == 1


def test_sync_and_async_consumers_share_a_topic(backend: Backend) -> None:
    """A sync and an async consumer of one topic both get every event, in one hub."""
    sync_seen: list[int] = []
    async_seen: list[int] = []

    def sync_consumer(event: EventDict) -> None:
        sync_seen.append(event["payload"]["n"])

    async def async_consumer(event: EventDict) -> None:
        await asyncio.sleep(0)
        async_seen.append(event["payload"]["n"])

    hub = ConsumerHub(
        [
            Consumer(sync_consumer, backend.topic, name="tests.async.sync"),
            Consumer(async_consumer, backend.topic, name="tests.async.async"),
        ]
    )
    engine = backend.make_engine(hub, handle_signals=False)
    backend.send(*[event_body(n) for n in range(3)])
    run_engine_until(engine, lambda: len(sync_seen) >= 3 and len(async_seen) >= 3)
    assert sorted(sync_seen) == [0, 1, 2]
    assert sorted(async_seen) == [0, 1, 2]


def test_max_in_flight_runs_async_consumers_together(backend: Backend) -> None:
    """With ``max_in_flight=8``, async consumers waiting on I/O run side by side (more than one
    at a time, never more than eight), and every event is processed once."""
    running = 0
    most = 0
    done: list[int] = []
    lock = threading.Lock()

    async def io_bound(event: EventDict) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        await asyncio.sleep(0.05)
        with lock:
            running -= 1
            done.append(event["payload"]["n"])

    hub = ConsumerHub([Consumer(io_bound, backend.topic, name="tests.async.io")])
    engine = backend.make_engine(hub, max_in_flight=8, handle_signals=False)
    backend.send(*[event_body(n) for n in range(24)])
    run_engine_until(engine, lambda: len(done) >= 24)
    assert list(range(24)) == sorted(done)
    assert 1 < most <= 8


def test_max_in_flight_sends_held_acks_once_nothing_more_is_at_hand(backend: Backend) -> None:
    """With events in flight, acks batched by ``ack_delay`` go out as soon as a receive finds
    nothing more, not after the delay: a broker whose prefetch window is full of acked but
    unsent deliveries pushes nothing more, and the worker would stall until the delay ends."""
    done: list[int] = []

    async def quick(event: EventDict) -> None:
        await asyncio.sleep(0)
        done.append(event["payload"]["n"])

    hub = ConsumerHub([Consumer(quick, backend.topic, name="tests.async.quick")])
    engine = backend.make_engine(hub, max_in_flight=4, ack_delay=600, handle_signals=False)
    backend.send(*[event_body(n) for n in range(12)])

    # processed is counted once the ack has gone out
    def all_acked() -> bool:
        stats = engine.stats().get(backend.topic)
        return stats is not None and stats.processed >= 12

    run_engine_until(engine, all_acked, timeout=20)
    assert sorted(done) == list(range(12))


def test_max_in_flight_runs_sync_consumers_on_threads(backend: Backend) -> None:
    """With ``max_in_flight=4``, blocking sync consumers run on a pool of four threads."""
    running = 0
    most = 0
    done: list[int] = []
    lock = threading.Lock()

    def blocking(event: EventDict) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # the consumer's own blocking work, not the test waiting
        with lock:
            running -= 1
            done.append(event["payload"]["n"])

    hub = ConsumerHub([Consumer(blocking, backend.topic, name="tests.async.blocking")])
    engine = backend.make_engine(hub, max_in_flight=4, handle_signals=False)
    backend.send(*[event_body(n) for n in range(12)])
    run_engine_until(engine, lambda: len(done) >= 12)
    assert list(range(12)) == sorted(done)
    assert 1 < most <= 4


def test_serve_runs_async_consumers_on_the_applications_loop() -> None:
    """``async with engine`` inside an application's loop: async consumers run on that loop (they
    can use what the application bound to it), and the loop is never blocked by a receive."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("app-events", [event_body(n) for n in range(3)])

    async def application() -> tuple[list[int], int, set[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()  # bound to this loop
        loop_thread = threading.get_ident()
        threads: set[int] = set()

        async def consume(event: EventDict) -> None:
            threads.add(threading.get_ident())
            await queue.put(event["payload"]["n"])

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        hub = ConsumerHub([Consumer(consume, "app-events", name="tests.async.app")])
        engine = MemoryEngine(hub, broker=broker, wait=1.0)
        tick_task = asyncio.create_task(ticker())
        got = []
        async with engine:
            for _ in range(3):
                got.append(await asyncio.wait_for(queue.get(), 10))
            before = ticks
            await asyncio.sleep(0.3)  # the engine now idles in a 1 s receive
            idle_ticks = ticks - before
        tick_task.cancel()
        assert {loop_thread} == threads
        return got, idle_ticks, threads

    got, idle_ticks, _ = asyncio.run(application())
    assert sorted(got) == [0, 1, 2]
    assert idle_ticks >= 10, f"the application's loop ticked {idle_ticks} times in 0.3 s"


def test_await_events_from_an_async_test() -> None:
    """balog.testing.await_events serves the engine on the test's own loop."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1), event_body(2)])

    async def consume(event: EventDict) -> None:
        await asyncio.sleep(0)

    hub = ConsumerHub([Consumer(consume, "t", name="tests.async.awaited")])
    events = asyncio.run(await_events(MemoryEngine(hub, broker=broker), 2, raise_errors=True))
    assert sorted(e["payload"]["n"] for e in events) == [1, 2]


def test_harness_raises_an_async_consumers_error_in_the_test() -> None:
    """With raise_errors, an exception from an async consumer reaches the async test."""
    from balog.exceptions import ConsumerError

    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])

    async def broken(event: EventDict) -> None:
        await asyncio.sleep(0)
        raise LookupError("no such order")

    async def scenario() -> None:
        hub = ConsumerHub([Consumer(broken, "t", name="tests.async.broken")])
        async with EngineHarness(MemoryEngine(hub, broker=broker), raise_errors=True) as harness:
            await harness.await_events(1, timeout=5)

    with pytest.raises(ConsumerError) as raised:
        asyncio.run(scenario())
    assert isinstance(raised.value.__cause__, LookupError)


def test_drain_awaits_async_consumers() -> None:
    """engine.drain() from plain code awaits async consumers too."""
    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(n) for n in range(4)])
    seen: list[int] = []

    async def consume(event: EventDict) -> None:
        await asyncio.sleep(0.001)
        seen.append(event["payload"]["n"])

    engine = MemoryEngine(
        ConsumerHub([Consumer(consume, "t", name="tests.async.drained")]), broker=broker
    )
    assert engine.drain(raise_errors=True) == 4
    assert seen == [0, 1, 2, 3]
    assert engine.stats()["t"].processed == 4

"""What a consumer or a slow batch can do to a worker: nothing stalls it, nothing is lost.

Each case runs on every backend and checks a ledger: every event processed or dead-lettered,
none lost, none run twice where the lease was kept.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from backends import FAST_RETRY, Backend, run_engine_until

from balog.consumers import Consumer, ConsumerHub
from balog.events import EventDict, encode, new_event


def event_body(n: int) -> bytes:
    return encode(new_event("tests.robust.done", {"cls_type": "robust", "n": n}))


class HostileStr(Exception):
    """An exception whose ``__str__`` and ``__repr__`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ refuses")


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_base_exceptions_from_a_consumer_fail_only_that_event(
    backend: Backend, kind: type[BaseException]
) -> None:
    """A consumer raising SystemExit, KeyboardInterrupt or GeneratorExit fails that event
    (retried, then dead-lettered with the reason); the worker lives on and processes the
    others."""
    done: list[int] = []

    def consume(event: EventDict) -> None:
        n = event["payload"]["n"]
        if n == 0:
            raise kind("consumer asked to exit")
        done.append(n)

    hub = ConsumerHub([Consumer(consume, backend.topic, name="tests.robust.exits")])
    engine = backend.make_engine(hub, max_attempts=2, backoff=FAST_RETRY, handle_signals=False)
    backend.send(*[event_body(n) for n in range(4)])
    run_engine_until(engine, lambda: len(done) >= 3 and len(backend.dead_letters()) >= 1)
    assert sorted(done) == [1, 2, 3]
    (letter,) = backend.dead_letters()
    assert kind.__name__ in letter.reason
    assert "tests.robust.exits" in letter.reason
    assert engine.stats()[backend.topic].restarts == 0


def test_an_exception_whose_str_raises_is_still_dead_lettered(backend: Backend) -> None:
    """A reason is built whatever the exception's ``__str__`` does; the message is
    dead-lettered after its attempts and the events behind it flow on."""
    done: list[int] = []

    def consume(event: EventDict) -> None:
        n = event["payload"]["n"]
        if n < 2:
            raise HostileStr()
        done.append(n)

    hub = ConsumerHub([Consumer(consume, backend.topic, name="tests.robust.hostile")])
    engine = backend.make_engine(hub, max_attempts=2, backoff=FAST_RETRY, handle_signals=False)
    backend.send(*[event_body(n) for n in range(6)])
    run_engine_until(engine, lambda: len(done) >= 4 and len(backend.dead_letters()) >= 2)
    assert sorted(done) == [2, 3, 4, 5]
    letters = backend.dead_letters()
    assert len(letters) == 2
    assert all("HostileStr" in letter.reason for letter in letters)
    assert all("tests.robust.hostile" in letter.reason for letter in letters)


def test_deliveries_waiting_behind_a_slow_one_keep_their_leases(backend: Backend) -> None:
    """A batch of ten whose first event takes three leases: the nine waiting behind it keep
    their leases too and run once each (none lapses and runs again elsewhere)."""
    lease = 1.0
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def consume(event: EventDict) -> None:
        n = event["payload"]["n"]
        with lock:
            calls[n] += 1
        if n == 0:
            time.sleep(lease * 3)  # the consumer's own slow work

    hub = ConsumerHub([Consumer(consume, backend.topic, name="tests.robust.slow")])
    first = backend.make_engine(hub, batch_size=10, lease=lease, handle_signals=False)
    second = backend.make_engine(hub, batch_size=10, lease=lease, handle_signals=False)
    backend.send(*[event_body(n) for n in range(10)])
    started = threading.Event()
    stop_second = threading.Event()

    def run_second() -> None:
        started.wait(10)
        while not stop_second.is_set():
            second.drain(timeout=0.5)
            stop_second.wait(0.1)

    thread = threading.Thread(target=run_second, daemon=True)
    thread.start()

    def all_done() -> bool:
        with lock:
            if calls[0]:
                started.set()
            return len(calls) == 10

    try:
        # The second engine drains the topic all along: a lapsed lease would hand it a
        # message the first still holds, and that message would run twice.
        run_engine_until(first, all_done, timeout=30)
    finally:
        stop_second.set()
        thread.join(10)
        second.close()
    assert dict.fromkeys(range(10), 1) == dict(calls)


def test_a_handler_outliving_its_lease_through_a_stop_runs_once(backend: Backend) -> None:
    """stop() (SIGTERM) while a handler runs three leases long: the lease keeper keeps the
    lease until the handler is done and acked, so no other engine runs the event again."""
    lease = 1.0
    calls: Counter[int] = Counter()
    lock = threading.Lock()
    started = threading.Event()

    def consume(event: EventDict) -> None:
        with lock:
            calls[event["payload"]["n"]] += 1
        started.set()
        time.sleep(lease * 3)  # the consumer's own slow work

    hub = ConsumerHub([Consumer(consume, backend.topic, name="tests.robust.stopping")])
    first = backend.make_engine(hub, batch_size=1, lease=lease, handle_signals=False)
    second = backend.make_engine(hub, batch_size=1, lease=lease, handle_signals=False)
    backend.send(event_body(0))
    raised: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run_first, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the first engine never started the event"
        first.stop()  # the handler is still running
        while thread.is_alive():  # meanwhile another engine looks for lapsed leases
            second.drain(timeout=0.3)
            thread.join(0.1)
    finally:
        first.stop()
        thread.join(30)
        first.close()
    second.drain(timeout=1.0)  # and once more after the first engine is gone
    second.close()
    assert raised == []
    assert dict(calls) == {0: 1}


def test_a_worker_that_crashes_is_restarted_and_counted() -> None:
    """A worker killed by something outside the pipeline (here a transport raising a
    BaseException from receive) is restarted, counted in ``restarts``, and work goes on."""
    from balog.engines.base import TransportEngine
    from balog.transports.memory import MemoryBroker, MemoryTransport

    class Crash(BaseException):
        pass

    class CrashOnce(MemoryTransport):
        crashed = False

        def receive(self, topic: str, **kwargs: Any) -> Any:
            if not self.crashed:
                self.crashed = True
                raise Crash("receive blew up")
            return super().receive(topic, **kwargs)

    broker = MemoryBroker()
    MemoryTransport(broker).send("t", [event_body(1)])
    done: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: done.append(e["payload"]["n"]), "t")])
    engine = TransportEngine(hub, transport=CrashOnce(broker), wait=0.05, handle_signals=False)
    run_engine_until(engine, lambda: done == [1], timeout=10)
    assert engine.stats()["t"].restarts == 1

"""Consumers killed and stopped for real, on every backend, with a ledger: nothing lost.

Consumers run as separate processes (``consumer_proc.py``). SIGKILL at random points mid-stream,
a restart each time, and at the end every produced event id is in the ledger at least once.
SIGTERM: in-flight events finish and are acked, and the rest go to the next consumer at once.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from .conftest import LEASE, FaultBackend, slow
from .helpers import ConsumerProcess, read_ids, reconcile, wait_for

EVENTS = 2_000
# The bounded run (CI); --slow: 2,000 events and 10 kills on every backend, three times over.
KILLS = {"sqlite": 10, "rabbitmq": 3, "redis": 3, "redis-native": 4, "sqs": 2}
BOUNDED_EVENTS = {
    "sqlite": 2_000,
    "rabbitmq": 2_000,
    "redis": 2_000,
    "redis-native": 2_000,
    "sqs": 400,
}


def test_consumer_killed_mid_stream_loses_nothing(
    fault_backend: FaultBackend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """2,000 events; the consumer SIGKILLed at random points and restarted: all processed (on
    Redis via kombu, at most the one message per kill that kombu's BRPOP had in flight is lost;
    on native Redis, none)."""
    kills = 10 if slow(request) else KILLS[fault_backend.name]
    rounds = 3 if slow(request) else 1
    events = EVENTS if slow(request) else BOUNDED_EVENTS[fault_backend.name]
    rng = random.Random()
    for round_no in range(rounds):
        ledger = tmp_path / f"ledger-{round_no}.txt"
        produced = fault_backend.produce(events, prefix=f"r{round_no}-")
        for point in sorted(rng.sample(range(20, events - 20), kills)):
            kill_at(fault_backend, ledger, point)
        finish(fault_backend, ledger, produced, allowed=kills * fault_backend.lost_per_crash)
        report = reconcile(
            f"{fault_backend.name}-sigkill-x{kills}-round{round_no}", produced, read_ids(ledger)
        )
        # Redis through kombu: a crash loses the message that kombu's outstanding BRPOP had
        # already popped (see docs/guarantees.md); at most one per kill. Every other: none.
        assert len(report.lost) <= kills * fault_backend.lost_per_crash, report.lost
        assert report.unexpected == []


def kill_at(backend: FaultBackend, ledger: Path, point: int) -> None:
    """Start a consumer, SIGKILL it once the ledger holds ``point`` ids."""
    consumer = ConsumerProcess(backend.engine, backend.topic, ledger, options=backend.options)
    try:
        consumer.wait_ready()
        wait_for(
            lambda: len(read_ids(ledger)) >= point or consumer.proc.poll() is not None,
            timeout=60 + LEASE * 2,
            what=f"{point} events processed",
        )
        assert consumer.proc.poll() is None, consumer.stderr()[-3000:]
        consumer.kill()
    finally:
        consumer.close()


def finish(backend: FaultBackend, ledger: Path, produced: list[str], allowed: int) -> None:
    """Run a last consumer until every id (but ``allowed`` lost ones) is in the ledger."""
    final = ConsumerProcess(backend.engine, backend.topic, ledger, options=backend.options)
    wanted = set(produced)
    try:
        final.wait_ready()
        try:
            wait_for(lambda: len(wanted - set(read_ids(ledger))) <= allowed, timeout=90)
            # Give stragglers (redelivered after a lease) a few leases more to arrive.
            wait_for(lambda: wanted <= set(read_ids(ledger)), timeout=LEASE * 4)
        except AssertionError:
            pass  # the caller's ledger says what is missing
        assert final.terminate() == 0
    finally:
        final.close()


def test_sigterm_finishes_in_flight_and_hands_the_rest_over_at_once(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: started events finish and are acked; another consumer gets the rest
    within seconds, not after the lease."""
    ledger, started = tmp_path / "ledger.txt", tmp_path / "started.txt"
    produced = fault_backend.produce(200)
    options = {**fault_backend.options, "lease": "60"}
    first = ConsumerProcess(
        fault_backend.engine,
        fault_backend.topic,
        ledger,
        options=options,
        work=0.05,
        started=started,
    )
    try:
        first.wait_ready()
        wait_for(lambda: len(read_ids(ledger)) >= 20, timeout=60, what="20 events processed")
        assert first.terminate(timeout=30) == 0, first.stderr()[-3000:]
    finally:
        first.close()
    begun, done = read_ids(started), read_ids(ledger)
    assert set(begun) <= set(done), "an event started before SIGTERM did not finish"
    assert len(set(done)) < len(produced), "the first consumer finished everything: no test"

    handed_over = time.monotonic()
    second = ConsumerProcess(fault_backend.engine, fault_backend.topic, ledger, options=options)
    try:
        second.wait_ready()
        wanted = set(produced)
        wait_for(lambda: wanted <= set(read_ids(ledger)), timeout=40, what="the rest processed")
        took = time.monotonic() - handed_over
        assert second.terminate() == 0
    finally:
        second.close()
    print(
        f"{fault_backend.name}: the rest processed by a second consumer {took:.1f}s after SIGTERM"
    )
    assert took < 30  # the lease is 60 s: released messages did not wait for it
    report = reconcile(f"{fault_backend.name}-sigterm", produced, read_ids(ledger))
    assert report.lost == []
    # Acked before exit: nothing the first consumer finished came back to the second.
    assert report.duplicates == 0

"""A poison message among good ones, and consumers that run past their lease, on every backend."""

from __future__ import annotations

import time
from pathlib import Path

from .conftest import LEASE, FaultBackend
from .helpers import ConsumerProcess, read_ids, reconcile, wait_for


def test_poison_message_is_dead_lettered_after_max_attempts_while_others_flow(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    """One event always fails: dead-lettered with its reason after max_attempts; the other 199
    are processed meanwhile, not held up behind it."""
    ledger = tmp_path / "ledger.txt"
    produced = fault_backend.produce(200)
    poison = produced[3]
    options = {**fault_backend.options, "max_attempts": "3"}
    consumer = ConsumerProcess(
        fault_backend.engine, fault_backend.topic, ledger, options=options, fail_id=poison
    )
    try:
        consumer.wait_ready()
        started = time.monotonic()
        good = set(produced) - {poison}
        wait_for(lambda: good <= set(read_ids(ledger)), timeout=60, what="the good events")
        flowed = time.monotonic() - started
        wait_for(
            lambda: fault_backend.transport.dead_letters(fault_backend.topic),
            timeout=60,
            interval=0.5,
            what="the poison message dead-lettered",
        )
        dead_lettered = time.monotonic() - started
        assert consumer.terminate() == 0
    finally:
        consumer.close()
    dead = fault_backend.transport.dead_letters(fault_backend.topic)
    print(
        f"{fault_backend.name}: 199 good events in {flowed:.1f}s; "
        f"poison dead-lettered after {dead_lettered:.1f}s: {dead[0].reason!r}"
    )
    assert len(dead) == 1
    assert poison.encode() in dead[0].body
    assert "raised RuntimeError: this event always fails" in dead[0].reason
    assert dead[0].reason.endswith("(after 3 attempts)")
    report = reconcile(f"{fault_backend.name}-poison", sorted(good), read_ids(ledger))
    assert report.lost == []
    assert poison not in read_ids(ledger)


def test_consumer_running_three_leases_is_processed_once_with_two_engines(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    """Each event takes 3x the lease, two engines share the topic: each is processed once."""
    ledger, started = tmp_path / "ledger.txt", tmp_path / "started.txt"
    produced = fault_backend.produce(2)
    lease = float(fault_backend.options.get("lease", LEASE))
    options = {**fault_backend.options, "batch_size": "1"}
    consumers = [
        ConsumerProcess(
            fault_backend.engine,
            fault_backend.topic,
            ledger,
            options=options,
            work=3 * lease,
            started=started,
        )
        for _ in range(2)
    ]
    try:
        for consumer in consumers:
            consumer.wait_ready()
        wait_for(
            lambda: set(produced) <= set(read_ids(ledger)),
            timeout=12 * lease + 30,
            what="both events processed",
        )
        time.sleep(lease)  # a second delivery, if any, would have started by now
        for consumer in consumers:
            assert consumer.terminate(timeout=30 + 3 * lease) == 0
    finally:
        for consumer in consumers:
            consumer.close()
    report = reconcile(f"{fault_backend.name}-long-consumer", produced, read_ids(ledger))
    assert report.lost == []
    assert report.duplicates == 0
    assert sorted(read_ids(started)) == sorted(produced), "an event was started twice"

"""The producer under pressure: the transport down, slow or flaky while the application logs.

The application thread's cost per call stays bounded (no call blocks; only a generous bound is
asserted, never a tight timing), memory stays bounded by the buffer, every event is accounted for
(sent or counted as dropped), the drops are reported on the ``balog.producer`` logger, and no
event whose send the transport confirmed is missing from the broker.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

import balog
from balog.events import loads
from balog.exceptions import TransportConnectionError
from balog.handler import EventHandler
from balog.transports.memory import MemoryBroker, MemoryTransport

from .helpers import reconcile

EVENTS = 100_000
BLOCKED = 0.5  # seconds: no application call may take this long


class DownTransport(MemoryTransport):
    """A broker that is unreachable: each send waits ``latency`` seconds, then fails."""

    def __init__(self, latency: float) -> None:
        super().__init__(MemoryBroker())
        self.latency = latency
        self.attempts = 0

    def send(
        self, topic: str, bodies: Sequence[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.attempts += 1
        time.sleep(self.latency)
        raise TransportConnectionError("connection refused (broker down)")


class SlowTransport(MemoryTransport):
    """A broker that works, slowly: each send waits ``latency`` seconds first."""

    def __init__(self, latency: float, broker: MemoryBroker) -> None:
        super().__init__(broker, record=False)
        self.latency = latency

    def send(
        self, topic: str, bodies: Sequence[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        time.sleep(self.latency)
        super().send(topic, bodies, headers=headers)


class FlakyTransport(MemoryTransport):
    """Every third send fails outright; the others are confirmed (and recorded)."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker, record=True)
        self.calls = 0
        self.lock = threading.Lock()

    def send(
        self, topic: str, bodies: Sequence[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        with self.lock:
            self.calls += 1
            fail = self.calls % 3 == 0
        if fail:
            raise TransportConnectionError("connection reset by peer")
        super().send(topic, bodies, headers=headers)


@pytest.fixture(autouse=True)
def _restore_propagation() -> Iterator[None]:
    yield
    logging.getLogger("pressure").propagate = True


def configure(transport: MemoryTransport, **options: Any) -> EventHandler:
    """Attach balog's handler to the "pressure" logger, and stop the records there.

    Set in the test's own body: pytest attaches its log capture (which keeps every record) to
    loggers that do not propagate when the test starts, and to the root.
    """
    logging.getLogger("pressure").propagate = False
    return balog.configure(transport, "pressure", logger="pressure", **options)


def log_many(count: int) -> list[float]:
    """Log ``count`` events from the application thread; return each call's duration."""
    balogger = balog.get_logger("pressure.app")
    durations = []
    clock = time.perf_counter
    payload = {"cls_type": "metrics", "values": [{"name": "n", "value": 1}]}
    for _ in range(count):
        start = clock()
        balogger.info("tick", payload=payload)
        durations.append(clock() - start)
    return durations


def p99(durations: list[float]) -> float:
    return sorted(durations)[int(len(durations) * 0.99)]


def test_transport_down_application_calls_stay_cheap_and_drops_are_counted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Transport down for 100,000 events: no call blocks, all counted as dropped, and said so."""
    caplog.set_level(logging.WARNING, logger="balog.producer")
    transport = DownTransport(latency=0.05)
    handler = configure(transport, buffer_size=1000, max_retries=2, retry_delay=0.01)
    durations = log_many(EVENTS)
    print(
        f"transport down: {EVENTS} calls, max {max(durations) * 1e3:.2f} ms, "
        f"p99 {p99(durations) * 1e6:.1f} us"
    )
    assert max(durations) < BLOCKED
    handler.close(timeout=5)
    stats = handler.stats
    print(f"producer stats: {stats}")
    assert stats.sent == 0
    assert stats.dropped == EVENTS
    assert stats.enqueued + stats.dropped_full == EVENTS
    assert stats.dropped_full > 0
    assert transport.attempts > 0
    reports = [r.getMessage() for r in caplog.records if "has dropped" in r.getMessage()]
    assert reports, "drops were not reported on balog.producer"
    assert f"balog has dropped {EVENTS} event(s) so far" in reports[-1]


def test_transport_down_memory_stays_bounded_by_the_buffer(request: pytest.FixtureRequest) -> None:
    """Transport down while 100,000 events are logged (25,000 without --slow, as tracing memory is
    slow): traced memory grows by the buffer at most, not per event."""
    events = EVENTS if request.config.getoption("--slow") else 25_000
    transport = DownTransport(latency=0.05)
    buffer_size = 1000
    handler = configure(transport, buffer_size=buffer_size, max_retries=1, retry_delay=0.01)
    log_many(200)  # warm caches (schemas, loggers) before measuring
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        log_many(events)
        _, peak = tracemalloc.get_traced_memory()
        if peak - baseline > 20e6:
            for stat in tracemalloc.take_snapshot().statistics("traceback")[:3]:
                print(stat)
                print("\n".join(stat.traceback.format()[-12:]))
    finally:
        tracemalloc.stop()
    buffered = len(handler._buffer)
    handler.close(timeout=5)
    growth = peak - baseline
    # An event with its dicts is about 2 KB; allow 4 KB per buffered event plus 4 MB of slack.
    bound = buffer_size * 4096 + 4 * 1024 * 1024
    print(
        f"memory: peak growth {growth / 1e6:.1f} MB for {events} events "
        f"(bound {bound / 1e6:.1f} MB; buffer {buffer_size}, held at the end {buffered})"
    )
    assert buffered <= buffer_size
    assert growth < bound
    assert handler.stats.dropped == events + 200


def test_slow_transport_application_calls_stay_cheap_and_every_event_is_accounted_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A slow broker: calls stay cheap, and every event is either in the broker or counted."""
    caplog.set_level(logging.WARNING, logger="balog.producer")
    broker = MemoryBroker()
    handler = configure(SlowTransport(0.02, broker), buffer_size=2000, batch_size=10)
    durations = log_many(EVENTS)
    print(
        f"slow transport: {EVENTS} calls, max {max(durations) * 1e3:.2f} ms, "
        f"p99 {p99(durations) * 1e6:.1f} us"
    )
    assert max(durations) < BLOCKED
    handler.close(timeout=10)
    stats = handler.stats
    print(f"producer stats: {stats}")
    assert broker.size("pressure") == stats.sent
    assert stats.sent + stats.dropped == EVENTS
    assert stats.dropped_full > 0  # 20 ms per 10 events cannot keep up: the buffer overflowed
    assert any("has dropped" in r.getMessage() for r in caplog.records)


def test_flaky_transport_loses_no_event_whose_send_was_confirmed() -> None:
    """Sends fail intermittently: every confirmed event reaches the broker; the rest are counted."""
    broker = MemoryBroker()
    transport = FlakyTransport(broker)
    handler = configure(transport, buffer_size=EVENTS, max_retries=3, retry_delay=0.001)
    count = 20_000
    log_many(count)
    assert handler.flush(timeout=60)
    handler.close()
    confirmed = [loads(body)["header"]["id"] for _, body in transport.sent]
    queued = [loads(body)["header"]["id"] for body in broker.queued("pressure")]
    report = reconcile("producer-flaky", confirmed, queued)
    stats = handler.stats
    print(f"producer stats: {stats}")
    assert report.lost == []
    assert report.duplicates == 0
    assert stats.sent == len(confirmed)
    assert stats.sent + stats.dropped == count
    assert stats.retries > 0


def test_transport_down_does_not_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """A broker failing at once for every batch: a few producer log lines a second, not one each."""
    caplog.set_level(logging.INFO, logger="balog.producer")
    transport = DownTransport(latency=0.001)  # fails at once, ~4 s of failing batches in all
    handler = configure(
        transport, buffer_size=EVENTS, batch_size=10, max_retries=1, retry_delay=0.0
    )
    started = time.monotonic()
    log_many(20_000)
    handler.close(timeout=30)
    elapsed = time.monotonic() - started
    records = [r for r in caplog.records if r.name == "balog.producer"]
    print(
        f"transport down, failing fast: {transport.attempts} send attempts, "
        f"{len(records)} log lines in {elapsed:.1f}s"
    )
    assert handler.stats.dropped == 20_000
    assert transport.attempts >= 2000  # every batch was tried: the drops are real failures
    assert len(records) <= 4 * (elapsed + 1) + 2
    assert any("more like this held back" in r.getMessage() for r in records)

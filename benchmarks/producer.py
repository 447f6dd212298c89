"""Case 2, the producer: what one ``balogger.info(...)`` call costs the application thread (median
and p99), and end-to-end events/s into the memory transport (from the first call until
``flush()`` returns: built, validated, encoded and sent).

The baseline is what a team would write by hand with the standard library: ``logging`` with a
``QueueHandler``, and a ``QueueListener`` thread turning each record into a JSON event.
"""

from __future__ import annotations

import gc
import logging
import logging.handlers
import queue
import time
from typing import Any

from benchmarks import Row, median, row

DEFAULT_EVENTS = 50_000
PAYLOAD = {
    "cls_type": "metrics",
    "values": [{"name": "rows_read", "value": 1234}, {"name": "duration_seconds", "value": 0.25}],
}


def _percentile(sorted_ns: list[int], fraction: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * fraction))] / 1000.0


def _balog(events: int) -> tuple[float, float, float]:
    import balog
    from balog.producer import state
    from balog.transports.memory import MemoryBroker, MemoryTransport

    transport = MemoryTransport(MemoryBroker(), record=False)
    handler = balog.configure(transport, "bench-producer", buffer_size=events + 10)
    balogger = balog.get_logger("bench.producer")
    clock = time.perf_counter_ns
    costs = [0] * events
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for i in range(events):
            t = clock()
            balogger.info("done", PAYLOAD)
            costs[i] = clock() - t
        if not balog.flush(timeout=120):
            raise RuntimeError("the producer did not flush in time")
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    stats = handler.stats
    state.reset()
    if stats.sent != events:
        raise RuntimeError(f"the producer sent {stats.sent} of {events} events ({stats})")
    costs.sort()
    return _percentile(costs, 0.5), _percentile(costs, 0.99), events / elapsed


class _JSONSink(logging.Handler):
    """The listener's end of the baseline: the record becomes a JSON event, then goes nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        import json

        json.dumps(
            {
                "channel": record.name,
                "timestamp": record.created,
                "payload": getattr(record, "payload", None),
            }
        )
        self.count += 1


def _stdlib(events: int) -> tuple[float, float, float]:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sink = _JSONSink()
    listener = logging.handlers.QueueListener(q, sink)
    log = logging.getLogger("bench.stdlib")
    log.propagate = False
    log.setLevel(logging.INFO)
    qh = logging.handlers.QueueHandler(q)
    log.addHandler(qh)
    listener.start()
    clock = time.perf_counter_ns
    costs = [0] * events
    extra = {"payload": PAYLOAD}
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for i in range(events):
            t = clock()
            log.info("done", extra=extra)
            costs[i] = clock() - t
        listener.stop()  # returns once the listener handled everything queued
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        log.removeHandler(qh)
    if sink.count != events:
        raise RuntimeError(f"the baseline handled {sink.count} of {events} records")
    costs.sort()
    return _percentile(costs, 0.5), _percentile(costs, 0.99), events / elapsed


def run(repeat: int = 3, events: int = DEFAULT_EVENTS) -> list[Row]:
    ours: list[tuple[float, float, float]] = []
    theirs: list[tuple[float, float, float]] = []
    for _ in range(repeat):
        ours.append(_balog(events))
        theirs.append(_stdlib(events))
    med, p99, e2e = (median([r[i] for r in ours]) for i in range(3))
    b_med, b_p99, b_e2e = (median([r[i] for r in theirs]) for i in range(3))
    base = "logging + QueueHandler"
    return [
        row(
            "2 producer call cost, median",
            med,
            base,
            b_med,
            unit="us/call",
            higher_is_better=False,
            target="<= 15 us",
            met=med <= 15.0,
        ),
        row("2 producer call cost, p99", p99, base, b_p99, unit="us/call", higher_is_better=False),
        row(
            "2 producer end-to-end into memory",
            e2e,
            base + " -> QueueListener -> json",
            b_e2e,
            target=">= 30,000/s",
            met=e2e >= 30_000,
        ),
    ]

"""Case 7, memory: peak RSS growth while events pass through balog, each run in a fresh process.

- ``engine``: events are produced onto a memory broker (``MemoryTransport(record=False)``) in
  chunks and drained by the memory engine through a no-op consumer;
- ``producer-down``: ``balogger.info`` is called while the transport fails every send; the
  producer's buffer (``buffer_size`` events) is what bounds memory, the rest is dropped and counted.

Growth is the peak resident set (``VmHWM``, or ``ru_maxrss``) at the end minus the resident set
after a warm-up chunk. The baseline row is the same process keeping every body in a list, what an
unbounded queue would hold.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks import Row, median, row

DEFAULT_EVENTS = 1_000_000
CHUNK = 10_000
BUFFER = 10_000


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def _engine(events: int) -> dict[str, Any]:
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines.memory import MemoryEngine
    from balog.events import encode, new_event
    from balog.transports.memory import MemoryBroker, MemoryTransport

    seen = [0]

    def no_op(event: dict[str, Any]) -> None:
        seen[0] += 1

    broker = MemoryBroker()
    transport = MemoryTransport(broker, record=False)
    engine = MemoryEngine(ConsumerHub([Consumer(no_op, "bench-memory")]), broker=broker)
    payload = {"cls_type": "metrics", "values": [{"name": "n", "value": 0}]}

    # One chunk of distinct bodies, sent again and again: each send makes new messages and each
    # drain decodes them afresh, and the clock is not spent encoding.
    bodies = [encode(new_event("bench.memory", {**payload, "seq": i})) for i in range(CHUNK)]

    def chunk(start: int, size: int) -> None:
        transport.send("bench-memory", bodies[:size])
        engine.drain()

    chunk(0, min(CHUNK, events))
    before = _rss_mb("VmRSS")
    started = time.perf_counter()
    for start in range(CHUNK, events, CHUNK):
        chunk(start, min(CHUNK, events - start))
    elapsed = time.perf_counter() - started
    if seen[0] != events:
        raise RuntimeError(f"the engine processed {seen[0]} of {events} events")
    return {"before": before, "peak": _rss_mb("VmHWM"), "seconds": elapsed}


def _producer_down(events: int) -> dict[str, Any]:
    import logging

    import balog
    from balog.exceptions import TransportConnectionError
    from balog.transports.base import Delivery, Transport

    class DownTransport(Transport):
        """A transport whose broker is unreachable: every send fails."""

        def send(self, topic: str, bodies: Any, *, headers: Any = None) -> None:
            raise TransportConnectionError("broker unreachable")

        def receive(self, topic: str, **kw: Any) -> list[Delivery]:
            raise TransportConnectionError("broker unreachable")

        def ack(self, delivery: Delivery) -> None:
            raise TransportConnectionError("broker unreachable")

        def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
            raise TransportConnectionError("broker unreachable")

    logging.getLogger("balog.producer").disabled = True  # its retry warnings are expected here
    handler = balog.configure(
        DownTransport(), "bench-down", buffer_size=BUFFER, max_retries=1000, retry_delay=0.05
    )
    balogger = balog.get_logger("bench.memory")
    payload = {"cls_type": "metrics", "values": [{"name": "n", "value": 0}]}
    balogger.info("down", payload)
    before = _rss_mb("VmRSS")  # so the growth includes the buffer filling up
    for _ in range(events - 1):
        balogger.info("down", payload)
    peak = _rss_mb("VmHWM")
    stats = handler.stats
    handler.close(timeout=0)
    return {"before": before, "peak": peak, "dropped": stats.dropped_full, "sent": stats.sent}


def _unbounded(events: int) -> dict[str, Any]:
    """The baseline: every body kept, as an unbounded queue in front of a dead broker would."""
    from balog.events import encode, new_event

    payload = {"cls_type": "metrics", "values": [{"name": "n", "value": 0}]}
    kept = [encode(new_event("bench.memory", payload)) for _ in range(min(CHUNK, events))]
    before = _rss_mb("VmRSS")
    kept.extend(encode(new_event("bench.memory", payload)) for _ in range(events - len(kept)))
    return {"before": before, "peak": _rss_mb("VmHWM"), "kept": len(kept)}


MODES = {"engine": _engine, "producer-down": _producer_down, "unbounded": _unbounded}


def _measure(mode: str, events: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode, str(events)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory case {mode} failed: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["growth"] = result["peak"] - result["before"]
    return result


def run(repeat: int = 1, events: int = DEFAULT_EVENTS) -> list[Row]:
    # One run of each by default: a million events per process is slow, and RSS is not noisy.
    engine = [_measure("engine", events)["growth"] for _ in range(max(1, repeat))]
    down = [_measure("producer-down", events)["growth"] for _ in range(max(1, repeat))]
    unbounded = _measure("unbounded", events)["growth"]
    label = f"unbounded list of {events:,}"
    return [
        row(
            f"7 memory: {events:,} events through the engine",
            median(engine),
            label,
            unbounded,
            unit="MB",
            higher_is_better=False,
            target="< 50 MB growth",
            met=median(engine) < 50.0,
        ),
        row(
            f"7 memory: {events:,} calls, transport down",
            median(down),
            label,
            unbounded,
            unit="MB",
            higher_is_better=False,
            target=f"< 50 MB (buffer {BUFFER:,})",
            met=median(down) < 50.0,
        ),
    ]


if __name__ == "__main__":
    mode, count = sys.argv[1], int(sys.argv[2])
    print(json.dumps(MODES[mode](count)))

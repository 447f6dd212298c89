"""The native Redis transport: publish, and consume + ack, against plain kombu and dramatiq on
the same Redis server in the same run.

- publish: ``RedisTransport.send`` in batches of 100 (one ``MULTI``/``EXEC`` round trip each)
  against a plain kombu ``Producer`` on Redis publishing the same bodies one by one (the
  baseline of the kombu case);
- consume: the native Redis engine draining a filled topic into a no-op consumer (decode,
  validate, route, ack) against a plain kombu ``Consumer`` acking each message;
- consume (engine run): the engine's ``run()`` in a thread until every event is handled, against
  dramatiq's Redis broker and worker with its defaults (as the peers case measures it).

Run ``python -m benchmarks.redis [events] [repeat]`` (not ``python benchmarks/redis.py``: this
module's name would shadow redis). Needs Redis on 127.0.0.1:6379 (or ``BALOG_BENCH_REDIS_URL``).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from functools import partial
from typing import Any

from benchmarks import Row, Skip, median, row, timed_eps
from benchmarks.kombu import (
    BATCH,
    DEFAULT_EVENTS,
    REDIS_URL,
    _bodies,
    _interleaved,
    _plain_consume,
    _plain_publish,
    _up,
)

TIME_LIMIT = 120.0


def _prefix() -> str:
    return f"bench-redis-{uuid.uuid4().hex[:8]}:"


def _delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def _balog_publish(url: str, bodies: list[bytes]) -> float:
    from balog.transports.redis import RedisTransport

    prefix = _prefix()
    transport = RedisTransport(url, prefix=prefix)
    try:
        transport.send("bench", bodies[:1])  # connected before the clock starts

        def publish() -> None:
            for start in range(0, len(bodies), BATCH):
                transport.send("bench", bodies[start : start + BATCH])

        return timed_eps(len(bodies), publish)
    finally:
        transport.close()
        _delete_prefix(url, prefix)


def _filled(url: str, prefix: str, bodies: list[bytes]) -> None:
    from balog.transports.redis import RedisTransport

    with RedisTransport(url, prefix=prefix) as transport:
        for start in range(0, len(bodies), 1000):
            transport.send("bench", bodies[start : start + 1000])


def _no_op(event: dict[str, Any]) -> None:
    return None


def _balog_consume(url: str, bodies: list[bytes]) -> float:
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines.redis import RedisEngine

    prefix = _prefix()
    _filled(url, prefix, bodies)
    hub = ConsumerHub([Consumer(_no_op, "bench", cls_type="metrics", version="<1.0")])
    engine = RedisEngine(hub, url=url, prefix=prefix, batch_size=BATCH, handle_signals=False)
    try:
        eps = timed_eps(len(bodies), engine.drain)
        processed = engine.stats()["bench"].processed
        if processed != len(bodies):
            raise RuntimeError(f"balog processed {processed} of {len(bodies)}")
        return eps
    finally:
        engine.close()
        _delete_prefix(url, prefix)


def _balog_run(url: str, bodies: list[bytes]) -> float | None:
    """The engine's run() in a thread, from start to the last event handled."""
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines.redis import RedisEngine

    prefix = _prefix()
    _filled(url, prefix, bodies)
    seen = [0]
    done = threading.Event()
    lock = threading.Lock()

    def count(event: dict[str, Any]) -> None:
        with lock:
            seen[0] += 1
            if seen[0] >= len(bodies):
                done.set()

    hub = ConsumerHub([Consumer(count, "bench", cls_type="metrics", version="<1.0")])
    engine = RedisEngine(hub, url=url, prefix=prefix, batch_size=BATCH, handle_signals=False)
    start = time.perf_counter()
    worker = threading.Thread(target=engine.run, daemon=True)
    worker.start()
    finished = done.wait(TIME_LIMIT)
    elapsed = time.perf_counter() - start
    engine.stop()
    worker.join(TIME_LIMIT)
    engine.close()
    _delete_prefix(url, prefix)
    return len(bodies) / elapsed if finished else None


def _dramatiq_consume(url: str, events: int) -> float | None:
    from benchmarks.peers import _dramatiq

    return _dramatiq("redis", url, events)[1]


def run(repeat: int = 3, events: int = DEFAULT_EVENTS) -> list[Row]:
    try:
        import kombu  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise Skip("redis-py and kombu are needed (pip install balog[redis,kombu])") from exc
    if not _up(REDIS_URL):
        raise Skip("Redis is not reachable")
    url = REDIS_URL
    bodies = _bodies(events)
    rows: list[Row] = []
    queue = f"bench-kombu-{uuid.uuid4().hex[:8]}"
    ours, theirs = _interleaved(
        repeat,
        partial(_balog_publish, url, bodies),
        partial(_plain_publish, url, queue, bodies, confirms=False),
    )
    rows.append(
        row(
            "redis native publish",
            ours,
            "plain kombu",
            theirs,
            target=">= 0.9x",
            met=ours >= 0.9 * theirs,
        )
    )
    ours, theirs = _interleaved(
        repeat, partial(_balog_consume, url, bodies), partial(_plain_consume, url, bodies)
    )
    rows.append(
        row(
            "redis native consume",
            ours,
            "plain kombu",
            theirs,
            target=">= 0.9x",
            met=ours >= 0.9 * theirs,
        )
    )
    runs: list[float] = []
    peers: list[float] = []
    note = ""
    for _ in range(repeat):
        mine = _balog_run(url, bodies)
        if mine:
            runs.append(mine)
        try:
            peer = _dramatiq_consume(url, events)
        except ImportError as exc:
            note = f"{exc.name or exc} is not installed"
            break
        if peer:
            peers.append(peer)
    ours_run = median(runs) if runs else None
    theirs_run = median(peers) if peers else None
    rows.append(
        row(
            "redis native consume (engine run)",
            ours_run,
            "dramatiq",
            theirs_run,
            target=">= 1.0x",
            met=None if not (ours_run and theirs_run) else ours_run >= theirs_run,
            **({"note": note} if note else {}),
        )
    )
    return rows


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_EVENTS
    times = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for result in run(times, count):
        print(result)

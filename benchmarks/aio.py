"""Case aio: ``async def`` consumers and ``max_in_flight``, against the ideal rate and FastStream.

Rows, each a ratio of figures measured in the same run, interleaved, median of ``repeat``:

- **I/O-bound async consumer** (``await asyncio.sleep(0.05)``), ``events`` events already queued,
  ``max_in_flight=100``, one worker thread, on sqlite, native Redis (``redis``) and RabbitMQ
  (``kombu`` with an amqp URL): events/s against the ideal 100 / 0.05 s = 2,000/s, or against
  the backend's own no-op consume rate where that is lower (the same engine with its defaults and
  a no-op consumer, on the same backend, measured in the same run).
- **The same against FastStream**, same handler, same concurrency, same queued messages (the
  same ~500-byte events as JSON, which FastStream decodes into the handler's ``dict``; balog
  also validates each against its schemas). On RabbitMQ a subscriber with
  ``prefetch_count=100`` on its channel (aio-pika runs each delivery as a task, so the prefetch
  is what bounds concurrency there), acking after the handler returns (its default). On Redis a
  **stream** subscriber in a consumer group with ``max_workers=100``, rather than a list
  subscriber: a list subscriber pops each message (``BLPOP``) before handling it, so a crash
  loses it, whereas a group hands each entry to one consumer and keeps it pending until it is
  acked (``XREADGROUP``/``XACK``): the work queue that balog's native Redis transport is
  (leases, acks after processing, redelivery).
- **No-op async against no-op sync** through the pipeline: the memory engine's ``drain()`` of
  ``25 * events`` bodies already queued, as ``benchmarks/pipeline.py`` measures it, four drains
  a repeat (sync, async, async, sync), each side's better one kept; the row is async events/s
  over sync events/s.
- **Blocking sync consumer** (``time.sleep(0.05)``) with ``max_in_flight=10`` threads on sqlite,
  ``events // 5`` events: events/s against the ideal 10 / 0.05 s = 200/s.

Consume rates run from the moment the first message's handler starts to the moment the last
one's ends, so worker and broker start-up are left out, and the ideal is exact
(``events`` / (``events`` / 2,000/s)). Every wait is bounded (``TIME_LIMIT``). Queue names and
Redis keys are unique per run and removed afterwards. Needs RabbitMQ on 127.0.0.1:5672 and
Redis on 127.0.0.1:6379 (``BALOG_BENCH_AMQP_URL``, ``BALOG_BENCH_REDIS_URL``); a missing service
or package skips the case. Run ``python -m benchmarks --only aio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from benchmarks import Row, Skip, median, row, sample_event, timed_eps
from benchmarks.kombu import _up
from benchmarks.pipeline import _bodies

DEFAULT_EVENTS = 2_000
IN_FLIGHT = 100
SLEEP = 0.05
SYNC_IN_FLIGHT = 10
TIME_LIMIT = 60.0
AMQP_URL = os.environ.get("BALOG_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BALOG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TOPIC = "bench-aio"

EngineFactory = Callable[..., Any]


class _Span:
    """When the first handler started and the last one ended; thread-safe."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.ended = 0
        self.first: float | None = None
        self.last = 0.0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def begin(self) -> None:
        if self.first is None:
            with self._lock:
                if self.first is None:
                    self.first = time.perf_counter()

    def end(self) -> None:
        with self._lock:
            self.ended += 1
            if self.ended == self.expected:
                self.last = time.perf_counter()
                self.done.set()

    def eps(self) -> float | None:
        if not self.done.is_set() or self.first is None or self.last <= self.first:
            return None
        return self.expected / (self.last - self.first)


def _io_bound(span: _Span) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def io_bound(event: dict[str, Any]) -> None:
        span.begin()
        await asyncio.sleep(SLEEP)
        span.end()

    return io_bound


def _blocking(span: _Span) -> Callable[[dict[str, Any]], None]:
    def blocking(event: dict[str, Any]) -> None:
        span.begin()
        time.sleep(SLEEP)
        span.end()

    return blocking


def _no_op(span: _Span) -> Callable[[dict[str, Any]], None]:
    def no_op(event: dict[str, Any]) -> None:
        span.begin()
        span.end()

    return no_op


def _unique(kind: str) -> str:
    return f"bench-aio-{kind}-{uuid.uuid4().hex[:8]}"


# -- balog's backends: a filled topic, an engine on it, and a clean-up -------------------------


class _Queue(NamedTuple):
    topic: str
    make_engine: EngineFactory
    cleanup: Callable[[], None]


def _sqlite_queue(bodies: list[bytes]) -> _Queue:
    from balog.engines.sqlite import SQLiteEngine
    from balog.transports.sqlite import SQLiteTransport

    directory = tempfile.mkdtemp(prefix="bench-aio-")
    path = os.path.join(directory, "events.sqlite3")
    with SQLiteTransport(path) as transport:
        for start in range(0, len(bodies), 500):
            transport.send(TOPIC, bodies[start : start + 500])
    return _Queue(
        TOPIC,
        functools.partial(SQLiteEngine, path=path),
        functools.partial(shutil.rmtree, directory, ignore_errors=True),
    )


def _redis_queue(bodies: list[bytes]) -> _Queue:
    from balog.engines.redis import RedisEngine
    from balog.transports.redis import RedisTransport
    from benchmarks.redis import _delete_prefix

    prefix = _unique("redis") + ":"
    with RedisTransport(REDIS_URL, prefix=prefix) as transport:
        for start in range(0, len(bodies), 500):
            transport.send(TOPIC, bodies[start : start + 500])
    return _Queue(
        TOPIC,
        functools.partial(RedisEngine, url=REDIS_URL, prefix=prefix),
        functools.partial(_delete_prefix, REDIS_URL, prefix),
    )


def _amqp_queue(bodies: list[bytes]) -> _Queue:
    from balog.engines.kombu import KombuEngine
    from balog.transports.kombu import KombuTransport

    topic = _unique("rabbitmq")
    with KombuTransport(AMQP_URL) as transport:
        for start in range(0, len(bodies), 100):
            transport.send(topic, bodies[start : start + 100])

    def cleanup() -> None:
        with contextlib.suppress(Exception), KombuTransport(AMQP_URL) as transport:
            transport.delete(topic)

    return _Queue(topic, functools.partial(KombuEngine, url=AMQP_URL), cleanup)


def _hub(topic: str, func: Callable[[dict[str, Any]], Any]) -> Any:
    from balog.consumers import Consumer, ConsumerHub

    return ConsumerHub([Consumer(func, topic, cls_type="metrics", version="<1.0")])


def _engine_eps(
    fill: Callable[[list[bytes]], _Queue],
    bodies: list[bytes],
    handler: Callable[[_Span], Callable[[dict[str, Any]], Any]],
    **options: Any,
) -> float | None:
    """Fill a topic, run one engine worker on it until every event was handled, and return
    events/s from the first handler's start to the last one's end (None if it timed out)."""
    queue = fill(bodies)
    span = _Span(len(bodies))
    try:
        engine = queue.make_engine(
            _hub(queue.topic, handler(span)), handle_signals=False, **options
        )
        worker = threading.Thread(target=engine.run, name="bench-aio-engine", daemon=True)
        worker.start()
        span.done.wait(TIME_LIMIT)
        engine.stop()
        worker.join(TIME_LIMIT)
        engine.close()
    finally:
        queue.cleanup()
    return span.eps()


# -- FastStream -----------------------------------------------------------------------------


async def _faststream_consume(
    broker: Any, span: _Span, publish: Callable[[], Awaitable[None]]
) -> None:
    await broker.connect()
    try:
        await publish()
        await broker.start()
        await asyncio.wait_for(asyncio.to_thread(span.done.wait, TIME_LIMIT), TIME_LIMIT + 5)
    finally:
        await broker.stop()


async def _faststream_rabbit(events: list[dict[str, Any]]) -> float | None:
    from faststream.rabbit import RabbitBroker, RabbitQueue
    from faststream.rabbit.schemas import Channel

    from benchmarks.peers import _delete_queues

    span = _Span(len(events))
    queue = RabbitQueue(_unique("faststream"), durable=True)
    # The prefetch on the broker's default channel: the queue declared below is cached with the
    # channel it was declared on, and the subscriber consumes on that one.
    broker = RabbitBroker(AMQP_URL, logger=None, default_channel=Channel(prefetch_count=IN_FLIGHT))
    handle = _io_bound(span)

    @broker.subscriber(queue)
    async def consume(body: dict[str, Any]) -> None:
        await handle(body)

    async def publish() -> None:
        await broker.declare_queue(queue)
        for event in events:  # persistent, like balog's, into a durable queue
            await broker.publish(event, queue=queue, persist=True)

    try:
        await _faststream_consume(broker, span, publish)
    finally:
        _delete_queues(AMQP_URL, [queue.name])
    return span.eps()


async def _faststream_redis(events: list[dict[str, Any]]) -> float | None:
    from faststream.redis import RedisBroker, StreamSub

    span = _Span(len(events))
    name = _unique("faststream")
    broker = RedisBroker(REDIS_URL, logger=None)
    handle = _io_bound(span)
    # last_id="0": the group is created at the start of the stream, so it gets what is queued.
    stream = StreamSub(name, group="bench", consumer="bench-1", last_id="0")

    @broker.subscriber(stream=stream, max_workers=IN_FLIGHT)
    async def consume(body: dict[str, Any]) -> None:
        await handle(body)

    async def publish() -> None:
        for event in events:
            await broker.publish(event, stream=name)

    try:
        await _faststream_consume(broker, span, publish)
    finally:
        import redis

        with contextlib.suppress(Exception), redis.Redis.from_url(REDIS_URL) as client:
            client.delete(name)
    return span.eps()


# -- the pipeline: no-op async against no-op sync ------------------------------------------


def _memory_queue(bodies: list[bytes]) -> _Queue:
    from balog.engines.memory import MemoryEngine
    from balog.transports.memory import MemoryBroker, MemoryTransport

    broker = MemoryBroker()
    MemoryTransport(broker, record=False).send(TOPIC, bodies)
    return _Queue(TOPIC, functools.partial(MemoryEngine, broker=broker), _nothing)


def _nothing() -> None:
    return None


def _drain_eps(bodies: list[bytes], consumer: Callable[[dict[str, Any]], Any]) -> float:
    """``drain()`` of ``bodies`` queued on the memory engine, in the calling thread."""
    queue = _memory_queue(bodies)
    engine = queue.make_engine(_hub(queue.topic, consumer))
    counted: list[int] = []
    eps = timed_eps(len(bodies), lambda: counted.append(engine.drain()))
    engine.close()
    if counted != [len(bodies)]:
        raise RuntimeError(f"drain() handled {counted}, expected {len(bodies)}")
    return eps


def _drain_pair(bodies: list[bytes]) -> tuple[float, float]:
    """Drains with the sync, async, async, then sync no-op (so neither side always goes first);
    each side's better figure, (sync, async). The better of two, because a neighbour taking a
    core for a moment slows one drain of a few seconds by a third or more: each side keeps the
    drain it ran undisturbed."""
    sync = _drain_eps(bodies, _sync_no_op)
    async_ = max(_drain_eps(bodies, _async_no_op), _drain_eps(bodies, _async_no_op))
    return max(sync, _drain_eps(bodies, _sync_no_op)), async_


def _sync_no_op(event: dict[str, Any]) -> None:
    return None


async def _async_no_op(event: dict[str, Any]) -> None:
    return None


# -- the case -------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v]
    return median(kept) if kept else None


def _ratio_row(
    case: str, ours: float | None, baseline: str, theirs: float | None, wanted: float, target: str
) -> Row:
    met = None if not (ours and theirs) else ours >= wanted * theirs
    return row(case, ours, baseline, theirs, target=target, met=met)


def _peer(
    run_peer: Callable[[list[dict[str, Any]]], Awaitable[float | None]],
    events: list[dict[str, Any]],
    notes: list[str],
) -> float | None:
    """One FastStream run; a failure is a note, so that balog's figures are kept."""
    try:
        return asyncio.run(run_peer(events))
    except Exception as exc:
        notes.append(f"faststream: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def run(repeat: int = 3, events: int = DEFAULT_EVENTS) -> list[Row]:
    try:
        import faststream  # noqa: F401
        import kombu  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise Skip(f"{exc.name} is not installed (pip install -e '.[all,bench]')") from exc
    bodies = _bodies(events)
    dicts = [sample_event(i) for i in range(events)]
    for name, url in (("Redis", REDIS_URL), ("RabbitMQ", AMQP_URL)):
        if not _up(url):
            raise Skip(f"{name} is not reachable")
    ideal = IN_FLIGHT / SLEEP
    notes: list[str] = []
    backends: list[tuple[str, Callable[[list[bytes]], _Queue], Any]] = [
        ("sqlite", _sqlite_queue, None),
        ("redis", _redis_queue, _faststream_redis),
        ("rabbitmq", _amqp_queue, _faststream_rabbit),
    ]

    no_op: dict[str, list[float | None]] = {name: [] for name, _, _ in backends}
    io: dict[str, list[float | None]] = {name: [] for name, _, _ in backends}
    peer: dict[str, list[float | None]] = {name: [] for name, _, _ in backends}
    pipeline_bodies = _bodies(25 * events)
    sync_drain: list[float] = []
    async_drain: list[float] = []
    blocking: list[float | None] = []
    blocking_bodies = bodies[: max(1, events // 5)]
    for _ in range(repeat):  # interleaved, so that a noisy neighbour slows every side alike
        for name, fill, faststream_run in backends:
            no_op[name].append(_engine_eps(fill, bodies, _no_op))
            io[name].append(_engine_eps(fill, bodies, _io_bound, max_in_flight=IN_FLIGHT))
            if faststream_run is not None:
                peer[name].append(_peer(faststream_run, dicts, notes))
        sync_eps, async_eps = _drain_pair(pipeline_bodies)
        sync_drain.append(sync_eps)
        async_drain.append(async_eps)
        blocking.append(
            _engine_eps(_sqlite_queue, blocking_bodies, _blocking, max_in_flight=SYNC_IN_FLIGHT)
        )

    rows: list[Row] = []
    for name, _, faststream_run in backends:
        ceiling = _median(no_op[name])
        label = f"ideal {ideal:,.0f}/s"
        if ceiling is not None and ceiling < ideal:
            label = "no-op consume (engine defaults)"
        elif ceiling is not None:
            label += f" (no-op consume {ceiling:,.0f}/s)"
        rows.append(
            _ratio_row(
                f"aio {name}: async I/O 50 ms, {IN_FLIGHT} in flight",
                _median(io[name]),
                label,
                min(ideal, ceiling) if ceiling else ideal,
                0.7,
                ">= 0.7x",
            )
        )
        if faststream_run is not None:
            kind = "stream subscriber" if name == "redis" else f"prefetch {IN_FLIGHT}"
            rows.append(
                _ratio_row(
                    f"aio {name}: balog vs FastStream, same handler",
                    _median(io[name]),
                    f"faststream ({kind})",
                    _median(peer[name]),
                    1.0,
                    ">= 1.0x",
                )
            )
    rows.append(
        _ratio_row(
            "aio pipeline: no-op async / no-op sync (memory drain)",
            median(async_drain),
            "the same, sync consumer",
            median(sync_drain),
            0.77,
            ">= 0.77x",
        )
    )
    rows.append(
        _ratio_row(
            f"aio sqlite: sync blocking 50 ms, {SYNC_IN_FLIGHT} threads",
            _median(blocking),
            f"ideal {SYNC_IN_FLIGHT / SLEEP:,.0f}/s",
            SYNC_IN_FLIGHT / SLEEP,
            0.7,
            ">= 0.7x",
        )
    )
    if notes:
        rows[0]["note"] = "; ".join(sorted(set(notes)))
    return rows

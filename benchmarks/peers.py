"""Case 6, peers: balog against dramatiq on the same RabbitMQ and Redis, doing the same no-op work.

Each side publishes ``events`` messages one call at a time from the application thread (balog:
``balogger.info`` then ``flush()``; dramatiq: ``actor.send``), then one worker thread consumes them
(balog: the kombu engine, one worker thread; dramatiq: a ``Worker`` with its defaults, eight
threads) running a function that only
counts. Publish events/s is measured from the first call until everything is handed to the broker;
consume events/s from the first message processed to the last, so worker start-up is left out.
Both sides run with their defaults otherwise (balog publishes with confirms, batched; dramatiq
without). Every measurement is bounded in time. Celery is measured on RabbitMQ when it is
installed, with a ``solo`` worker in a subprocess timed the same way.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks import Row, median, row

DEFAULT_EVENTS = 5_000
TIME_LIMIT = 60.0
AMQP_URL = os.environ.get("BALOG_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BALOG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PAYLOAD = {"cls_type": "metrics", "values": [{"name": "rows_read", "value": 1234}]}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class _Counter:
    """Counts processed messages and notes when the first and the last one came."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def hit(self, *args: Any) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.count == 0:
                self.first = now
            self.count += 1
            if self.count == self.expected:
                self.last = now
                self.done.set()

    def eps(self) -> float | None:
        if not self.done.is_set() or self.last <= self.first:
            return None
        return (self.count - 1) / (self.last - self.first)


def _name(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


# -- balog ----------------------------------------------------------------------------------


def _balog(url: str, events: int) -> tuple[float | None, float | None]:
    import balog
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines import create_engine
    from balog.exceptions import PluginError
    from balog.producer import state

    topic = _name("balog")
    try:
        balog.configure("kombu", topic, url=url, buffer_size=events + 10, batch_size=10)
    except PluginError as exc:
        raise ImportError("no kombu backend", name="balog.transports.kombu") from exc
    balogger = balog.get_logger("bench.peers")
    start = time.perf_counter()
    for _ in range(events):
        balogger.info("done", PAYLOAD)
    flushed = balog.flush(timeout=TIME_LIMIT)
    publish = events / (time.perf_counter() - start) if flushed else None
    state.reset()

    counter = _Counter(events)
    hub = ConsumerHub([Consumer(counter.hit, topic)])
    engine = create_engine("kombu", hub=hub, url=url, handle_signals=False)
    worker = threading.Thread(target=engine.run, daemon=True)
    worker.start()
    counter.done.wait(TIME_LIMIT)
    engine.stop()
    worker.join(TIME_LIMIT)
    try:
        engine.transport.purge(topic)  # type: ignore[attr-defined]
    except Exception:
        pass
    engine.close()
    _delete_queues(url, [topic, topic + ".dlq", topic + ".balog-dead"])
    return publish, counter.eps()


def _delete_queues(url: str, names: list[str]) -> None:
    """Best effort: leave no benchmark queues behind on RabbitMQ."""
    if not url.startswith("amqp"):
        return
    try:
        import kombu

        with kombu.Connection(url, connect_timeout=5) as conn:
            channel = conn.channel()
            for name in names:
                try:
                    channel.queue_delete(name)
                except Exception:
                    channel = conn.channel()
    except Exception:
        pass


# -- dramatiq -------------------------------------------------------------------------------


def _dramatiq_broker(kind: str, url: str, namespace: str) -> Any:
    if kind == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # pika spells the default virtual host as %2F where kombu writes //
        pika_url = url[:-2] + "/%2F" if url.endswith("//") else url
        return RabbitmqBroker(url=pika_url)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=url, namespace=namespace)


def _dramatiq(kind: str, url: str, events: int) -> tuple[float | None, float | None]:
    import dramatiq

    queue = _name("dramatiq")
    broker = _dramatiq_broker(kind, url, queue)
    counter = _Counter(events)

    def work(n: int) -> None:
        counter.hit()

    actor = dramatiq.actor(
        work,
        actor_name=f"work_{queue.replace('-', '_')}",
        queue_name=queue,
        broker=broker,
        max_retries=0,
    )
    start = time.perf_counter()
    for i in range(events):
        actor.send(i)
    publish = events / (time.perf_counter() - start)
    worker = dramatiq.Worker(broker, worker_timeout=100)  # its defaults: 8 threads, prefetch 16
    worker.start()
    counter.done.wait(TIME_LIMIT)
    worker.stop(timeout=int(TIME_LIMIT * 1000))
    try:
        broker.flush(queue)
        if kind == "rabbitmq":
            for name in (queue, queue + ".DQ", queue + ".XQ"):
                broker.channel.queue_delete(name)
    except Exception:
        pass
    broker.close()
    return publish, counter.eps()


# -- Celery ---------------------------------------------------------------------------------


def _celery_app(url: str, queue: str) -> Any:
    from celery import Celery

    app = Celery("balog_bench", broker=url)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=64,
    )
    return app


def _celery_worker(url: str, queue: str, events: int) -> None:
    """Child process: consume ``events`` no-op tasks with a solo worker, print the timing."""
    app = _celery_app(url, queue)
    counter = _Counter(events)

    @app.task(name="bench.noop")  # type: ignore[untyped-decorator]
    def noop(n: int) -> None:
        counter.hit()
        if counter.done.is_set():
            print(json.dumps({"eps": counter.eps()}), flush=True)
            os._exit(0)

    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def _celery(url: str, events: int) -> tuple[float | None, float | None]:
    queue = _name("celery")
    app = _celery_app(url, queue)
    task = app.signature("bench.noop")
    start = time.perf_counter()
    with app.producer_pool.acquire(block=True) as producer:
        for i in range(events):
            task.apply_async((i,), producer=producer)
    publish = events / (time.perf_counter() - start)
    consume = None
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.peers", "celery-worker", url, queue, str(events)],
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT * 2,
            check=False,
        )
        # Celery redirects the worker's stdout into its log, on stderr.
        found = re.findall(r'\{"eps": [^}]*\}', out.stdout + out.stderr)
        if found:
            consume = json.loads(found[-1])["eps"]
    except subprocess.TimeoutExpired:
        pass
    _delete_queues(url, [queue])
    return publish, consume


# -- the case -------------------------------------------------------------------------------


def _measure(
    func: Callable[[], tuple[float | None, float | None]], pubs: list[float], cons: list[float]
) -> str | None:
    try:
        publish, consume = func()
    except ImportError as exc:
        return f"{exc.name or exc} is not installed"
    if publish:
        pubs.append(publish)
    if consume:
        cons.append(consume)
    return None


def run(repeat: int = 3, events: int = DEFAULT_EVENTS) -> list[Row]:
    rows: list[Row] = []
    balog_rabbitmq: tuple[list[float], list[float]] = ([], [])
    brokers = [
        ("rabbitmq", AMQP_URL, ("127.0.0.1", 5672)),
        ("redis", REDIS_URL, ("127.0.0.1", 6379)),
    ]
    for kind, url, (host, port) in brokers:
        if not _reachable(host, port):
            rows.append(row(f"6 peers {kind}", None, f"{kind} not reachable", None))
            continue
        ours: tuple[list[float], list[float]] = ([], [])
        theirs: tuple[list[float], list[float]] = ([], [])
        notes = []
        for _ in range(repeat):
            notes.append(_measure(functools.partial(_balog, url, events), *ours))
            notes.append(_measure(functools.partial(_dramatiq, kind, url, events), *theirs))
        note = "; ".join(sorted({n for n in notes if n}))
        if kind == "rabbitmq":
            balog_rabbitmq = ours
        for i, what in enumerate(("publish", "consume")):
            rows.append(
                row(
                    f"6 peers {kind} {what}",
                    median(ours[i]) if ours[i] else None,
                    "dramatiq",
                    median(theirs[i]) if theirs[i] else None,
                    target=">= 1.0x" if (kind, what) == ("redis", "consume") else "",
                    met=None
                    if not (ours[i] and theirs[i]) or (kind, what) != ("redis", "consume")
                    else median(ours[i]) >= median(theirs[i]),
                    **({"note": note} if note and i == 0 else {}),
                )
            )
    if _reachable("127.0.0.1", 5672):
        pubs: list[float] = []
        cons: list[float] = []
        note = None
        for _ in range(repeat):
            note = _measure(functools.partial(_celery, AMQP_URL, events), pubs, cons) or note
        for i, (what, values) in enumerate((("publish", pubs), ("consume", cons))):
            rows.append(
                row(
                    f"6 peers rabbitmq {what}",
                    median(balog_rabbitmq[i]) if balog_rabbitmq[i] else None,
                    "celery (solo worker)",
                    median(values) if values else None,
                    target="",
                    **({"note": f"celery: {note}"} if note and what == "publish" else {}),
                )
            )
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "celery-worker":
        _celery_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))

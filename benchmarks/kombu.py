"""Case 4, kombu on RabbitMQ and on Redis: publish, and consume + ack, through balog and through
plain kombu doing the same work on the same broker in the same run.

- publish: balog ``KombuTransport.send`` in batches of 100 against a plain kombu ``Producer``
  publishing the same persistent JSON bodies one by one;
- publish (confirms), RabbitMQ: balog with publisher confirms (one wait per batch) against plain
  kombu with ``confirm_publish=True`` (one wait per message);
- consume: the balog kombu engine draining a filled queue into a no-op consumer (decode, validate,
  route, ack) against a plain kombu ``Consumer`` with the same prefetch acking each message.

Run ``python -m benchmarks.kombu`` (not ``python benchmarks/kombu.py``: this module's name would
shadow kombu). Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (or the URLs in
``BALOG_BENCH_AMQP_URL`` / ``BALOG_BENCH_REDIS_URL``); a broker that is down is skipped.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from benchmarks import Row, Skip, median, row, sample_event, timed_eps

DEFAULT_EVENTS = 5000
BATCH = 100
PREFETCH = 200
AMQP_URL = os.environ.get("BALOG_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BALOG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _up(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1.0):
            return True
    except OSError:
        return False


def _bodies(events: int) -> list[bytes]:
    from balog.events import encode

    return [encode(sample_event(i)) for i in range(events)]


def _queue(name: str) -> Any:
    import kombu

    return kombu.Queue(name, kombu.Exchange(""), routing_key=name, durable=True)


def _delete(url: str, name: str) -> None:
    import kombu

    with kombu.Connection(url) as connection:
        try:
            _queue(name)(connection.default_channel).delete()
        except Exception:  # benchmark cleanup: a queue that is already gone is fine
            pass


def _balog_publish(url: str, bodies: list[bytes], *, confirms: bool) -> float:
    from balog.transports.kombu import KombuTransport

    name = f"bench-kombu-{uuid.uuid4().hex[:8]}"
    transport = KombuTransport(url, confirm_publish=confirms)
    try:
        transport.send(name, bodies[:1])  # connect and declare before the clock starts

        def publish() -> None:
            for start in range(0, len(bodies), BATCH):
                transport.send(name, bodies[start : start + BATCH])

        return timed_eps(len(bodies), publish)
    finally:
        transport.close()
        _delete(url, name)


def _plain_publish(url: str, bodies: list[bytes], *, confirms: bool) -> float:
    import kombu

    name = f"bench-kombu-{uuid.uuid4().hex[:8]}"
    options = {"confirm_publish": True} if confirms else {}
    try:
        with kombu.Connection(url, transport_options=options) as connection:
            channel = connection.channel()
            _queue(name)(channel).declare()
            producer = kombu.Producer(channel, auto_declare=False)

            def publish() -> None:
                for body in bodies:
                    producer.publish(
                        body,
                        routing_key=name,
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=2,
                    )

            return timed_eps(len(bodies), publish)
    finally:
        _delete(url, name)


def _filled(url: str, bodies: list[bytes]) -> str:
    from balog.transports.kombu import KombuTransport

    name = f"bench-kombu-{uuid.uuid4().hex[:8]}"
    with KombuTransport(url, confirm_publish=True) as transport:
        for start in range(0, len(bodies), 1000):
            transport.send(name, bodies[start : start + 1000])
    return name


def _balog_consume(url: str, bodies: list[bytes]) -> float:
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines.kombu import KombuEngine

    def no_op(event: dict[str, Any]) -> None:
        return None

    name = _filled(url, bodies)
    hub = ConsumerHub([Consumer(no_op, name, cls_type="metrics", version="<1.0")])
    engine = KombuEngine(hub, url=url, batch_size=BATCH, prefetch=PREFETCH, handle_signals=False)
    try:
        handled: list[int] = []
        eps = timed_eps(len(bodies), lambda: handled.append(engine.drain()))
        processed = engine.stats()[name].processed
        if processed != len(bodies):
            raise RuntimeError(f"balog processed {processed} of {len(bodies)}")
        return eps
    finally:
        engine.close()
        _delete(url, name)


def _plain_consume(url: str, bodies: list[bytes]) -> float:
    import kombu

    name = _filled(url, bodies)
    seen = [0]

    def on_message(message: Any) -> None:
        seen[0] += 1
        message.ack()

    def consume() -> None:
        # Connect, consume and close inside the clock, as the engine's drain() does.
        with kombu.Connection(url) as connection:
            channel = connection.channel()
            consumer = kombu.Consumer(
                channel, queues=[_queue(name)], on_message=on_message, accept=["json"]
            )
            consumer.qos(prefetch_count=PREFETCH)
            with consumer:
                while seen[0] < len(bodies):
                    connection.drain_events(timeout=5)

    try:
        return timed_eps(len(bodies), consume)
    finally:
        _delete(url, name)


def _interleaved(
    repeat: int, ours: Callable[[], float], theirs: Callable[[], float]
) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    for n in range(repeat):  # interleaved, and in turn first, so that noise hits both alike
        if n % 2:
            b.append(theirs())
            a.append(ours())
        else:
            a.append(ours())
            b.append(theirs())
    return median(a), median(b)


def run(repeat: int = 3, events: int = DEFAULT_EVENTS) -> list[Row]:
    try:
        import kombu  # noqa: F401
    except ImportError as exc:
        raise Skip("kombu is not installed (pip install balog[kombu])") from exc
    bodies = _bodies(events)
    rows: list[Row] = []
    brokers = [("rabbitmq", AMQP_URL), ("redis", REDIS_URL)]
    if not any(_up(url) for _, url in brokers):
        raise Skip("neither RabbitMQ nor Redis is reachable")
    only = os.environ.get("BALOG_BENCH_ONLY")
    for broker, url in brokers:
        if only and broker != only:
            continue
        if not _up(url):
            continue
        amqp = broker == "rabbitmq"
        ours, theirs = _interleaved(
            repeat,
            partial(_balog_publish, url, bodies, confirms=False),
            partial(_plain_publish, url, bodies, confirms=False),
        )
        rows.append(
            row(
                f"{broker} publish",
                ours,
                "plain kombu",
                theirs,
                target=">= 0.9x",
                met=ours >= 0.9 * theirs,
            )
        )
        if amqp:
            ours, theirs = _interleaved(
                repeat,
                partial(_balog_publish, url, bodies, confirms=True),
                partial(_plain_publish, url, bodies, confirms=True),
            )
            rows.append(
                row(
                    "rabbitmq publish (confirms)",
                    ours,
                    "plain kombu, a wait per confirm",
                    theirs,
                    target=">= 3x",
                    met=ours >= 3 * theirs,
                )
            )
        ours, theirs = _interleaved(
            repeat,
            partial(_balog_consume, url, bodies),
            partial(_plain_consume, url, bodies),
        )
        rows.append(
            row(
                f"{broker} consume",
                ours,
                "plain kombu",
                theirs,
                target=">= 0.9x",
                met=ours >= 0.9 * theirs,
            )
        )
    return rows


def _table(rows: list[Row]) -> str:
    lines = [
        f"{'case':32} {'balog/s':>10} {'baseline/s':>11} {'ratio':>6}  baseline",
        "-" * 90,
    ]
    for r in rows:
        lines.append(
            f"{r['case']:32} {r['balog_eps']:>10,.0f} {r['baseline_eps']:>11,.0f} "
            f"{r['ratio']:>6.2f}  {r['baseline']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_EVENTS
    print(f"kombu benchmark, {count} events per case, median of 3, {os.cpu_count()} cores; noisy")
    print(_table(run(events=count)))

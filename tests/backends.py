"""Every backend, for tests that must hold on each: memory, sqlite, RabbitMQ and Redis through
kombu, native Redis, SQS (moto over HTTP).

A :class:`Backend` gives a transport to send raw bodies with and to read dead letters from, and
builds an engine on the same topic for a hub. Real brokers are used where the backend has one.
Test folders turn :data:`BACKENDS` into a ``backend`` fixture with :func:`backend_fixture`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from balog.consumers import ConsumerHub
from balog.engines.base import Backoff, TransportEngine
from balog.transports.base import DeadLetter, Transport

EngineFactory = Callable[..., TransportEngine]


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on the Redis server at ``url``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclasses.dataclass
class Backend:
    name: str
    transport: Transport
    make_engine: EngineFactory
    topic: str
    cleanup: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @property
    def max_body_size(self) -> int | None:
        return self.transport.capabilities.max_body_size

    def send(self, *bodies: bytes) -> None:
        self.transport.send(self.topic, list(bodies))

    def dead_letters(self) -> list[DeadLetter]:
        return self.transport.dead_letters(self.topic, limit=50)


def _memory(request: pytest.FixtureRequest, topic: str) -> Backend:
    from balog.engines.memory import MemoryEngine
    from balog.transports.memory import MemoryBroker, MemoryTransport

    broker = MemoryBroker()
    size = 1024 * 1024  # large enough that a 200,000-deep body reaches the decoder

    def make(hub: ConsumerHub, **options: Any) -> TransportEngine:
        options.setdefault("max_event_size", size)
        return MemoryEngine(hub, broker=broker, max_body_size=size, **options)

    return Backend("memory", MemoryTransport(broker, max_body_size=size), make, topic)


def _sqlite(request: pytest.FixtureRequest, topic: str) -> Backend:
    from balog.engines.sqlite import SQLiteEngine
    from balog.transports.sqlite import SQLiteTransport

    path = str(request.getfixturevalue("tmp_path") / "hostile.db")

    def make(hub: ConsumerHub, **options: Any) -> TransportEngine:
        return SQLiteEngine(hub, path=path, wait=0.2, **options)

    return Backend("sqlite", SQLiteTransport(path), make, topic)


def _kombu(url: str, name: str, topic: str) -> Backend:
    from balog.engines.kombu import KombuEngine
    from balog.transports.kombu import KombuTransport

    def make(hub: ConsumerHub, **options: Any) -> TransportEngine:
        return KombuEngine(hub, url=url, wait=0.2, **options)

    transport = KombuTransport(url)
    backend = Backend(name, transport, make, topic)

    def purge() -> None:
        for t in (topic, transport.dead_letter_topic(topic)):
            try:
                transport.purge(t)
            except Exception:
                pass

    backend.cleanup.append(purge)
    return backend


def _rabbitmq(request: pytest.FixtureRequest, topic: str) -> Backend:
    return _kombu(request.getfixturevalue("rabbitmq_url"), "rabbitmq", topic)


def _redis(request: pytest.FixtureRequest, topic: str) -> Backend:
    return _kombu(request.getfixturevalue("redis_url"), "redis", topic)


def _redis_native(request: pytest.FixtureRequest, topic: str) -> Backend:
    from balog.engines.redis import RedisEngine
    from balog.transports.redis import RedisTransport

    url = request.getfixturevalue("redis_url")
    prefix = f"balog-hostile-{topic[-8:]}:"

    def make(hub: ConsumerHub, **options: Any) -> TransportEngine:
        return RedisEngine(hub, url=url, prefix=prefix, wait=0.2, **options)

    backend = Backend("redis-native", RedisTransport(url, prefix=prefix), make, topic)
    backend.cleanup.append(lambda: delete_redis_prefix(url, prefix))
    return backend


def _sqs(request: pytest.FixtureRequest, topic: str) -> Backend:
    from balog.engines.sqs import SQSEngine
    from balog.transports.sqs import SQSTransport

    endpoint = request.getfixturevalue("sqs_endpoint")

    def make(hub: ConsumerHub, **options: Any) -> TransportEngine:
        return SQSEngine(
            hub, endpoint_url=endpoint, region="us-east-1", create_queues=True, wait=0.2, **options
        )

    transport = SQSTransport(endpoint_url=endpoint, region="us-east-1", create_queues=True)
    return Backend("sqs", transport, make, topic)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, str], Backend]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "rabbitmq": _rabbitmq,
    "redis": _redis,
    "redis-native": _redis_native,
    "sqs": _sqs,
}


def make_backend(request: pytest.FixtureRequest, name: str, topic: str) -> Iterator[Backend]:
    """Backend ``name`` on a fresh ``topic``; its resources are released afterwards."""
    made = BACKENDS[name](request, topic)
    try:
        yield made
    finally:
        for undo in reversed(made.cleanup):
            undo()
        made.transport.close()


def run_engine_until(
    engine: TransportEngine, condition: Callable[[], object], timeout: float = 30.0
) -> None:
    """Run ``engine`` in a thread until ``condition()`` holds, then stop it and wait for it."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            engine.run()
        except BaseException as exc:  # reported below, in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if failure or not thread.is_alive():
                raise AssertionError(f"engine stopped early: {failure!r}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s")
            time.sleep(0.02)
    finally:
        engine.stop()
        thread.join(30)
        engine.close()
    assert not thread.is_alive(), "engine did not stop"


FAST_RETRY = Backoff(base=0.0, jitter=0.0)

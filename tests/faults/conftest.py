"""The ``fault_backend`` fixture: each real backend, as a consumer process and a producer.

A :class:`FaultBackend` names the engine and the options (as ``--option key=value`` strings) that
``consumer_proc.py`` runs with, and holds a transport in the test process to produce with and to
read dead letters from. Leases are short so that a killed consumer's messages come back soon.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import delete_redis_prefix

from balog.transports.base import Transport

LEASE = 2.0  # seconds: how soon a killed consumer's leased messages come back


@dataclasses.dataclass
class FaultBackend:
    name: str
    engine: str
    options: dict[str, str]
    transport: Transport
    topic: str
    redelivers_on_disconnect: bool  # AMQP: unacked messages return when the connection drops
    # Messages a consumer crash (SIGKILL) may lose: 0 everywhere but Redis via kombu, whose
    # push consumer keeps a BRPOP outstanding: the message it popped is gone with the process.
    # The native Redis transport claims in a server-side script and loses none.
    lost_per_crash: int = 0
    cleanup: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def produce(self, count: int, prefix: str = "") -> list[str]:
        """Send ``count`` valid events in batches of 10; return their ids in order."""
        from balog.events import encode, new_event

        ids: list[str] = []
        batch: list[bytes] = []
        for n in range(count):
            event_id = f"{prefix}{n:06d}-{self.topic[-8:]}"
            ids.append(event_id)
            batch.append(encode(new_event("faults.ledger", {"cls_type": "n", "n": n}, id=event_id)))
            if len(batch) == 10:
                self.transport.send(self.topic, batch)
                batch = []
        if batch:
            self.transport.send(self.topic, batch)
        return ids


def _sqlite(request: pytest.FixtureRequest, topic: str, tmp_path: Path) -> FaultBackend:
    from balog.transports.sqlite import SQLiteTransport

    path = str(tmp_path / "faults.db")
    options = {"path": path, "lease": str(LEASE), "wait": "0.5"}
    return FaultBackend("sqlite", "sqlite", options, SQLiteTransport(path), topic, False)


def _kombu(url: str, name: str, topic: str) -> FaultBackend:
    from balog.transports.kombu import KombuTransport

    options = {"url": url, "lease": str(LEASE), "wait": "0.5"}
    transport = KombuTransport(url, lease=LEASE)
    backend = FaultBackend(name, "kombu", options, transport, topic, name == "rabbitmq")
    backend.lost_per_crash = 1 if name == "redis" else 0

    def purge() -> None:
        for t in (topic, transport.dead_letter_topic(topic)):
            try:
                transport.purge(t)
            except Exception:
                pass

    backend.cleanup.append(purge)
    return backend


def _rabbitmq(request: pytest.FixtureRequest, topic: str, tmp_path: Path) -> FaultBackend:
    return _kombu(request.getfixturevalue("rabbitmq_url"), "rabbitmq", topic)


def _redis(request: pytest.FixtureRequest, topic: str, tmp_path: Path) -> FaultBackend:
    return _kombu(request.getfixturevalue("redis_url"), "redis", topic)


def _redis_native(request: pytest.FixtureRequest, topic: str, tmp_path: Path) -> FaultBackend:
    from balog.transports.redis import RedisTransport

    url = request.getfixturevalue("redis_url")
    prefix = f"balog-faults-{topic[-8:]}:"
    options = {"url": url, "prefix": prefix, "lease": str(LEASE), "wait": "0.5"}
    transport = RedisTransport(url, prefix=prefix, lease=LEASE)
    backend = FaultBackend("redis-native", "redis", options, transport, topic, False)
    backend.cleanup.append(lambda: delete_redis_prefix(url, prefix))
    return backend


def _sqs(request: pytest.FixtureRequest, topic: str, tmp_path: Path) -> FaultBackend:
    from balog.transports.sqs import SQSTransport

    endpoint = request.getfixturevalue("sqs_endpoint")
    options = {
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "create_queues": "true",
        "lease": str(LEASE * 2),  # moto answers slowly enough that 2 s leases churn
        "wait": "1",
    }
    transport = SQSTransport(
        endpoint_url=endpoint, region="us-east-1", create_queues=True, retry_delay=0.01
    )
    return FaultBackend("sqs", "sqs", options, transport, topic, False)


FAULT_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, str, Path], FaultBackend]] = {
    "sqlite": _sqlite,
    "rabbitmq": _rabbitmq,
    "redis": _redis,
    "redis-native": _redis_native,
    "sqs": _sqs,
}


def make_backend(
    request: pytest.FixtureRequest, name: str, topic: str, tmp_path: Path
) -> Iterator[FaultBackend]:
    backend = FAULT_BACKENDS[name](request, topic, tmp_path)
    try:
        yield backend
    finally:
        for undo in reversed(backend.cleanup):
            undo()
        backend.transport.close()


@pytest.fixture(params=list(FAULT_BACKENDS))
def fault_backend(
    request: pytest.FixtureRequest, unique_name: str, tmp_path: Path
) -> Iterator[FaultBackend]:
    """Each real backend in turn, on a fresh topic."""
    yield from make_backend(request, request.param, unique_name, tmp_path)


def slow(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--slow"))


def option_value(options: dict[str, str], key: str) -> Any:
    return options.get(key)

"""The shipped conformance suite, run over every built-in backend.

Adding a backend is a subclass with a factory: ``make_transport`` (and ``make_engine`` when the
backend has an engine of its own).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from backends import delete_redis_prefix

from balog.consumers import ConsumerHub
from balog.engines.base import Backoff, Engine
from balog.engines.memory import MemoryEngine
from balog.events import encode, new_event
from balog.testing.conformance import TransportConformance
from balog.transports.base import Transport
from balog.transports.memory import MemoryBroker, MemoryTransport


class TestMemoryTransport(TransportConformance):
    """The reference semantics: the memory transport on the generic TransportEngine."""

    @pytest.fixture(autouse=True)
    def _broker(self) -> None:
        self.broker = MemoryBroker()

    def make_transport(self) -> Transport:
        return MemoryTransport(broker=self.broker)


class TestMemoryEngine(TestMemoryTransport):
    """The memory transport under MemoryEngine, the engine unit tests use."""

    def make_engine(
        self, hub: ConsumerHub, transport: Transport, *, max_attempts: int, batch_size: int
    ) -> Engine:
        return MemoryEngine(
            hub,
            broker=self.broker,
            max_attempts=max_attempts,
            batch_size=batch_size,
            backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
            lease=self.engine_lease,
            handle_signals=False,
        )


class TestSQSTransport(TransportConformance):
    """SQS, on the moto server over real HTTP with real boto3."""

    lease = 1.0  # SQS visibility timeouts are whole seconds

    @pytest.fixture(autouse=True)
    def _endpoint(self, sqs_endpoint: str) -> None:
        self.endpoint = sqs_endpoint

    def make_transport(self) -> Transport:
        from balog.transports.sqs import SQSTransport

        return SQSTransport(
            endpoint_url=self.endpoint, region="us-east-1", create_queues=True, retry_delay=0.01
        )

    def push_foreign(self, transport: Transport, topic: str) -> bytes:
        """A plain-text message with no balog attributes, sent the way ``aws sqs send-message``
        sends one: one boto3 ``send_message`` call."""
        import boto3

        text = f"foreign message from the AWS CLI {uuid.uuid4().hex}"
        client = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")
        try:
            url = client.create_queue(QueueName=topic)["QueueUrl"]
            client.send_message(QueueUrl=url, MessageBody=text)
        finally:
            client.close()
        return text.encode()


class _Kombu(TransportConformance):
    """kombu on one broker URL, the transport on the generic engine and under KombuEngine."""

    url: str

    def make_transport(self) -> Transport:
        from balog.transports.kombu import KombuTransport

        return KombuTransport(self.url, **self.transport_kwargs())

    def transport_kwargs(self) -> dict[str, Any]:
        return {}

    def make_engine(
        self, hub: ConsumerHub, transport: Transport, *, max_attempts: int, batch_size: int
    ) -> Engine:
        from balog.engines.kombu import KombuEngine

        return KombuEngine(
            hub,
            url=self.url,
            max_attempts=max_attempts,
            batch_size=batch_size,
            backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
            wait=0.2,
            lease=self.engine_lease,
            handle_signals=False,
            **self.transport_kwargs(),
        )


class TestKombuRabbitMQ(_Kombu):
    """kombu on RabbitMQ (AMQP): no lease expiry or extension, native delays."""

    @pytest.fixture(autouse=True)
    def _broker(self, rabbitmq_url: str) -> None:
        self.url = rabbitmq_url

    def push_foreign(self, transport: Transport, topic: str) -> bytes:
        """A text/plain message published by Node.js amqplib (installed from npm on first use)."""
        body = b"plain text from amqplib " + uuid.uuid4().hex.encode() + b" \xff\x00"
        script = Path(__file__).parent / "kombu" / "foreign" / "amqplib.py"
        done = subprocess.run(
            [sys.executable, str(script), self.url, topic, "text/plain"],
            input=body,
            capture_output=True,
            timeout=360,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
        return body


class TestKombuRedis(_Kombu):
    """kombu on Redis: leases are kombu's visibility timeout, extended by the transport."""

    lease = 1.0

    @pytest.fixture(autouse=True)
    def _broker(self, redis_url: str) -> None:
        self.url = redis_url

    def transport_kwargs(self) -> dict[str, Any]:
        return {"transport_options": {"visibility_timeout": self.lease}}

    def push_foreign(self, transport: Transport, topic: str) -> bytes:
        """A bare LPUSH of bytes that are not kombu's JSON wrapper (not even UTF-8)."""
        import redis

        body = b"\xff bare LPUSH " + uuid.uuid4().hex.encode()
        client = redis.Redis.from_url(self.url)
        try:
            client.lpush(topic, body)
        finally:
            client.close()
        return body


class TestKombuMemory(_Kombu):
    """kombu's in-process memory:// transport."""

    url = "memory://"


class TestRedisNative(TransportConformance):
    """The native Redis transport: leases, delays and dead letters in server-side scripts."""

    lease = 1.0

    @pytest.fixture(autouse=True)
    def _broker(self, redis_url: str) -> Iterator[None]:
        self.url = redis_url
        self.prefix = f"balog-conf-{uuid.uuid4().hex[:8]}:"
        yield
        delete_redis_prefix(redis_url, self.prefix)

    def make_transport(self) -> Transport:
        from balog.transports.redis import RedisTransport

        return RedisTransport(self.url, prefix=self.prefix)

    def push_foreign(self, transport: Transport, topic: str) -> bytes:
        """A bare event LPUSHed onto the ready list, as a client that knows only the list would
        (with redis-cli where it is installed)."""
        import redis

        event = encode(new_event("foreign.redis", {"cls_type": "foreign", "n": 0}))
        key = f"{self.prefix}q:{topic}"
        cli = shutil.which("redis-cli")
        if cli is not None:
            host, port = urlsplit(self.url).hostname or "127.0.0.1", urlsplit(self.url).port
            subprocess.run(
                [cli, "-h", host, "-p", str(port or 6379), "-x", "LPUSH", key],
                input=event,
                check=True,
                capture_output=True,
                timeout=30,
            )
            return event
        client = redis.Redis.from_url(self.url)
        try:
            client.lpush(key, event)
        finally:
            client.close()
        return event

    def make_engine(
        self, hub: ConsumerHub, transport: Transport, *, max_attempts: int, batch_size: int
    ) -> Engine:
        from balog.engines.redis import RedisEngine

        return RedisEngine(
            hub,
            url=self.url,
            prefix=self.prefix,
            max_attempts=max_attempts,
            batch_size=batch_size,
            backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
            wait=0.2,
            lease=self.engine_lease,
            handle_signals=False,
        )

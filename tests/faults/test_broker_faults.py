"""Dropped connections and broker outages while events are produced and consumed.

An engine consumes in a thread while a producer (balog's EventHandler) logs events; mid-run the
connections are cut on the server side (RabbitMQ: ``rabbitmqctl close_connection`` for this
process's connections; Redis: ``CLIENT KILL`` for them; SQS: a loopback proxy in front of moto
drops every connection for a while). The engine reconnects, the producer never blocks the
application nor raises, and the ledger shows nothing lost among the events whose send the
transport confirmed. Only this process's connections are touched: other tests share the brokers.
"""

from __future__ import annotations

import gc
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from backends import delete_redis_prefix

import balog
from balog.consumers import Consumer, ConsumerHub
from balog.engines import create_engine
from balog.events import loads
from balog.exceptions import SendError
from balog.transports.base import Delivery, Transport

from .helpers import (
    FaultProxy,
    close_own_rabbitmq_connections,
    kill_own_redis_clients,
    reconcile,
    wait_for,
)

BLOCKED = 0.5


class Recording(Transport):
    """Delegates to ``inner``, and records every body whose send was confirmed."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.confirmed: list[bytes] = []
        self.failures = 0

    def send(
        self, topic: str, bodies: Sequence[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        try:
            self.inner.send(topic, bodies, headers=headers)
        except SendError as exc:
            failed = set(exc.failed)
            self.confirmed += [b for i, b in enumerate(bodies) if i not in failed]
            self.failures += 1
            raise
        except Exception:
            self.failures += 1
            raise
        self.confirmed += list(bodies)

    def receive(self, topic: str, **kw: Any) -> list[Delivery]:
        return self.inner.receive(topic, **kw)

    def ack(self, delivery: Delivery) -> None:
        self.inner.ack(delivery)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        self.inner.nack(delivery, delay=delay)

    def close(self) -> None:
        self.inner.close()


def run_with_fault(
    name: str,
    topic: str,
    producer_transport: Transport,
    engine_options: dict[str, Any],
    inject: Callable[[], None],
    events: int = 600,
    recover_within: float = 90.0,
) -> None:
    """Produce ``events`` while an engine consumes; call ``inject`` at the half; reconcile."""
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), topic)])
    engine = create_engine(hub=hub, handle_signals=False, **engine_options)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    recording = Recording(producer_transport)
    handler = balog.configure(recording, topic, max_retries=5, retry_delay=0.2, batch_size=10)
    balogger = balog.get_logger("faults.broker")
    slowest = 0.0
    try:
        for n in range(events):
            started = time.perf_counter()
            balogger.info("tick", payload={"cls_type": "n", "n": n})
            slowest = max(slowest, time.perf_counter() - started)
            if n == events // 2:
                inject()
            time.sleep(0.005)
        produced_at = time.monotonic()
        handler.flush(timeout=60)
        confirmed = [loads(b)["header"]["id"] for b in recording.confirmed]
        wait_for(
            lambda: set(confirmed) <= set(processed), timeout=90, what="confirmed events processed"
        )
        print(
            f"{name}: all confirmed events processed {time.monotonic() - produced_at:.1f}s "
            "after the last was logged"
        )
    finally:
        engine.stop()
        stopping = time.monotonic()
        thread.join(60)
        print(f"{name}: engine stopped in {time.monotonic() - stopping:.1f}s")
        engine.close()
        balog.producer.state.reset()
    stats = handler.stats
    report = reconcile(name, confirmed, processed)
    print(
        f"{name}: producer {stats}; send failures seen {recording.failures}; "
        f"slowest application call {slowest * 1e3:.1f} ms"
    )
    assert report.lost == []
    assert stats.sent == len(confirmed), (stats, len(confirmed), len(set(confirmed)))
    assert stats.sent + stats.dropped == events
    assert slowest < BLOCKED


# kombu leaves the socket of a connection the server closed for the garbage collector (an
# "unclosed socket" ResourceWarning); collected here so it is not blamed on a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_rabbitmq_connections_closed_by_the_server_mid_run(
    rabbitmq_url: str, unique_name: str
) -> None:
    """RabbitMQ closes this process's connections mid-run: nothing confirmed is lost."""
    from balog.transports.kombu import KombuTransport

    closed: list[int] = []

    def inject() -> None:
        closed.append(close_own_rabbitmq_connections())

    transport = KombuTransport(rabbitmq_url)
    try:
        run_with_fault(
            "rabbitmq-close-connections",
            unique_name,
            transport,
            {"engine": "kombu", "url": rabbitmq_url, "wait": 0.2},
            inject,
        )
    finally:
        transport.purge(unique_name)
        gc.collect()
    assert closed[0] >= 2, "the engine's and the producer's connections were not found"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_redis_clients_killed_mid_run(redis_url: str, unique_name: str) -> None:
    """Redis CLIENT KILLs this process's connections mid-run: nothing confirmed is lost."""
    import redis

    from balog.transports.kombu import KombuTransport

    admin = redis.Redis.from_url(redis_url)
    killed: list[int] = []

    def inject() -> None:
        killed.append(kill_own_redis_clients(admin))

    transport = KombuTransport(redis_url)
    try:
        run_with_fault(
            "redis-client-kill",
            unique_name,
            transport,
            {"engine": "kombu", "url": redis_url, "wait": 0.2, "lease": 5.0},
            inject,
        )
    finally:
        transport.purge(unique_name)
        admin.close()
        gc.collect()
    assert killed[0] >= 2, "the engine's and the producer's connections were not found"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_native_redis_clients_killed_mid_run(redis_url: str, unique_name: str) -> None:
    """The native Redis backend: CLIENT KILL of this process's connections mid-run loses
    nothing confirmed."""
    import redis

    from balog.transports.redis import RedisTransport

    admin = redis.Redis.from_url(redis_url)
    killed: list[int] = []
    prefix = f"balog-faults-{unique_name[-8:]}:"

    def inject() -> None:
        killed.append(kill_own_redis_clients(admin))

    transport = RedisTransport(redis_url, prefix=prefix)
    try:
        run_with_fault(
            "redis-native-client-kill",
            unique_name,
            transport,
            {"engine": "redis", "url": redis_url, "prefix": prefix, "wait": 0.2, "lease": 5.0},
            inject,
        )
    finally:
        transport.close()
        delete_redis_prefix(redis_url, prefix)
        admin.close()
        gc.collect()
    assert killed[0] >= 2, "the engine's and the producer's connections were not found"


def test_sqs_unreachable_for_a_while_mid_run(sqs_endpoint: str, unique_name: str) -> None:
    """The SQS endpoint drops every connection for 3 s mid-run: nothing confirmed is lost."""
    from balog.transports.sqs import SQSTransport

    host, port = sqs_endpoint.rsplit("/", 1)[-1].split(":")
    proxy = FaultProxy(host, int(port))

    def inject() -> None:
        proxy.set_mode("drop")
        threading.Timer(3.0, proxy.set_mode, args=("pass",)).start()

    transport = SQSTransport(
        endpoint_url=proxy.url, region="us-east-1", create_queues=True, retry_delay=0.05
    )
    try:
        run_with_fault(
            "sqs-proxy-drop",
            unique_name,
            transport,
            {
                "engine": "sqs",
                "endpoint_url": proxy.url,
                "region": "us-east-1",
                "create_queues": True,
                "wait": 1,
                "lease": 5,
            },
            inject,
            events=300,
            # A request whose connection died silently waits out the read timeout (25 s), not
            # botocore's default 60 s.
            recover_within=45.0,
        )
    finally:
        proxy.close()
    assert proxy.dropped > 0, "the proxy dropped no connection: the fault never happened"


@pytest.fixture
def disruptive(request: pytest.FixtureRequest) -> None:
    """Restarting a shared broker disturbs every other user: only under CI or with --slow."""
    if not (os.environ.get("CI") or request.config.getoption("--slow")):
        pytest.skip("restarts the shared RabbitMQ: runs under CI or with --slow")


@pytest.fixture
def rabbitmq_restored() -> Iterator[None]:
    """Whatever happens in the test, RabbitMQ's app is running again afterwards."""
    yield
    subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], capture_output=True, timeout=120)


@pytest.mark.disruptive
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_rabbitmq_stopped_and_started_mid_run(
    disruptive: None, rabbitmq_restored: None, rabbitmq_url: str, unique_name: str
) -> None:
    """rabbitmqctl stop_app, then start_app, mid-run: the engine reconnects, nothing confirmed
    is lost (events logged while it is down are retried, then counted as dropped)."""
    from balog.transports.kombu import KombuTransport

    def inject() -> None:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
        time.sleep(2)
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)

    transport = KombuTransport(rabbitmq_url)
    try:
        run_with_fault(
            "rabbitmq-stop-start",
            unique_name,
            transport,
            {"engine": "kombu", "url": rabbitmq_url, "wait": 0.2},
            inject,
            events=300,
        )
    finally:
        transport.purge(unique_name)
        gc.collect()

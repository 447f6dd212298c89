"""Connection faults between a kombu consumer and its broker, through a loopback proxy: a path
that dies silently (AMQP heartbeats notice it), a stop on a dead connection (bounded), a handler
longer than the heartbeat (kept alive), and connections reset mid-run (a ledger of what is lost:
nothing on RabbitMQ; on kombu's Redis at most the message in flight per reset, and nothing else).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu_helpers import LOG, body, require_rabbitmqctl, run_in_thread, unacked, wait_for
from kombu_proxy import Proxy

from balog.consumers import Consumer, ConsumerHub
from balog.engines import Backoff
from balog.engines.kombu import KombuEngine
from balog.events import EventDict
from balog.transports.kombu import KombuTransport


@pytest.fixture
def amqp_proxy(rabbitmq_url: str) -> Iterator[Proxy]:
    proxy = Proxy("127.0.0.1", 5672)
    yield proxy
    proxy.close()


def proxied(proxy: Proxy, url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    _, slash, path = location.partition("/")
    return f"{scheme}://{credentials}{at}127.0.0.1:{proxy.port}{slash}{path}"


class Recorder:
    """A consumer that records event ids; ``hold`` makes the event of that id take so long."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[str] = []
        self.hold: dict[str, float] = {}
        self.delay = 0.0

    def __call__(self, event: EventDict) -> None:
        ident = event["header"]["id"]
        time.sleep(self.hold.get(ident, self.delay))
        with self.lock:
            self.seen.append(ident)

    def ids(self) -> list[str]:
        with self.lock:
            return list(self.seen)


def engine_for(url: str, topic: str, recorder: Recorder, **options: Any) -> KombuEngine:
    return KombuEngine(
        ConsumerHub([Consumer(recorder, topic)]),
        url=url,
        wait=0.2,
        backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
        handle_signals=False,
        **options,
    )


def test_a_silently_dead_amqp_connection_is_noticed_and_replaced(
    rabbitmq_url: str, amqp_proxy: Proxy, unique_name: str
) -> None:
    """The path to the broker stops carrying anything (no FIN, no RST): within two heartbeats the
    worker gives the connection up, reconnects, and processes what is sent afterwards."""
    recorder = Recorder()
    engine = engine_for(proxied(amqp_proxy, rabbitmq_url), unique_name, recorder, heartbeat=1.0)
    direct = KombuTransport(rabbitmq_url)
    thread, failures = run_in_thread(engine)
    try:
        direct.send(unique_name, [body(LOG, ident="before")])
        assert wait_for(lambda: recorder.ids() == ["before"])
        assert amqp_proxy.blackhole() >= 1
        stalled_at = time.monotonic()
        direct.send(unique_name, [body(LOG, ident="after")])
        assert wait_for(lambda: "after" in recorder.ids(), timeout=30)
        assert time.monotonic() - stalled_at < 15
        assert failures == []
    finally:
        engine.stop()
        thread.join(30)
        engine.close()
        direct.delete(unique_name)
        direct.close()
    assert not thread.is_alive()


def test_stop_returns_promptly_on_a_silently_dead_connection(
    rabbitmq_url: str, amqp_proxy: Proxy, unique_name: str
) -> None:
    """stop() while every connection of the engine is silently dead: run() returns within a few
    seconds (closing gives up on the broker's reply and drops the socket) instead of hanging."""
    recorder = Recorder()
    engine = engine_for(proxied(amqp_proxy, rabbitmq_url), unique_name, recorder)
    direct = KombuTransport(rabbitmq_url)
    thread, _ = run_in_thread(engine)
    try:
        direct.send(unique_name, [body(LOG, ident="one")])
        assert wait_for(lambda: recorder.ids() == ["one"])
        assert amqp_proxy.blackhole() >= 1
        stopped_at = time.monotonic()
        engine.stop()
        thread.join(30)
        assert not thread.is_alive()
        assert time.monotonic() - stopped_at < 10
        closed_at = time.monotonic()
        engine.close()
        assert time.monotonic() - closed_at < 10
    finally:
        engine.stop()
        thread.join(30)
        direct.delete(unique_name)
        direct.close()


def test_a_handler_longer_than_two_heartbeats_keeps_its_connection(
    rabbitmq_url: str, unique_name: str
) -> None:
    """With a 1 s heartbeat, a handler running 5 s keeps its connection (heartbeats go out from
    another thread meanwhile): its message is processed once and acked, not redelivered."""
    recorder = Recorder()
    recorder.hold["slow"] = 5.0
    engine = engine_for(rabbitmq_url, unique_name, recorder, heartbeat=1.0, concurrency=2)
    thread, failures = run_in_thread(engine)
    try:
        engine.transport.send(unique_name, [body(LOG, ident="slow")])
        assert wait_for(lambda: recorder.ids() == ["slow"], timeout=30)
        time.sleep(1.5)  # a redelivery (the connection lost) would reach the second worker
        assert recorder.ids() == ["slow"]
        assert failures == []
        assert engine.stats()[unique_name].processed == 1
    finally:
        engine.stop()
        thread.join(30)
        engine.close()
    with KombuTransport(rabbitmq_url) as transport:
        assert transport.size(unique_name) == 0
        transport.delete(unique_name)


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_consumer_connections_reset_mid_run_ledger(
    broker: str, request: pytest.FixtureRequest, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy resets every connection of the consumer twice while 300 events flow. Ledger:
    RabbitMQ loses none (unacked messages return when their connection dies). kombu's Redis
    transport loses at most one per reset per worker: the message Redis had popped for the
    outstanding BRPOP, or whose unacked record was being written, when the connection went;
    nothing else, and nothing is left behind in the list or in kombu's unacked hash.
    Duplicates (acks lost with the connection) are counted."""
    url = request.getfixturevalue("rabbitmq_url" if broker == "amqp" else "redis_url")
    if broker == "amqp":
        require_rabbitmqctl()
    port = 5672 if broker == "amqp" else 6379
    options = {"global_keyprefix": f"{unique_name}:"} if broker == "redis" else {}
    proxy = Proxy("127.0.0.1", port)
    recorder = Recorder()
    recorder.delay = 0.0
    engine = engine_for(
        proxied(proxy, url), unique_name, recorder, lease=2.0, transport_options=options
    )
    producer = KombuTransport(url, transport_options=options)
    sent = [f"e{i:04d}" for i in range(300)]
    resets = 0
    thread, failures = run_in_thread(engine)
    try:
        for start_at in range(0, len(sent), 50):
            producer.send(unique_name, [body(LOG, ident=i) for i in sent[start_at : start_at + 50]])
        for mark in (100, 200):
            assert wait_for(lambda m=mark: len(set(recorder.ids())) >= m, timeout=60)
            resets += 1 if proxy.reset() else 0
        assert wait_for(lambda: _quiet(producer, unique_name, url, options), timeout=60)
    finally:
        engine.stop()
        thread.join(30)
        engine.close()
        proxy.close()
    counts = collections.Counter(recorder.ids())
    lost = [i for i in sent if i not in counts]
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"ledger[kombu-{broker}-reset-x{resets}]: produced={len(sent)} "
        f"processed={sum(counts.values())} lost={len(lost)} duplicates={duplicates}"
    )
    try:
        assert resets == 2
        assert failures == []
        if broker == "amqp":
            assert lost == []
        else:
            assert len(lost) <= resets, f"lost {lost} in {resets} resets"
            assert any("BRPOP" in r.getMessage() for r in caplog.records)
    finally:
        producer.delete(unique_name)
        producer.close()


def _quiet(producer: KombuTransport, topic: str, url: str, options: dict[str, Any]) -> bool:
    """Whether nothing is left to deliver: the queue is empty and nothing is unacked."""
    if url.startswith("redis"):
        import redis

        prefix = options["global_keyprefix"]
        with redis.Redis.from_url(url) as client:
            return not client.llen(prefix + topic) and not client.hlen(prefix + "unacked")
    return producer.size(topic) == 0 and unacked(url, topic, "") == 0

"""The kombu engine on RabbitMQ, Redis and kombu's memory transport: one hub, one operator, the
same behaviour on every broker (routing, ack, retries, dead letters, quarantine, reconnects)."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu_helpers import (
    LOG,
    METRICS,
    body,
    named,
    receive_one,
    require_rabbitmqctl,
    run_in_thread,
    unacked,
    wait_for,
)

import balog
from balog.consumers import Consumer, ConsumerHub
from balog.engines import Backoff, create_engine, engine_from_settings
from balog.engines.kombu import KombuEngine
from balog.events import decode
from balog.exceptions import (
    AuthenticationError,
    LeaseExpired,
    MessageTooLarge,
    SendError,
    TopicMismatch,
    TransportConnectionError,
)
from balog.transports.kombu import KombuTransport

kombu = pytest.importorskip("kombu")

CANARY = "CanaryPassw0rd-9f3e"


class Operator:
    """The seed README's operator: topic from settings, consumer called with settings first."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def get_topic(self, consumer: Consumer) -> str:
        return consumer.topic.format(env=self.settings["env"])

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        return consumer.func(self.settings, event)


class Recorder:
    """Consumers that record what they saw; ``fail`` decides whether one raises."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, list[str]] = {"metrics_v0": [], "metrics_v1": [], "logs": []}
        self.fail: Callable[[dict[str, Any]], bool] = lambda event: False
        self.calls = 0
        self.delay = 0.0
        self.pause: Callable[[dict[str, Any]], object] = lambda event: None

    def record(self, name: str, event: dict[str, Any]) -> None:
        with self.lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        self.pause(event)
        if self.fail(event):
            raise ValueError(f"boom on {event['header']['id']}")
        with self.lock:
            self.seen[name].append(event["header"]["id"])

    def hub(self) -> ConsumerHub:
        hub = ConsumerHub()
        topic = "{env}"
        hub.add_consumer(
            Consumer(lambda s, e: self.record("metrics_v0", e), topic, "metrics", "<0.2", "m0")
        )
        hub.add_consumer(
            Consumer(lambda s, e: self.record("metrics_v1", e), topic, "metrics", ">=0.2", "m1")
        )
        hub.add_consumer(Consumer(lambda s, e: self.record("logs", e), topic, "log", None, "logs"))
        return hub

    def ids(self, name: str) -> list[str]:
        with self.lock:
            return list(self.seen[name])


@pytest.fixture(params=["amqp", "redis", "memory"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "amqp":
        return str(request.getfixturevalue("rabbitmq_url"))
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return "memory://"


@pytest.fixture
def topic(unique_name: str, broker_url: str) -> Iterator[str]:
    """A unique queue; it and its dead-letter queue are deleted afterwards."""
    yield unique_name
    with KombuTransport(broker_url) as transport:
        transport.delete(unique_name)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_engine(url: str, topic: str, recorder: Recorder, **options: Any) -> KombuEngine:
    options.setdefault("backoff", Backoff(base=0.05, factor=1.0, jitter=0.0))
    options.setdefault("wait", 0.2)
    engine = create_engine(
        "kombu",
        hub=recorder.hub(),
        consumer_operator=Operator({"env": topic}),
        url=url,
        handle_signals=False,
        **options,
    )
    assert isinstance(engine, KombuEngine)
    return engine


@contextlib.contextmanager
def running(engine: KombuEngine) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        engine.stop()
        thread.join(20)
        assert not thread.is_alive()


def test_routes_by_cls_type_and_version_and_acks_after_success(
    broker_url: str, topic: str, recorder: Recorder
) -> None:
    """Events reach only the consumers whose cls_type and version match, and are acked."""
    engine = make_engine(broker_url, topic, recorder)
    with engine:
        engine.transport.send(
            topic,
            [
                body(METRICS, ident="m-old"),
                body(METRICS, schema="0.2.0", ident="m-new"),
                body(LOG, ident="log-1"),
            ],
        )
        assert engine.drain(raise_errors=True, timeout=20) == 3
        assert recorder.ids("metrics_v0") == ["m-old"]
        assert recorder.ids("metrics_v1") == ["m-new"]
        assert recorder.ids("logs") == ["log-1"]
        assert engine.kombu_transport.size(topic) == 0
        assert engine.stats()[topic].processed == 3


def test_producer_events_reach_the_engine(broker_url: str, topic: str, recorder: Recorder) -> None:
    """get_logger(...).info(...) through balog.configure('kombu', url=...) reaches the consumer."""
    balog.configure("kombu", "{env}", topic_vars={"env": topic}, url=broker_url)
    balog.get_logger("app.jobs").info("done", payload=METRICS)
    assert balog.flush(10)
    engine = make_engine(broker_url, topic, recorder)
    with engine:
        assert wait_for(lambda: engine.drain(timeout=5) > 0 or bool(recorder.ids("metrics_v0")))
    [ident] = recorder.ids("metrics_v0")
    assert len(ident) > 0
    assert engine.stats()[topic].processed == 1


def test_nack_with_delay_is_native_on_amqp_and_at_once_elsewhere(
    broker_url: str, topic: str
) -> None:
    """AMQP delays a nack natively (TTL holding queue); kombu's virtual transports declare
    delay=False and requeue at once, counted, leaving the wait to the engine."""
    with KombuTransport(broker_url) as transport:
        transport.send(topic, [body(LOG, ident="later")])
        [first] = receive_one(transport, topic)
        nacked_at = time.monotonic()
        transport.nack(first, delay=0.6)
        if transport.capabilities.delay:
            assert transport.receive(topic, wait=0.2) == []
        [again] = receive_one(transport, topic)
        waited = time.monotonic() - nacked_at
        transport.ack(again)
        transport.close_thread()
    assert again.receive_count == 2
    assert again.body == first.body
    assert broker_url.startswith("amqp") == transport.capabilities.delay
    if transport.capabilities.delay:
        assert waited >= 0.5
    else:
        assert waited < 0.5


def test_retry_then_dead_letter_with_reason(
    broker_url: str, topic: str, recorder: Recorder
) -> None:
    """A consumer that keeps failing is retried max_attempts times, then dead-lettered."""
    recorder.fail = lambda event: True
    engine = make_engine(broker_url, topic, recorder, max_attempts=3)
    with engine, running(engine):
        engine.transport.send(topic, [body(METRICS, ident="doomed")])
        assert wait_for(lambda: len(engine.transport.dead_letters(topic)) == 1)
    [letter] = engine.transport.dead_letters(topic)
    assert recorder.calls == 3
    assert "ValueError: boom on doomed" in letter.reason
    assert "after 3 attempts" in letter.reason
    assert letter.receive_count == 3
    assert body(METRICS, ident="doomed")[:20] == letter.body[:20]
    assert engine.kombu_transport.size(topic) == 0


def test_retry_succeeds_on_a_later_attempt(broker_url: str, topic: str, recorder: Recorder) -> None:
    """A message whose consumer failed once comes back with a higher receive count and is
    processed; nothing is dead-lettered."""
    failures: list[str] = []

    def fail_once(event: dict[str, Any]) -> bool:
        ident = event["header"]["id"]
        if ident in failures:
            return False
        failures.append(ident)
        return True

    recorder.fail = fail_once
    engine = make_engine(broker_url, topic, recorder)
    with engine, running(engine):
        engine.transport.send(topic, [body(LOG, ident="flaky")])
        assert wait_for(lambda: recorder.ids("logs") == ["flaky"])
    assert engine.transport.dead_letters(topic) == []
    assert engine.stats()[topic].retried == 1


def test_malformed_messages_are_quarantined(
    broker_url: str, topic: str, recorder: Recorder
) -> None:
    """Bodies that are not JSON, or not valid events, go to the dead-letter queue at once."""
    engine = make_engine(broker_url, topic, recorder)
    with engine:
        engine.transport.send(topic, [b"\xff not json", b'{"schema": "0.1.0"}'])
        engine.drain(timeout=20)
        letters = engine.transport.dead_letters(topic)
    assert len(letters) == 2
    assert all(letter.reason.startswith("invalid event") for letter in letters)
    assert recorder.calls == 0


def test_a_consumer_that_raised_never_ends_the_worker(
    broker_url: str, topic: str, recorder: Recorder
) -> None:
    """After consumers raise, the same running engine keeps processing later events."""
    recorder.fail = lambda event: event["header"]["id"].startswith("bad")
    engine = make_engine(broker_url, topic, recorder, max_attempts=1)
    with engine, running(engine):
        engine.transport.send(topic, [body(LOG, ident=f"bad-{i}") for i in range(3)])
        assert wait_for(lambda: len(engine.transport.dead_letters(topic)) == 3)
        engine.transport.send(topic, [body(LOG, ident=f"good-{i}") for i in range(5)])
        assert wait_for(lambda: len(recorder.ids("logs")) == 5)
    assert [f"good-{i}" for i in range(5)] == sorted(recorder.ids("logs"))


def test_stop_returns_prefetched_messages(broker_url: str, topic: str, recorder: Recorder) -> None:
    """Stopping finishes the event in hand and gives every prefetched one back to the queue."""
    recorder.delay = 0.05
    engine = make_engine(broker_url, topic, recorder, prefetch=100, batch_size=10)
    with engine:
        engine.transport.send(topic, [body(LOG, ident=f"e{i}") for i in range(40)])
        with running(engine):
            assert wait_for(lambda: len(recorder.ids("logs")) >= 2)
        done = len(recorder.ids("logs"))
        assert done < 40
        assert wait_for(lambda: engine.kombu_transport.size(topic) == 40 - done)
        assert engine.transport.dead_letters(topic) == []


def kill_connections(url: str, name: str) -> int:
    """Close, from the server side, every client connection named ``name``; return how many."""
    if url.startswith("amqp"):
        listed = subprocess.run(
            [
                "rabbitmqctl",
                "list_connections",
                "-q",
                "--no-table-headers",
                "pid",
                "client_properties",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        pids = [line.split("\t")[0] for line in listed.stdout.splitlines() if name in line]
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "balog test"], check=True, timeout=60
            )
        return len(pids)
    import redis

    client = redis.Redis.from_url(url)
    try:
        ids = [c["id"] for c in client.client_list() if c.get("name") == name]
        for ident in ids:
            client.client_kill_filter(_id=ident)
        return len(ids)
    finally:
        client.close()


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_server_side_disconnect_mid_stream_loses_nothing(
    broker: str,
    request: pytest.FixtureRequest,
    unique_name: str,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker closes the engine's connections mid-stream; the engine reconnects and every
    event is still processed at least once, including events published after the cut."""
    url = request.getfixturevalue("rabbitmq_url" if broker == "amqp" else "redis_url")
    if broker == "amqp":
        require_rabbitmqctl()
    topic = unique_name
    recorder.delay = 0.02
    engine = make_engine(
        url, topic, recorder, prefetch=20, lease=5.0, transport_options=named(url, topic)
    )
    sent = [f"e{i}" for i in range(250)]
    try:
        with engine, running(engine):
            engine.transport.send(topic, [body(LOG, ident=i) for i in sent[:200]])
            assert wait_for(lambda: len(recorder.ids("logs")) >= 10)
            assert kill_connections(url, topic) >= 2  # the consumer's and the publisher's
            assert len(set(recorder.ids("logs"))) < 200  # the cut came mid-stream
            engine.transport.send(topic, [body(LOG, ident=i) for i in sent[200:]])
            assert wait_for(lambda: set(recorder.ids("logs")) == set(sent), timeout=40)
        # The cut reached the engine: a receive failed, and it carried on.
        assert any(
            r.name == "balog.engine" and "receive from" in r.getMessage() for r in caplog.records
        )
    finally:
        with KombuTransport(url) as transport:
            transport.delete(topic)


def test_redis_lease_keeper_stops_redelivery_of_a_running_handler(
    redis_url: str, unique_name: str, recorder: Recorder
) -> None:
    """On Redis, a handler running longer than the visibility timeout keeps its message: the
    engine sets visibility_timeout to its lease and extends it; the message is handled once."""
    recorder.delay = 2.5
    engine = make_engine(redis_url, unique_name, recorder, lease=1.0, concurrency=2)
    assert engine.kombu_transport.visibility_timeout == 1.0
    try:
        with engine, running(engine):
            engine.transport.send(unique_name, [body(LOG, ident="slow")])
            assert wait_for(lambda: recorder.ids("logs") == ["slow"])
            time.sleep(1.5)  # would a restored copy be picked up by the second worker?
        assert recorder.calls == 1
    finally:
        with KombuTransport(redis_url) as transport:
            transport.delete(unique_name)


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_an_ack_has_reached_the_broker_when_it_returns(
    broker: str, request: pytest.FixtureRequest, unique_name: str
) -> None:
    """The engine's transport sends an ack before ack() returns (nothing held back for later);
    ack_many() likewise sends the whole batch before it returns."""
    url = request.getfixturevalue("rabbitmq_url" if broker == "amqp" else "redis_url")
    if broker == "amqp":
        require_rabbitmqctl()
    prefix = f"{unique_name}:"
    options = {"global_keyprefix": prefix} if broker == "redis" else {}
    engine = make_engine(url, unique_name, Recorder(), transport_options=options)
    transport = engine.kombu_transport
    try:
        with engine:
            transport.send(unique_name, [body(LOG, ident=f"a{i}") for i in range(3)])
            got: list[Any] = []
            deadline = time.monotonic() + 10
            while len(got) < 3 and time.monotonic() < deadline:
                got += transport.receive(unique_name, max_messages=3, wait=0.5)
            assert len(got) == 3
            transport.ack(got[0])
            assert unacked(url, unique_name, prefix) == 2
            assert transport.ack_many(got[1:]) == [None, None]
            assert unacked(url, unique_name, prefix) == 0
            transport.close_thread()
    finally:
        with KombuTransport(url, transport_options=options) as cleanup:
            cleanup.delete(unique_name)


def test_quorum_queues_through_queue_arguments(
    rabbitmq_url: str, unique_name: str, recorder: Recorder
) -> None:
    """queue_arguments declare the topic and dead-letter queues as RabbitMQ quorum queues;
    processing, delayed retries and dead letters work on them as on classic queues."""
    recorder.fail = lambda event: event["header"]["id"] == "bad"
    quorum = {"x-queue-type": "quorum"}
    engine = make_engine(
        rabbitmq_url, unique_name, recorder, queue_arguments=quorum, max_attempts=2
    )
    try:
        with engine, running(engine):
            engine.transport.send(unique_name, [body(LOG, ident="good"), body(LOG, ident="bad")])
            assert wait_for(lambda: len(engine.transport.dead_letters(unique_name)) == 1)
        assert recorder.ids("logs") == ["good"]
        assert recorder.calls == 3
    finally:
        with KombuTransport(rabbitmq_url, queue_arguments=quorum) as transport:
            transport.delete(unique_name)


def test_late_ack_after_the_connection_went_raises_lease_expired(
    broker_url: str, topic: str
) -> None:
    """An ack for a delivery whose connection is gone raises LeaseExpired (it does not crash),
    and the broker gives the message out again."""
    with KombuTransport(broker_url) as transport:
        transport.send(topic, [body(LOG, ident="orphan")])
        [delivery] = receive_one(transport, topic)
        transport.close_thread()  # the connection that received it ends: the message goes back
        with pytest.raises(LeaseExpired):
            transport.ack(delivery)
        [again] = receive_one(transport, topic)
        assert again.body == delivery.body
        transport.ack(again)
        transport.close_thread()
        assert transport.size(topic) == 0


def test_bodies_the_broker_refuses_for_a_while_are_sent_again(
    rabbitmq_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal that passes (a full queue drained meanwhile, a quorum queue electing its
    leader) costs a retry, not the event: the nacked bodies are sent again and all arrive."""
    arguments = {"x-max-length": 2, "x-overflow": "reject-publish"}
    sender = KombuTransport(rabbitmq_url, queue_arguments=arguments, max_retries=5)
    with sender as transport, caplog.at_level(logging.WARNING, logger="balog"):
        try:
            transport.send(unique_name, [body(LOG, ident="first"), body(LOG, ident="second")])
            drained: list[bytes] = []

            def drain_soon() -> None:
                time.sleep(0.1)  # after the first refusal
                with KombuTransport(rabbitmq_url, queue_arguments=arguments) as other:
                    while len(drained) < 2:
                        for d in other.receive(unique_name, max_messages=2, wait=0.5):
                            drained.append(d.body)
                            other.ack(d)

            helper = threading.Thread(target=drain_soon)
            helper.start()
            transport.send(unique_name, [body(LOG, ident="third")])  # refused until drained
            helper.join(10)
            assert len(drained) == 2
            assert any("refused 1 message" in r.getMessage() for r in caplog.records)
            (third,) = transport.receive(unique_name, max_messages=1, wait=2)
            assert decode(third.body)["header"]["id"] == "third"
            transport.ack(third)
        finally:
            transport.delete(unique_name)


def test_broker_refusal_under_confirms_raises_send_error(
    rabbitmq_url: str, unique_name: str
) -> None:
    """With publisher confirms, bodies the broker nacks (a full queue that rejects publishes) are
    reported by index in SendError; the others were stored."""
    arguments = {"x-max-length": 2, "x-overflow": "reject-publish"}
    with KombuTransport(rabbitmq_url, queue_arguments=arguments) as transport:
        try:
            with pytest.raises(SendError) as refused:
                transport.send(unique_name, [body(LOG, ident=f"n{i}") for i in range(5)])
            assert refused.value.failed == (2, 3, 4)
            assert transport.size(unique_name) == 2
        finally:
            transport.delete(unique_name)


def test_a_batch_arrives_whole_and_in_order(broker_url: str, topic: str) -> None:
    """One send of many bodies, some larger than an AMQP frame, delivers each intact, in order."""
    sizes = [150_000 if i % 10 == 3 else i for i in range(60)]
    bodies = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * size) for i, size in enumerate(sizes)]
    received: list[bytes] = []
    with KombuTransport(broker_url) as transport:
        transport.send(topic, bodies)
        deadline = time.monotonic() + 20
        while len(received) < len(bodies) and time.monotonic() < deadline:
            for delivery in transport.receive(topic, max_messages=20, wait=0.5):
                received.append(delivery.body)
                transport.ack(delivery)
        transport.close_thread()
    assert received == bodies


def test_body_over_max_body_size_is_refused_before_sending(broker_url: str, topic: str) -> None:
    """A body over max_body_size raises MessageTooLarge and nothing of the batch is sent."""
    with KombuTransport(broker_url, max_body_size=1000) as transport:
        with pytest.raises(MessageTooLarge):
            transport.send(topic, [body(LOG), b"x" * 1001])
        assert transport.size(topic) == 0


def test_create_engine_and_settings_build_the_kombu_engine(broker_url: str, topic: str) -> None:
    """create_engine('kombu', url=...) and engine_from_settings both give a KombuEngine."""
    hub = Recorder().hub()
    op = Operator({"env": topic})
    engine = create_engine("kombu", hub=hub, consumer_operator=op, url=broker_url, prefetch=7)
    settings = {
        "balog.engine": "kombu",
        "balog.engine.url": broker_url,
        "balog.engine.prefetch": "20",
        "balog.engine.max_attempts": "2",
    }
    from_settings = engine_from_settings(settings, hub=hub, consumer_operator=op)
    with engine, from_settings:
        assert isinstance(engine, KombuEngine)
        assert isinstance(from_settings, KombuEngine)
        assert engine.kombu_transport.prefetch == 7
        assert from_settings.kombu_transport.prefetch == 20
        assert from_settings.max_attempts == 2
        assert {topic: hub.consumers} == {t: list(c) for t, c in from_settings.routes().items()}


def test_password_never_appears_in_reprs_errors_or_logs(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker password is masked in reprs and absent from errors (wrong password, refused
    connection) and from every log line."""
    caplog.set_level(logging.DEBUG)
    hub = Recorder().hub()
    wrong = f"amqp://guest:{CANARY}@127.0.0.1:5672//"
    refused = f"amqp://guest:{CANARY}@127.0.0.1:1//"
    redis_url = f"redis://:{CANARY}@127.0.0.1:1/0"
    engine = KombuEngine(hub, url=wrong, max_retries=0, connect_timeout=2)
    assert repr(engine.transport) == "KombuTransport(url='amqp://guest:**@127.0.0.1:5672//')"
    assert CANARY not in repr(engine)
    errors: list[BaseException] = []
    with pytest.raises(AuthenticationError) as auth:
        engine.transport.send("t-canary", [b"{}"])
    errors.append(auth.value)
    for url in (refused, redis_url):
        transport = KombuTransport(url, max_retries=1, connect_timeout=1)
        assert CANARY not in repr(transport)
        with pytest.raises(TransportConnectionError) as refused_exc:
            transport.send("t-canary", [b"{}"])
        errors.append(refused_exc.value)
        with pytest.raises(TransportConnectionError) as receive_exc:
            transport.receive("t-canary", wait=0.1)
        errors.append(receive_exc.value)
    engine.close()
    for error in errors:
        assert "**@" in str(error)
        assert CANARY not in str(error)
        assert CANARY not in repr(error)
    assert CANARY not in caplog.text
    assert caplog.records  # the retries were logged, without the password


def run_briefly(engine: KombuEngine, timeout: float = 20.0) -> BaseException | None:
    """Run the engine until it returns by itself (or ``timeout``); what it raised."""
    thread, raised = run_in_thread(engine)
    thread.join(timeout)
    engine.stop()
    thread.join(10)
    assert not thread.is_alive()
    return raised[0] if raised else None


def test_a_refused_login_stops_the_engine_at_start(rabbitmq_url: str, unique_name: str) -> None:
    """A wrong AMQP password: run() raises AuthenticationError within seconds, instead of a
    worker retrying forever."""
    engine = make_engine(rabbitmq_url.replace("guest:guest", "guest:nope"), unique_name, Recorder())
    started = time.monotonic()
    with engine:
        raised = run_briefly(engine)
    assert isinstance(raised, AuthenticationError)
    assert time.monotonic() - started < 10


def test_a_queue_with_other_arguments_stops_the_engine_with_the_detail(
    rabbitmq_url: str, unique_name: str
) -> None:
    """The topic's queue exists as a classic queue, the engine asks for a quorum one: run()
    raises TopicMismatch with the broker's detail and the option to change."""
    with KombuTransport(rabbitmq_url) as transport:
        transport.verify(unique_name)
        engine = make_engine(
            rabbitmq_url, unique_name, Recorder(), queue_arguments={"x-queue-type": "quorum"}
        )
        try:
            with engine:
                raised = run_briefly(engine)
            assert isinstance(raised, TopicMismatch)
            assert "inequivalent arg 'x-queue-type'" in str(raised)
            assert "queue_arguments=" in str(raised)
        finally:
            transport.delete(unique_name)


def test_a_nack_the_broker_refuses_hands_the_message_back(
    rabbitmq_url: str, unique_name: str, recorder: Recorder
) -> None:
    """AMQP (no lease expiry): a retry whose resend the broker refuses (its queue is full) is
    handed back to the broker instead of staying unacked on a live channel, and is processed on
    its next delivery; nothing is dead-lettered or lost."""
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    filled = threading.Event()
    calls: list[str] = []

    def first_call_waits_then_fails(event: dict[str, Any]) -> bool:
        calls.append(event["header"]["id"])
        if calls == ["held"]:
            filled.wait(10)
            return True
        return False

    recorder.fail = first_call_waits_then_fails
    engine = make_engine(
        rabbitmq_url,
        unique_name,
        recorder,
        queue_arguments=arguments,
        prefetch=1,
        max_retries=0,
        backoff=Backoff(base=0.0, jitter=0.0),
    )
    other = KombuTransport(rabbitmq_url, queue_arguments=arguments)
    try:
        with engine:
            engine.transport.send(unique_name, [body(LOG, ident="held")])
            with running(engine):
                assert wait_for(lambda: calls == ["held"])
                other.send(unique_name, [body(LOG, ident="filler")])  # the queue is full now
                filled.set()
                assert wait_for(lambda: sorted(recorder.ids("logs")) == ["filler", "held"])
            stats = engine.stats()[unique_name]
        assert stats.errors >= 1
        assert (stats.processed, stats.dead_lettered) == (2, 0)
        assert other.dead_letters(unique_name) == []
        assert other.size(unique_name) == 0
    finally:
        other.delete(unique_name)
        other.close()

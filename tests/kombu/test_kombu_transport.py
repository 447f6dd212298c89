"""The kombu transport's contract with the engine, on the real brokers: it reports what it saw
(refused deliveries), settles when asked and at once, and finds fatal set-up errors at start-up."""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu_helpers import (
    LOG,
    body,
    rabbitmq_connection_timeouts,
    receive_one,
    receive_some,
    require_rabbitmqctl,
    unacked,
    wait_for,
)

from balog.consumers import Consumer, ConsumerHub
from balog.engines.kombu import KombuEngine
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    SendError,
    TopicMismatch,
    TransportConnectionError,
)
from balog.transports.base import ATTEMPTS_HEADER
from balog.transports.kombu import KombuTransport

kombu = pytest.importorskip("kombu")


@pytest.fixture(params=["amqp", "redis", "memory"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "amqp":
        return str(request.getfixturevalue("rabbitmq_url"))
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return "memory://"


@pytest.fixture(params=["amqp", "redis"])
def server_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("rabbitmq_url" if request.param == "amqp" else "redis_url"))


@pytest.fixture
def topic(unique_name: str, url: str) -> Iterator[str]:
    """A unique queue; it and its dead-letter queue are deleted afterwards."""
    yield unique_name
    with KombuTransport(url) as transport:
        transport.delete(unique_name)


def dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- what the transport reports -------------------------------------------------------------


def test_a_refused_content_type_is_handed_over_not_dead_lettered(url: str, topic: str) -> None:
    """receive() returns a pickled message as a refused delivery with its bytes as they arrived,
    and moves nothing itself; the engine dead-letters it and counts it."""
    pickled = pickle.dumps({"not": "json"})
    with KombuTransport(url) as transport, kombu.Connection(transport._kombu_url) as connection:
        transport.send(topic, [body(LOG, ident="first")])
        connection.Producer().publish(
            pickled,
            routing_key=topic,
            content_type="application/x-python-serialize",
            content_encoding="binary",
        )
        got = receive_some(transport, topic, 2)
        assert [d.refused for d in got] == [
            None,
            "content type 'application/x-python-serialize' is not accepted "
            "(accepted: application/json)",
        ]
        assert pickled == got[1].body
        assert transport.dead_letters(topic) == []
        for d in got:
            transport.release(d)
        transport.close_thread()
        engine = KombuEngine(
            ConsumerHub([Consumer(lambda e: None, topic)]), url=url, handle_signals=False
        )
        with engine:
            assert engine.drain(timeout=20) == 2
            stats = engine.stats()[topic]
        assert (stats.processed, stats.dead_lettered) == (1, 1)
        [letter] = transport.dead_letters(topic)
        assert pickled == letter.body


def test_virtual_transports_leave_delays_to_the_engine(unique_name: str, redis_url: str) -> None:
    """On kombu's virtual transports nack(delay=60) requeues at once, its attempt counted
    (capabilities.delay is false: the engine holds the retry); nothing is held back."""
    for url in (redis_url, "memory://"):
        with KombuTransport(url) as transport:
            assert transport.capabilities.delay is False
            transport.send(unique_name, [body(LOG, ident="retry")])
            [first] = receive_one(transport, unique_name)
            transport.nack(first, delay=60.0)
            again = transport.receive(unique_name, wait=2.0)
            assert [d.receive_count for d in again] == [2]
            assert again[0].headers[ATTEMPTS_HEADER] == "1"
            transport.ack(again[0])
            transport.delete(unique_name)


# -- acks -----------------------------------------------------------------------------------


def test_ack_many_never_acks_a_delivery_outside_the_batch(
    rabbitmq_url: str, unique_name: str
) -> None:
    """On AMQP, ack_many() of the second and third deliveries leaves the first unacked: an
    ack with multiple=True is sent only when it covers nothing but the batch."""
    require_rabbitmqctl()
    with KombuTransport(rabbitmq_url) as transport:
        try:
            transport.send(unique_name, [body(LOG, ident=f"m{i}") for i in range(3)])
            got = receive_some(transport, unique_name, 3)
            assert len(got) == 3
            assert transport.ack_many(got[1:]) == [None, None]
            assert wait_for(lambda: unacked(rabbitmq_url, unique_name, "") == 1)
            transport.ack(got[0])
            assert wait_for(lambda: unacked(rabbitmq_url, unique_name, "") == 0)
        finally:
            transport.delete(unique_name)


@contextlib.contextmanager
def prefixed_redis(
    redis_url: str, topic: str, **options: Any
) -> Iterator[tuple[KombuTransport, Any, str]]:
    """A kombu Redis transport whose keys start with ``<topic>:``, a plain redis-py client to
    look at them, and the prefix; the topic is deleted afterwards."""
    import redis

    prefix = f"{topic}:"
    client = redis.Redis.from_url(redis_url)
    with KombuTransport(
        redis_url, transport_options={"global_keyprefix": prefix}, **options
    ) as transport:
        try:
            yield transport, client, prefix
        finally:
            transport.delete(topic)
            client.close()


def test_redis_ack_many_clears_kombus_records_and_frees_prefetch(
    redis_url: str, unique_name: str
) -> None:
    """On Redis, ack_many() removes the batch from kombu's unacked hash and index in one
    pipeline and frees the consumer's prefetch slots: with prefetch=2, the next two arrive."""
    with prefixed_redis(redis_url, unique_name, prefetch=2) as (transport, client, prefix):
        transport.send(unique_name, [body(LOG, ident=f"r{i}") for i in range(4)])
        first = receive_some(transport, unique_name, 2)
        assert len(first) == 2
        assert client.hlen(prefix + "unacked") == 2
        assert transport.ack_many(first) == [None, None]
        assert (
            client.hlen(prefix + "unacked"),
            client.zcard(prefix + "unacked_index"),
        ) == (0, 0)
        second = receive_some(transport, unique_name, 2)
        assert [d.body.split(b'"id":"')[1][:2].decode() for d in second] == ["r2", "r3"]
        transport.ack_many(second)


def test_a_redis_lease_extended_after_it_ran_out_is_kept_and_reported(
    redis_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On Redis, an extension that comes after the delivery's restore time (a keeper held up)
    moves it all the same and says it may be processed again (a restore sweep may already be
    putting it back); one in time says nothing; one whose entry is gone raises LeaseExpired."""
    with prefixed_redis(redis_url, unique_name, lease=30) as (transport, client, prefix):
        transport.send(unique_name, [body(LOG, ident=f"x{i}") for i in range(3)])
        late, in_time, gone = receive_some(transport, unique_name, 3)
        index = prefix + "unacked_index"
        client.zadd(index, {late.handle.tag: time.time() - 31}, xx=True)
        client.zrem(index, gone.handle.tag)
        with caplog.at_level(logging.WARNING, logger="balog.transports.kombu"):
            transport.extend_lease(late, 30)
            transport.extend_lease(in_time, 30)
        warned = [r.getMessage() for r in caplog.records if "run out" in r.getMessage()]
        assert len(warned) == 1
        assert late.message_id in warned[0]
        assert "may be processed again" in warned[0]
        assert client.zscore(index, late.handle.tag) > time.time() - 1  # moved all the same
        with pytest.raises(LeaseExpired, match="was lost"):
            transport.extend_lease(gone, 30)
        assert transport.ack_many([late, in_time]) == [None, None]


# -- nack and release where leases do not expire ---------------------------------------------


def test_a_nack_whose_resend_is_refused_leaves_the_message_with_its_receiver(
    rabbitmq_url: str, unique_name: str
) -> None:
    """A nack whose resend the broker refuses raises and leaves the delivery unsettled (no
    other consumer gets it); release() then hands it back at once, not counted."""
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    # prefetch=1: the filler stays ready on the queue, filling it, while "held" is unsettled.
    transport = KombuTransport(rabbitmq_url, queue_arguments=arguments, max_retries=0, prefetch=1)
    other = KombuTransport(rabbitmq_url, queue_arguments=arguments)
    try:
        transport.send(unique_name, [body(LOG, ident="held")])
        [held] = receive_one(transport, unique_name)
        transport.send(unique_name, [body(LOG, ident="filler")])  # the queue is full again
        with pytest.raises(SendError):
            transport.nack(held)
        [filler] = receive_one(other, unique_name)
        assert b"filler" in filler.body
        assert other.receive(unique_name, wait=0.5) == []
        transport.release(held)
        [back] = receive_one(other, unique_name)
        assert (held.body, 1) == (back.body, back.receive_count)
        other.ack(back)
        other.ack(filler)
    finally:
        transport.delete(unique_name)
        transport.close()
        other.close()


def test_a_release_that_fails_closes_the_channel_so_the_broker_takes_it_back(
    rabbitmq_url: str,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where leases do not expire (AMQP), a release whose basic.reject cannot be written closes
    the channel holding the message, and the broker gives it to another consumer."""
    transport = KombuTransport(rabbitmq_url)
    other = KombuTransport(rabbitmq_url)
    try:
        transport.send(unique_name, [body(LOG, ident="stuck")])
        [stuck] = receive_one(transport, unique_name)

        def broken_write(*args: Any, **kwargs: Any) -> None:
            raise ConnectionResetError("simulated: the frame could not be written")

        monkeypatch.setattr(stuck.handle.stream.channel, "basic_reject", broken_write)
        with caplog.at_level(logging.WARNING, logger="balog.transports.kombu"):
            transport.release(stuck)
        [back] = receive_one(other, unique_name)
        assert stuck.body == back.body
        other.ack(back)
    finally:
        transport.delete(unique_name)
        transport.close()
        other.close()


# -- fatal is fatal ---------------------------------------------------------------------------


def test_verify_finds_a_refused_login_at_once(rabbitmq_url: str) -> None:
    """A wrong AMQP password is an AuthenticationError (fatal) from verify(), without retries."""
    transport = KombuTransport(rabbitmq_url.replace("guest:guest", "guest:wrong"))
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as refused:
        transport.verify("t-verify-login")
    assert refused.value.fatal
    assert "ACCESS_REFUSED" in str(refused.value)
    assert time.monotonic() - started < 3.0
    transport.close()


def test_verify_finds_a_queue_declared_with_other_arguments(
    rabbitmq_url: str, unique_name: str
) -> None:
    """A queue that exists with other arguments (RabbitMQ 406) is TopicMismatch (fatal) from
    verify() and from receive(), carrying the broker's whole detail and the option to change."""
    with KombuTransport(rabbitmq_url) as classic:
        classic.verify(unique_name)
        quorum = KombuTransport(rabbitmq_url, queue_arguments={"x-queue-type": "quorum"})
        try:
            for call in (lambda: quorum.verify(unique_name), lambda: quorum.receive(unique_name)):
                with pytest.raises(TopicMismatch) as mismatch:
                    call()
                message = str(mismatch.value)
                assert mismatch.value.fatal
                assert f"inequivalent arg 'x-queue-type' for queue '{unique_name}'" in message
                assert "but current is none" in message
                assert "queue_arguments=" in message
        finally:
            quorum.close()
            classic.delete(unique_name)


def test_verify_of_an_unreachable_broker_is_transient_and_bounded(server_url: str) -> None:
    """Nothing listening: verify() raises TransportConnectionError (retried by the engine, not
    fatal) within about connect_timeout; an unknown host name is a ConfigurationError."""
    url = server_url
    unreachable = url.replace("5672", str(dead_port())).replace("6379", str(dead_port()))
    transport = KombuTransport(unreachable, connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransportConnectionError) as down:
        transport.verify("t-verify-down")
    assert not down.value.fatal
    assert time.monotonic() - started < 5.0
    unknown = KombuTransport(url.replace("127.0.0.1", "no-such-host.invalid"), connect_timeout=1.0)
    with pytest.raises(ConfigurationError) as bad_host:
        unknown.verify("t-verify-unknown")
    assert "host name is not known" in str(bad_host.value)


def test_verify_declares_the_topic_and_its_dead_letter_queue(url: str, topic: str) -> None:
    """verify() leaves the topic's queue and its dead-letter queue declared (empty)."""
    with KombuTransport(url) as transport:
        transport.verify(topic)
        assert (transport.size(topic), transport.size(transport.dead_letter_topic(topic))) == (0, 0)


def test_bad_urls_and_unknown_options_are_configuration_errors() -> None:
    """A URL kombu cannot use, and a transport_options key the broker's kombu transport does not
    read, are ConfigurationErrors naming the nearest valid option."""
    with pytest.raises(ConfigurationError, match="cannot use kombu URL"):
        KombuTransport("nosuchbroker://host")
    with pytest.raises(ConfigurationError, match="did you mean 'visibility_timeout'"):
        KombuTransport("redis://127.0.0.1:6379/0", transport_options={"visiblity_timeout": 5})
    with pytest.raises(ConfigurationError, match="did you mean 'client_properties'"):
        KombuTransport("amqp://127.0.0.1//", transport_options={"client_propertie": {}})
    with pytest.raises(ConfigurationError, match="password is given twice"):
        KombuTransport("redis://:a@127.0.0.1:6379/0?password=b")


# -- Redis: the documented loss window; AMQP heartbeats ---------------------------------------


def test_a_redis_consumer_warns_once_of_the_brpop_window(
    redis_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Consuming through kombu's Redis transport logs one WARNING naming the window in which a
    popped message can be lost, and the native backend without it; producing logs none."""
    with caplog.at_level(logging.WARNING, logger="balog.transports.kombu"):
        with KombuTransport(redis_url) as producer:
            producer.send(unique_name, [body(LOG)])
        assert caplog.records == []
        with KombuTransport(redis_url) as consumer:
            consumer.verify(unique_name)
            got = receive_some(consumer, unique_name, 1)
            consumer.ack(got[0])
            consumer.receive(unique_name, wait=0.1)
            consumer.delete(unique_name)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "BRPOP" in warning
    assert "native 'redis' backend" in warning


def test_the_amqp_heartbeat_is_on_by_default(rabbitmq_url: str, unique_name: str) -> None:
    """An AMQP connection negotiates a 30 s heartbeat unless told otherwise."""
    require_rabbitmqctl()
    options = {"client_properties": {"connection_name": unique_name}}
    with KombuTransport(rabbitmq_url, transport_options=options) as transport:
        try:
            transport.send(unique_name, [body(LOG)])
            assert rabbitmq_connection_timeouts(unique_name) == [30]
        finally:
            transport.delete(unique_name)


def test_amqp_batches_are_written_through_the_coalescing_frame_writer(
    rabbitmq_url: str, unique_name: str
) -> None:
    """py-amqp builds each connection's frame writer with the factory balog gives it
    (``Connection(frame_writer=)``), through which a batch of publishes goes out in one socket
    write; the bodies of a batch written that way (frames larger than one AMQP frame among
    them) arrive intact and in order, with confirms."""
    bodies = [b'{"n": %d, "pad": "%s"}' % (i, b"y" * (200_000 if i == 3 else i)) for i in range(8)]
    with KombuTransport(rabbitmq_url) as transport:
        try:
            transport.send(unique_name, bodies)
            [(connection, coalescer)] = list(transport._broker._coalescers.items())
            assert connection is transport._session().publisher.connection
            assert coalescer.chunks is None  # nothing held back once send() returned
            got = receive_some(transport, unique_name, len(bodies))
            assert [d.body for d in got] == bodies
            transport.ack_many(got)
        finally:
            transport.delete(unique_name)

"""The native Redis transport on a real Redis server: SQS's delivery semantics in Lua scripts."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from backends import delete_redis_prefix

import balog._secrets
from balog.consumers import Consumer, ConsumerHub
from balog.engines import create_engine
from balog.engines.redis import RedisEngine
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    TopicMismatch,
    TransportConnectionError,
    TransportError,
)
from balog.transports import create_transport
from balog.transports.base import (
    ATTEMPTS_HEADER,
    REASON_HEADER,
    SOURCE_TOPIC_HEADER,
    Delivery,
)
from balog.transports.redis import RedisTransport, mask_url

CANARY = "canary-pw-7f3a91"


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    value = f"balog-test-{uuid.uuid4().hex[:10]}:"
    yield value
    delete_redis_prefix(redis_url, value)


@pytest.fixture
def transport(redis_url: str, prefix: str) -> Iterator[RedisTransport]:
    t = RedisTransport(redis_url, prefix=prefix, lease=5.0)
    yield t
    t.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def receive_until(
    transport: RedisTransport, topic: str, count: int, timeout: float = 5.0, **kw: float
) -> list[Delivery]:
    deadline = time.monotonic() + timeout
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        got.extend(transport.receive(topic, max_messages=count - len(got), wait=0.2, **kw))
    return got


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_send_receive_single(transport: RedisTransport, unique_name: str) -> None:
    """A body sent with headers comes back once, leased, with receive count 1."""
    transport.send(unique_name, [b"hello"], headers={"k": "v"})
    [d] = receive_until(transport, unique_name, 1)
    assert (d.body, dict(d.headers), d.receive_count, d.lease) == (b"hello", {"k": "v"}, 1, 5.0)
    assert transport.receive(unique_name, wait=0.0) == []


def test_batch_is_received_in_order(transport: RedisTransport, unique_name: str) -> None:
    """A batch of 50 bodies comes back in the order sent, in one claim when asked for 50."""
    bodies = [f"m{i}".encode() for i in range(50)]
    transport.send(unique_name, bodies)
    got = transport.receive(unique_name, max_messages=50, wait=0.0)
    assert bodies == [d.body for d in got]


def test_ack_deletes_the_message_and_its_keys(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str
) -> None:
    """After an ack no key of the message or its lease is left on the server."""
    transport.send(unique_name, [b"x"])
    [d] = receive_until(transport, unique_name, 1)
    transport.ack(d)
    assert sorted(client.scan_iter(match=prefix + "*")) == []


def test_nack_redelivers_at_the_head_with_a_higher_count(
    transport: RedisTransport, unique_name: str
) -> None:
    """A nacked message is the next one received, with receive count 2."""
    transport.send(unique_name, [b"first", b"second"])
    first = transport.receive(unique_name, max_messages=1, wait=0.0)[0]
    transport.nack(first)
    again = transport.receive(unique_name, max_messages=1, wait=0.0)[0]
    assert (again.body, again.receive_count) == (b"first", 2)


def test_nack_with_delay_is_invisible_until_due(
    transport: RedisTransport, unique_name: str
) -> None:
    """A message nacked with a 0.5 s delay is not received before then, and is afterwards."""
    transport.send(unique_name, [b"later"])
    [d] = receive_until(transport, unique_name, 1)
    transport.nack(d, delay=0.5)
    nacked = time.monotonic()
    assert transport.receive(unique_name, wait=0.2) == []
    [again] = receive_until(transport, unique_name, 1)
    assert time.monotonic() - nacked >= 0.4
    assert (again.body, again.receive_count) == (b"later", 2)


def test_release_does_not_count_a_receive(transport: RedisTransport, unique_name: str) -> None:
    """A released message comes back with the same receive count."""
    transport.send(unique_name, [b"r"])
    [d] = receive_until(transport, unique_name, 1)
    transport.release(d)
    [again] = receive_until(transport, unique_name, 1)
    assert again.receive_count == 1


def test_lease_expiry_redelivers_and_the_stale_holder_gets_lease_expired(
    transport: RedisTransport, unique_name: str
) -> None:
    """A 0.3 s lease runs out: another receive gets the message (count 2) and every settlement
    by the first holder raises LeaseExpired."""
    transport.send(unique_name, [b"e"])
    [d] = receive_until(transport, unique_name, 1, lease=0.3)
    [again] = receive_until(transport, unique_name, 1)
    assert (again.body, again.receive_count) == (b"e", 2)
    for settle in (transport.ack, transport.nack, transport.release):
        with pytest.raises(LeaseExpired):
            settle(d)
    with pytest.raises(LeaseExpired):
        transport.extend_lease(d, 5.0)
    with pytest.raises(LeaseExpired):
        transport.dead_letter(d, "late")
    transport.ack(again)
    assert transport.receive(unique_name, wait=0.0) == []


def test_extend_lease_keeps_the_message(transport: RedisTransport, unique_name: str) -> None:
    """Extending a 0.3 s lease keeps the message from other receivers past the first deadline."""
    transport.send(unique_name, [b"kept"])
    [d] = receive_until(transport, unique_name, 1, lease=0.3)
    transport.extend_lease(d, 2.0)
    assert transport.receive(unique_name, wait=0.6) == []
    transport.ack(d)


def test_dead_letter_moves_the_message_with_reason(
    transport: RedisTransport, unique_name: str
) -> None:
    """dead_letter moves the body to the dead-letter topic with the reason, source and count;
    dead_letters lists it without removing it; replay puts it back on the topic."""
    transport.send(unique_name, [b"poison"], headers={"origin": "test"})
    [d] = receive_until(transport, unique_name, 1)
    transport.nack(d)
    [d] = receive_until(transport, unique_name, 1)
    transport.dead_letter(d, "handler raised ValueError")
    assert transport.receive(unique_name, wait=0.0) == []
    listed = transport.dead_letters(unique_name)
    assert [(unique_name, b"poison", "handler raised ValueError", 2)] == [
        (x.topic, x.body, x.reason, x.receive_count) for x in listed
    ]
    assert len(transport.dead_letters(unique_name)) == 1  # listing left it there
    [raw] = receive_until(transport, transport.dead_letter_topic(unique_name), 1)
    assert {
        "origin": "test",
        REASON_HEADER: "handler raised ValueError",
        SOURCE_TOPIC_HEADER: unique_name,
        ATTEMPTS_HEADER: "2",
    } == dict(raw.headers)
    transport.release(raw)
    assert transport.replay_dead_letters(unique_name) == 1
    [back] = receive_until(transport, unique_name, 1)
    assert (back.body, back.receive_count) == (b"poison", 1)
    assert transport.dead_letters(unique_name) == []


def test_purge_removes_ready_messages(transport: RedisTransport, unique_name: str) -> None:
    """purge removes every ready message and says how many."""
    transport.send(unique_name, [b"a", b"b", b"c"])
    assert transport.purge(unique_name) == 3
    assert transport.receive(unique_name, wait=0.0) == []


def test_message_left_leased_by_a_dead_receiver_comes_back(
    redis_url: str, prefix: str, unique_name: str
) -> None:
    """A receiver that claims and then vanishes (closed, never settles) loses nothing: the
    message comes back to another receiver after its lease."""
    gone = RedisTransport(redis_url, prefix=prefix)
    gone.send(unique_name, [b"survivor"])
    assert len(gone.receive(unique_name, wait=1.0, lease=0.3)) == 1
    gone.close()
    with RedisTransport(redis_url, prefix=prefix) as other:
        got = receive_until(other, unique_name, 1)  # type: ignore[arg-type]
        assert [(d.body, d.receive_count) for d in got] == [(b"survivor", 2)]


def test_concurrent_receivers_get_each_message_once(
    transport: RedisTransport, unique_name: str
) -> None:
    """Four threads sharing one transport receive 400 messages, each exactly once."""
    transport.send(unique_name, [str(i).encode() for i in range(400)])
    seen: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            batch = transport.receive(unique_name, max_messages=7, wait=0.2)
            if not batch:
                return
            for d in batch:
                transport.ack(d)
            with lock:
                seen.extend(d.body for d in batch)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(str(i).encode() for i in range(400)) == sorted(seen)


def test_receive_waits_for_a_message_sent_meanwhile(
    transport: RedisTransport, unique_name: str
) -> None:
    """A receive waiting 3 s returns a message sent 0.2 s into the wait, well before 3 s."""
    timer = threading.Timer(0.2, transport.send, args=(unique_name, [b"late"]))
    started = time.monotonic()
    timer.start()
    try:
        got = transport.receive(unique_name, wait=3.0)
    finally:
        timer.join()
    assert [d.body for d in got] == [b"late"]
    assert time.monotonic() - started < 2.0


def test_id_without_its_hash_is_refused_with_its_bytes(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str
) -> None:
    """An id whose message hash is gone comes back alone as a refused delivery holding the id
    as it was pushed, the message beside it flows on, and dead-lettering it keeps those bytes."""
    transport.send(unique_name, [b"a", b"b"])
    first_id = client.lindex(f"{prefix}q:{unique_name}", 0)
    client.delete(prefix.encode() + b"m:" + first_id)
    got = transport.receive(unique_name, max_messages=10, wait=0.0)
    assert [(first_id, True), (b"b", False)] == [(d.body, d.refused is not None) for d in got]
    refused, valid = got
    assert "hash is gone" in str(refused.refused)
    transport.ack(valid)
    transport.dead_letter(refused, refused.refused)
    assert [first_id] == [x.body for x in transport.dead_letters(unique_name)]
    assert transport.receive(unique_name, wait=0.0) == []


def test_headers_that_are_not_json_are_refused_and_the_batch_flows_on(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str
) -> None:
    """A message hash whose headers field is not JSON no longer fails every receive: it comes
    back refused with the hash's body, the messages claimed beside it are delivered, and it
    dead-letters with that body."""
    transport.send(unique_name, [b"before"])
    client.hset(f"{prefix}m:foreign1", mapping={"b": b"the body", "h": b"{not json", "c": 0})
    client.rpush(f"{prefix}q:{unique_name}", "foreign1")
    transport.send(unique_name, [b"after"])
    got = transport.receive(unique_name, max_messages=10, wait=0.0)
    expected = [(b"before", False), (b"the body", True), (b"after", False)]
    assert expected == [(d.body, d.refused is not None) for d in got]
    assert "headers field is not JSON" in str(got[1].refused)
    transport.ack_many([got[0], got[2]])
    transport.dead_letter(got[1], "refused")
    [letter] = transport.dead_letters(unique_name)
    assert (got[1].body, "refused") == (letter.body, letter.reason)
    assert transport.receive(unique_name, wait=0.0) == []


def test_bare_event_pushed_by_a_foreign_client_is_refused_never_lost(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str
) -> None:
    """A bare event LPUSHed onto the ready list by another client is a refused delivery holding
    the bytes pushed; nacked it comes back refused with a higher count, dead-lettered it keeps
    the bytes, and replayed it is an ordinary message."""
    from balog.events import encode, new_event

    bare = encode(new_event("foreign.client", {"cls_type": "n", "n": 1}))
    client.lpush(f"{prefix}q:{unique_name}", bare)
    [d] = receive_until(transport, unique_name, 1)
    assert (bare, 1) == (d.body, d.receive_count)
    assert "client other than balog" in str(d.refused)
    transport.nack(d)
    [again] = receive_until(transport, unique_name, 1)
    assert (bare, 2, d.refused) == (again.body, again.receive_count, again.refused)
    transport.dead_letter(again, again.refused or "")
    [letter] = transport.dead_letters(unique_name)
    assert (bare, 2) == (letter.body, letter.receive_count)
    assert transport.replay_dead_letters(unique_name) == 1
    [back] = receive_until(transport, unique_name, 1)
    assert (bare, None) == (back.body, back.refused)
    transport.ack(back)


@pytest.mark.parametrize("kind", ["string", "hash without a body"])
def test_entry_naming_a_key_of_another_kind_is_refused(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str, kind: str
) -> None:
    """An entry naming a key that is not a balog message hash (a string, a hash without a body)
    is refused with the entry's bytes; the other key is left as it was."""
    key = f"{prefix}m:other-{unique_name}"
    if kind == "string":
        client.set(key, "their value")
    else:
        client.hset(key, "x", "1")
    client.rpush(f"{prefix}q:{unique_name}", f"other-{unique_name}")
    transport.send(unique_name, [b"valid"])
    got = transport.receive(unique_name, max_messages=10, wait=0.0)
    assert [f"other-{unique_name}".encode(), b"valid"] == [d.body for d in got]
    assert [d.refused is not None for d in got] == [True, False]
    transport.dead_letter(got[0], "refused")
    transport.ack(got[1])
    assert [f"other-{unique_name}".encode()] == [
        x.body for x in transport.dead_letters(unique_name)
    ]
    assert (b"their value" if kind == "string" else {b"x": b"1"}) == (
        client.get(key) if kind == "string" else client.hgetall(key)
    )


def test_message_whose_id_is_not_utf8_is_delivered_and_acked(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str
) -> None:
    """A message another client wrote in balog's format under an id that is not UTF-8 is
    delivered (its id shown escaped) and its ack removes it: it does not fail the receive."""
    raw_id = b"id-\xff\xfe"
    client.hset(prefix.encode() + b"m:" + raw_id, mapping={"b": b"body", "c": 0})
    client.rpush(f"{prefix}q:{unique_name}", raw_id)
    [d] = receive_until(transport, unique_name, 1)
    expected = ("id-\\xff\\xfe", b"body", None)
    assert expected == (d.message_id, d.body, d.refused)
    transport.ack(d)
    assert sorted(client.scan_iter(match=prefix + "*")) == []


def test_dead_letter_of_a_body_at_the_limit_keeps_it_whole(
    redis_url: str, prefix: str, unique_name: str
) -> None:
    """A body of exactly max_body_size, with headers, dead-letters whole with a long reason:
    the move happens in place, so no limit cuts it."""
    with RedisTransport(redis_url, prefix=prefix, max_body_size=4096) as t:
        body = bytes(range(256)) * 16
        t.send(unique_name, [body], headers={"origin": "x" * 500})
        [d] = t.receive(unique_name, wait=1.0)
        t.dead_letter(d, "r" * 20_000)
        [letter] = t.dead_letters(unique_name)
    assert (body, "r" * 20_000) == (letter.body, letter.reason)


def test_verify_accepts_fresh_and_used_topics(transport: RedisTransport, unique_name: str) -> None:
    """verify() passes on a topic with no keys yet and on one holding messages, delays, leases
    and dead letters."""
    transport.verify(unique_name)
    transport.send(unique_name, [b"a", b"b", b"c"])
    a, b, _ = transport.receive(unique_name, max_messages=3, wait=0.0)
    transport.nack(a, delay=30)
    transport.dead_letter(b, "x")
    transport.verify(unique_name)


@pytest.mark.parametrize("key", ["q:{t}", "l:{t}", "d:{t}-dead-letter"])
def test_verify_refuses_keys_of_another_type(
    transport: RedisTransport, client: Any, prefix: str, unique_name: str, key: str
) -> None:
    """A key of the topic (or of its dead-letter topic) holding another type than balog keeps
    there is a fatal TopicMismatch naming the key; receive meets it the same way."""
    name = prefix + key.format(t=unique_name)
    client.set(name, "someone else's")
    with pytest.raises(TopicMismatch) as info:
        transport.verify(unique_name)
    assert info.value.fatal
    assert f"{name!r}" in str(info.value)
    assert "prefix=" in str(info.value)
    if key.startswith("q:"):
        with pytest.raises(TopicMismatch):
            transport.receive(unique_name, wait=0.0)


@pytest.fixture
def acl_user(client: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """A Redis ACL user with a password, allowed every command on the test prefix's keys."""
    name = f"balog-test-{uuid.uuid4().hex[:8]}"
    password = f"right-{uuid.uuid4().hex}"
    client.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}*"], commands=["+@all"]
    )
    yield name, password
    client.acl_deluser(name)


def test_verify_finds_a_wrong_password_at_start_up(
    redis_url: str, prefix: str, unique_name: str, acl_user: tuple[str, str]
) -> None:
    """A wrong password for an existing user is a fatal AuthenticationError from verify(),
    without the password; the right one verifies."""
    name, password = acl_user
    host = redis_url.split("://", 1)[1]
    with (
        RedisTransport(f"redis://{name}:{CANARY}@{host}", prefix=prefix) as wrong,
        pytest.raises(AuthenticationError) as info,
    ):
        wrong.verify(unique_name)
    assert info.value.fatal
    assert CANARY not in str(info.value)
    with RedisTransport(f"redis://{name}:{password}@{host}", prefix=prefix) as right:
        right.verify(unique_name)


def test_verify_finds_a_user_not_allowed_the_keys(
    redis_url: str, client: Any, unique_name: str, acl_user: tuple[str, str]
) -> None:
    """A user whose ACL does not cover the transport's prefix is a fatal AuthenticationError
    from verify(), before any message is received."""
    name, password = acl_user
    host = redis_url.split("://", 1)[1]
    with (
        RedisTransport(f"redis://{name}:{password}@{host}", prefix="elsewhere:") as t,
        pytest.raises(AuthenticationError) as info,
    ):
        t.verify(unique_name)
    assert info.value.fatal
    assert "no permissions" in str(info.value)


def test_verify_of_an_unreachable_server_is_a_connection_error(unique_name: str) -> None:
    """A server nobody listens on is a TransportConnectionError, which is not fatal: retrying
    may help."""
    with (
        RedisTransport(f"redis://127.0.0.1:{closed_port()}/0", connect_timeout=1.0) as t,
        pytest.raises(TransportConnectionError) as info,
    ):
        t.verify(unique_name)
    assert not info.value.fatal


def test_verify_of_a_database_number_out_of_range_is_a_configuration_error(
    redis_url: str, unique_name: str
) -> None:
    """A database number the server does not have is a fatal ConfigurationError."""
    base = redis_url.rsplit("/", 1)[0]
    with RedisTransport(f"{base}/4096") as t, pytest.raises(ConfigurationError) as info:
        t.verify(unique_name)
    assert "database number" in str(info.value)


def test_closed_transport_refuses_work(transport: RedisTransport, unique_name: str) -> None:
    """After close(), calls raise TransportError; close() again is fine."""
    transport.close()
    transport.close()
    with pytest.raises(TransportError):
        transport.send(unique_name, [b"x"])


def test_bad_url_is_a_configuration_error() -> None:
    """A URL that is not a redis URL is refused when the transport is built."""
    with pytest.raises(ConfigurationError):
        RedisTransport("amqp://127.0.0.1:5672//")


def test_password_is_masked_in_repr() -> None:
    """repr shows the URL with the password replaced by **; mask_url is balog's one masking."""
    t = RedisTransport(f"redis://:{CANARY}@127.0.0.1:{closed_port()}/3")
    try:
        assert f"RedisTransport(url='redis://:**@127.0.0.1:{t.url.rsplit(':', 1)[1]}" in repr(t)
        assert CANARY not in repr(t)
        assert mask_url(f"redis://user:{CANARY}@[::1]:6379/0") == "redis://user:**@[::1]:6379/0"
        assert mask_url is balog._secrets.mask_url
    finally:
        t.close()


def test_refused_connection_is_a_connection_error_without_the_password(
    unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed port gives TransportConnectionError, chained, with no password in the text or
    the log."""
    t = RedisTransport(f"redis://:{CANARY}@127.0.0.1:{closed_port()}/0", connect_timeout=1.0)
    try:
        with pytest.raises(TransportConnectionError) as info:
            t.send(unique_name, [b"x"])
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        assert CANARY not in str(info.value)
        assert ":**@" in str(info.value)
        with pytest.raises(TransportConnectionError):
            t.receive(unique_name, wait=0.0)
    finally:
        t.close()
    assert CANARY not in caplog.text


def test_wrong_password_is_an_authentication_error(redis_url: str, unique_name: str) -> None:
    """A password the server refuses gives AuthenticationError without the password."""
    host = redis_url.split("://", 1)[1]
    t = RedisTransport(f"redis://nobody-{uuid.uuid4().hex[:6]}:{CANARY}@{host}")
    try:
        with pytest.raises(AuthenticationError) as info:
            t.send(unique_name, [b"x"])
        assert CANARY not in str(info.value)
    finally:
        t.close()


def test_plugins_build_the_transport_and_the_engine(redis_url: str, prefix: str) -> None:
    """ "redis" names the native transport and engine in the plugin registries."""
    t = create_transport("redis", url=redis_url, prefix=prefix)
    try:
        assert isinstance(t, RedisTransport)
    finally:
        t.close()
    hub = ConsumerHub([Consumer(lambda event: None, "x", name="noop")])
    engine = create_engine("redis", hub=hub, url=redis_url, prefix=prefix, handle_signals=False)
    try:
        assert isinstance(engine, RedisEngine)
        assert isinstance(engine.transport, RedisTransport)
    finally:
        engine.close()


def test_ack_many_acks_live_leases_and_reports_lost_ones(
    transport: RedisTransport, unique_name: str
) -> None:
    """ack_many acks every delivery whose lease holds, and gives LeaseExpired for one whose
    lease ran out and went to another receiver."""
    transport.send(unique_name, [b"a", b"b", b"c"])
    short = transport.receive(unique_name, max_messages=1, wait=1.0, lease=0.2)
    held = transport.receive(unique_name, max_messages=2, wait=1.0)
    [stolen] = receive_until(transport, unique_name, 1)
    outcomes = transport.ack_many([*held, *short])
    assert [None, None, LeaseExpired] == [None if o is None else type(o) for o in outcomes]
    transport.ack(stolen)
    assert transport.receive(unique_name, wait=0.3) == []


def test_engine_acks_a_drained_batch(redis_url: str, prefix: str, unique_name: str) -> None:
    """The engine drains 250 events into a consumer and acks them all in batched calls: the
    topic is empty afterwards and every event was processed once."""
    from balog.events import encode, new_event

    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: seen.append(e["payload"]["n"]), unique_name)])
    engine = RedisEngine(hub, url=redis_url, prefix=prefix, batch_size=100, handle_signals=False)
    try:
        bodies = [encode(new_event("bench.n", {"cls_type": "n", "n": n})) for n in range(250)]
        engine.transport.send(unique_name, bodies)
        assert engine.drain() == 250
        assert list(range(250)) == seen
        assert engine.stats()[unique_name].processed == 250
        assert engine.transport.receive(unique_name, wait=0.0) == []
    finally:
        engine.close()


def test_producer_to_engine_end_to_end(redis_url: str, prefix: str, unique_name: str) -> None:
    """balog.configure("redis", ...) sends logged events that the redis engine consumes."""
    import balog

    balog.configure("redis", unique_name, url=redis_url, prefix=prefix)
    balogger = balog.get_logger("tests.redis")
    for n in range(20):
        balogger.info("done", {"cls_type": "n", "n": n})
    assert balog.flush(timeout=10)
    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: seen.append(e["payload"]["n"]), unique_name)])
    engine = RedisEngine(hub, url=redis_url, prefix=prefix, handle_signals=False)
    try:
        assert engine.drain() == 20
    finally:
        engine.close()
    assert list(range(20)) == seen


def test_percent_encoded_password_is_hidden_in_both_spellings(unique_name: str) -> None:
    """A password written percent-encoded in the URL shows in neither spelling."""
    t = RedisTransport(f"redis://:{CANARY}%40x@127.0.0.1:{closed_port()}/0", connect_timeout=1.0)
    try:
        with pytest.raises(TransportConnectionError) as info:
            t.receive(unique_name, wait=0.0)
        texts = [repr(t), str(info.value)]
    finally:
        t.close()
    assert [text for text in texts if CANARY in text] == []


def test_malformed_url_is_a_configuration_error_without_the_password() -> None:
    """A URL with a bad port is refused with ConfigurationError that hides the password."""
    with pytest.raises(ConfigurationError) as info:
        RedisTransport(f"redis://:{CANARY}@127.0.0.1:notaport/0")
    assert CANARY not in str(info.value)
    assert info.value.__cause__ is None

"""Canary secrets given to the kombu transport in every place it takes them never show up.

A Redis password in the URL's query (``?password=``, as redis-py accepts it) and a password
nested in ``transport_options`` (``sentinel_kwargs``): with every logger at DEBUG, neither appears
in a repr, an error (with its chained causes) or any log line, whether the login works, is
refused or the server cannot be reached.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator

import pytest

from balog.events import encode, new_event
from balog.exceptions import AuthenticationError, TransportConnectionError

LOGGERS = ("balog", "kombu", "amqp", "redis")


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture
def redis_user(redis_url: str, unique_name: str) -> Iterator[tuple[str, str]]:
    """A Redis ACL user of this test only, with a canary password: (name, password)."""
    import redis

    name, password = unique_name, "redisQueryCanary-" + uuid.uuid4().hex[:12]
    client = redis.Redis.from_url(redis_url)
    client.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    try:
        yield name, password
    finally:
        client.acl_deluser(name)
        client.close()


def chain(exc: BaseException) -> list[str]:
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(texts) < 20:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(record) for record in caplog.records]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_redis_password_in_the_query_works_and_is_never_shown(
    redis_url: str,
    redis_user: tuple[str, str],
    unique_name: str,
    everything_at_debug: pytest.LogCaptureFixture,
) -> None:
    """redis://user@host/0?password=... logs in (as redis-py reads it); a wrong one is a fatal
    AuthenticationError from verify(); right, wrong or with the server down, the password is
    in no repr, error or log line."""
    from balog.transports.kombu import KombuTransport

    name, password = redis_user
    good = redis_url.replace("redis://", f"redis://{name}@") + f"?password={password}"
    texts: list[str] = []
    with KombuTransport(good) as transport:
        texts.append(repr(transport))
        assert "password=**" in repr(transport)
        transport.send(unique_name, [encode(new_event("canary", {"cls_type": "c"}))])
        [delivery] = transport.receive(unique_name, wait=5.0)
        transport.ack(delivery)
        transport.delete(unique_name)
    wrong = KombuTransport(good.replace(password, "wrong-" + password), max_retries=0)
    texts.append(repr(wrong))
    with pytest.raises(AuthenticationError) as refused:
        wrong.verify(unique_name)  # the engine's start-up check: fatal, not retried
    assert refused.value.fatal
    texts += chain(refused.value)
    with pytest.raises(AuthenticationError) as refused:
        wrong.send(unique_name, [b"{}"])
    texts += chain(refused.value)
    wrong.close()
    down = KombuTransport(good.replace("6379", str(dead_port())), max_retries=1)
    with pytest.raises(TransportConnectionError) as unreachable:
        down.receive(unique_name, wait=0.1)
    texts += chain(unreachable.value)
    down.close()
    for text in texts + logged(everything_at_debug):
        assert password not in text, text[:300]


def test_a_password_nested_in_transport_options_is_never_shown(
    everything_at_debug: pytest.LogCaptureFixture,
) -> None:
    """A sentinel password in transport_options={"sentinel_kwargs": {"password": ...}}: in no
    repr, error or log line when the sentinel cannot be reached."""
    from balog.transports.kombu import KombuTransport

    secret = "sentinelCanary-" + uuid.uuid4().hex[:12]
    transport = KombuTransport(
        f"sentinel://127.0.0.1:{dead_port()}",
        transport_options={"master_name": "mymaster", "sentinel_kwargs": {"password": secret}},
        connect_timeout=1.0,
        max_retries=0,
    )
    texts = [repr(transport)]
    with pytest.raises(TransportConnectionError) as down:
        transport.send("t-sentinel-canary", [b"{}"])
    texts += chain(down.value)
    transport.close()
    for text in texts + logged(everything_at_debug):
        assert secret not in text, text[:300]

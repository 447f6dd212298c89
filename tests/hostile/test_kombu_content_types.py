"""What a kombu consumer must not run, inflate or drop, on RabbitMQ and Redis.

- Pickle and YAML messages are dead-lettered without being deserialised: each body, if it were
  ever deserialised, would create a sentinel file; the file must not exist afterwards, the
  messages must be dead-lettered with a reason naming the content type, and the good event sent
  after them must be processed.
- A message with a ``compression`` header is dead-lettered with the bytes it arrived with, never
  decompressed.
- A Redis list entry that is not kombu's JSON wrapper is dead-lettered as it was pushed.

The last two keep a ledger of the good events sent around the hostile ones: none may be lost.
"""

from __future__ import annotations

import collections
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest

from balog.consumers import Consumer, ConsumerHub
from balog.events import encode, new_event

from .conftest import run_engine_until


class _Trap:
    """Unpickling this creates the sentinel file (that is all it does)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("service", ["rabbitmq", "redis"])
def test_pickle_and_yaml_messages_are_never_deserialised(
    service: str, request: pytest.FixtureRequest, unique_name: str, tmp_path: Path
) -> None:
    """Pickled and YAML bodies: dead-lettered with the content type named; no code ran."""
    from kombu import Connection

    from balog.engines.kombu import KombuEngine
    from balog.transports.kombu import KombuTransport

    url = request.getfixturevalue("rabbitmq_url" if service == "rabbitmq" else "redis_url")
    sentinel = tmp_path / "sentinel"
    transport = KombuTransport(url)
    good_id = "good-" + unique_name[-8:]
    warmup = encode(new_event("kombu.probe", {"cls_type": "probe"}, id="warmup"))
    transport.send(unique_name, [warmup])  # declares the queue as balog declares it
    yaml_body = f"!!python/object/apply:os.system ['touch {sentinel}']\n".encode()
    with Connection(url) as conn:
        producer = conn.Producer()
        producer.publish(
            pickle.dumps(_Trap(str(sentinel))),
            routing_key=unique_name,
            content_type="application/x-python-serialize",
            content_encoding="binary",
        )
        producer.publish(
            yaml_body,
            routing_key=unique_name,
            content_type="application/x-yaml",
            content_encoding="utf-8",
        )
    transport.send(
        unique_name, [encode(new_event("kombu.probe", {"cls_type": "probe"}, id=good_id))]
    )
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), unique_name)])
    engine = KombuEngine(hub, url=url, wait=0.2, handle_signals=False)
    try:
        run_engine_until(
            engine,
            lambda: good_id in processed and len(transport.dead_letters(unique_name)) >= 2,
        )
        dead = transport.dead_letters(unique_name)
    finally:
        for topic in (unique_name, transport.dead_letter_topic(unique_name)):
            transport.purge(topic)
        transport.close()
    assert ["warmup", good_id] == processed
    assert not sentinel.exists(), "a message was deserialised: its code ran"
    reasons = sorted(d.reason for d in dead)
    assert len(reasons) == 2
    assert "application/x-python-serialize" in reasons[0]
    assert "application/x-yaml" in reasons[1]
    assert yaml_body in {d.body for d in dead}


def _ledger(name: str, sent: list[str], processed: list[str]) -> tuple[list[str], int]:
    """Print and return what was lost and how many duplicates there were."""
    counts = collections.Counter(processed)
    lost = [i for i in sent if i not in counts]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"ledger[{name}]: produced={len(sent)} processed={sum(counts.values())} "
        f"lost={len(lost)} duplicates={duplicates}"
    )
    return lost, duplicates


def _good(ident: str) -> bytes:
    return encode(new_event("kombu.probe", {"cls_type": "probe"}, id=ident))


@pytest.mark.parametrize("service", ["rabbitmq", "redis"])
def test_compressed_messages_are_refused_never_decompressed(
    service: str, request: pytest.FixtureRequest, unique_name: str
) -> None:
    """A message with a compression header that would inflate to 64 MiB is dead-lettered with the
    compressed bytes it arrived with, never inflated; every good event around it is processed."""
    from kombu import Connection

    from balog.engines.kombu import KombuEngine
    from balog.transports.kombu import KombuTransport

    url = request.getfixturevalue("rabbitmq_url" if service == "rabbitmq" else "redis_url")
    bomb = zlib.compress(b"0" * (64 * 1024 * 1024), 9)
    transport = KombuTransport(url)
    sent = [f"good-{n}-{unique_name[-8:]}" for n in range(20)]
    transport.send(unique_name, [_good(i) for i in sent[:10]])
    with Connection(transport._kombu_url) as conn:
        producer = conn.Producer()
        for _ in range(2):
            # What kombu sends with compression="zlib": the compressed bytes, and a header.
            producer.publish(
                bomb,
                routing_key=unique_name,
                content_type="application/json",
                content_encoding="utf-8",
                headers={"compression": "application/x-gzip"},
            )
    transport.send(unique_name, [_good(i) for i in sent[10:]])
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), unique_name)])
    engine = KombuEngine(hub, url=url, wait=0.2, handle_signals=False)
    try:
        run_engine_until(
            engine,
            lambda: set(sent) <= set(processed) and len(transport.dead_letters(unique_name)) >= 2,
        )
        dead = transport.dead_letters(unique_name)
    finally:
        for topic in (unique_name, transport.dead_letter_topic(unique_name)):
            transport.purge(topic)
        transport.close()
    lost, _ = _ledger(f"kombu-{service}-compressed", sent, processed)
    assert lost == []
    assert [len(bomb), len(bomb)] == [len(d.body) for d in dead]
    assert all(bomb == d.body for d in dead)
    assert all("compression 'application/x-gzip'" in d.reason for d in dead)
    assert all("never decompressed" in d.reason for d in dead)


FOREIGN_REDIS_ENTRIES = [
    b"\xff\xfe not utf-8",
    b"plain text, not json",
    b'{"event": "json, but not kombu\'s wrapper"}',
    b"[1, 2, 3]",
    b'{"body": "e30=", "properties": {"delivery_tag": "x"}}',
    b'{"body": "!!!", "properties": {"body_encoding": "rot13", "delivery_tag": "y", '
    b'"delivery_info": {"exchange": "", "routing_key": "q"}}}',
    b'{"body": "e30=", "content-type": "application/json", "headers": {}, ',
]


def test_foreign_redis_entries_are_dead_lettered_as_pushed(
    redis_url: str, unique_name: str
) -> None:
    """Bare LPUSHes of what is not kombu's JSON wrapper (not UTF-8, plain text, other JSON, a
    wrapper with a broken part, truncated JSON): each is dead-lettered with its bytes exactly as
    pushed and a reason; the good events around them are all processed (ledger)."""
    import redis

    from balog.engines.kombu import KombuEngine
    from balog.transports.kombu import KombuTransport

    client = redis.Redis.from_url(redis_url)
    transport = KombuTransport(redis_url)
    sent = [f"good-{n}-{unique_name[-8:]}" for n in range(20)]
    transport.send(unique_name, [_good(i) for i in sent[:10]])
    for entry in FOREIGN_REDIS_ENTRIES:
        client.lpush(unique_name, entry)
    transport.send(unique_name, [_good(i) for i in sent[10:]])
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), unique_name)])
    engine = KombuEngine(hub, url=redis_url, wait=0.2, handle_signals=False)
    wanted = len(FOREIGN_REDIS_ENTRIES)
    try:
        run_engine_until(
            engine,
            lambda: (
                set(sent) <= set(processed) and len(transport.dead_letters(unique_name)) >= wanted
            ),
        )
        dead = transport.dead_letters(unique_name)
        stats = engine.stats()[unique_name]
    finally:
        for topic in (unique_name, transport.dead_letter_topic(unique_name)):
            transport.purge(topic)
        transport.close()
        client.close()
    lost, _ = _ledger("kombu-redis-foreign", sent, processed)
    assert lost == []
    assert sorted(FOREIGN_REDIS_ENTRIES) == sorted(d.body for d in dead)
    assert all("refused by the transport: not a kombu message: " in d.reason for d in dead)
    assert wanted == stats.dead_lettered

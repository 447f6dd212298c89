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
import dataclasses
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from balog.consumers import Consumer, ConsumerHub
from balog.engines import EngineStats
from balog.events import encode, new_event
from balog.transports.base import DeadLetter

from .conftest import run_engine_until


class _Trap:
    """Unpickling this creates the sentinel file (that is all it does)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("service", ["rabbitmq", "redis", "memory"])
def test_pickle_and_yaml_messages_are_never_deserialised(
    service: str, request: pytest.FixtureRequest, unique_name: str, tmp_path: Path
) -> None:
    """Pickled and YAML bodies: dead-lettered with the content type named; no code ran, and
    every good event around them is processed (ledger)."""
    from kombu import Connection

    url = "memory://" if service == "memory" else request.getfixturevalue(f"{service}_url")
    sentinel = tmp_path / "sentinel"
    pickled = pickle.dumps(_Trap(str(sentinel)))
    yaml_body = f"!!python/object/apply:os.system ['touch {sentinel}']\n".encode()

    def push_pickle_and_yaml() -> int:
        with Connection(url) as conn:
            producer = conn.Producer()
            producer.publish(
                pickled,
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
        return 2

    run = run_between(f"kombu-{service}-pickle-yaml", url, unique_name, push_pickle_and_yaml)
    assert run.lost == []
    assert not sentinel.exists(), "a message was deserialised: its code ran"
    assert sorted(d.reason for d in run.dead) == [
        "refused by the transport: content type 'application/x-python-serialize' is not "
        "accepted (accepted: application/json)",
        "refused by the transport: content type 'application/x-yaml' is not accepted "
        "(accepted: application/json)",
    ]
    assert {pickled, yaml_body} == {d.body for d in run.dead}


@dataclasses.dataclass
class Run:
    """What an engine did with good events sent around hostile entries."""

    lost: list[str]
    duplicates: int
    dead: list[DeadLetter]
    stats: EngineStats


def run_between(
    name: str, url: str, topic: str, push_hostile: Callable[[], int], good: int = 20
) -> Run:
    """Send half the good events, call ``push_hostile`` (it returns how many entries it pushed),
    send the other half, run a kombu engine until every good event is processed and every
    hostile entry dead-lettered; print the ledger and return it."""
    from balog.engines.kombu import KombuEngine
    from balog.transports.kombu import KombuTransport

    transport = KombuTransport(url)
    sent = [f"good-{n}-{topic[-8:]}" for n in range(good)]
    transport.send(topic, [_good(i) for i in sent[: good // 2]])
    hostile = push_hostile()
    transport.send(topic, [_good(i) for i in sent[good // 2 :]])
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), topic)])
    engine = KombuEngine(hub, url=url, wait=0.2, handle_signals=False)
    try:
        run_engine_until(
            engine,
            lambda: set(sent) <= set(processed) and len(transport.dead_letters(topic)) >= hostile,
        )
        dead = transport.dead_letters(topic)
        stats = engine.stats()[topic]
    finally:
        for name_ in (topic, transport.dead_letter_topic(topic)):
            transport.purge(name_)
        transport.close()
    counts = collections.Counter(processed)
    run = Run(
        lost=[i for i in sent if i not in counts],
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        dead=dead,
        stats=stats,
    )
    print(
        f"ledger[{name}]: produced={len(sent)} processed={sum(counts.values())} "
        f"lost={len(run.lost)} duplicates={run.duplicates}"
    )
    return run


def _good(ident: str) -> bytes:
    return encode(new_event("kombu.probe", {"cls_type": "probe"}, id=ident))


@pytest.mark.parametrize("service", ["rabbitmq", "redis"])
def test_compressed_messages_are_refused_never_decompressed(
    service: str, request: pytest.FixtureRequest, unique_name: str
) -> None:
    """A message with a compression header that would inflate to 64 MiB is dead-lettered with the
    compressed bytes it arrived with, never inflated; every good event around it is processed."""
    from kombu import Connection

    url = request.getfixturevalue("rabbitmq_url" if service == "rabbitmq" else "redis_url")
    bomb = zlib.compress(b"0" * (64 * 1024 * 1024), 9)

    def push_bombs() -> int:
        with Connection(url) as conn:
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
        return 2

    run = run_between(f"kombu-{service}-compressed", url, unique_name, push_bombs)
    assert run.lost == []
    assert [len(bomb), len(bomb)] == [len(d.body) for d in run.dead]
    assert all(bomb == d.body for d in run.dead)
    assert all("compression 'application/x-gzip'" in d.reason for d in run.dead)
    assert all("never decompressed" in d.reason for d in run.dead)
    assert run.stats.refused == 2


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

    def push_foreign() -> int:
        with redis.Redis.from_url(redis_url) as client:
            for entry in FOREIGN_REDIS_ENTRIES:
                client.lpush(unique_name, entry)
        return len(FOREIGN_REDIS_ENTRIES)

    run = run_between("kombu-redis-foreign", redis_url, unique_name, push_foreign)
    assert run.lost == []
    assert sorted(FOREIGN_REDIS_ENTRIES) == sorted(d.body for d in run.dead)
    assert all("refused by the transport: not a kombu message: " in d.reason for d in run.dead)
    assert (len(FOREIGN_REDIS_ENTRIES),) * 2 == (run.stats.dead_lettered, run.stats.refused)

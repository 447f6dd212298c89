"""Pickle and YAML messages on RabbitMQ and Redis are dead-lettered without being deserialised.

Each body, if it were ever deserialised, would create a sentinel file; the file must not exist
afterwards, the messages must be dead-lettered with a reason naming the content type, and the
good event sent after them must be processed.
"""

from __future__ import annotations

import pickle
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

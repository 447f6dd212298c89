"""balog 1.x's tests/unit/engines/test_engine.py, ported to pytest against today's API.

balog 1.x's ``Engine`` was a base class with ``filter_consumers``, ``on_event``, ``on_message`` and
``consumers_by_topic``, tested with mocks. Today the pipeline is
:class:`~balog.engines.base.TransportEngine`; the same behaviours are checked through the public
memory engine, with bodies on a real (in-process) broker.
"""

from __future__ import annotations

from typing import Any

import pytest

from balog.consumers import Consumer, ConsumerHub, DefaultConsumerOperator
from balog.engines import Engine
from balog.engines.memory import MemoryEngine
from balog.events import new_event
from balog.transports.memory import MemoryBroker, MemoryTransport

from . import balog1x


def _event(cls_type: str) -> bytes:
    return balog1x.body("tests.unit.engines", {"cls_type": cls_type})


class RecordingOperator(DefaultConsumerOperator):
    """Calls consumers as the default operator does, and records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:  # type: ignore[override]
        self.calls.append((consumer.func.__name__, event))
        return super().process_event(consumer, event)


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


def test_defaults(hub: ConsumerHub) -> None:
    """Engine is abstract (an engine that cannot run fails when built, as messages() raised
    NotImplementedError); a built engine has the default operator and no handler."""
    with pytest.raises(TypeError, match="abstract"):
        Engine(hub)  # type: ignore[abstract]
    engine = MemoryEngine(hub)
    assert isinstance(engine.consumer_operator, DefaultConsumerOperator)
    assert engine.default_event_handler is None
    assert engine.stats() == {}


def test_filter(hub: ConsumerHub) -> None:
    """An event of cls_type 88 is for three consumers: the one taking every type, and the two
    naming 88."""
    event = {"payload": {"cls_type": "88"}}
    assert sorted(c.func.__name__ for c in hub.route(event)) == [
        "consumer_b",
        "consumer_d",
        "consumer_e",
    ]


def test_on_event(hub: ConsumerHub, broker: MemoryBroker) -> None:
    """Each matching consumer is called once through the operator, on every topic."""
    operator = RecordingOperator()
    engine = MemoryEngine(hub, operator, broker=broker)
    MemoryTransport(broker).send("5566", [_event("88")])
    MemoryTransport(broker).send("spam.eggs", [_event("88")])
    assert engine.drain(raise_errors=True) == 2
    assert sorted(name for name, _ in operator.calls) == ["consumer_b", "consumer_d", "consumer_e"]


def test_on_event_default(hub: ConsumerHub, broker: MemoryBroker) -> None:
    """An event no consumer takes goes to default_event_handler, once, and is acked."""
    seen: list[dict[str, Any]] = []
    engine = MemoryEngine(hub, broker=broker, default_event_handler=seen.append)
    MemoryTransport(broker).send("5566", [_event("nobody")])
    assert engine.drain(raise_errors=True) == 1
    assert [e["payload"]["cls_type"] for e in seen] == ["nobody"]
    assert broker.size("5566") == 0


def test_on_message(hub: ConsumerHub, broker: MemoryBroker) -> None:
    """balog 1.x's message.json is decoded and handed to the consumer, once."""
    operator = RecordingOperator()
    engine = MemoryEngine(hub, operator, broker=broker)
    MemoryTransport(broker).send("spam.eggs", [balog1x.MESSAGE_JSON])
    assert engine.drain(raise_errors=True) == 1
    assert [(name, e["header"]["id"]) for name, e in operator.calls] == [
        ("consumer_b", "LGk37Fo3xLLVx9GrfnyTuvBd")
    ]
    assert broker.dead_letters("spam.eggs") == []


def test_on_message_hands_over_numbers(hub: ConsumerHub, broker: MemoryBroker) -> None:
    """message.json's metric values, strings on the wire, reach the consumer as floats, as
    balog 1.x's schema deserialised them."""
    operator = RecordingOperator()
    engine = MemoryEngine(hub, operator, broker=broker)
    MemoryTransport(broker).send("spam.eggs", [balog1x.MESSAGE_JSON])
    engine.drain(raise_errors=True)
    assert [e["payload"]["values"] for _, e in operator.calls] == [
        [{"name": "foo", "value": 1234.0}, {"name": "bar", "value": 5678.0}]
    ]


def test_on_message_bad_body_is_kept(hub: ConsumerHub, broker: MemoryBroker) -> None:
    """A body that does not decode is dead-lettered with its reason (balog 1.x logged it and
    dropped it)."""
    engine = MemoryEngine(hub, broker=broker)
    MemoryTransport(broker).send("spam.eggs", [b"{}"])
    assert engine.drain() == 1
    (letter,) = broker.dead_letters("spam.eggs")
    assert "invalid event" in letter.reason


def test_consumers_by_topic(hub: ConsumerHub) -> None:
    """The consumers are grouped by the topic the operator gives each."""
    engine = MemoryEngine(hub)
    assert set(engine.routes()) == {"5566", "spam.eggs", "foo.bar"}


def test_todays_events_are_consumed_beside_old_ones(hub: ConsumerHub, broker: MemoryBroker) -> None:
    """Events of today's schema and balog 1.x's reach the same consumer on one topic."""
    operator = RecordingOperator()
    engine = MemoryEngine(hub, operator, broker=broker)
    today = new_event("new.app", {"cls_type": "eggs"})
    transport = MemoryTransport(broker)
    transport.send("foo.bar", [_event("eggs")])
    transport.send("foo.bar", [balog1x.body("old", {"cls_type": "eggs"})])
    from balog.events import encode

    transport.send("foo.bar", [encode(today)])
    assert engine.drain(raise_errors=True) == 3
    assert sorted(e["schema"] for _, e in operator.calls) == ["0.0.1", "0.0.1", "0.1.0"]

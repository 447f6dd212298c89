"""balog 1.x's tests/unit/test_consumers.py, ported to pytest against today's API."""

from __future__ import annotations

import pytest

from balog.consumers import Consumer, ConsumerHub

from . import my_consumers


def test_consumer_hub() -> None:
    """scan finds the five consumers of the fixture module, with their topic and cls_type as
    tuples, and route gives those an event's cls_type selects."""
    hub = ConsumerHub()
    hub.scan(my_consumers)

    assert len(hub.consumers) == 5
    func_to_consumers = {consumer.func: consumer for consumer in hub.consumers}
    assert set(func_to_consumers) == set(my_consumers.all_consumers)

    consumer_a = func_to_consumers[my_consumers.consumer_a]
    assert consumer_a.topic == "foo.bar"
    assert consumer_a.cls_type == ("eggs",)

    consumer_b = func_to_consumers[my_consumers.consumer_b]
    assert consumer_b.topic == "spam.eggs"
    assert consumer_b.cls_type is None

    consumer_c = func_to_consumers[my_consumers.consumer_c]
    assert consumer_c.topic == "5566"
    assert consumer_c.cls_type == ("55", "66")

    eggs_event = {"payload": {"cls_type": "eggs"}}
    assert set(hub.route(eggs_event)) == {consumer_a, consumer_b}


def _noop() -> None:
    pass


@pytest.mark.parametrize(
    ("cls_type", "matching", "not_matching"),
    [
        ("eggs", ["eggs"], ["super_eggs", "not_eggs", "foobar"]),
        (("eggs", "spam"), ["eggs", "spam"], ["foo", "bar"]),
        (None, ["eggs", "spam", "foo", "bar"], []),
    ],
)
def test_cls_type_predicate(cls_type: object, matching: list[str], not_matching: list[str]) -> None:
    """A consumer takes exactly the cls_types it names (any of a tuple); None takes all."""
    consumer = Consumer(_noop, "foobar", cls_type=cls_type)  # type: ignore[arg-type]
    assert [consumer.match_event({"payload": {"cls_type": c}}) for c in matching] == [True] * len(
        matching
    )
    assert [consumer.match_event({"payload": {"cls_type": c}}) for c in not_matching] == [
        False
    ] * len(not_matching)


@pytest.mark.parametrize(
    ("version", "matching", "not_matching"),
    [
        (">=1.0.1", ["1.0.1", "1.0.2", "2.0", "2.0.1"], ["1.0", "1.0.0", "0.0.9"]),
        (
            (">=1.0.1", "<2.0"),
            ["1.0.1", "1.0.2", "1.999999", "1.0.9999"],
            ["1.0", "1.0.0", "2.0", "2.0.0", "2.0.1"],
        ),
        (">=1.0.1000", ["1.0.1001", "1.0.2002"], ["1.0.999", "1.0.1"]),
        ("==1.2.3", ["1.2.3"], ["1.2.4", "1.2.2", "1.2"]),
        ("<1.2.3", ["1.2.2", "0.99"], ["1.2.3", "1.2.4", "2.0"]),
        (None, ["1.2.2", "0.99", "1.2.3", "2.0"], []),
    ],
)
def test_versions_predicate(version: object, matching: list[str], not_matching: list[str]) -> None:
    """A consumer takes the schema versions its conditions allow; every condition of a tuple
    must hold."""
    consumer = Consumer(_noop, "foobar", version=version)  # type: ignore[arg-type]
    assert {v: consumer.match_event({"schema": v}) for v in matching + not_matching} == {
        **dict.fromkeys(matching, True),
        **dict.fromkeys(not_matching, False),
    }

"""Consumers declared as balog 1.x's own test fixtures declared them (tests/fixtures)."""

from __future__ import annotations

from typing import Any

from balog.consumers import consumer_config

RECEIVED: list[tuple[str, dict[str, Any]]] = []


@consumer_config(topic="foo.bar", cls_type="eggs")
def consumer_a(event: dict[str, Any]) -> None:
    RECEIVED.append(("consumer_a", event))


@consumer_config(topic="spam.eggs")
def consumer_b(event: dict[str, Any]) -> None:
    RECEIVED.append(("consumer_b", event))


@consumer_config(topic="5566", cls_type=("55", "66"))
def consumer_c(event: dict[str, Any]) -> None:
    RECEIVED.append(("consumer_c", event))


# no overlap in cls type with c
@consumer_config(topic="5566", cls_type=("77", "88"))
def consumer_d(event: dict[str, Any]) -> None:
    RECEIVED.append(("consumer_d", event))


# overlap in cls type with d and e
@consumer_config(topic="5566", cls_type=("66", "88"))
def consumer_e(event: dict[str, Any]) -> None:
    RECEIVED.append(("consumer_e", event))


all_consumers = consumer_a, consumer_b, consumer_c, consumer_d, consumer_e

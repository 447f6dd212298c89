"""The shop's tests. They run on balog's memory engine by default and, unchanged, on a real broker:

pytest examples/app/tests
pytest examples/app/tests --balog-engine=kombu --balog-url=redis://127.0.0.1:6379/0
pytest examples/app/tests --balog-engine=kombu --balog-url=amqp://guest:guest@127.0.0.1:5672//
pytest examples/app/tests --balog-engine=sqs --balog-option=endpoint_url=http://127.0.0.1:5000
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from orders_app import build_hub
from orders_app.operator import Ledger, OrdersOperator
from orders_app.producers import place_order, refund, report_sales

import balog
from balog.engines import Backoff
from balog.testing import CapturedEvents, EngineHarness
from balog.transports import Transport


@pytest.fixture
def settings(balog_namespace: str) -> dict[str, Any]:
    """The app's settings; a unique env keeps each test on its own queue of a shared broker."""
    return {"env": balog_namespace, "ledger": Ledger()}


@pytest.fixture
def harness(
    settings: dict[str, Any],
    balog_producer: Callable[..., Any],
    balog_engine_factory: Callable[..., Any],
    balog_transport: Transport,
) -> Any:
    """The app wired as in production: producer to orders-{env}, the hub on an engine."""
    balog_producer(f"orders-{settings['env']}")
    engine = balog_engine_factory(
        build_hub(),
        OrdersOperator(settings),
        max_attempts=2,
        backoff=Backoff(base=0.1, factor=1.0, jitter=0.0),
        wait=0.2,
    )
    with EngineHarness(engine, transport=balog_transport) as h:
        yield h


def test_placed_orders_reach_the_ledger(settings: dict[str, Any], harness: EngineHarness) -> None:
    """Every order placed ends up in the ledger, once."""
    place_order("o-1", 1250, "ada")
    place_order("o-2", 800, "grace")
    assert balog.flush(10)
    harness.wait_for_events(2, timeout=20)
    assert settings["ledger"].snapshot() == {"o-1": 1250, "o-2": 800}


def test_a_refund_is_applied_after_its_order(
    settings: dict[str, Any], harness: EngineHarness
) -> None:
    """A refund within what was paid reduces the order's balance."""
    place_order("o-3", 1000, "ada")
    assert balog.flush(10)
    harness.wait_for_events(1, timeout=20)
    refund("o-3", 400)
    assert balog.flush(10)
    harness.wait_for_events(2, timeout=20)
    assert settings["ledger"].snapshot() == {"o-3": 600}


def test_an_impossible_refund_is_dead_lettered_with_its_reason(
    settings: dict[str, Any], harness: EngineHarness
) -> None:
    """A refund larger than the payment fails twice, then waits in the dead letters."""
    refund("o-404", 100)
    assert balog.flush(10)
    (letter,) = harness.wait_for_dead_letters(f"orders-{settings['env']}", 1, timeout=20)
    assert "RefundRefused" in letter.reason
    assert "refund of 100 on order o-404 paid 0" in letter.reason
    assert settings["ledger"].snapshot() == {}
    assert len(harness.errors) == 2


def test_the_events_the_shop_logs(balog_events: CapturedEvents) -> None:
    """What the code logs, checked without any broker or engine."""
    place_order("o-5", 300, "ada")
    report_sales(300, 1)
    assert balog_events.channels() == ["orders_app.producers.placed", "orders_app.producers.sales"]
    assert (balog_events.payloads("metrics")[0]["values"]) == [
        {"name": "total_cents", "value": 300},
        {"name": "orders", "value": 1},
    ]

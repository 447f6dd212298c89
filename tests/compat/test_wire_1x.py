"""Bodies written by balog 1.x's producer, consumed today on the memory engine, and on every
backend in the last test.

Each body is built by hand as balog 1.x's code built it (see ``balog1x``), put on a memory
broker, and drained: consumers declared as balog 1.x code declared them get them, with metric
values as the numbers balog 1.x's schema gave, and none is dead-lettered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from backends import Backend, make_backend, run_engine_until

from balog.consumers import Consumer, ConsumerHub, consumer_config
from balog.engines.memory import MemoryEngine
from balog.events import raw
from balog.transports.memory import MemoryBroker, MemoryTransport

from . import balog1x
from .balog1x import MESSAGE_JSON

TOPIC = "myproj-events-develop"


def _consume(bodies: list[bytes], *consumers: Consumer) -> MemoryBroker:
    broker = MemoryBroker()
    MemoryTransport(broker).send(TOPIC, bodies)
    engine = MemoryEngine(ConsumerHub(consumers), broker=broker)
    try:
        engine.drain(raise_errors=True)
    finally:
        engine.close()
    return broker


def _metrics(*values: float) -> bytes:
    return balog1x.body(
        "justitia.scripts.process_results.done",
        {
            "cls_type": "metrics",
            "values": [{"name": f"v{i}", "value": v} for i, v in enumerate(values)],
        },
    )


def test_python2_str_of_floats() -> None:
    """balog1x writes floats as balog 1.x did under Python 2, and ids of its length."""
    assert [balog1x.py2_str(v) for v in (1234, 0.1, 1 / 3, 1e16, math.inf, math.nan)] == [
        "1234.0",
        "0.1",
        "0.333333333333",
        "1e+16",
        "inf",
        "nan",
    ]
    assert len(balog1x.guid()) in (23, 24)


def test_metrics_reach_a_seed_readme_consumer_as_numbers() -> None:
    """The seed README's consumer (cls_type='metrics', version='<1.0') receives balog 1.x's
    metrics with float values it can add up."""
    seen: list[dict[str, Any]] = []

    @consumer_config(topic=TOPIC, cls_type="metrics", version="<1.0")
    def process_metrics(event: dict[str, Any]) -> None:
        seen.append(event)
        sum(v["value"] for v in event["payload"]["values"])

    hub = ConsumerHub()
    hub.add_consumer(process_metrics)
    broker = _consume([_metrics(123, 456.5, 1 / 3)], *hub)
    assert broker.dead_letters(TOPIC) == []
    assert [v["value"] for v in seen[0]["payload"]["values"]] == [123.0, 456.5, 0.333333333333]
    assert seen[0]["schema"] == "0.0.1"


def test_nan_and_inf_are_consumed_not_dead_lettered() -> None:
    """NaN and infinities, which balog 1.x wrote as 'nan' and 'inf', are read as floats."""
    seen: list[dict[str, Any]] = []
    broker = _consume([_metrics(math.nan, math.inf, -math.inf)], Consumer(seen.append, TOPIC))
    assert broker.dead_letters(TOPIC) == []
    (event,) = seen
    values = [v["value"] for v in event["payload"]["values"]]
    assert (math.isnan(values[0]), values[1:]) == (True, [math.inf, -math.inf])
    assert raw(event)["payload"]["values"][0]["value"] == "nan"


def test_version_routing_sees_the_schema_balog_1x_wrote() -> None:
    """Consumers routed by version see 0.0.1: one declared for '<0.1' gets the event, one for
    '>=0.1' does not."""
    old: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    _consume(
        [_metrics(1)],
        Consumer(old.append, TOPIC, version="<0.1"),
        Consumer(new.append, TOPIC, version=">=0.1"),
    )
    assert ([e["schema"] for e in old], new) == (["0.0.1"], [])


@pytest.mark.parametrize(
    ("severity", "exc_text"), [("info", None), ("error", "Traceback ...\nValueError: x")]
)
def test_log_events(severity: str, exc_text: str | None) -> None:
    """balog 1.x's log events (from its SchemaFormatter) are consumed as they were written."""
    payload: dict[str, Any] = {"cls_type": "log", "severity": severity, "message": "Hello world"}
    if exc_text:
        payload["exc_text"] = exc_text
    seen: list[dict[str, Any]] = []
    broker = _consume([balog1x.body("root", payload)], Consumer(seen.append, TOPIC, cls_type="log"))
    assert broker.dead_letters(TOPIC) == []
    assert [e["payload"] for e in seen] == [payload]


@pytest.fixture(params=["memory", "sqlite", "sqs", "redis-native", "rabbitmq", "redis"])
def backend(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Backend]:
    yield from make_backend(request, request.param, unique_name)


def test_balog_1x_bodies_are_consumed_on_every_backend(backend: Backend) -> None:
    """The same balog 1.x bodies (metrics with values as strings, 'nan' among them, and a log
    event) put on each backend reach today's consumers as balog 1.x's consumers saw them:
    metric values as floats, the schema version as written, nothing dead-lettered."""
    metrics: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    hub = ConsumerHub(
        [
            Consumer(metrics.append, backend.topic, cls_type="metrics", version="<1.0"),
            Consumer(logs.append, backend.topic, cls_type="log"),
        ]
    )
    log_payload = {"cls_type": "log", "severity": "info", "message": "Hello world"}
    backend.send(
        _metrics(123, 0.5), _metrics(math.nan), balog1x.body("root", log_payload), MESSAGE_JSON
    )
    engine = backend.make_engine(hub, handle_signals=False)
    run_engine_until(engine, lambda: len(metrics) == 3 and len(logs) == 1)
    values = sorted(
        (v["value"] for e in metrics for v in e["payload"]["values"]),
        key=lambda v: (math.isnan(v), v),
    )
    assert values[:-1] == [0.5, 123.0, 1234.0, 5678.0]
    assert math.isnan(values[-1])
    assert {e["schema"] for e in metrics + logs} == {"0.0.1"}
    assert [e["payload"] for e in logs] == [log_payload]
    assert backend.dead_letters() == []

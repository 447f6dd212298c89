"""Case 1, the consumer pipeline: decode + validate + route + dispatch to a no-op consumer on the
memory engine, against the floor of parsing the same bodies and running the same compiled
validators by hand (no routing, no acks, no bookkeeping).

The bodies are put on the memory broker before the clock starts; the engine then drains them
with its default batch size. One core does all the work.
"""

from __future__ import annotations

from typing import Any

from benchmarks import Row, median, row, sample_event, timed_eps

DEFAULT_EVENTS = 50_000
TOPIC = "bench-pipeline"


def _bodies(events: int) -> list[bytes]:
    from balog.events import encode

    return [encode(sample_event(i)) for i in range(events)]


def _balog_eps(bodies: list[bytes]) -> float:
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines.memory import MemoryEngine
    from balog.transports.memory import MemoryBroker, MemoryTransport

    def no_op(event: dict[str, Any]) -> None:
        return None

    broker = MemoryBroker()
    hub = ConsumerHub([Consumer(no_op, TOPIC, cls_type="metrics", version="<1.0")])
    engine = MemoryEngine(hub, broker=broker)
    transport = MemoryTransport(broker, record=False)
    for start in range(0, len(bodies), 1000):
        transport.send(TOPIC, bodies[start : start + 1000])
    handled: list[int] = []
    eps = timed_eps(len(bodies), lambda: handled.append(engine.drain()))
    engine.close()
    if handled != [len(bodies)] or engine.stats()[TOPIC].processed != len(bodies):
        raise RuntimeError(f"the engine handled {handled}, expected {len(bodies)}")
    return eps


def _floor(bodies: list[bytes]) -> tuple[str, Any]:
    import fastjsonschema

    from balog.events import default_registry, loads

    facility = fastjsonschema.compile(default_registry.facility_schema(0))
    payload = fastjsonschema.compile(default_registry.payload_schema("metrics"))
    name = f"{getattr(loads, '__module__', 'json') or 'json'}.loads + fastjsonschema"

    def floor() -> None:
        for body in bodies:
            event = loads(body)
            facility(event)
            payload(event["payload"])

    return name.replace("orjson.orjson", "orjson"), floor


def run(repeat: int = 3, events: int = DEFAULT_EVENTS) -> list[Row]:
    bodies = _bodies(events)
    name, floor = _floor(bodies)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(repeat):  # interleaved, so that a noisy neighbour hits both alike
        ours.append(_balog_eps(bodies))
        theirs.append(timed_eps(events, floor))
    return [
        row(
            "1 pipeline (memory engine)",
            median(ours),
            name,
            median(theirs),
            target=">= 50,000/s and >= 0.5x",
            met=median(ours) >= 50_000 and median(ours) >= 0.5 * median(theirs),
        )
    ]

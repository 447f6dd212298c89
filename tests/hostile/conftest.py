"""One fixture, ``backend``, parametrized over every backend the hostile-input tests run on.

A :class:`Backend` gives a transport to send raw bodies with and to read dead letters from, and
builds an engine on the same topic for a hub. Real brokers are used where the backend has one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from balog.consumers import ConsumerHub
from balog.engines.base import Backoff, TransportEngine
from balog.transports.base import DeadLetter, Transport

EngineFactory = Callable[..., TransportEngine]


@dataclasses.dataclass
class Backend:
    name: str
    transport: Transport
    make_engine: EngineFactory
    topic: str
    cleanup: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @property
    def max_body_size(self) -> int | None:
        return self.transport.capabilities.max_body_size

    def send(self, *bodies: bytes) -> None:
        self.transport.send(self.topic, list(bodies))

    def dead_letters(self) -> list[DeadLetter]:
        return self.transport.dead_letters(self.topic, limit=50)


def _memory(request: pytest.FixtureRequest, topic: str) -> Backend:
    from balog.engines.memory import MemoryEngine
    from balog.transports.memory import MemoryBroker, MemoryTransport

    broker = MemoryBroker()
    size = 1024 * 1024  # large enough that a 200,000-deep body reaches the decoder

    def make(hub: ConsumerHub, **options: Any) -> TransportEngine:
        options.setdefault("max_event_size", size)
        return MemoryEngine(hub, broker=broker, max_body_size=size, **options)

    return Backend("memory", MemoryTransport(broker, max_body_size=size), make, topic)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, str], Backend]] = {"memory": _memory}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Backend]:
    """Each backend in turn, on a fresh topic; its resources are released afterwards."""
    made = BACKENDS[request.param](request, unique_name)
    try:
        yield made
    finally:
        for undo in reversed(made.cleanup):
            undo()
        made.transport.close()


def run_engine_until(
    engine: TransportEngine, condition: Callable[[], object], timeout: float = 30.0
) -> None:
    """Run ``engine`` in a thread until ``condition()`` holds, then stop it and wait for it."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            engine.run()
        except BaseException as exc:  # reported below, in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if failure or not thread.is_alive():
                raise AssertionError(f"engine stopped early: {failure!r}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s")
            time.sleep(0.02)
    finally:
        engine.stop()
        thread.join(30)
        engine.close()
    assert not thread.is_alive(), "engine did not stop"


FAST_RETRY = Backoff(base=0.0, jitter=0.0)

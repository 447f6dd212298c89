"""The shipped conformance suite, run over every built-in backend.

Adding a backend is a subclass with a factory: ``make_transport`` (and ``make_engine`` when the
backend has an engine of its own).
"""

from __future__ import annotations

import pytest

from balog.consumers import ConsumerHub
from balog.engines.base import Backoff, Engine
from balog.engines.memory import MemoryEngine
from balog.testing.conformance import TransportConformance
from balog.transports.base import Transport
from balog.transports.memory import MemoryBroker, MemoryTransport


class TestMemoryTransport(TransportConformance):
    """The reference semantics: the memory transport on the generic TransportEngine."""

    lease = 0.5

    @pytest.fixture(autouse=True)
    def _broker(self) -> None:
        self.broker = MemoryBroker()

    def make_transport(self) -> Transport:
        return MemoryTransport(broker=self.broker)


class TestMemoryEngine(TestMemoryTransport):
    """The memory transport under MemoryEngine, the engine unit tests use."""

    def make_engine(
        self, hub: ConsumerHub, transport: Transport, *, max_attempts: int, batch_size: int
    ) -> Engine:
        return MemoryEngine(
            hub,
            broker=self.broker,
            max_attempts=max_attempts,
            batch_size=batch_size,
            backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
            lease=self.engine_lease,
            handle_signals=False,
        )

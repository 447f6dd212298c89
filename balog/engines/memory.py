"""The in-memory engine: runs a hub against a :class:`~balog.transports.memory.MemoryBroker`."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import Backoff, TransportEngine
from balog.transports.memory import MemoryBroker, MemoryTransport

__all__ = ["MemoryEngine"]


class MemoryEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a memory broker.

    Given no broker it uses :data:`~balog.transports.memory.default_broker`, which is also what a
    ``memory`` transport given none uses, so a producer configured with ``transport="memory"``
    reaches it. Retries are immediate by default (``backoff=Backoff(0)``) so that
    :meth:`~balog.engines.base.TransportEngine.drain` settles every message in one call, and an
    idle receive waits 0.1 s.
    """

    transport_class = MemoryTransport
    defaults = MappingProxyType({"backoff": Backoff(base=0.0, jitter=0.0), "wait": 0.1})

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        broker: MemoryBroker | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("record", False)
        super().__init__(hub, consumer_operator, broker=broker, **options)

    @property
    def broker(self) -> MemoryBroker:
        """The broker the engine consumes from."""
        assert isinstance(self.transport, MemoryTransport)
        return self.transport.broker

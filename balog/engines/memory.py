"""The in-memory engine: runs a hub against a :class:`~balog.transports.memory.MemoryBroker`."""

from __future__ import annotations

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
    :meth:`~balog.engines.base.TransportEngine.drain` settles every message in one call.
    """

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        broker: MemoryBroker | None = None,
        *,
        backoff: Backoff | None = None,
        wait: float = 0.1,
        max_body_size: int | None = None,
        **options: Any,
    ) -> None:
        limits = {} if max_body_size is None else {"max_body_size": max_body_size}
        transport = MemoryTransport(broker, record=False, **limits)
        super().__init__(
            hub,
            consumer_operator,
            transport=transport,
            backoff=backoff or Backoff(base=0.0, jitter=0.0),
            wait=wait,
            **options,
        )
        self.broker = transport.broker

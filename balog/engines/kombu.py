"""The kombu engine: a hub's consumers on RabbitMQ, Redis or any kombu URL.

::

    engine = create_engine("kombu", hub=hub, consumer_operator=op,
                           url="amqp://guest:guest@127.0.0.1:5672//")
    engine.run()

A named configuration of :class:`~balog.engines.base.TransportEngine` on a
:class:`~balog.transports.kombu.KombuTransport`: each worker thread holds its own connection (the
engine settles every delivery from the thread that received it, and ends each worker's session
when the worker ends, so what it prefetched goes back to the queue). The engine's ``lease``
reaches the transport, which uses it as kombu's Redis ``visibility_timeout``.
"""

from __future__ import annotations

from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine
from balog.transports.kombu import KombuTransport

__all__ = ["KombuEngine"]


class KombuEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a broker reached through kombu.

    ``url`` is the kombu URL (``amqp://``, ``redis://``, ``memory://``, ...); it and every other
    :class:`~balog.transports.kombu.KombuTransport` option (``prefetch``, ``transport_options``,
    ``heartbeat``, ``queue_arguments``, ...) go to the transport; the rest are the engine's
    (``max_attempts``, ``backoff``, ``batch_size``, ``lease``, ``concurrency``, ...).
    """

    transport_class = KombuTransport

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        url: str = "memory://",
        **options: Any,
    ) -> None:
        super().__init__(hub, consumer_operator, url=url, **options)

    @property
    def kombu_transport(self) -> KombuTransport:
        """The engine's transport, typed."""
        assert isinstance(self.transport, KombuTransport)
        return self.transport

    @property
    def url(self) -> str:
        """The broker URL, its password masked."""
        assert isinstance(self.transport, KombuTransport)
        return str(self.transport.safe_url)

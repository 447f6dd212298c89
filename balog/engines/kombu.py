"""The kombu engine: a hub's consumers on RabbitMQ, Redis or any kombu URL.

::

    engine = create_engine("kombu", hub=hub, consumer_operator=op,
                           url="amqp://guest:guest@127.0.0.1:5672//")
    engine.run()

It is the shared :class:`~balog.engines.base.TransportEngine` pipeline over a
:class:`~balog.transports.kombu.KombuTransport`: each worker thread holds its own connection and a
push consumer per topic with a prefetch limit; when a worker ends (on :meth:`stop`), the messages
it had prefetched but not started go back to the queue.

On Redis, kombu redelivers a message nobody acked within ``visibility_timeout``, even while its
handler still runs. The engine sets ``visibility_timeout`` to its ``lease`` (unless
``transport_options`` set one) and its lease keeper pushes the deadline of every running message
forward at half-lease, so a long handler keeps its message while the engine lives; a message whose
engine died comes back about one lease later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from balog.consumers import Consumer, ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine
from balog.exceptions import ConfigurationError
from balog.transports.base import Delivery
from balog.transports.kombu import DEFAULT_HEARTBEAT, KombuTransport

__all__ = ["KombuEngine"]


class KombuEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a broker reached through kombu.

    ``url`` is the kombu URL (``amqp://``, ``redis://``, ``memory://``, ...). ``prefetch`` is how
    many unacked messages each worker's consumer may hold (default: ``max(100, batch_size)``).
    ``transport_options``, ``confirm_publish``, ``heartbeat``, ``connect_timeout``,
    ``max_retries``, ``max_body_size`` and ``queue_arguments`` go to the transport, with
    ``lease`` (on Redis, kombu's visibility timeout); every other option (``max_attempts``,
    ``backoff``, ``batch_size``, ``concurrency``, ...) to
    :class:`~balog.engines.base.TransportEngine`.
    """

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        *,
        url: str = "memory://",
        prefetch: int | None = None,
        transport_options: Mapping[str, Any] | None = None,
        confirm_publish: bool = True,
        heartbeat: float = DEFAULT_HEARTBEAT,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        max_body_size: int | None = None,
        queue_arguments: Mapping[str, Any] | None = None,
        batch_size: int = 10,
        lease: float = 30.0,
        ack_delay: float | None = None,
        **options: Any,
    ) -> None:
        if "transport" in options:
            raise ConfigurationError("the kombu engine builds its own transport from url=")
        transport = KombuTransport(
            url,
            prefetch=prefetch or max(100, batch_size),
            transport_options=transport_options,
            confirm_publish=confirm_publish,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            max_body_size=max_body_size,
            queue_arguments=queue_arguments,
            lease=lease,
        )
        if ack_delay is None and transport.capabilities.batch_ack:
            ack_delay = 0.2
        super().__init__(
            hub,
            consumer_operator,
            transport=transport,
            batch_size=batch_size,
            lease=lease,
            ack_delay=ack_delay,
            **options,
        )
        self._owns_transport = True  # built here from the URL: closed with the engine
        self.url = transport.safe_url

    def __repr__(self) -> str:
        return f"KombuEngine(url={self.url!r}, hub={self.hub!r})"

    def handle(
        self,
        delivery: Delivery,
        consumers: list[Consumer],
        errors: list[BaseException] | None = None,
    ) -> str:
        if delivery.refused is not None:  # what the transport could not hand over as a body
            stats = self._stats.get(delivery.topic) or self._topic_stats(delivery.topic)
            with self._lock:
                stats.received += 1
            return self._dead_letter(delivery, delivery.refused)
        return super().handle(delivery, consumers, errors)

    def _worker(self, topic: str, consumers: list[Consumer]) -> None:
        try:
            super()._worker(topic, consumers)
        finally:
            # Hand back what this worker prefetched and never started, on its own connection.
            self.kombu_transport.close_thread()

    def drain(self, *, raise_errors: bool = False, timeout: float | None = None) -> int:
        try:
            return super().drain(raise_errors=raise_errors, timeout=timeout)
        finally:
            self.kombu_transport.close_thread()

    @property
    def kombu_transport(self) -> KombuTransport:
        """The engine's transport, typed."""
        assert isinstance(self.transport, KombuTransport)
        return self.transport

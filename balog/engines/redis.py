"""The native Redis engine: a hub's consumers on Redis, with nothing lost when a consumer dies.

::

    engine = create_engine("redis", hub=hub, url="redis://127.0.0.1:6379/0")
    engine.run()

A named configuration of :class:`~balog.engines.base.TransportEngine` on a
:class:`~balog.transports.redis.RedisTransport` (see that module for the keys and the scripts).
The transport declares ``batch_ack``, so the acks of a received batch go out together in one
script call once the batch is done (or once the oldest has waited ``ack_delay``, by default a
quarter of the lease, at most 1 s); until then the processed messages stay leased.
"""

from __future__ import annotations

from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine
from balog.transports.redis import DEFAULT_URL, RedisTransport

__all__ = ["RedisEngine"]


class RedisEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a :class:`RedisTransport`.

    ``url`` and every other :class:`~balog.transports.redis.RedisTransport` option (``prefix``,
    ``max_body_size``, ``poll_interval``, ...) go to the transport, which also takes the engine's
    ``lease``; the rest are the engine's (``max_attempts``, ``backoff``, ``concurrency``, ...).
    """

    transport_class = RedisTransport

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        url: str = DEFAULT_URL,
        **options: Any,
    ) -> None:
        super().__init__(hub, consumer_operator, url=url, **options)

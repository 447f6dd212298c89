"""The native Redis engine: a hub's consumers on Redis, with nothing lost when a consumer dies.

::

    engine = create_engine("redis", hub=hub, url="redis://127.0.0.1:6379/0")
    engine.run()

The shared :class:`~balog.engines.base.TransportEngine` pipeline over a
:class:`~balog.transports.redis.RedisTransport`; see that module for the keys and the scripts.
On top, the acks of a received batch go out together, in one script call, once the batch is
done (or once the oldest has waited ``ack_delay`` seconds); until then the processed messages
stay leased (the lease keeper extends them), so a crash before the call repeats them, never
loses them.
"""

from __future__ import annotations

from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine
from balog.exceptions import ConfigurationError
from balog.transports.redis import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PREFIX,
    DEFAULT_URL,
    RedisTransport,
)

__all__ = ["RedisEngine"]


class RedisEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a :class:`RedisTransport`.

    ``url``, ``prefix``, ``max_body_size``, ``poll_interval``, ``max_poll_interval``,
    ``socket_timeout`` and ``connect_timeout`` go to the transport, whose default lease is the
    engine's ``lease``; every other option is the engine's (``max_attempts``, ``backoff``,
    ``concurrency``, ``wait``, ...). ``ack_delay`` bounds how long a processed message waits
    for its batch's ack call (default: a quarter of the lease, at most 1 s).
    """

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        poll_interval: float = 0.01,
        max_poll_interval: float = 0.1,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        lease: float = 30.0,
        ack_delay: float | None = None,
        **options: Any,
    ) -> None:
        for name in ("transport", "transport_options"):
            if name in options:
                raise ConfigurationError(
                    f"RedisEngine builds its own transport; give url= and its options, not {name}="
                )
        transport = RedisTransport(
            url,
            prefix=prefix,
            lease=lease,
            max_body_size=max_body_size,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
        )
        super().__init__(
            hub,
            consumer_operator,
            transport=transport,
            lease=lease,
            ack_delay=min(1.0, lease / 4) if ack_delay is None else ack_delay,
            **options,
        )
        # The engine built this transport, so it closes it too.
        self._owns_transport = True

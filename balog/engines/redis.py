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

import threading
import time
from typing import Any

from balog._text import clip
from balog.consumers import Consumer, ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine, logger
from balog.exceptions import ConfigurationError, LeaseExpired
from balog.transports.base import Delivery
from balog.transports.redis import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PREFIX,
    DEFAULT_URL,
    RedisTransport,
)

__all__ = ["RedisEngine"]

_Pending = list[tuple[Delivery, str, float]]


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
        super().__init__(hub, consumer_operator, transport=transport, lease=lease, **options)
        # The engine built this transport, so it closes it too.
        self._owns_transport = True
        self._ack_delay = min(1.0, lease / 4) if ack_delay is None else max(0.0, ack_delay)
        self._pending_acks = threading.local()

    # -- settling: acks batched per received batch --------------------------------------------

    def _settle(self, delivery: Delivery, outcome: str) -> str:
        pending: _Pending | None = getattr(self._pending_acks, "pending", None)
        if pending is None:
            return super()._settle(delivery, outcome)
        pending.append((delivery, outcome, time.monotonic()))
        # Until its ack goes out the message stays leased: have the keeper renew it at its next
        # round, as its last renewal is not known here.
        if delivery.lease is not None:
            self._track(delivery, since=time.monotonic() - delivery.lease / 2)
        return outcome

    def _process_batch(
        self,
        batch: list[Delivery],
        consumers: list[Consumer],
        errors: list[BaseException] | None = None,
    ) -> int:
        pending: _Pending = []
        self._pending_acks.pending = pending
        done = 0
        try:
            for i, delivery in enumerate(batch):
                if self._stopping.is_set():
                    self._release(batch[i:])
                    break
                self.handle(delivery, consumers, errors)
                done += 1
                if pending and time.monotonic() - pending[0][2] >= self._ack_delay:
                    self._flush(pending)
        finally:
            self._pending_acks.pending = None
            self._flush(pending)
        return done

    def _flush(self, pending: _Pending) -> None:
        if not pending:
            return
        for delivery, _, _ in pending:
            self._untrack(delivery)
        assert isinstance(self.transport, RedisTransport)
        outcomes = self.transport.ack_many([d for d, _, _ in pending])
        for (delivery, outcome, _), error in zip(pending, outcomes, strict=True):
            if error is None:
                self._count(delivery.topic, outcome)
            elif isinstance(error, LeaseExpired):
                logger.warning(
                    "message %s on %s was processed after its lease was lost; it may be "
                    "processed again",
                    delivery.message_id,
                    delivery.topic,
                )
                self._count(delivery.topic, outcome)
            else:
                logger.warning(
                    "ack of message %s on %s failed (%s); it will be delivered again",
                    delivery.message_id,
                    delivery.topic,
                    clip(f"{type(error).__name__}: {error}"),
                )
                self._count(delivery.topic, "errors")
        pending.clear()

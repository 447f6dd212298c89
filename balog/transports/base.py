"""The transport contract: what a backend must do to carry balog events.

A transport moves opaque bodies (bytes) to and from named topics (a queue name on SQS, a queue on
RabbitMQ, a list on Redis). It knows nothing about events, consumers or retries: the engine does
that on top, once, for every backend.

Delivery semantics are SQS's: a received message is *leased* to the receiver; it is gone only once
acked; if nacked, or if the lease expires, it comes back with its ``receive_count`` one higher.
Transports whose broker works otherwise (AMQP holds unacked messages per connection, for one)
declare it in :class:`Capabilities`, and the conformance suite checks what they declare.

A transport must be safe to use from several threads at once: the engine runs one or more workers
per topic and a lease keeper beside them.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from balog.exceptions import MessageTooLarge, UnsupportedOperation

__all__ = [
    "ATTEMPTS_HEADER",
    "DEAD_LETTER_SUFFIX",
    "REASON_HEADER",
    "SOURCE_TOPIC_HEADER",
    "Capabilities",
    "DeadLetter",
    "Delivery",
    "Transport",
]

DEAD_LETTER_SUFFIX = "-dead-letter"
"""Appended to a topic's name to name its dead-letter topic, unless the transport says otherwise."""

REASON_HEADER = "balog-reason"
"""Header that carries why a message was dead-lettered."""

SOURCE_TOPIC_HEADER = "balog-topic"
"""Header that carries the topic a dead-lettered message came from."""

ATTEMPTS_HEADER = "balog-attempts"
"""Header that carries how many times a dead-lettered message was received."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a transport can do; engines and the conformance suite adapt to it.

    ``max_body_size``: largest body ``send`` accepts, in bytes (``None``: no limit of its own).
    ``native_delay``: ``nack(delay=...)`` is honoured by the broker itself rather than emulated.
    ``native_dead_letter``: dead-lettering uses a broker feature (a redrive policy, a DLX).
    ``lease_expiry``: an unacked delivery comes back by itself when its lease runs out, even while
    the receiver is still connected (SQS, sqlite); ``False`` where the broker holds it until the
    receiver acks or disconnects (AMQP).
    ``lease_extension``: :meth:`Transport.extend_lease` works.
    ``receive_count``: ``Delivery.receive_count`` counts every delivery, redeliveries after a crash
    included; ``False`` where only explicit nacks are counted.
    ``ordering``: messages are received in the order sent (FIFO), absent redelivery.
    ``delay``: ``nack(delay=...)`` delays at all (natively or emulated).
    """

    max_body_size: int | None = None
    native_delay: bool = False
    native_dead_letter: bool = False
    lease_expiry: bool = True
    lease_extension: bool = False
    receive_count: bool = True
    ordering: bool = False
    delay: bool = True


@dataclasses.dataclass(eq=False)
class Delivery:
    """One received message, leased to its receiver until acked, nacked or released.

    ``handle`` is the transport's own token for the message (a receipt handle, a kombu message, a
    row id); only the transport that made the delivery reads it. ``received_at`` is a
    ``time.monotonic()`` reading, ``lease`` the lease length in seconds at receipt (``None`` when
    the transport has no leases).
    """

    topic: str
    body: bytes
    message_id: str
    receive_count: int = 1
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    handle: Any = dataclasses.field(default=None, repr=False)
    lease: float | None = None
    received_at: float = dataclasses.field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return (
            f"Delivery(topic={self.topic!r}, message_id={self.message_id!r}, "
            f"receive_count={self.receive_count}, size={len(self.body)})"
        )


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message as :meth:`Transport.dead_letters` lists it."""

    topic: str
    body: bytes
    reason: str
    receive_count: int
    message_id: str


class Transport(ABC):
    """Carries bodies to and from topics. Subclasses implement four methods.

    Required: :meth:`send`, :meth:`receive`, :meth:`ack`, :meth:`nack`. Optional, with working
    defaults: :meth:`release`, :meth:`extend_lease`, :meth:`dead_letter`, :meth:`close`,
    :meth:`dead_letter_topic`, :meth:`purge`. Declare what the backend can do in
    :attr:`capabilities`.

    Errors raised are :class:`~balog.exceptions.TransportError` subclasses, chained to the backend's
    own error; nothing a transport raises or logs, and nothing in its ``repr``, contains a secret.
    """

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def send(
        self,
        topic: str,
        bodies: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send each body to ``topic``, in as few backend calls as the backend allows.

        Returns once the backend has accepted every body (confirmed where the backend confirms).
        A body over ``capabilities.max_body_size`` raises
        :class:`~balog.exceptions.MessageTooLarge` before anything is sent. When only some bodies
        were accepted, raises :class:`~balog.exceptions.SendError` whose ``failed`` lists the
        indexes of the others. ``headers`` go with every body.
        """

    @abstractmethod
    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        """Return up to ``max_messages`` deliveries from ``topic``, waiting up to ``wait`` seconds.

        Returns an empty list when nothing arrived in time; never blocks much past ``wait``. Each
        delivery is leased for ``lease`` seconds (``None``: the transport's default).
        """

    @abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """Remove the delivery for good: it was processed.

        Raises :class:`~balog.exceptions.LeaseExpired` when the lease was lost and the message may
        have gone to another receiver.
        """

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Ack several deliveries; return one outcome per delivery, in order. Never raises.

        ``None`` means acked; :class:`~balog.exceptions.LeaseExpired` that the lease was lost;
        another exception that the ack failed (the message comes back). The default acks one by
        one; a transport with a batch call (SQS, Redis) overrides it.
        """
        outcomes: list[BaseException | None] = []
        for delivery in deliveries:
            try:
                self.ack(delivery)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    @abstractmethod
    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        """Give the delivery back, to be received again after ``delay`` seconds or later.

        Its next delivery has a ``receive_count`` one higher.
        """

    def check_body_sizes(self, bodies: Sequence[bytes]) -> None:
        """Raise :class:`~balog.exceptions.MessageTooLarge` if a body is over
        ``capabilities.max_body_size``. Call it first thing in :meth:`send`, so that an oversized
        batch sends nothing."""
        limit = self.capabilities.max_body_size
        if limit is not None:
            for body in bodies:
                if len(body) > limit:
                    raise MessageTooLarge(len(body), limit)

    def release(self, delivery: Delivery) -> None:
        """Give back a delivery that was received but never started (engine shutdown).

        Defaults to ``nack(delay=0)``; a transport may override it so that the release does not
        count as an attempt.
        """
        self.nack(delivery, delay=0.0)

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        """Keep the delivery leased for ``lease`` more seconds from now.

        Only where ``capabilities.lease_extension``; the default raises
        :class:`~balog.exceptions.UnsupportedOperation`.
        """
        raise UnsupportedOperation(f"{type(self).__name__} cannot extend leases")

    def dead_letter_topic(self, topic: str) -> str:
        """Name of the topic where ``topic``'s dead letters go."""
        return topic + DEAD_LETTER_SUFFIX

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to its topic's dead-letter place, keeping the body and the reason.

        The default sends the body to :meth:`dead_letter_topic` with the reason, the source topic
        and the receive count in headers, then acks the original: a crash between the two leaves
        a duplicate, never a loss.
        """
        self.send(
            self.dead_letter_topic(delivery.topic),
            [delivery.body],
            headers={
                REASON_HEADER: reason,
                SOURCE_TOPIC_HEADER: delivery.topic,
                ATTEMPTS_HEADER: str(delivery.receive_count),
            },
        )
        self.ack(delivery)

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """List up to ``limit`` of ``topic``'s dead letters without removing them.

        The default receives them with a short lease and releases them again.
        """
        found: list[DeadLetter] = []
        deliveries = self._collect(self.dead_letter_topic(topic), limit)
        try:
            for d in deliveries:
                found.append(
                    DeadLetter(
                        topic=d.headers.get(SOURCE_TOPIC_HEADER, topic),
                        body=d.body,
                        reason=d.headers.get(REASON_HEADER, ""),
                        receive_count=int(d.headers.get(ATTEMPTS_HEADER, "0") or 0),
                        message_id=d.message_id,
                    )
                )
        finally:
            for d in deliveries:
                self.release(d)
        return found

    def replay_dead_letters(self, topic: str, *, limit: int | None = None) -> int:
        """Put ``topic``'s dead letters back on ``topic``; return how many moved."""
        moved = 0
        while limit is None or moved < limit:
            batch = self.receive(
                self.dead_letter_topic(topic),
                max_messages=10 if limit is None else min(10, limit - moved),
                wait=0.0,
            )
            if not batch:
                break
            for d in batch:
                self.send(topic, [d.body])
                self.ack(d)
                moved += 1
        return moved

    def purge(self, topic: str) -> int:
        """Remove every message available now on ``topic``; return how many were removed."""
        removed = 0
        while True:
            batch = self.receive(topic, max_messages=10, wait=0.0)
            if not batch:
                return removed
            for d in batch:
                self.ack(d)
                removed += 1

    def _collect(self, topic: str, limit: int) -> list[Delivery]:
        collected: list[Delivery] = []
        while len(collected) < limit:
            batch = self.receive(
                topic, max_messages=min(10, limit - len(collected)), wait=0.0, lease=30.0
            )
            if not batch:
                break
            collected.extend(batch)
        return collected

    def close(self) -> None:
        """Release connections. Idempotent; the default does nothing."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

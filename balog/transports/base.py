"""The transport contract: what a backend must do to carry balog events.

A transport moves opaque bodies (bytes) to and from named topics (a queue name on SQS, a queue on
RabbitMQ, a list on Redis). It knows nothing about events, consumers or retries: the engine does
that on top, once, for every backend.

Delivery semantics are SQS's: a received message is *leased* to the receiver; it is gone only once
acked; if nacked, or if the lease expires, it comes back with its ``receive_count`` one higher.
Transports whose broker works otherwise (AMQP holds unacked messages per connection, for one)
declare it in :class:`Capabilities`, and the conformance suite checks what they declare.

A transport moves bodies and reports what it saw; it decides nothing. Whether a delivery is acked,
retried or dead-lettered is the engine's decision, made in one place. Something that arrived on a
topic but cannot be handed over as a body (a content type the transport does not accept, an entry
not in the transport's own format) is still a :class:`Delivery`, marked :attr:`Delivery.refused`
with the reason: the engine dead-letters and counts it, so nothing vanishes inside a transport.

Threads: the engine settles (acks, nacks, releases, dead-letters) every delivery from the thread
that received it, and calls :meth:`Transport.close_thread` from each worker thread as it ends;
only :meth:`Transport.extend_lease` is called from other threads (the lease keeper's). A transport
must still be safe to use from several threads at once: the engine runs several workers.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar

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
    "dead_letter_headers",
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
    """What a transport can do: what the engine and the conformance suite read, nothing more.

    ``max_body_size``: largest body ``send`` accepts, in bytes (``None``: no limit of its own).
    ``lease_expiry``: an unacked delivery comes back by itself when its lease runs out, even while
    the receiver is still connected (SQS, sqlite); ``False`` where the broker holds it until the
    receiver acks or disconnects (AMQP). The engine relies on it when a nack fails.
    ``lease_extension``: :meth:`Transport.extend_lease` works; the engine's lease keeper uses it.
    ``receive_count``: ``Delivery.receive_count`` counts every delivery, redeliveries after a crash
    included; ``False`` where only explicit nacks are counted.
    ``ordering``: messages are received in the order sent (FIFO), absent redelivery.
    ``delay``: ``nack(delay=...)`` delays at all (natively or emulated).
    ``batch_ack``: :meth:`Transport.ack_many` settles a batch in one backend call, so the engine
    batches acks by default (see ``TransportEngine(ack_delay=)``).
    ``max_batch``, ``max_wait``: the most messages one ``receive`` may ask for and the longest it
    may wait, where the backend has a limit (SQS: 10 and 20 s); the engine refuses options past
    them when it is built.
    """

    max_body_size: int | None = None
    lease_expiry: bool = True
    lease_extension: bool = False
    receive_count: bool = True
    ordering: bool = False
    delay: bool = True
    batch_ack: bool = False
    max_batch: int | None = None
    max_wait: float | None = None


@dataclasses.dataclass(eq=False, slots=True)
class Delivery:
    """One received message, leased to its receiver until acked, nacked or released.

    ``handle`` is the transport's own token for the message (a receipt handle, a kombu message, a
    row id); only the transport that made the delivery reads it. ``received_at`` is a
    ``time.monotonic()`` reading, ``lease`` the lease length in seconds at receipt (``None`` when
    the transport has no leases).

    ``refused`` is set by the transport, with the reason, when what arrived cannot be handed over
    as a balog body: a content type it does not accept, an entry not in its own format, a message
    it could not read. ``body`` then holds the bytes as they arrived, as near as the backend
    allows. The engine dead-letters such a delivery without decoding it. ``group`` is the
    ordering group (an SQS FIFO message group) where the transport has one: the engine never
    processes two deliveries of one group at once, even with ``max_in_flight`` above one.
    """

    topic: str
    body: bytes
    message_id: str
    receive_count: int = 1
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    handle: Any = dataclasses.field(default=None, repr=False)
    lease: float | None = None
    received_at: float = dataclasses.field(default_factory=time.monotonic)
    refused: str | None = None
    group: str | None = None

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

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, Any], *, topic: str, body: bytes, message_id: str
    ) -> DeadLetter:
        """The dead letter whose headers :func:`dead_letter_headers` wrote; ``topic`` is used
        when the headers name no source topic."""
        try:
            count = int(headers.get(ATTEMPTS_HEADER, 0) or 0)
        except (TypeError, ValueError):
            count = 0
        return cls(
            topic=str(headers.get(SOURCE_TOPIC_HEADER) or topic),
            body=body,
            reason=str(headers.get(REASON_HEADER) or ""),
            receive_count=count,
            message_id=message_id,
        )


def dead_letter_headers(delivery: Delivery, reason: str) -> dict[str, str]:
    """The headers a dead letter carries: why, where it came from, how many receives it had."""
    return {
        REASON_HEADER: reason,
        SOURCE_TOPIC_HEADER: delivery.topic,
        ATTEMPTS_HEADER: str(delivery.receive_count),
    }


class Transport(ABC):
    """Carries bodies to and from topics. Subclasses implement four methods.

    Required: :meth:`send`, :meth:`receive`, :meth:`ack`, :meth:`nack`. Optional, with working
    defaults: :meth:`ack_many`, :meth:`release`, :meth:`extend_lease`, :meth:`dead_letter`,
    :meth:`dead_letters`, :meth:`replay_dead_letters`, :meth:`purge`, :meth:`dead_letter_topic`,
    :meth:`verify`, :meth:`max_receive_count`, :meth:`close_thread`, :meth:`close`. Declare what the
    backend can do in :attr:`capabilities`, and the engine option defaults it wants in
    :attr:`engine_defaults`.

    Errors raised are :class:`~balog.exceptions.TransportError` subclasses, chained to the backend's
    own error; those retrying cannot fix (credentials refused, a missing queue) have ``fatal`` set.
    Nothing a transport raises or logs, and nothing in its ``repr``, contains a secret.
    """

    capabilities: Capabilities = Capabilities()

    engine_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Engine options this backend wants when the user sets none (SQS: ``wait=20``, its longest
    long poll). Read by :class:`~balog.engines.base.TransportEngine`; never overrides an option
    the user gave."""

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
        """Remove the delivery for good: it was processed. Done when it returns, never deferred.

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

        Its next delivery has a ``receive_count`` one higher. If it raises, the delivery must be
        no worse off than unsettled: where leases do not expire (``lease_expiry=False``), the
        engine then calls :meth:`release`, and a transport whose release fails too must give the
        message back to the broker some other way (closing the channel that holds it).
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

    def verify(self, topic: str) -> None:
        """Check, when an engine starts, that ``topic`` can be consumed and its dead letters kept.

        Raise a fatal error (:class:`~balog.exceptions.AuthenticationError`,
        :class:`~balog.exceptions.TopicNotFound`, :class:`~balog.exceptions.TopicMismatch`) when
        retrying cannot help, :class:`~balog.exceptions.TransportConnectionError` when it may.
        The default does nothing.
        """

    def max_receive_count(self, topic: str) -> int | None:
        """Receives after which the backend itself moves a message away (an SQS redrive policy's
        ``maxReceiveCount``), or ``None``. The engine dead-letters a failing message, with its
        reason, on that receive at the latest."""
        return None

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to its topic's dead-letter place, keeping the body and the reason.

        The default sends the body to :meth:`dead_letter_topic` with
        :func:`dead_letter_headers`, then acks the original: a crash between the two leaves a
        duplicate, never a loss.
        """
        self.send(
            self.dead_letter_topic(delivery.topic),
            [delivery.body],
            headers=dead_letter_headers(delivery, reason),
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
                    DeadLetter.from_headers(
                        d.headers, topic=topic, body=d.body, message_id=d.message_id
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

    def close_thread(self) -> None:
        """Release what the calling thread holds; the engine calls it from each worker thread
        as the worker ends. A transport with per-thread connections (kombu) hands back what
        that thread received and never settled. The default does nothing."""

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

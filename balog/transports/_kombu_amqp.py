"""The kombu transport on AMQP brokers (RabbitMQ) through py-amqp: ``amqp://``, ``amqps://``.

- **Bodies as they arrived.** Consumers get py-amqp's own messages (``auto_decode`` off): kombu
  never builds its message from them, so nothing is decoded, deserialised or decompressed.
- **Acks** are sent when :meth:`~balog.transports.kombu.KombuTransport.ack` returns;
  ``ack_many`` sends one ``basic.ack`` with ``multiple=True`` when the batch covers every
  unsettled delivery up to its highest tag on that channel, and one per message otherwise.
- **Retry delays** are native: a nacked message goes to a holding queue
  ``<topic>.balog-delay.<ms>`` whose ``x-message-ttl`` dead-letters it back into the topic
  (delays rounded up to steps of 2**(1/4) from 100 ms, so jittered delays share a few queues;
  the broker deletes a holding queue a minute after its last use); then the original is acked.
- **Heartbeats** (30 s by default) are sent from a background thread for every connection whose
  thread is not inside a transport call (a worker running a long handler), holding that
  session's lock, so py-amqp is never used from two threads at once. A connection that misses
  two heartbeats is dropped there and replaced at its next use; every blocking wait on a socket
  is bounded as well (``read_timeout``/``write_timeout``, :data:`OPERATION_TIMEOUT`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import amqp as _amqp
from amqp.method_framing import frame_writer as amqp_frame_writer

from balog._options import check_known
from balog.exceptions import SendError
from balog.transports._kombu_common import (
    KOMBU_OPTIONS,
    Arrived,
    Broker,
    Confirms,
    Handle,
    Session,
    Stream,
    publish_body,
    retry_headers,
)
from balog.transports.base import Capabilities, Delivery

if TYPE_CHECKING:
    from balog.transports.kombu import KombuTransport

logger = logging.getLogger("balog.transports.kombu")

amqp: Any = _amqp

OPERATION_TIMEOUT = 30.0
"""Seconds any blocking socket read or write may take (a declare, a close) before the connection
is taken for dead; set ``read_timeout``/``write_timeout`` in ``transport_options`` to change."""

DELAY_QUEUE_INFIX = ".balog-delay."

# Connection options kombu itself passes to py-amqp, and kombu's own retry settings.
_SET_BY_KOMBU = {"host", "userid", "password", "login_method", "virtual_host", "insist", "ssl"}


def delay_bucket(delay: float) -> int:
    """Round a delay up to one of a few values (steps of 2**(1/4) from 100 ms), in milliseconds.

    Each distinct value is one holding queue; jittered delays fall into a handful.
    """
    if delay <= 0.1:
        return 100
    step = math.ceil(4 * math.log2(delay / 0.1) - 1e-9)
    return round(100 * 2 ** (step / 4))


class AMQPBroker(Broker):
    """py-amqp through kombu."""

    gather_wait = 0.0

    def __init__(self, transport: KombuTransport) -> None:
        super().__init__(transport)
        self._heartbeats: _Heartbeats | None = None
        self._heartbeats_lock = threading.Lock()
        self._coalescers: weakref.WeakKeyDictionary[Any, _Coalescer] = weakref.WeakKeyDictionary()

    def capabilities(self, max_body_size: int | None) -> Capabilities:
        return Capabilities(
            max_body_size=max_body_size,
            lease_expiry=False,
            lease_extension=False,
            receive_count=False,
            ordering=False,
            delay=True,
            batch_ack=True,
        )

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        accepted = set(inspect.signature(amqp.Connection).parameters) - _SET_BY_KOMBU
        accepted -= {"kwargs", "heartbeat", "connect_timeout"}
        check_known("kombu's AMQP transport_options", options, accepted | KOMBU_OPTIONS)
        return {"read_timeout": OPERATION_TIMEOUT, "write_timeout": OPERATION_TIMEOUT, **options}

    def connection_options(self) -> dict[str, Any]:
        options = dict(self.transport.transport_options)
        options.setdefault("frame_writer", self._frame_writer)
        return {"heartbeat": self.transport.heartbeat, "transport_options": options}

    def _frame_writer(self, connection: Any, transport: Any) -> Any:
        """py-amqp's frame writer (its ``Connection(frame_writer=)`` factory), writing through a
        :class:`_Coalescer` so that a batch of publishes can go out in one socket write."""
        coalescer = _Coalescer(transport)
        self._coalescers[connection] = coalescer
        return amqp_frame_writer(connection, coalescer)

    def connected(self, connection: Any) -> None:
        if self.transport.heartbeat and self._heartbeats is None:
            with self._heartbeats_lock:
                if self._heartbeats is None:
                    self._heartbeats = _Heartbeats(self.transport, self.transport.heartbeat)

    def prepare_channel(self, channel: Any) -> None:
        channel.auto_decode = False  # bodies stay the bytes that arrived

    def consume(self, stream: Stream, queue: Any) -> None:
        def on_message(message: Any) -> None:
            stream.buffer.append(message)
            stream.outstanding.add(message.delivery_tag)

        queue.consume(stream.tag, callback=on_message, no_ack=False)

    def tick(self, connection: Any) -> None:
        if self.transport.heartbeat:
            connection.heartbeat_check()

    def unpack(self, message: Any) -> Arrived:
        properties = message.properties or {}
        headers = dict(properties.get("application_headers") or {})
        return Arrived(
            body=message.body,
            headers=headers,
            properties=properties,
            tag=message.delivery_tag,
            content_type=properties.get("content_type"),
            compression=headers.get("compression"),
        )

    # -- publishing -----------------------------------------------------------------------------

    def prepare_publisher(self, session: Session, channel: Any) -> None:
        if self.transport.confirm_publish:
            session.confirms = Confirms()
            channel.events["basic_ack"].add(session.confirms.on_ack)
            channel.events["basic_nack"].add(session.confirms.on_nack)
            channel.confirm_select()

    def publish(
        self, session: Session, queue: str, bodies: Sequence[bytes], headers: Mapping[str, Any]
    ) -> None:
        producer = session.producer
        confirming = self.transport.confirm_publish
        confirms = session.confirms
        first = confirms.published + 1
        coalescer = self._coalescers.get(getattr(session.publisher, "connection", None))
        batch = coalescer.held() if coalescer is not None and len(bodies) > 1 else nullcontext()
        with batch:
            for body in bodies:
                publish_body(session, producer, queue, body, headers)
                if confirming:
                    confirms.published += 1
        if confirming:
            self._await_confirms(session, first, confirms.published)

    def _await_confirms(self, session: Session, first: int, last: int) -> None:
        confirms = session.confirms
        deadline = time.monotonic() + self.transport.confirm_timeout
        while not confirms.done(last):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no publisher confirm within {self.transport.confirm_timeout}s")
            try:
                session.publisher.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        failed = sorted(t - first for t in confirms.nacked if first <= t <= last)
        confirms.nacked.difference_update(range(first, last + 1))
        if failed:
            raise SendError(f"the broker refused {len(failed)} of {last - first + 1}", failed)

    # -- settling -------------------------------------------------------------------------------

    def ack(self, handle: Handle) -> None:
        handle.stream.channel.basic_ack(handle.tag)

    def ack_batch(self, stream: Stream, tags: Sequence[Any]) -> None:
        """One ``basic.ack`` with ``multiple=True`` where that acks exactly these (nothing else
        unsettled below the highest tag on the channel), one per message otherwise."""
        top = max(tags)
        wanted = set(tags)
        if all(t in wanted for t in stream.outstanding if t <= top):
            stream.channel.basic_ack(top, multiple=True)
        else:
            for tag in sorted(wanted):
                stream.channel.basic_ack(tag)

    def requeue(self, handle: Handle) -> None:
        handle.stream.channel.basic_reject(handle.tag, requeue=True)

    def nack(self, delivery: Delivery, handle: Handle, delay: float) -> None:
        headers = retry_headers(handle, delivery.receive_count)
        session = handle.stream.session
        if delay > 0:
            ms = delay_bucket(delay)
            holding = f"{delivery.topic}{DELAY_QUEUE_INFIX}{ms}"
            arguments = {
                "x-message-ttl": ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": delivery.topic,
                "x-expires": ms + 60_000,
            }
            # Declared on every use: "x-expires" counts from the last declare, so the queue
            # outlives every message published to it.
            self.transport._publish(session, holding, [delivery.body], headers, arguments, True)
        else:
            self.transport._publish(session, delivery.topic, [delivery.body], headers)
        self.ack(handle)

    # -- heartbeats -----------------------------------------------------------------------------

    def service(self, session: Session) -> None:
        if not session.lock.acquire(blocking=False):
            return  # inside a transport call, which services its own connection
        try:
            for which in ("connection", "publisher"):
                connection = getattr(session, which)
                if connection is None:
                    continue
                try:
                    # Read what arrived (heartbeats, deliveries, confirms), then send ours.
                    for _ in range(self.transport.prefetch + 16):
                        connection.drain_events(timeout=0)
                except TimeoutError:
                    pass
                except Exception as exc:
                    self._dead(session, which, exc)
                    continue
                try:
                    connection.heartbeat_check()
                except Exception as exc:
                    self._dead(session, which, exc)
        finally:
            session.lock.release()

    def _dead(self, session: Session, which: str, exc: BaseException) -> None:
        logger.warning(
            "a %s connection to %s is lost (%s); it is replaced at its next use",
            "consumer" if which == "connection" else "publisher",
            self.transport.safe_url,
            self.transport._errors.detail(exc),
        )
        if which == "connection":
            session.drop_consumers()
        else:
            session.drop_publisher()

    def close(self) -> None:
        heartbeats, self._heartbeats = self._heartbeats, None
        if heartbeats is not None:
            heartbeats.stop()


class _Coalescer:
    """What py-amqp's frame writer of one connection writes to: the socket, or inside
    :meth:`held` a list, sent in one write when the block ends (nothing is sent if it raises).

    The frame writer hands over a buffer it reuses for the next frame, so each is copied.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.chunks: list[bytes] | None = None

    def write(self, data: Any) -> None:
        if self.chunks is None:
            self.transport.write(data)
        else:
            self.chunks.append(bytes(data))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.chunks = []
        try:
            yield
        except BaseException:
            self.chunks = None
            raise
        chunks, self.chunks = self.chunks, None
        if chunks:
            self.transport.write(b"".join(chunks))


class _Heartbeats:
    """A thread servicing every session of one transport every quarter heartbeat.

    It holds the transport weakly, and ends with it.
    """

    def __init__(self, transport: KombuTransport, heartbeat: float) -> None:
        self._transport = weakref.ref(transport)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(max(0.25, heartbeat / 4),),
            name="balog-kombu-heartbeats",
            daemon=True,
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            transport = self._transport()
            if transport is None or transport._closed:
                return
            for session in transport._all_sessions():
                try:
                    transport._broker.service(session)
                except Exception:  # never let the thread die; the next round tries again
                    logger.exception("servicing heartbeats failed")
            del transport

    def stop(self) -> None:
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)

"""Kombu transport: RabbitMQ, Redis and any other broker kombu speaks, by URL.

One topic is one durable queue, reached through the default exchange (the routing key is the
queue's name). Bodies travel as raw bytes with ``content_type=application/json``; nothing here ever
runs a kombu serializer or decompressor on a received message. What arrives on a topic and cannot
be handed over as a body (another content type, a ``compression`` header, a Redis list entry that
is not kombu's JSON wrapper) is returned by :meth:`KombuTransport.receive` as a delivery marked
``refused``, with the bytes as they arrived; the engine dead-letters it.

The transport moves bodies and reports what it saw; the engine decides. It has two broker
families, each in its own module:

- AMQP through py-amqp (``amqp://``, ``amqps://``): :mod:`balog.transports._kombu_amqp`. Acks in
  batches (``ack_many``, one ``basic.ack`` with ``multiple``), retry delays in TTL holding queues,
  publisher confirms, heartbeats kept from a background thread;
- kombu's virtual transports (``redis://``, ``sentinel://``, ``memory://``, ...):
  :mod:`balog.transports._kombu_virtual`. No delay of their own (the engine holds a retry for its
  delay); on Redis the lease is kombu's visibility timeout.

**Consuming is push-style.** :meth:`KombuTransport.receive` starts, once per thread and topic, a
consumer (``basic.consume``) with a prefetch limit (``basic.qos``), drains the connection's events
into a local buffer and hands out up to ``max_messages`` of it.

**Threads.** kombu connections and channels are not thread-safe, so every thread that uses the
transport gets its own *session*: one connection for consuming (one channel per topic) and one for
publishing, created on first use and guarded by a lock. A delivery is settled on the channel that
received it. :meth:`KombuTransport.close_thread` ends the calling thread's session: its channels
close, so the broker takes back what was prefetched. :meth:`KombuTransport.close` ends every
session. Closing never waits more than a couple of seconds on a dead connection.

**Connections.** A broker or connection error ends the session's consumer connection and raises
:class:`~balog.exceptions.TransportConnectionError`; the next call reconnects. A delivery received
on a connection that has since been lost raises :class:`~balog.exceptions.LeaseExpired` when
settled: the broker gives it out again. Publishing retries connection errors ``max_retries``
times, then raises. Credentials refused are :class:`~balog.exceptions.AuthenticationError`, a queue
declared with other arguments :class:`~balog.exceptions.TopicMismatch` (both fatal); no secret of
the URL or of ``transport_options`` appears in a repr, an error or a log line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import kombu as _kombu
from kombu.transport import virtual as _virtual

from balog._secrets import Scrubber, mask_url
from balog._text import clip
from balog.exceptions import (
    ConfigurationError,
    LeaseExpired,
    SendError,
    TransportError,
)
from balog.transports._kombu_amqp import DELAY_QUEUE_INFIX, AMQPBroker
from balog.transports._kombu_common import (
    CLOSE_TIMEOUT,
    Broker,
    Errors,
    Handle,
    Session,
    Stream,
    bounded,
    discard,
    lost,
)
from balog.transports._kombu_virtual import RedisBroker, VirtualBroker
from balog.transports.base import DeadLetter, Delivery, Transport, dead_letter_headers

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "DELAY_QUEUE_INFIX",
    "KombuTransport",
    "is_redis_url",
]

logger = logging.getLogger("balog.transports.kombu")

# kombu ships partial annotations only; treat its API as dynamically typed here.
kombu: Any = _kombu

ACCEPTED_CONTENT_TYPES = ("application/json",)
"""Content types a consumer accepts; anything else is refused without being decoded."""

DEFAULT_PREFETCH = 100
DEFAULT_HEARTBEAT = 30.0
DEFAULT_LEASE = 30.0
_AMQP_SCHEMES = {"amqp", "amqps", "pyamqp"}
_REDIS_SCHEMES = {"redis", "rediss", "redis+socket", "sentinel"}


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else url.lower()


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names kombu's Redis transport (which has a visibility timeout)."""
    return _scheme(url) in _REDIS_SCHEMES


def _query_password(url: str) -> str:
    """``redis://host/0?password=x`` spelt as kombu reads it: ``redis://:x@host/0``.

    redis-py accepts a password in the query; kombu fails on it, so it is moved into the URL.
    """
    head, sep, query = url.partition("?")
    if not sep or "password=" not in query:
        return url
    pairs = parse_qsl(query, keep_blank_values=True)
    passwords = [v for k, v in pairs if k == "password"]
    rest = [(k, v) for k, v in pairs if k != "password"]
    scheme, _, location = head.partition("://")
    authority, slash, path = location.partition("/")
    user, at, host = authority.rpartition("@")
    if len(passwords) > 1 or (at and ":" in user):
        raise ConfigurationError(f"the password is given twice in {mask_url(url)}")
    userinfo = f"{user}:{quote(passwords[0], safe='')}@"
    url = f"{scheme}://{userinfo}{host}{slash}{path}"
    return f"{url}?{urlencode(rest)}" if rest else url


class KombuTransport(Transport):
    """A :class:`~balog.transports.base.Transport` over kombu, configured by a broker URL.

    ``url``: any kombu URL (``amqp://guest:guest@127.0.0.1:5672//``, ``redis://127.0.0.1:6379/0``,
    ``memory://``); on Redis a ``?password=`` in the query is accepted as redis-py accepts it.
    ``prefetch``: unacked messages a consumer may hold (per thread and topic).
    ``transport_options``: passed to kombu (``visibility_timeout`` or ``global_keyprefix`` on
    Redis, ``client_properties`` on AMQP, ...); a key the broker's kombu transport does not read
    is an error. ``confirm_publish``: on AMQP, :meth:`send` returns once the broker confirmed every
    body (a whole batch is confirmed at once). ``heartbeat``: AMQP heartbeat in seconds (0: off),
    kept from a background thread while handlers run, so a connection that died silently is
    noticed within two heartbeats. ``connect_timeout``: seconds per connection attempt (and the
    bound of :meth:`verify`). ``max_retries``: connection retries of a publish or a connect before
    :class:`~balog.exceptions.TransportConnectionError`. ``confirm_timeout``: seconds to wait for
    publisher confirms. ``max_body_size``: largest body :meth:`send` accepts (``None``: the
    broker's limit). ``accept``: content types consumed. ``queue_arguments``: AMQP arguments of the
    topic and dead-letter queues (``{"x-queue-type": "quorum"}``, ...). ``lease``: on Redis, the
    visibility timeout (seconds an unacked message stays with its receiver) unless
    ``transport_options`` set one; ignored elsewhere.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        prefetch: int = DEFAULT_PREFETCH,
        transport_options: Mapping[str, Any] | None = None,
        confirm_publish: bool = True,
        heartbeat: float = DEFAULT_HEARTBEAT,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        confirm_timeout: float = 30.0,
        max_body_size: int | None = None,
        accept: Sequence[str] = ACCEPTED_CONTENT_TYPES,
        queue_arguments: Mapping[str, Any] | None = None,
        lease: float | None = DEFAULT_LEASE,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError("url must be a kombu URL such as amqp://host//")
        if prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        if heartbeat < 0:
            raise ConfigurationError("heartbeat must be 0 (off) or more")
        if connect_timeout <= 0:
            raise ConfigurationError("connect_timeout must be positive")
        if lease is not None and lease <= 0:
            raise ConfigurationError("lease must be positive")
        if url.rstrip("/") == "memory:":
            url = "memory://localhost//"  # kombu warns about a memory URL without a host
        self.url = url
        self.safe_url = mask_url(url)
        self.scheme = _scheme(url)
        self.transport_options = dict(transport_options or {})
        self._scrub = Scrubber.for_options({"url": url, "options": self.transport_options})
        self._kombu_url = _query_password(url) if self.scheme in _REDIS_SCHEMES else url
        try:
            transport_cls = kombu.Connection(self._kombu_url).get_transport_cls()
        except Exception as exc:  # kombu rejects the URL, or its transport is not installed
            raise ConfigurationError(
                f"cannot use kombu URL {self.safe_url}: {clip(self._scrub(str(exc)))}"
            ) from None
        self.prefetch = prefetch
        self.confirm_publish = confirm_publish
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.confirm_timeout = confirm_timeout
        self.accept = tuple(a.lower() for a in accept)
        self.queue_arguments = dict(queue_arguments or {})
        self.lease = lease
        self._broker = self._make_broker(transport_cls)
        self.transport_options = self._broker.check_options(self.transport_options)
        self.capabilities = self._broker.capabilities(max_body_size)
        self._errors = Errors(self.safe_url, self._scrub, tuple(transport_cls.connection_errors))
        self._local = threading.local()
        self._sessions: list[Session] = []
        self._sessions_lock = threading.Lock()
        self._closed = False

    def _make_broker(self, transport_cls: type) -> Broker:
        if self.scheme in _AMQP_SCHEMES:
            return AMQPBroker(self)
        if not issubclass(transport_cls, _virtual.Transport):
            raise ConfigurationError(
                f"kombu's {self.scheme}:// transport is neither AMQP (py-amqp) nor a virtual "
                "transport; balog supports amqp://, redis:// and kombu's virtual transports"
            )
        if self.scheme in _REDIS_SCHEMES:
            return RedisBroker(self, transport_cls)
        return VirtualBroker(self, transport_cls)

    def __repr__(self) -> str:
        return f"KombuTransport(url={self.safe_url!r})"

    @property
    def visibility_timeout(self) -> float | None:
        """On Redis, seconds an unacked message stays with its receiver; ``None`` elsewhere."""
        return self._broker.visibility_timeout if isinstance(self._broker, RedisBroker) else None

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self, *, retries: int | None = None) -> Any:
        """A new connection, established; bounded retries, never forever."""
        retries = self.max_retries if retries is None else retries
        connection = kombu.Connection(
            self._kombu_url,
            connect_timeout=self.connect_timeout,
            **self._broker.connection_options(),
        )
        with self._errors.boundary("opening a connection"):
            try:
                connection.ensure_connection(
                    max_retries=retries,
                    interval_start=0.2,
                    interval_step=0.5,
                    interval_max=2.0,
                    timeout=self.connect_timeout * (retries + 1),
                )
            except Exception:
                discard(connection, graceful=False)
                raise
        self._broker.connected(connection)
        return connection

    def _queue(self, name: str, arguments: Mapping[str, Any] | None = None) -> Any:
        if arguments is None:
            arguments = self.queue_arguments
        return kombu.Queue(
            name,
            exchange=kombu.Exchange(""),
            routing_key=name,
            durable=True,
            auto_delete=False,
            queue_arguments=dict(arguments) if arguments else None,
        )

    def _session(self) -> Session:
        if self._closed:
            raise TransportError(f"{self!r} is closed")
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            session = Session(self)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _all_sessions(self) -> list[Session]:
        with self._sessions_lock:
            return list(self._sessions)

    def _log_retry(self, what: str, exc: BaseException, attempt: int, delay: float) -> None:
        logger.warning(
            "%s on %s failed (%s); retry %d of %d in %.1fs",
            what,
            self.safe_url,
            self._errors.detail(exc),
            attempt,
            self.max_retries,
            delay,
        )

    # -- sending --------------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        bodies: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.check_body_sizes(bodies)
        if not bodies:
            return
        session = self._session()
        with session.lock:
            self._publish(session, topic, bodies, dict(headers or {}))

    def _publish(
        self,
        session: Session,
        queue_name: str,
        bodies: Sequence[bytes],
        headers: Mapping[str, Any],
        arguments: Mapping[str, Any] | None = None,
        redeclare: bool = False,
    ) -> None:
        """Publish ``bodies`` to ``queue_name`` (declared first), with bounded retries."""
        attempt = 0
        pending = list(range(len(bodies)))  # indexes into bodies not yet confirmed
        what = f"publishing to {queue_name!r}"
        while True:
            try:
                producer = self._broker.publisher(session)
                if redeclare or queue_name not in session.declared:
                    self._queue(queue_name, arguments)(producer.channel).declare()
                    session.declared.add(queue_name)
                self._broker.publish(session, queue_name, [bodies[i] for i in pending], headers)
                return
            except SendError as exc:
                # The broker nacked some (a quorum queue whose leader is still being elected
                # does): send those again, a bounded number of times, then report them.
                pending = [pending[i] for i in exc.failed]
                if attempt >= self.max_retries:
                    raise SendError(
                        f"the broker refused {len(pending)} of {len(bodies)} message(s) for "
                        f"{queue_name!r}",
                        pending,
                    ) from exc
                attempt += 1
                delay = min(2.0, 0.1 * 2**attempt)
                logger.warning(
                    "the broker refused %d message(s) for %s; retry %d of %d in %.1fs",
                    len(pending),
                    queue_name,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
            except Exception as exc:
                session.drop_publisher()
                error = self._errors.chained(what, exc)
                if getattr(error, "fatal", False) or not self._errors.is_connection_error(exc):
                    raise error
                if attempt >= self.max_retries:
                    raise error
                attempt += 1
                delay = min(2.0, 0.1 * 2**attempt)
                self._log_retry(what, exc, attempt, delay)
                time.sleep(delay)

    # -- receiving ------------------------------------------------------------------------------

    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        session = self._session()
        deadline = time.monotonic() + max(wait, 0.0)
        with session.lock:
            try:
                stream = self._stream(session, topic)
                self._broker.fill(stream, max_messages, max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                session.drop_consumers()
                raise self._errors.chained(f"receiving from {topic!r}", exc)
            deliveries: list[Delivery] = []
            while stream.buffer and len(deliveries) < max_messages:
                deliveries.append(self._broker.delivery(stream, stream.buffer.popleft(), lease))
            if deliveries:
                with self._errors.boundary("setting leases"):
                    self._broker.after_receive(deliveries, lease)
            return deliveries

    def _stream(self, session: Session, topic: str) -> Stream:
        stream = session.streams.get(topic)
        if stream is not None:
            return stream
        self._broker.on_consuming()
        channel = session.consumer_connection().channel()
        try:
            self._broker.prepare_channel(channel)
            stream = Stream(topic=topic, channel=channel, session=session, tag=uuid.uuid4().hex)
            queue = self._queue(topic)(channel)
            queue.declare()
            channel.basic_qos(0, self.prefetch, False)
            self._broker.consume(stream, queue)
        except Exception:
            with contextlib.suppress(Exception):
                channel.close()
            raise
        session.streams[topic] = stream
        return stream

    # -- settling -------------------------------------------------------------------------------

    def _handle(self, delivery: Delivery, what: str) -> Handle:
        handle = delivery.handle
        if not isinstance(handle, Handle) or handle.stream.session.owner is not self:
            raise TransportError(f"{what}: not a delivery of this transport")
        return handle

    @contextlib.contextmanager
    def _settling(self, delivery: Delivery, what: str) -> Iterator[Handle]:
        """Hold the delivery's session while settling it; a lost connection is LeaseExpired."""
        handle = self._handle(delivery, what)
        session = handle.stream.session
        with session.lock:
            if not handle.stream.alive:
                raise lost(what, delivery)
            try:
                yield handle
            except TransportError:
                raise
            except Exception as exc:
                if self._errors.is_connection_error(exc):
                    session.drop_consumers()
                    raise LeaseExpired(
                        self._scrub(f"{what} of message {delivery.message_id} failed: {exc}")
                    ) from exc
                raise self._errors.chained(f"{what} of message {delivery.message_id}", exc)
            self._broker.forget(handle)

    def ack(self, delivery: Delivery) -> None:
        """Ack the message; sent when this returns."""
        with self._settling(delivery, "ack") as handle:
            self._broker.ack(handle)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Ack a batch: on AMQP one ``basic.ack`` with ``multiple`` where that acks exactly the
        batch, on Redis one pipeline; sent when this returns."""
        if not self.capabilities.batch_ack:
            return super().ack_many(deliveries)
        return self._broker.ack_many(deliveries)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        """Send the message again with its ``balog-attempts`` header one higher, then ack it.

        On AMQP a delay goes through a TTL holding queue; kombu's virtual transports cannot
        delay (``capabilities.delay`` is false) and requeue at once. If sending fails, this
        raises and the message stays unsettled with its receiver.
        """
        with self._settling(delivery, "nack") as handle:
            self._broker.nack(delivery, handle, delay)

    def release(self, delivery: Delivery) -> None:
        """Requeue the message as it was: the release does not count as an attempt.

        Where leases do not expire (AMQP, memory), a requeue that fails closes the channel that
        holds the message instead, and the broker takes it back (with the other messages
        unsettled on that channel); elsewhere the failure is raised and the lease brings the
        message back.
        """
        if self.capabilities.lease_expiry:
            with self._settling(delivery, "release") as handle:
                self._broker.requeue(handle)
            return
        handle = self._handle(delivery, "release")
        with handle.stream.session.lock:
            if not handle.stream.alive:
                raise lost("release", delivery)
            try:
                self._broker.requeue(handle)
            except Exception as exc:
                self._hand_back(delivery, exc)
            else:
                self._broker.forget(handle)

    def _hand_back(self, delivery: Delivery, exc: BaseException) -> None:
        """Close the channel holding ``delivery`` (or, failing that, its connection)."""
        handle: Handle = delivery.handle
        stream, session = handle.stream, handle.stream.session
        logger.warning(
            "could not release message %s on %s (%s); closing its channel so that the broker "
            "takes it back, with the other %d message(s) unsettled on it",
            delivery.message_id,
            delivery.topic,
            self._errors.detail(exc),
            max(0, len(stream.outstanding) - 1),
        )
        if session.streams.get(stream.topic) is stream:
            del session.streams[stream.topic]
        stream.alive = False
        stream.buffer.clear()
        stream.outstanding.clear()
        try:
            with bounded(session.connection, CLOSE_TIMEOUT):
                self._broker.close_stream(stream)
        except Exception:
            session.drop_consumers()

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        if not self.capabilities.lease_extension:
            super().extend_lease(delivery, lease)
        with self._errors.boundary("extending a lease"):
            self._broker.extend_lease([delivery], lease)

    # -- dead letters and administration ---------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Send the body, as it arrived, to the dead-letter queue with the reason; then ack.

        No size check: what arrived is kept whatever its size.
        """
        session = self._session()
        with session.lock:
            self._publish(
                session,
                self.dead_letter_topic(delivery.topic),
                [delivery.body],
                dead_letter_headers(delivery, reason),
            )
        self.ack(delivery)

    @contextlib.contextmanager
    def _admin_channel(self, what: str, *, retries: int | None = None) -> Iterator[Any]:
        """A short-lived connection: what it took unacked goes back when it closes."""
        with self._errors.boundary(what):
            connection = self._connect(retries=retries)
            try:
                channel = connection.channel()
                self._broker.prepare_channel(channel)
                try:
                    yield channel
                finally:
                    self._broker.give_back(channel)
            finally:
                discard(connection, graceful=True)

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """List ``topic``'s dead letters without removing them (``basic.get``, then requeue)."""
        found: list[DeadLetter] = []
        with self._admin_channel(f"listing dead letters of {topic!r}") as channel:
            name = self.dead_letter_topic(topic)
            self._queue(name)(channel).declare()
            while len(found) < limit:
                message = self._broker.get(channel, name)
                if message is None:
                    break
                body, headers, message_id = self._broker.read(message)
                found.append(
                    DeadLetter.from_headers(headers, topic=topic, body=body, message_id=message_id)
                )
        return found

    def replay_dead_letters(self, topic: str, *, limit: int | None = None) -> int:
        moved = 0
        session = self._session()
        with session.lock, self._admin_channel(f"replaying dead letters of {topic!r}") as channel:
            name = self.dead_letter_topic(topic)
            self._queue(name)(channel).declare()
            while limit is None or moved < limit:
                message = self._broker.get(channel, name)
                if message is None:
                    break
                body, _, _ = self._broker.read(message)
                self._publish(session, topic, [body], {})
                channel.basic_ack(message.delivery_tag)
                moved += 1
        return moved

    def purge(self, topic: str) -> int:
        with self._admin_channel(f"purging {topic!r}") as channel:
            queue = self._queue(topic)(channel)
            queue.declare()
            return int(queue.purge() or 0)

    def delete(self, topic: str) -> None:
        """Delete ``topic``'s queue and its dead-letter queue from the broker."""
        with self._admin_channel(f"deleting {topic!r}") as channel:
            for name in (topic, self.dead_letter_topic(topic)):
                with contextlib.suppress(Exception):
                    self._queue(name)(channel).delete()

    def size(self, topic: str) -> int:
        """Messages ready on ``topic`` (not counting those delivered and not yet acked)."""
        with self._admin_channel(f"sizing {topic!r}") as channel:
            declared = self._queue(topic)(channel).queue_declare()
            return int(declared.message_count)

    def verify(self, topic: str) -> None:
        """Connect and declare ``topic``'s queue and its dead-letter queue, within about
        ``connect_timeout`` seconds, with no retry: a refused login
        (:class:`~balog.exceptions.AuthenticationError`) or a queue that exists with other
        arguments (:class:`~balog.exceptions.TopicMismatch`) is found when the engine starts."""
        self._broker.on_consuming()
        with self._admin_channel(f"verifying topic {topic!r}", retries=0) as channel:
            for name in (topic, self.dead_letter_topic(topic)):
                self._queue(name)(channel).declare()

    # -- closing --------------------------------------------------------------------------------

    def close_thread(self) -> None:
        """End the calling thread's session: its channels close (the broker takes back what it
        prefetched and never settled) and its connections close. The thread may use the
        transport again."""
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            return
        self._local.session = None
        with self._sessions_lock:
            if session in self._sessions:
                self._sessions.remove(session)
        with session.lock:
            session.close(self._broker)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            with contextlib.suppress(Exception), session.lock:
                session.close(self._broker)
        self._broker.close()

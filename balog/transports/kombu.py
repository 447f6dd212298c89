"""Kombu transport: RabbitMQ, Redis and any other broker kombu speaks, by URL.

One topic is one durable queue, reached through the default exchange (the routing key is the
queue's name). Bodies travel as raw bytes with ``content_type=application/json``; nothing here ever
runs a kombu serializer on a received message. A message whose content type is not accepted
(pickle, YAML, ...) is moved to the topic's dead-letter queue, its body untouched and undecoded.

**Consuming is push-style.** :meth:`KombuTransport.receive` starts, once per thread and topic, a
kombu ``Consumer`` (``basic.consume``) with a prefetch limit (``basic.qos``), drains the
connection's events into a local buffer and hands out up to ``max_messages`` of it.

**Threads.** kombu connections and channels are not thread-safe, so every thread that uses the
transport gets its own *session*: one connection for consuming (one channel per topic) and one for
publishing, created on first use and guarded by a lock. A delivery is settled on the channel that
received it; acking from another thread is safe (the lock serialises it) but waits for that
thread's current call. :meth:`KombuTransport.close_thread` ends the calling thread's session:
buffered messages are requeued and its channels closed, so the broker takes back what was
prefetched. :meth:`KombuTransport.close` ends every session.

**Retries and delays.** AMQP has no per-message delay: ``nack(delay=...)`` republishes the body
with its ``balog-attempts`` header one higher to a holding queue with a per-queue TTL that
dead-letters back into the topic's queue (``<topic>.balog-delay.<ms>``, removed by the broker once
unused); then it acks the original. On other brokers (Redis, memory) the failed message is held,
still unacked, by the session that received it and republished when the delay is over (or when
the session closes); held messages take up prefetch slots.

**Connections.** A broker or connection error ends the session's consumer connection and raises
:class:`~balog.exceptions.TransportConnectionError`; the next call reconnects. A delivery received
on a connection that has since been lost raises :class:`~balog.exceptions.LeaseExpired` when
settled: the broker gives it out again. Publishing retries connection errors ``max_retries``
times, then raises: it never blocks forever.

Credentials never appear in a repr, a log line or an error: URLs are shown as kombu masks them
(``amqp://guest:**@127.0.0.1:5672//``) and the password is scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import kombu as _kombu
from kombu.exceptions import OperationalError as _KombuOperationalError
from kombu.transport import virtual as _virtual

from balog._text import clip
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    SendError,
    TopicNotFound,
    TransportConnectionError,
    TransportError,
)
from balog.transports.base import (
    ATTEMPTS_HEADER,
    REASON_HEADER,
    SOURCE_TOPIC_HEADER,
    Capabilities,
    DeadLetter,
    Delivery,
    Transport,
)

__all__ = ["ACCEPTED_CONTENT_TYPES", "DELAY_QUEUE_INFIX", "KombuTransport", "is_redis_url"]

logger = logging.getLogger("balog.transports.kombu")

# kombu ships partial annotations only; treat its API as dynamically typed here.
kombu: Any = _kombu
_VirtualQoS: Any = _virtual.QoS

ACCEPTED_CONTENT_TYPES = ("application/json",)
"""Content types a consumer accepts; anything else is dead-lettered without being decoded."""

DELAY_QUEUE_INFIX = ".balog-delay."
"""AMQP holding queues for delayed retries are named ``<topic>.balog-delay.<milliseconds>``."""

CONTENT_TYPE = "application/json"
DEFAULT_PREFETCH = 100
DEFAULT_REDIS_VISIBILITY_TIMEOUT = 3600.0
_ACK_DELAY = 0.2  # longest an ack is held back to be sent with others
_NOWAIT = 0.05  # how long a receive with wait=0 lets messages already on their way arrive
PERSISTENT = 2
_AMQP_SCHEMES = {"amqp", "amqps", "pyamqp", "librabbitmq"}
_REDIS_SCHEMES = {"redis", "rediss", "redis+socket", "sentinel"}


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else url.lower()


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names kombu's Redis transport (which has a visibility timeout)."""
    return _scheme(url) in _REDIS_SCHEMES


def _delay_bucket(delay: float) -> int:
    """Round a delay up to one of a few values (steps of 2**(1/4) from 100 ms), in milliseconds.

    Each distinct value is one holding queue on AMQP; jittered delays fall into a handful.
    """
    if delay <= 0.1:
        return 100
    step = math.ceil(4 * math.log2(delay / 0.1) - 1e-9)
    return round(100 * 2 ** (step / 4))


def _str_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """Keep the scalar headers as strings (AMQP tables may hold lists, such as ``x-death``)."""
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            out[str(key)] = value.decode("utf-8", "replace")
        elif isinstance(value, (str, int, float, bool)):
            out[str(key)] = str(value)
    return out


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return b""


def _attempts(headers: Mapping[str, Any]) -> int:
    try:
        return max(0, int(headers.get(ATTEMPTS_HEADER, 0) or 0))
    except (TypeError, ValueError):
        return 0


@contextlib.contextmanager
def _coalesced_writes(connection: Any) -> Iterator[None]:
    """AMQP: send the frames of a whole batch of publishes in one socket write, not one each.

    py-amqp writes each message with one ``sendall``; inside this block its transport's writer
    collects the frames instead, and they go out together when the block ends (nothing goes out
    if the block raises). Where py-amqp's transport does not look as expected, nothing changes.
    """
    transport = getattr(getattr(connection, "connection", None), "transport", None)
    if transport is None or not callable(getattr(transport, "_write", None)):
        yield
        return
    own = vars(transport)
    had, original = "_write" in own, own.get("_write")
    chunks: list[bytes] = []
    transport._write = lambda data: chunks.append(bytes(data))  # the frame buffer is reused
    try:
        yield
    finally:
        if had:
            transport._write = original
        else:
            del transport._write
    if chunks:
        transport.write(b"".join(chunks))


def _discard(connection: Any) -> None:
    """Close ``connection``, even a dead one: a graceful release first, and when that fails
    (the broker already closed it) kombu's ``collect()``, which closes the socket without
    speaking the protocol, so no socket is left for the garbage collector."""
    try:
        connection.release()
    except Exception:
        with contextlib.suppress(Exception):
            connection.collect()


@dataclasses.dataclass(eq=False)
class _Handle:
    """What a :class:`~balog.transports.base.Delivery` carries: the kombu message and its place."""

    message: Any
    stream: _Stream
    headers: dict[str, Any]


@dataclasses.dataclass(eq=False)
class _Stream:
    """One topic consumed by one session: a channel, its consumer, and the received messages."""

    topic: str
    channel: Any
    consumer: Any
    session: _Session
    buffer: deque[Any] = dataclasses.field(default_factory=deque)
    alive: bool = True
    # Acks held back and sent together at the next receive (or when the stream closes):
    # "amqp": one basic.ack with multiple=True where the tags allow (``outstanding`` holds the tags
    # received and not yet settled); "redis": one pipeline removing them from kombu's unacked
    # index; None: each ack is sent at once.
    deferred: str | None = None
    outstanding: set[Any] = dataclasses.field(default_factory=set)
    acks: list[Any] = dataclasses.field(default_factory=list)
    acks_since: float = 0.0
    ack_batch: int = 1

    def ack_later(self, tag: Any) -> None:
        if not self.acks:
            self.acks_since = time.monotonic()
        self.outstanding.discard(tag)
        self.acks.append(tag)

    def acks_due(self) -> bool:
        """Whether the held acks should go now: enough of them, or held long enough."""
        return bool(self.acks) and (
            len(self.acks) >= self.ack_batch or time.monotonic() - self.acks_since >= _ACK_DELAY
        )

    def received(self, message: Any) -> None:
        self.buffer.append(message)
        if self.deferred == "amqp":
            self.outstanding.add(message.delivery_tag)

    def flush_acks(self) -> None:
        """Send the acks held back; raises the backend's error when the channel is gone."""
        if not self.acks:
            return
        acks, self.acks = self.acks, []
        if self.deferred == "redis":
            qos = self.channel.qos
            with qos.pipe_or_acquire() as pipe:
                for tag in acks:
                    qos._remove_from_indices(tag, pipe)
                pipe.execute()
            for tag in acks:
                _VirtualQoS.ack(qos, tag)  # kombu's own bookkeeping: frees the prefetch slot
            return
        top = max(acks)
        if not self.outstanding or min(self.outstanding) > top:
            self.channel.basic_ack(top, multiple=True)
        else:
            for tag in acks:
                self.channel.basic_ack(tag)


class _Session:
    """One thread's connections. Every use holds ``lock``."""

    def __init__(self, owner: KombuTransport) -> None:
        self.owner = owner
        self.lock = threading.RLock()
        self.connection: Any = None
        self.streams: dict[str, _Stream] = {}
        self.publisher: Any = None
        self.producer: Any = None
        self.declared: set[str] = set()
        self.confirm = _Confirms()
        self.held: list[tuple[float, int, _Handle]] = []
        self.seq = itertools.count()
        # Message ids: unique per session, cheaper than a uuid4 per message.
        self.id_prefix = uuid.uuid4().hex[:16] + "-"
        self.ids = itertools.count(1)

    # -- consuming ------------------------------------------------------------------------------

    def consumer_connection(self) -> Any:
        if self.connection is None:
            self.connection = self.owner._connect()
        return self.connection

    def stream(self, topic: str) -> _Stream:
        stream = self.streams.get(topic)
        if stream is not None:
            return stream
        connection = self.consumer_connection()
        channel = connection.channel()
        try:
            queue = self.owner._queue(topic)
            stream = _Stream(
                topic=topic,
                channel=channel,
                consumer=None,
                session=self,
                deferred=self.owner._ack_batching(channel),
                ack_batch=max(1, min(self.owner.prefetch // 2, 100)),
            )
            consumer = kombu.Consumer(
                channel,
                queues=[queue],
                no_ack=False,
                accept=list(self.owner.accept),
                on_message=stream.received,
                on_decode_error=lambda message, exc: stream.received(message),
                auto_declare=True,
            )
            consumer.qos(prefetch_count=self.owner.prefetch)
            consumer.consume()
            stream.consumer = consumer
        except Exception:
            with contextlib.suppress(Exception):
                channel.close()
            raise
        self.streams[topic] = stream
        return stream

    def drop_consumers(self) -> None:
        """Forget the consumer connection after an error; its unacked messages go back."""
        for stream in self.streams.values():
            stream.alive = False
            stream.buffer.clear()
            stream.acks.clear()
        self.streams.clear()
        connection, self.connection = self.connection, None
        if connection is not None:
            _discard(connection)

    def close_stream(self, stream: _Stream) -> None:
        """Give back everything buffered, then close the channel (the broker requeues the rest)."""
        self.streams.pop(stream.topic, None)
        with contextlib.suppress(Exception):
            stream.flush_acks()
        stream.alive = False
        while stream.buffer:
            message = stream.buffer.popleft()
            with contextlib.suppress(Exception):
                message.requeue()
        if getattr(stream.channel, "do_restore", True) is False:
            # kombu's memory transport drops unacked messages when a channel closes; give back
            # the ones handed out and never settled, as a broker would.
            with contextlib.suppress(Exception):
                stream.channel.qos.restore_unacked()
        with contextlib.suppress(Exception):
            stream.channel.close()

    # -- publishing -----------------------------------------------------------------------------

    def publishing(self) -> Any:
        if self.producer is None:
            connection = self.owner._connect()
            try:
                channel = connection.channel()
                if self.owner._amqp and self.owner.confirm_publish:
                    self.confirm = _Confirms()
                    channel.events["basic_ack"].add(self.confirm.on_ack)
                    channel.events["basic_nack"].add(self.confirm.on_nack)
                    channel.confirm_select()
                self.producer = kombu.Producer(channel, auto_declare=False)
            except Exception:
                with contextlib.suppress(Exception):
                    connection.release()
                raise
            self.publisher = connection
            self.declared = set()
        return self.producer

    def drop_publisher(self) -> None:
        publisher, self.publisher, self.producer = self.publisher, None, None
        self.declared = set()
        if publisher is not None:
            _discard(publisher)

    def close(self) -> None:
        for stream in list(self.streams.values()):
            self.close_stream(stream)
        self.drop_consumers()
        self.drop_publisher()


class _Confirms:
    """Publisher confirms of one AMQP channel: which delivery tags the broker acked or nacked."""

    def __init__(self) -> None:
        self.published = 0
        self.settled_upto = 0
        self.settled: set[int] = set()
        self.nacked: set[int] = set()

    def on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def on_nack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.nacked.update(
                t for t in range(self.settled_upto + 1, tag + 1) if t not in self.settled
            )
        else:
            self.nacked.add(tag)
        self._settle(tag, multiple)

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.settled_upto = max(self.settled_upto, tag)
        else:
            self.settled.add(tag)
        while self.settled_upto + 1 in self.settled:
            self.settled_upto += 1
            self.settled.discard(self.settled_upto)

    def done(self, last: int) -> bool:
        return self.settled_upto >= last


class KombuTransport(Transport):
    """A :class:`~balog.transports.base.Transport` over kombu, configured by a broker URL.

    ``url``: any kombu URL (``amqp://guest:guest@127.0.0.1:5672//``, ``redis://127.0.0.1:6379/0``,
    ``memory://``). ``prefetch``: unacked messages a consumer may hold (per thread and topic).
    ``transport_options``: passed to kombu (``visibility_timeout`` on Redis, ...).
    ``confirm_publish``: on AMQP, :meth:`send` returns once the broker confirmed every body (a
    whole batch is confirmed at once). ``heartbeat``: AMQP heartbeat in seconds (0: off; it must
    exceed the longest handler, since heartbeats are sent only between receives).
    ``connect_timeout``: seconds per connection attempt. ``max_retries``: connection retries of a
    publish or a connect before :class:`~balog.exceptions.TransportConnectionError`.
    ``confirm_timeout``: seconds to wait for publisher confirms. ``max_body_size``: largest body
    :meth:`send` accepts (``None``: the broker's limit). ``accept``: content types consumed.
    ``batch_acks``: hold acks back and send them together (one ``basic.ack`` with ``multiple``
    on AMQP, one pipeline on Redis) at the thread's next receive, at :meth:`flush_acks` or when
    the session closes; a crash before then redelivers them. Off by default; the kombu engine
    turns it on and flushes held acks within a fraction of a second. ``queue_arguments``: AMQP
    arguments of the topic and dead-letter queues (``{"x-queue-type": "quorum"}``, ...).
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        prefetch: int = DEFAULT_PREFETCH,
        transport_options: Mapping[str, Any] | None = None,
        confirm_publish: bool = True,
        heartbeat: float = 0.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        confirm_timeout: float = 30.0,
        max_body_size: int | None = None,
        accept: Sequence[str] = ACCEPTED_CONTENT_TYPES,
        batch_acks: bool = False,
        queue_arguments: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError("url must be a kombu URL such as amqp://host//")
        if prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        if url.rstrip("/") == "memory:":
            url = "memory://localhost//"  # kombu warns about a memory URL without a host
        self.url = url
        self.scheme = _scheme(url)
        try:
            probe = kombu.Connection(url)
            self.safe_url = probe.as_uri()
            self._password = probe.password or ""
        except Exception as exc:  # kombu rejects the URL or its transport is not installed
            raise ConfigurationError(
                f"cannot use kombu URL scheme {self.scheme!r}: {type(exc).__name__}"
            ) from None
        self._amqp = self.scheme in _AMQP_SCHEMES
        self._redis = self.scheme in _REDIS_SCHEMES
        self.prefetch = prefetch
        self.transport_options = dict(transport_options or {})
        self.confirm_publish = confirm_publish
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.confirm_timeout = confirm_timeout
        self.accept = tuple(accept)
        self.batch_acks = batch_acks
        self.queue_arguments = dict(queue_arguments or {})
        self.visibility_timeout: float | None = None
        if self._redis:
            self.visibility_timeout = float(
                self.transport_options.get("visibility_timeout", DEFAULT_REDIS_VISIBILITY_TIMEOUT)
            )
            # A restore sweep scans every 10th empty poll by default: make it each poll so that a
            # lost delivery comes back about when its lease ends.
            self.transport_options.setdefault("unacked_restore_throttle", 1)
        self.capabilities = Capabilities(
            max_body_size=max_body_size,
            lease_expiry=not (self._amqp or self.scheme == "memory"),
            lease_extension=self._redis,
            receive_count=False,
            ordering=False,
            delay=True,
        )
        self._local = threading.local()
        self._sessions: list[_Session] = []
        self._sessions_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"KombuTransport(url={self.safe_url!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password and self._password in text:
            text = text.replace(self._password, "**")
        return text

    def _error(self, what: str, exc: BaseException) -> TransportError:
        """The balog error for a backend error ``exc`` raised while doing ``what``."""
        detail = clip(self._scrub(f"{type(exc).__name__}: {exc}"))
        message = f"{what} on {self.safe_url} failed: {detail}"
        name = type(exc).__name__
        code = getattr(exc, "reply_code", None) or getattr(exc, "code", None)
        if name in {"AccessRefused", "AuthenticationError", "AuthenticationWrongNumberOfArgsError"}:
            return AuthenticationError(message)
        if code == 403 and name != "ConnectionForced":
            return AuthenticationError(message)
        if name == "NotFound" or code == 404:
            return TopicNotFound(message)
        if isinstance(exc, TransportError):
            return exc
        if self._is_connection_error(exc):
            return TransportConnectionError(message)
        return TransportError(message)

    def _is_connection_error(self, exc: BaseException) -> bool:
        if isinstance(exc, (OSError, _KombuOperationalError, EOFError)):
            return True
        return isinstance(exc, self._connection_errors())

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        """The backend's own connection error classes (py-amqp's, redis-py's, ...)."""
        cached: tuple[type[BaseException], ...] | None = getattr(self, "_error_types", None)
        if cached is None:
            probe = kombu.Connection(self.url, transport_options=self.transport_options)
            cached = tuple(probe.connection_errors)
            self._error_types = cached
        return cached

    @contextlib.contextmanager
    def _boundary(self, what: str) -> Iterator[None]:
        """Turn every backend error raised inside into a balog error, chained."""
        try:
            yield
        except TransportError:
            raise
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _connect(self) -> Any:
        """A new connection, established; bounded retries, never forever."""
        options: dict[str, Any] = {"connect_timeout": self.connect_timeout}
        if self._amqp:
            options["heartbeat"] = self.heartbeat
        connection = kombu.Connection(
            self.url, transport_options=dict(self.transport_options), **options
        )
        try:
            connection.ensure_connection(
                max_retries=self.max_retries,
                interval_start=0.2,
                interval_step=0.5,
                interval_max=2.0,
                timeout=self.connect_timeout * (self.max_retries + 1),
            )
        except Exception:
            with contextlib.suppress(Exception):
                connection.release()
            raise
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

    def _session(self) -> _Session:
        if self._closed:
            raise TransportError(f"{self!r} is closed")
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            session = _Session(self)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

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
        session: _Session,
        queue_name: str,
        bodies: Sequence[bytes],
        headers: Mapping[str, Any],
        arguments: Mapping[str, Any] | None = None,
        redeclare: bool = False,
    ) -> None:
        attempt = 0
        pending = list(range(len(bodies)))  # indexes into bodies not yet confirmed
        while True:
            try:
                producer = session.publishing()
                if redeclare or queue_name not in session.declared:
                    self._queue(queue_name, arguments)(producer.channel).declare()
                    session.declared.add(queue_name)
                self._publish_batch(
                    session, producer, queue_name, [bodies[i] for i in pending], headers
                )
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
                if not self._is_connection_error(exc) or attempt >= self.max_retries:
                    raise self._error(f"publishing to {queue_name!r}", exc) from exc
                attempt += 1
                delay = min(2.0, 0.1 * 2**attempt)
                logger.warning(
                    "publishing to %s on %s failed (%s); retry %d of %d in %.1fs",
                    queue_name,
                    self.safe_url,
                    clip(self._scrub(f"{type(exc).__name__}: {exc}")),
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)

    def _publish_batch(
        self,
        session: _Session,
        producer: Any,
        queue_name: str,
        bodies: Sequence[bytes],
        headers: Mapping[str, Any],
    ) -> None:
        def publish(body: bytes) -> None:
            producer.publish(
                bytes(body),
                routing_key=queue_name,
                exchange="",
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=PERSISTENT,
                headers=dict(headers),
                message_id=f"{session.id_prefix}{next(session.ids):x}",
                retry=False,
            )

        confirming = self._amqp and self.confirm_publish
        first = session.confirm.published + 1
        if not confirming and len(bodies) > 1 and producer.supports_batch_publish:
            with producer.batch():
                for body in bodies:
                    publish(body)
            return
        with _coalesced_writes(session.publisher if self._amqp and len(bodies) > 1 else None):
            for body in bodies:
                publish(body)
                if confirming:
                    session.confirm.published += 1
        if confirming:
            self._await_confirms(session, first, session.confirm.published)

    def _await_confirms(self, session: _Session, first: int, last: int) -> None:
        confirms = session.confirm
        deadline = time.monotonic() + self.confirm_timeout
        while not confirms.done(last):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no publisher confirm within {self.confirm_timeout}s")
            try:
                session.publisher.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        failed = sorted(t - first for t in confirms.nacked if first <= t <= last)
        confirms.nacked.difference_update(range(first, last + 1))
        if failed:
            raise SendError(f"the broker refused {len(failed)} of {last - first + 1}", failed)

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
        deliveries: list[Delivery] = []
        with session.lock:
            while not deliveries:
                try:
                    self._release_held(session, due_only=True)
                    stream = session.stream(topic)
                    if stream.acks_due():
                        stream.flush_acks()
                    remaining = max(0.0, deadline - time.monotonic())
                    if session.held:
                        # Wake when a held retry is due: republished late, Redis would restore
                        # the original too (a duplicate whose receive count did not grow).
                        remaining = min(remaining, max(0.0, session.held[0][0] - time.monotonic()))
                    self._fill(session, stream, max_messages, remaining)
                except TransportError:
                    raise
                except Exception as exc:
                    if self._is_connection_error(exc):
                        session.drop_consumers()
                    raise self._error(f"receiving from {topic!r}", exc) from exc
                if not stream.buffer:
                    if session.held and time.monotonic() < deadline:
                        continue
                    break
                while stream.buffer and len(deliveries) < max_messages:
                    message = stream.buffer.popleft()
                    delivery = self._delivery(session, stream, message, lease)
                    if delivery is not None:
                        deliveries.append(delivery)
                # Only quarantined messages so far: keep going, there may be more behind them.
            vt = self.visibility_timeout
            if deliveries and vt is not None and lease is not None and abs(lease - vt) > 0.001:
                self._set_leases(deliveries, lease)
            return deliveries

    def _fill(self, session: _Session, stream: _Stream, max_messages: int, wait: float) -> None:
        connection = session.connection
        if self._heartbeats():
            connection.heartbeat_check()
        if not stream.buffer:
            settled = wait > 0.0
            deadline = time.monotonic() + (wait if settled else _NOWAIT)
            while not stream.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if settled:
                        break
                    # A receive that does not wait still waits while the broker holds ready
                    # messages: a push consumer gets them a moment after they are ready.
                    settled = True
                    deadline = time.monotonic() + self._settle_time(stream)
                    continue
                try:
                    connection.drain_events(timeout=min(remaining, 1.0))
                except TimeoutError:
                    pass
        # Take what has already arrived without waiting for more. Only AMQP pushes a prefetch
        # window at once; kombu's virtual transports fetch one message per poll round trip.
        while self._amqp and stream.buffer and len(stream.buffer) < max_messages:
            before = len(stream.buffer)
            try:
                connection.drain_events(timeout=0)
            except TimeoutError:
                break
            if len(stream.buffer) == before:
                break

    def _settle_time(self, stream: _Stream) -> float:
        """How long a ``wait=0`` receive may wait for ready messages to be pushed to it."""
        try:
            declared = stream.consumer.queues[0](stream.channel).queue_declare(passive=True)
        except Exception:
            return 0.0
        return 1.0 if getattr(declared, "message_count", 0) else 0.0

    def _ack_batching(self, channel: Any) -> str | None:
        if not self.batch_acks:
            return None
        if self._amqp:
            return "amqp"
        qos = getattr(channel, "qos", None) if self._redis else None
        if isinstance(qos, _VirtualQoS) and hasattr(qos, "_remove_from_indices"):
            return "redis"
        return None

    def _heartbeats(self) -> bool:
        return self._amqp and bool(self.heartbeat)

    def _delivery(
        self, session: _Session, stream: _Stream, message: Any, lease: float | None
    ) -> Delivery | None:
        raw_headers = dict(message.headers or {})
        body = message.body
        if isinstance(body, str):  # py-amqp decodes bodies that declare a content encoding
            body = body.encode("utf-8")
        handle = _Handle(message=message, stream=stream, headers=raw_headers)
        content_type = (message.content_type or "").split(";")[0].strip().lower()
        properties = message.properties or {}
        message_id = str(properties.get("message_id") or message.delivery_tag)
        # Only explicit nacks count: a redelivery after a lost connection or a release does not
        # (the broker's "redelivered" flag cannot tell how many times, nor tell the two apart).
        attempts = _attempts(raw_headers)
        delivery = Delivery(
            topic=stream.topic,
            body=body,
            message_id=message_id,
            receive_count=attempts + 1,
            headers=_str_headers(raw_headers),
            handle=handle,
            lease=self._lease(lease),
        )
        reason = None
        if content_type and content_type not in self.accept:
            reason = f"content type {content_type!r} is not accepted (accepted: json)"
        elif message.errors:
            reason = "message could not be read: " + clip(str(message.errors[0][1]))
        elif not isinstance(body, bytes):
            reason = "message body is not bytes"
            delivery.body = repr(body).encode("utf-8", "replace")
        if reason is None:
            return delivery
        try:
            self.dead_letter(delivery, reason)
            logger.error("message %s on %s dead-lettered: %s", message_id, stream.topic, reason)
        except TransportError as exc:
            logger.error(
                "could not dead-letter message %s on %s (%s); it stays unacked",
                message_id,
                stream.topic,
                exc,
            )
        return None

    def _lease(self, lease: float | None) -> float | None:
        if not self.capabilities.lease_expiry:
            return None
        if self._redis:
            return lease if lease is not None else self.visibility_timeout
        return lease

    # -- settling -------------------------------------------------------------------------------

    def _settle(self, delivery: Delivery, what: str, action: Callable[[_Handle], None]) -> None:
        handle = delivery.handle
        if not isinstance(handle, _Handle):
            raise TransportError(f"{what}: not a delivery of this transport")
        session = handle.stream.session
        with session.lock:
            if not handle.stream.alive:
                raise LeaseExpired(
                    f"{what} of message {delivery.message_id}: its connection was lost; the "
                    "broker delivers it again"
                )
            try:
                action(handle)
            except TransportError:
                raise
            except Exception as exc:
                if self._is_connection_error(exc):
                    session.drop_consumers()
                    raise LeaseExpired(
                        self._scrub(f"{what} of message {delivery.message_id} failed: {exc}")
                    ) from exc
                raise self._error(f"{what} of message {delivery.message_id}", exc) from exc

    def ack(self, delivery: Delivery) -> None:
        """Ack the message (with ``batch_acks``, held back and sent with others)."""
        self._settle(delivery, "ack", self._ack)

    @staticmethod
    def _ack(handle: _Handle) -> None:
        stream = handle.stream
        if stream.deferred:
            stream.ack_later(handle.message.delivery_tag)
        else:
            handle.message.ack()

    def release(self, delivery: Delivery) -> None:
        """Requeue the message as it was: the release does not count as an attempt."""
        self._settle(delivery, "release", self._requeue)

    @staticmethod
    def _requeue(handle: _Handle) -> None:
        handle.stream.outstanding.discard(handle.message.delivery_tag)
        handle.message.requeue()

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        handle = delivery.handle
        if not isinstance(handle, _Handle):
            raise TransportError("nack: not a delivery of this transport")
        if not handle.stream.alive:
            raise LeaseExpired(f"nack of message {delivery.message_id}: its connection was lost")
        headers = dict(handle.headers)
        headers[ATTEMPTS_HEADER] = str(delivery.receive_count)
        headers.pop("redelivered", None)
        session = handle.stream.session
        with session.lock:
            if delay > 0 and self._amqp:
                ms = _delay_bucket(delay)
                holding = f"{delivery.topic}{DELAY_QUEUE_INFIX}{ms}"
                arguments = {
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": delivery.topic,
                    "x-expires": ms + 60_000,
                }
                # Redeclared on every use: "x-expires" counts from the last declare, so the queue
                # outlives every message published to it.
                self._publish(session, holding, [delivery.body], headers, arguments, True)
            elif delay > 0:
                if self._redis:
                    # Held unacked: keep kombu's restore sweep off it until well after the delay.
                    self._set_leases([delivery], delay + (self.visibility_timeout or 0.0))
                handle.headers = headers
                heapq.heappush(session.held, (time.monotonic() + delay, next(session.seq), handle))
                return
            else:
                self._publish(session, delivery.topic, [delivery.body], headers)
        self.ack(delivery)

    def _release_held(self, session: _Session, *, due_only: bool) -> None:
        """Republish held retries whose delay is over (all of them when ``due_only`` is false)."""
        now = time.monotonic()
        while session.held and (not due_only or session.held[0][0] <= now):
            _, _, handle = heapq.heappop(session.held)
            if not handle.stream.alive:
                continue  # the connection was lost: the broker gives the message out again
            try:
                self._publish(session, handle.stream.topic, [handle.message.body], handle.headers)
                handle.message.ack()
            except Exception as exc:
                logger.warning(
                    "could not republish a delayed retry on %s (%s); it comes back unacked",
                    handle.stream.topic,
                    clip(self._scrub(f"{type(exc).__name__}: {exc}")),
                )

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        if not self._redis:
            super().extend_lease(delivery, lease)
        self._set_leases([delivery], lease)

    def _set_leases(self, deliveries: Sequence[Delivery], lease: float) -> None:
        """Redis: move each delivery's place in kombu's unacked index so that it is restored
        ``lease`` seconds from now rather than ``visibility_timeout`` after it was received."""
        first = deliveries[0].handle
        channel = first.message.channel
        score = time.time() + lease - (self.visibility_timeout or 0.0)
        with self._boundary("extending a lease"), channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for delivery in deliveries:
                pipe.zadd(
                    channel.unacked_index_key,
                    {delivery.handle.message.delivery_tag: score},
                    xx=True,
                    ch=True,
                )
            changed = pipe.execute()
        lost = [d.message_id for d, n in zip(deliveries, changed, strict=False) if not n]
        if lost:
            raise LeaseExpired(f"lease of message(s) {', '.join(lost)} was lost")

    # -- dead letters and administration ---------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        session = self._session()
        with session.lock:
            self._publish(
                session,
                self.dead_letter_topic(delivery.topic),
                [delivery.body],
                {
                    REASON_HEADER: clip(reason, 1000),
                    SOURCE_TOPIC_HEADER: delivery.topic,
                    ATTEMPTS_HEADER: str(delivery.receive_count),
                },
            )
        self.ack(delivery)

    @contextlib.contextmanager
    def _admin_channel(self, what: str) -> Iterator[Any]:
        """A short-lived connection: what it took unacked goes back when it closes."""
        with self._boundary(what):
            connection = self._connect()
            try:
                yield connection.channel()
            finally:
                with contextlib.suppress(Exception):
                    connection.release()

    def _get(self, channel: Any, name: str) -> Any:
        return self._queue(name)(channel).get(no_ack=False, accept=list(self.accept))

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """List ``topic``'s dead letters without removing them (``basic.get``, then requeue)."""
        found: list[DeadLetter] = []
        with self._admin_channel(f"listing dead letters of {topic!r}") as channel:
            name = self.dead_letter_topic(topic)
            self._queue(name)(channel).declare()
            while len(found) < limit:
                message = self._get(channel, name)
                if message is None:
                    break
                headers = _str_headers(message.headers)
                found.append(
                    DeadLetter(
                        topic=headers.get(SOURCE_TOPIC_HEADER, topic),
                        body=_body_bytes(message.body),
                        reason=headers.get(REASON_HEADER, ""),
                        receive_count=_attempts(headers),
                        message_id=str(
                            (message.properties or {}).get("message_id") or message.delivery_tag
                        ),
                    )
                )
            # Closing the connection gives every message back, in order, on every broker; kombu's
            # memory transport alone drops unacked messages on close, so requeue explicitly there.
            if self.scheme == "memory":
                channel.qos.restore_unacked()
        return found

    def replay_dead_letters(self, topic: str, *, limit: int | None = None) -> int:
        moved = 0
        session = self._session()
        with session.lock, self._admin_channel(f"replaying dead letters of {topic!r}") as channel:
            name = self.dead_letter_topic(topic)
            self._queue(name)(channel).declare()
            while limit is None or moved < limit:
                message = self._get(channel, name)
                if message is None:
                    break
                self._publish(session, topic, [_body_bytes(message.body)], {})
                message.ack()
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

    # -- closing --------------------------------------------------------------------------------

    def flush_acks(self, *, min_age: float = 0.0) -> None:
        """Send the acks held back (``batch_acks``) that are at least ``min_age`` seconds old,
        in every session that is not busy; the others send theirs at their next receive."""
        with self._sessions_lock:
            sessions = list(self._sessions)
        now = time.monotonic()
        for session in sessions:
            if not session.lock.acquire(blocking=False):
                continue  # busy in a transport call: it sends its own acks at its next receive
            try:
                for stream in list(session.streams.values()):
                    if stream.acks and now - stream.acks_since >= min_age:
                        try:
                            stream.flush_acks()
                        except Exception as exc:
                            logger.warning(
                                "acks on %s could not be sent (%s); those messages come back",
                                stream.topic,
                                clip(self._scrub(f"{type(exc).__name__}: {exc}")),
                            )
                            if self._is_connection_error(exc):
                                session.drop_consumers()
                            break
            finally:
                session.lock.release()

    def close_thread(self) -> None:
        """End the calling thread's session: held retries republished, buffered messages
        requeued, channels and connections closed. The thread may use the transport again."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            return
        self._local.session = None
        with self._sessions_lock:
            if session in self._sessions:
                self._sessions.remove(session)
        self._close_session(session)

    def _close_session(self, session: _Session) -> None:
        with session.lock:
            try:
                self._release_held(session, due_only=False)
            finally:
                session.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            with contextlib.suppress(Exception):
                self._close_session(session)

"""What the kombu transport's broker families share: sessions, deliveries, errors, closing.

:mod:`balog.transports.kombu` holds the public :class:`~balog.transports.kombu.KombuTransport`;
the broker families it drives are in :mod:`balog.transports._kombu_amqp` (py-amqp) and
:mod:`balog.transports._kombu_virtual` (kombu's virtual transports: Redis, ``memory://``, ...).
Each family is a :class:`Broker`: the transport calls it for everything that differs between
them (how a connection is opened and serviced, how a raw message becomes a
:class:`~balog.transports.base.Delivery`, how a delivery is settled).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import kombu as _kombu

from balog._secrets import Scrubber
from balog._text import clip
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    TopicMismatch,
    TopicNotFound,
    TransportConnectionError,
    TransportError,
)
from balog.transports.base import ATTEMPTS_HEADER, Capabilities, Delivery

if TYPE_CHECKING:
    from balog.transports.kombu import KombuTransport

kombu: Any = _kombu

CONTENT_TYPE = "application/json"
PERSISTENT = 2
CLOSE_TIMEOUT = 2.0
"""Seconds a graceful close may wait for the broker before the socket is simply dropped."""
KOMBU_OPTIONS = frozenset(
    {"max_retries", "interval_start", "interval_step", "interval_max", "connect_retries_timeout"}
)
"""``transport_options`` keys kombu's ``Connection`` itself reads, on every broker."""
_NOWAIT = 0.05  # how long a receive with wait=0 lets messages already on their way arrive


def normal_content_type(value: Any) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``; ``""`` when absent."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").split(";")[0].strip().lower()


def refusal(content_type: str, compression: Any, accept: Sequence[str]) -> str | None:
    """Why a message with these properties is not handed over as a body, or ``None``.

    Compressed messages are refused without being decompressed: a few bytes can inflate to
    gigabytes, and balog never compresses what it sends.
    """
    if compression:
        return (
            f"compressed message (compression {clip(str(compression), 60)!r}) is not accepted: "
            "it is never decompressed"
        )
    if content_type and content_type not in accept:
        return (
            f"content type {clip(content_type, 100)!r} is not accepted "
            f"(accepted: {', '.join(accept)})"
        )
    return None


def str_headers(headers: Mapping[Any, Any] | None) -> dict[str, str]:
    """The scalar headers as strings (AMQP tables may hold lists, such as ``x-death``)."""
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            out[str(key)] = value.decode("utf-8", "replace")
        elif isinstance(value, (str, int, float, bool)):
            out[str(key)] = str(value)
    return out


def attempts(headers: Mapping[str, Any]) -> int:
    """Explicit nacks recorded in the ``balog-attempts`` header (0 when absent or unreadable)."""
    try:
        return max(0, int(headers.get(ATTEMPTS_HEADER, 0) or 0))
    except (TypeError, ValueError):
        return 0


def retry_headers(handle: Handle, receive_count: int) -> dict[str, Any]:
    """The headers a nacked message is sent again with: its attempts counted."""
    headers = {k: v for k, v in handle.headers.items() if k != "redelivered"}
    headers[ATTEMPTS_HEADER] = str(receive_count)
    return headers


def body_bytes(body: Any) -> bytes | None:
    """A message body as bytes (text in UTF-8, as py-amqp gives an empty body); ``None`` when
    it is neither."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    return None


@dataclasses.dataclass
class Arrived:
    """A raw message taken apart by its family: what :meth:`Broker.delivery` needs."""

    body: Any
    headers: dict[str, Any]
    properties: Mapping[str, Any]
    tag: Any
    content_type: Any = None
    compression: Any = None
    refused: str | None = None  # a reason the family found itself (an entry not kombu's, ...)

    @property
    def message_id(self) -> str:
        return str(self.properties.get("message_id") or self.tag)


@dataclasses.dataclass(eq=False)
class Stream:
    """One topic consumed by one session: its channel, and what arrived and is not handed out."""

    topic: str
    channel: Any
    session: Session
    tag: str
    buffer: deque[Any] = dataclasses.field(default_factory=deque)
    alive: bool = True
    # AMQP: delivery tags received and not settled (including those still in the buffer), so
    # that an ack with ``multiple=True`` is only sent when it covers none but those acked.
    outstanding: set[int] = dataclasses.field(default_factory=set)


@dataclasses.dataclass(eq=False)
class Handle:
    """What a :class:`~balog.transports.base.Delivery` of this transport carries."""

    message: Any
    stream: Stream
    tag: Any
    headers: dict[str, Any]


class Session:
    """One thread's connections: one to consume (a channel per topic), one to publish.

    kombu connections are not thread-safe: every use of a session's connections holds ``lock``.
    """

    def __init__(self, owner: KombuTransport) -> None:
        self.owner = owner
        self.lock = threading.RLock()
        self.connection: Any = None
        self.streams: dict[str, Stream] = {}
        self.publisher: Any = None
        self.producer: Any = None
        self.declared: set[str] = set()
        self.confirms = Confirms()
        # Message ids: unique per session, cheaper than a uuid4 per message.
        self.id_prefix = uuid.uuid4().hex[:16] + "-"
        self.ids = itertools.count(1)

    def next_id(self) -> str:
        return f"{self.id_prefix}{next(self.ids):x}"

    def consumer_connection(self) -> Any:
        if self.connection is None:
            self.connection = self.owner._connect()
        return self.connection

    def drop_consumers(self) -> None:
        """Forget the consumer connection (after an error); the broker takes back its unacked
        messages when it notices the connection is gone."""
        for stream in self.streams.values():
            stream.alive = False
            stream.buffer.clear()
            stream.outstanding.clear()
        self.streams.clear()
        connection, self.connection = self.connection, None
        if connection is not None:
            discard(connection, graceful=False)

    def drop_publisher(self, *, graceful: bool = False) -> None:
        publisher, self.publisher, self.producer = self.publisher, None, None
        self.declared = set()
        if publisher is not None:
            discard(publisher, graceful=graceful)

    def close(self, broker: Broker) -> None:
        """Hand back what is buffered, close the channels, then the connections: bounded."""
        for stream in list(self.streams.values()):
            self.streams.pop(stream.topic, None)
            stream.alive = False
            try:
                with bounded(self.connection, CLOSE_TIMEOUT):
                    broker.close_stream(stream)
            except Exception:
                # The channel would not close: drop its connection, which hands back all.
                self.drop_consumers()
                break
        connection, self.connection = self.connection, None
        if connection is not None:
            discard(connection, graceful=True)
        self.drop_publisher(graceful=True)


class Confirms:
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


@contextlib.contextmanager
def bounded(connection: Any, timeout: float) -> Iterator[None]:
    """Inside, every blocking wait on an AMQP connection's socket gives up after ``timeout``
    (a no-op for other brokers)."""
    sock = getattr(getattr(connection, "connection", None), "sock", None)
    if not isinstance(sock, socket.socket):
        yield
        return
    previous = sock.gettimeout()
    with contextlib.suppress(OSError):
        sock.settimeout(timeout)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def publish_body(
    session: Session, producer: Any, queue: str, body: bytes, headers: Mapping[str, Any]
) -> None:
    """Publish one body as balog sends it: raw bytes, JSON, persistent, a fresh message id."""
    producer.publish(
        bytes(body),
        routing_key=queue,
        exchange="",
        content_type=CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=PERSISTENT,
        headers=dict(headers),
        message_id=session.next_id(),
        retry=False,
    )


def discard(connection: Any, *, graceful: bool) -> None:
    """Close ``connection`` without ever hanging on a dead one.

    ``graceful``: say goodbye to the broker first, waiting at most :data:`CLOSE_TIMEOUT`.
    Otherwise, or when that fails, kombu's ``collect()`` closes the socket without speaking the
    protocol, so no socket is left for the garbage collector.
    """
    if graceful:
        try:
            with bounded(connection, CLOSE_TIMEOUT):
                connection.release()
            return
        except Exception:
            pass
    with contextlib.suppress(Exception):
        connection.collect()


class Broker(ABC):
    """What differs between kombu's broker families; one per :class:`KombuTransport`.

    Every method that touches a session's connections is called with the session's lock held.
    """

    gather_wait = 0.005
    """Seconds a receive waits for each further message once one has arrived, up to its
    ``max_messages``: kombu's virtual transports fetch one message per poll (a round trip), so
    a batch, and a batch of acks, takes several; AMQP pushes a prefetch window at once (0)."""

    def __init__(self, transport: KombuTransport) -> None:
        self.transport = transport

    @abstractmethod
    def capabilities(self, max_body_size: int | None) -> Capabilities:
        """What this family can do."""

    @abstractmethod
    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Refuse a ``transport_options`` key kombu's transport does not read; return the
        options with this family's defaults added."""

    def connection_options(self) -> dict[str, Any]:
        """``kombu.Connection`` keyword arguments besides the URL and ``connect_timeout``."""
        return {"transport_options": dict(self.transport.transport_options)}

    def connected(self, connection: Any) -> None:
        """Called with each new connection, once established."""

    @abstractmethod
    def prepare_channel(self, channel: Any) -> None:
        """Make a new channel hand over messages exactly as they arrived."""

    @abstractmethod
    def consume(self, stream: Stream, queue: Any) -> None:
        """Start consuming ``queue`` on ``stream.channel``, appending raw messages to its buffer."""

    def tick(self, connection: Any) -> None:
        """Called between waits of a receive (AMQP: send and check heartbeats)."""

    def fill(self, stream: Stream, max_messages: int, wait: float) -> None:
        """Wait up to ``wait`` seconds for ``stream``'s buffer to hold a message; then take
        what else has already arrived, up to ``max_messages``."""
        connection = stream.session.connection
        self.tick(connection)
        if not stream.buffer and wait <= 0.0 and stream.outstanding:
            # A receive that does not wait, while deliveries of this stream are unsettled (an
            # engine with events in flight), takes only what has arrived: the broker has been
            # pushing here, and a wait would hold up the caller's work in hand.
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0)
        elif not stream.buffer:
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
                self.tick(connection)
        while stream.buffer and len(stream.buffer) < max_messages:
            before = len(stream.buffer)
            try:
                connection.drain_events(timeout=self.gather_wait)
            except TimeoutError:
                break
            if len(stream.buffer) == before:
                break

    def _settle_time(self, stream: Stream) -> float:
        """How long a ``wait=0`` receive may wait for ready messages to be pushed to it."""
        try:
            declared = self.transport._queue(stream.topic)(stream.channel).queue_declare(
                passive=True
            )
        except Exception:
            return 0.0
        return 1.0 if getattr(declared, "message_count", 0) else 0.0

    @abstractmethod
    def unpack(self, message: Any) -> Arrived:
        """Take a raw message of this family apart."""

    def lease_of(self, lease: float | None) -> float | None:
        """The lease of a delivery received with ``lease`` (``None``: no leases)."""
        return None

    def delivery(self, stream: Stream, message: Any, lease: float | None) -> Delivery:
        """The delivery for a raw message from ``stream``'s buffer, refused where it must be."""
        arrived = self.unpack(message)
        body = body_bytes(arrived.body)
        refused = arrived.refused
        if body is None:
            body, refused = b"", refused or "message body is not bytes"
        refused = refused or refusal(
            normal_content_type(arrived.content_type), arrived.compression, self.transport.accept
        )
        return Delivery(
            topic=stream.topic,
            body=body,
            message_id=arrived.message_id,
            # Only explicit nacks count: a redelivery after a lost connection or a release
            # does not (the broker's "redelivered" flag cannot say how many times).
            receive_count=attempts(arrived.headers) + 1,
            headers=str_headers(arrived.headers),
            handle=Handle(message=message, stream=stream, tag=arrived.tag, headers=arrived.headers),
            lease=self.lease_of(lease),
            refused=refused,
        )

    def get(self, channel: Any, name: str) -> Any:
        """One message from queue ``name`` (``basic.get``, unacked), or ``None``."""
        return channel.basic_get(queue=name, no_ack=False)

    def read(self, message: Any) -> tuple[bytes, dict[str, str], str]:
        """A raw message's body (as arrived), headers and message id, for listing."""
        arrived = self.unpack(message)
        return body_bytes(arrived.body) or b"", str_headers(arrived.headers), arrived.message_id

    def publisher(self, session: Session) -> Any:
        """The session's kombu producer, connected."""
        if session.producer is None:
            connection = self.transport._connect()
            try:
                channel = connection.channel()
                self.prepare_publisher(session, channel)
                session.producer = kombu.Producer(channel, auto_declare=False)
            except Exception:
                discard(connection, graceful=False)
                raise
            session.publisher = connection
            session.declared = set()
        return session.producer

    def prepare_publisher(self, session: Session, channel: Any) -> None:
        """Set up a new publishing channel (AMQP: publisher confirms)."""

    @abstractmethod
    def publish(
        self, session: Session, queue: str, bodies: Sequence[bytes], headers: Mapping[str, Any]
    ) -> None:
        """Publish every body to ``queue`` through :meth:`publisher`; raise
        :class:`~balog.exceptions.SendError` naming the bodies the broker refused."""

    @abstractmethod
    def ack(self, handle: Handle) -> None:
        """Ack one message at once."""

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Ack each channel's share of ``deliveries`` with one :meth:`ack_batch`."""
        outcomes: list[BaseException | None] = [None] * len(deliveries)
        groups: dict[Stream, list[int]] = {}
        for i, delivery in enumerate(deliveries):
            handle = delivery.handle
            if not isinstance(handle, Handle) or handle.stream.session.owner is not self.transport:
                outcomes[i] = TransportError("ack: not a delivery of this transport")
            else:
                groups.setdefault(handle.stream, []).append(i)
        errors = self.transport._errors
        for stream, indexes in groups.items():
            tags = [deliveries[i].handle.tag for i in indexes]
            with stream.session.lock:
                error: BaseException | None = None
                if not stream.alive:
                    error = lost("ack", deliveries[indexes[0]])
                else:
                    try:
                        self.ack_batch(stream, tags)
                    except Exception as exc:
                        if errors.is_connection_error(exc):
                            stream.session.drop_consumers()
                            error = LeaseExpired(
                                f"ack failed, connection lost: {errors.detail(exc)}"
                            )
                        else:
                            error = errors.chained("ack", exc)
                    else:
                        stream.outstanding.difference_update(tags)
                for i in indexes:
                    outcomes[i] = error
        return outcomes

    def ack_batch(self, stream: Stream, tags: Sequence[Any]) -> None:
        """Ack the messages of ``stream`` with these delivery tags, in as few calls as the
        broker allows (families that declare ``batch_ack``)."""
        raise NotImplementedError(f"{type(self).__name__} has no batch ack")

    @abstractmethod
    def requeue(self, handle: Handle) -> None:
        """Give one message back to its queue as it was (not counted as an attempt)."""

    @abstractmethod
    def nack(self, delivery: Delivery, handle: Handle, delay: float) -> None:
        """Send the message again with its attempt counted (after ``delay`` where the family
        delays), then ack the original; raises, leaving it unsettled, if the send fails."""

    def forget(self, handle: Handle) -> None:
        """The message was settled: drop it from the bookkeeping."""
        handle.stream.outstanding.discard(handle.tag)

    def close_stream(self, stream: Stream) -> None:
        """Give back what ``stream`` holds and close its channel (the broker requeues the rest);
        raises if the channel would not close."""
        stream.channel.close()

    def give_back(self, channel: Any) -> None:
        """Before ``channel`` closes: make sure what it holds unacked goes back to the queue."""

    def service(self, session: Session) -> None:
        """Keep an idle session's connections alive (heartbeats); called from another thread."""

    def after_receive(self, deliveries: Sequence[Delivery], lease: float | None) -> None:
        """Called with every non-empty batch a receive returns."""

    def extend_lease(self, deliveries: Sequence[Delivery], lease: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no leases to extend")

    def on_consuming(self) -> None:
        """Called before the transport consumes or verifies a topic."""

    def close(self) -> None:
        """The transport is closing."""


class Errors:
    """Turns kombu's, py-amqp's and redis-py's errors into balog's, with no secret in them."""

    def __init__(
        self, where: str, scrub: Scrubber, connection_errors: tuple[type[BaseException], ...]
    ):
        self.where = where
        self.scrub = scrub
        self.connection_errors = connection_errors

    def detail(self, exc: BaseException, limit: int = 300) -> str:
        return clip(self.scrub(f"{type(exc).__name__}: {exc}"), limit)

    def is_connection_error(self, exc: BaseException) -> bool:
        return any(isinstance(e, (OSError, EOFError, *self.connection_errors)) for e in _chain(exc))

    def translate(self, what: str, exc: BaseException) -> TransportError | ConfigurationError:
        """The balog error for ``exc``, raised while doing ``what``."""
        if isinstance(exc, (TransportError, ConfigurationError)):
            return exc
        for cause in _chain(exc):
            error = self._classify(what, cause)
            if error is not None:
                return error
        message = f"{what} on {self.where} failed: {self.detail(exc)}"
        if self.is_connection_error(exc):
            return TransportConnectionError(message)
        return TransportError(message)

    def _classify(
        self, what: str, exc: BaseException
    ) -> TransportError | ConfigurationError | None:
        name = type(exc).__name__
        code = getattr(exc, "reply_code", None)
        text = str(getattr(exc, "reply_text", "") or exc)
        failed = f"{what} on {self.where} failed"
        if name in {"AccessRefused", "AuthenticationError", "AuthenticationWrongNumberOfArgsError"}:
            return AuthenticationError(f"{failed}: credentials refused: {self.detail(exc)}")
        if code == 403 and name != "ConnectionForced":
            return AuthenticationError(f"{failed}: not allowed: {self.detail(exc)}")
        if code == 530 or name == "NotAllowed":
            return AuthenticationError(f"{failed}: not allowed: {self.detail(exc)}")
        if name == "ResponseError" and text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return AuthenticationError(f"{failed}: {self.detail(exc)}")
        if code == 406 and "inequivalent arg" in text:
            return TopicMismatch(
                f"{failed}: the queue exists with other arguments than balog declares "
                f"(the broker says: {self.scrub(clip(text, 1000))}); give queue_arguments= the "
                "queue's own arguments, or delete the queue so that balog declares it"
            )
        if name == "ResponseError" and text.startswith("WRONGTYPE"):
            return TopicMismatch(
                f"{failed}: a key of that name holds something other than a list "
                f"({self.detail(exc)}); use another topic name or remove the key"
            )
        if code == 404 or name == "NotFound":
            return TopicNotFound(f"{failed}: {self.detail(exc)}")
        if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
            return ConfigurationError(
                f"{failed}: the broker's host name is not known ({self.detail(exc)})"
            )
        return None

    def chained(self, what: str, exc: BaseException) -> BaseException:
        """:meth:`translate`, chained to ``exc`` (as ``raise ... from exc``) unless it is
        ``exc`` itself, already balog's."""
        error = self.translate(what, exc)
        if error is not exc:
            error.__cause__ = exc
        return error

    @contextlib.contextmanager
    def boundary(self, what: str) -> Iterator[None]:
        """Turn every backend error raised inside into balog's, chained to it."""
        try:
            yield
        except (TransportError, ConfigurationError):
            raise
        except Exception as exc:
            raise self.translate(what, exc) from exc


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (kombu re-raises driver errors as its own)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8 and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def lost(what: str, delivery: Delivery) -> LeaseExpired:
    return LeaseExpired(
        f"{what} of message {delivery.message_id}: its connection was lost; the broker "
        "delivers it again"
    )

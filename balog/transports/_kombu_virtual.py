"""The kombu transport on kombu's virtual transports: Redis (``redis://``, ``rediss://``,
``sentinel://``), ``memory://`` and the others kombu emulates AMQP on.

- **No delay of their own**: ``capabilities.delay`` is false and ``nack(delay=...)`` sends the
  message again at once (then acks the original); the engine holds a retry for its delay.
- **Acks** are kombu's (on Redis, one round trip removing the message from kombu's unacked
  hash), sent when ``ack`` returns.
- **Bodies as they arrived**: every channel builds its messages with a class that moves a
  ``compression`` header aside before kombu would decompress, so a compressed message arrives
  compressed and is refused.

On Redis, kombu keeps a delivered message in an ``unacked`` hash and index, and any consumer of
the same database puts it back on its list once it has been unacked for ``visibility_timeout``
seconds: that is the lease (``KombuTransport(lease=)``, unless ``transport_options`` set
``visibility_timeout``); ``extend_lease`` moves the message's entry in kombu's index forward.
kombu consumes with ``BRPOP`` and drops, with a log line, a list entry it cannot read as its JSON
wrapper; here the reply of every ``BRPOP`` and ``RPOP`` kombu's Redis clients read goes through
:class:`_EntryGuard` first (a redis-py response callback), which hands kombu a wrapper of its own
around such an entry, so that it arrives as a refused delivery holding the bytes as pushed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual as _virtual

from balog._options import check_known
from balog.exceptions import LeaseExpired
from balog.transports._kombu_common import (
    KOMBU_OPTIONS,
    PERSISTENT,
    Arrived,
    Broker,
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

_VirtualQoS: Any = _virtual.QoS

FOREIGN_HEADER = "x-balog-foreign"
"""Header of the wrapper :class:`_EntryGuard` puts around a list entry that is not kombu's."""

COMPRESSION_HEADER = "x-balog-compression"
"""Where a received message's ``compression`` header is moved, so kombu does not decompress."""

SOCKET_TIMEOUT = 30.0
"""redis-py's ``socket_timeout`` unless ``transport_options`` set one: no read waits forever."""

_REDIS_EXTRA_OPTIONS = {"unacked_restore_interval", "reauth_check_interval"}
_BODY_ENCODINGS = {"", "utf-8", "base64"}


class _GuardedMessage(_virtual.Message):
    """kombu's virtual message, built with its ``compression`` header set aside so that kombu
    never decompresses it."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        headers = payload.get("headers") if isinstance(payload, dict) else None
        if isinstance(headers, dict) and "compression" in headers:
            headers = dict(headers)
            headers[COMPRESSION_HEADER] = str(headers.pop("compression"))
            payload = {**payload, "headers": headers}
        super().__init__(payload, channel=channel, **kwargs)  # type: ignore[no-untyped-call]


class VirtualBroker(Broker):
    """kombu's virtual transports (memory://, and the base of Redis)."""

    def __init__(self, transport: KombuTransport, transport_cls: type) -> None:
        super().__init__(transport)
        self.transport_cls: Any = transport_cls

    def capabilities(self, max_body_size: int | None) -> Capabilities:
        return Capabilities(
            max_body_size=max_body_size,
            lease_expiry=False,
            lease_extension=False,
            receive_count=False,
            ordering=False,
            delay=False,
            batch_ack=False,
        )

    def accepted_options(self) -> set[str]:
        return (
            set(self.transport_cls.Channel.from_transport_options)
            | KOMBU_OPTIONS
            | {"polling_interval"}
        )

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        check_known(
            f"kombu's {self.transport.scheme}:// transport_options",
            options,
            self.accepted_options(),
        )
        return dict(options)

    def prepare_channel(self, channel: Any) -> None:
        channel.Message = _GuardedMessage

    def consume(self, stream: Stream, queue: Any) -> None:
        queue.consume(stream.tag, callback=stream.buffer.append, no_ack=False)

    def unpack(self, message: Any) -> Arrived:
        headers = dict(message.headers or {})
        foreign = headers.pop(FOREIGN_HEADER, None)
        refused = None
        if foreign:
            refused = f"not a kombu message: {foreign}"
        elif message.errors:
            refused = "message could not be read: " + str(message.errors[0][1])[:200]
        return Arrived(
            body=message.body,
            headers=headers,
            properties=message.properties or {},
            tag=message.delivery_tag,
            content_type=message.content_type,
            compression=headers.pop(COMPRESSION_HEADER, None),
            refused=refused,
        )

    def publish(
        self, session: Session, queue: str, bodies: Sequence[bytes], headers: Mapping[str, Any]
    ) -> None:
        producer = session.producer

        if len(bodies) > 1 and getattr(producer, "supports_batch_publish", False):
            with producer.batch():  # one pipeline on Redis
                for body in bodies:
                    publish_body(session, producer, queue, body, headers)
            return
        for body in bodies:
            publish_body(session, producer, queue, body, headers)

    def ack(self, handle: Handle) -> None:
        handle.message.ack()

    def requeue(self, handle: Handle) -> None:
        handle.message.requeue()

    def nack(self, delivery: Delivery, handle: Handle, delay: float) -> None:
        # No delay here (capabilities.delay is false): the engine holds the retry meanwhile.
        headers = retry_headers(handle, delivery.receive_count)
        self.transport._publish(handle.stream.session, delivery.topic, [delivery.body], headers)
        self.ack(handle)

    def close_stream(self, stream: Stream) -> None:
        while stream.buffer:
            message = stream.buffer.popleft()
            try:
                message.requeue()
            except Exception:
                break
        self.give_back(stream.channel)
        stream.channel.close()

    def give_back(self, channel: Any) -> None:
        if getattr(channel, "do_restore", True) is False:
            # kombu's memory transport drops unacked messages when a channel closes; give back
            # the ones handed out and never settled, as a broker would.
            channel.qos.restore_unacked()


class RedisBroker(VirtualBroker):
    """kombu's Redis transport: leases are its visibility timeout."""

    def __init__(self, transport: KombuTransport, transport_cls: type) -> None:
        super().__init__(transport, transport_cls)
        self.visibility_timeout = float(transport.lease or 30.0)
        self._guards: weakref.WeakKeyDictionary[Any, _EntryGuard] = weakref.WeakKeyDictionary()
        self._clients: weakref.WeakKeyDictionary[Stream, Any] = weakref.WeakKeyDictionary()
        self._warned = False

    def capabilities(self, max_body_size: int | None) -> Capabilities:
        return dataclasses.replace(
            super().capabilities(max_body_size),
            lease_expiry=True,
            lease_extension=True,
            batch_ack=True,
        )

    def accepted_options(self) -> set[str]:
        return super().accepted_options() | _REDIS_EXTRA_OPTIONS

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        options = super().check_options(options)
        self.visibility_timeout = float(options.get("visibility_timeout", self.visibility_timeout))
        return {
            # A restore sweep scans every 10th empty poll by default: make it each poll so that a
            # lost delivery comes back about when its lease ends.
            "unacked_restore_throttle": 1,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": self.transport.connect_timeout,
            **options,
            "visibility_timeout": self.visibility_timeout,
        }

    def on_consuming(self) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "kombu's Redis transport (%s) can lose a message: the one its outstanding BRPOP has "
            "popped when the consumer's connection drops or its process dies before reading the "
            "reply (at most one per consumer connection each time); the native 'redis' backend "
            "has no such window",
            self.transport.safe_url,
        )

    def prepare_channel(self, channel: Any) -> None:
        super().prepare_channel(channel)
        guard = _EntryGuard(channel)
        self._guards[channel] = guard
        guard.install(channel.client)
        make_client = channel.Client

        def client(**kwargs: Any) -> Any:
            return guard.install(make_client(**kwargs))

        channel.Client = client

    def lease_of(self, lease: float | None) -> float | None:
        return self.visibility_timeout if lease is None else lease

    def _client(self, stream: Stream) -> Any:
        """A redis-py client of the stream's channel (off its connection pool), made once: kombu
        builds one per call, which costs more than the round trip it makes."""
        client = self._clients.get(stream)
        if client is None:
            with stream.channel.conn_or_acquire() as client:
                self._clients[stream] = client
        return client

    def ack_batch(self, stream: Stream, tags: Sequence[Any]) -> None:
        """One pipeline removing the messages from kombu's unacked hash and index (where kombu's
        own ack makes a round trip per message), then kombu's in-process bookkeeping of each,
        which frees its prefetch slot."""
        channel = stream.channel
        pipe = self._client(stream).pipeline(transaction=False)
        pipe.zrem(channel.unacked_index_key, *tags)
        pipe.hdel(channel.unacked_key, *tags)
        pipe.execute()
        for tag in tags:
            _VirtualQoS.ack(channel.qos, tag)

    def after_receive(self, deliveries: Sequence[Delivery], lease: float | None) -> None:
        if lease is not None and abs(lease - self.visibility_timeout) > 0.001:
            self.extend_lease(deliveries, lease)

    def extend_lease(self, deliveries: Sequence[Delivery], lease: float) -> None:
        """Move each delivery's place in kombu's unacked index so that it is restored ``lease``
        seconds from now rather than ``visibility_timeout`` after it was received.

        A delivery no longer in the index is lost (:class:`~balog.exceptions.LeaseExpired`).
        One whose place had already passed its restore time when the extension came is extended
        and kept, but a warning says it may be processed again: any consumer's restore sweep
        may have read it and be putting it back on the list, and nothing tells which."""
        channel = deliveries[0].handle.stream.channel
        now = time.time()
        score = now + lease - self.visibility_timeout
        key = channel.unacked_index_key
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            # The entries already past their restore time (commands kombu prefixes with
            # global_keyprefix only: ZRANGE and ZADD); normally none.
            pipe.zrange(key, "-inf", now - self.visibility_timeout, byscore=True)
            for delivery in deliveries:
                pipe.zadd(key, {delivery.handle.tag: score}, xx=True, ch=True)
            late, *changed = pipe.execute()
        late_tags = {tag.decode() if isinstance(tag, bytes) else str(tag) for tag in late}
        for delivery in deliveries:
            if str(delivery.handle.tag) in late_tags:
                logger.warning(
                    "the lease of message %s on %s was extended after it had run out; another "
                    "consumer may have put it back on the queue, so it may be processed again",
                    delivery.message_id,
                    delivery.topic,
                )
        gone = [d.message_id for d, n in zip(deliveries, changed, strict=True) if not n]
        if gone:
            raise LeaseExpired(f"lease of message(s) {', '.join(gone)} was lost")

    def get(self, channel: Any, name: str) -> Any:
        guard = self._guards.get(channel)
        if guard is not None:
            guard.queue = name
        return super().get(channel, name)


class _EntryGuard:
    """Reads each ``BRPOP``/``RPOP`` reply of one kombu Redis channel before kombu does.

    kombu parses every list entry as its JSON wrapper and drops one it cannot; this hands it a
    wrapper of balog's around such an entry instead (its bytes base64-encoded, the reason in
    :data:`FOREIGN_HEADER`), which kombu records as unacked like any message.
    """

    def __init__(self, channel: Any) -> None:
        self.prefix = str(getattr(channel, "global_keyprefix", "") or "")
        self.sep = str(channel.sep)
        self.queue = ""  # the queue a basic_get reads (RPOP replies do not name it)

    def install(self, client: Any) -> Any:
        client.set_response_callback("BRPOP", self.brpop)
        client.set_response_callback("RPOP", self.rpop)
        return client

    def brpop(self, response: Any, **options: Any) -> Any:
        if not response:
            return None
        key, value = response
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if self.prefix and name.startswith(self.prefix):
            name = name[len(self.prefix) :]
        return (key, self.check(value, name.rsplit(self.sep, 1)[0]))

    def rpop(self, response: Any, **options: Any) -> Any:
        if not isinstance(response, (bytes, str)):
            return response
        return self.check(response, self.queue)

    def check(self, value: bytes | str, queue: str) -> bytes | str:
        reason = _not_kombus(value)
        if reason is None:
            return value
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        wrapper = {
            "body": base64.b64encode(raw).decode("ascii"),
            "content-encoding": "binary",
            "content-type": "application/octet-stream",
            "headers": {FOREIGN_HEADER: reason},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": uuid.uuid4().hex,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_mode": PERSISTENT,
                "priority": 0,
            },
        }
        return json.dumps(wrapper).encode("ascii")


def _not_kombus(value: bytes | str) -> str | None:
    """Why a Redis list entry is not kombu's JSON wrapper (which kombu would drop), or ``None``."""
    try:
        payload = json.loads(value)
    except UnicodeDecodeError:
        return "the list entry is not UTF-8"
    except ValueError:
        return "the list entry is not JSON"
    if not isinstance(payload, dict):
        return "the list entry is JSON but not kombu's wrapper object"
    properties = payload.get("properties")
    if not isinstance(properties, dict) or not isinstance(
        properties.get("delivery_tag"), (str, int)
    ):
        return "the list entry has no kombu properties"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not {"exchange", "routing_key"} <= info.keys():
        return "the list entry has no kombu delivery_info"
    if not isinstance(payload.get("headers") or {}, dict):
        return "the list entry's headers are not an object"
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return "the list entry's body is not a string"
    encoding = str(properties.get("body_encoding") or "").lower()
    if encoding not in _BODY_ENCODINGS:
        return f"the list entry's body_encoding {encoding[:40]!r} is unknown"
    if encoding == "base64" and body:
        try:
            base64.b64decode(body)
        except (binascii.Error, ValueError):
            return "the list entry's body is not base64"
    return None

"""Native Redis transport: SQS semantics on Redis, with nothing lost when a consumer crashes.

Every topic is a handful of keys under a prefix (default ``balog:``):

- ``q:<topic>``: a LIST of the ids of ready messages, oldest first;
- ``m:<id>``: a HASH per message: body ``b``, headers ``h`` (JSON), receive count ``c`` and the
  current lease token ``t``;
- ``d:<topic>``: a ZSET of delayed ids, scored by when they become ready (server milliseconds);
- ``l:<topic>``: a ZSET of leased ids, scored by their lease deadline (server milliseconds).

A receive is one Lua script run on the server: it first moves due delayed ids and expired leases
back to the ready list, then pops up to N ids and, for each, counts the receive, sets a fresh
lease token and records the lease deadline. Nothing is ever popped into a socket and left there:
a message is always either ready, delayed or leased, so a receiver killed at any point loses
nothing; what it held comes back once its lease runs out. Acks, nacks, releases, lease
extensions and dead-lettering are scripts too, each checking the lease token first: a receiver
whose lease ran out and whose message went back to the queue gets
:class:`~balog.exceptions.LeaseExpired`. Deadlines use the server's clock (``TIME``), so the
clocks of the clients do not matter.

Sends are one ``MULTI``/``EXEC`` round trip per batch. Receives poll the script while the topic
is empty, every ``poll_interval`` seconds at first, backing off to ``max_poll_interval``.

Entries not in this format (an id whose hash is gone, a value another client pushed onto the
ready list, a key of another type, headers that are not JSON) are never skipped: the claim keeps
such an entry, as it was pushed, in a hash of its own (field ``r``, with ``f`` saying what was
wrong), leased like any message, and :meth:`RedisTransport.receive` returns it as a
:class:`~balog.transports.base.Delivery` marked ``refused`` so that the engine dead-letters and
counts it. The valid messages claimed beside it are delivered as usual.

The scripts name message keys they build themselves, so the transport needs a single Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from balog import _secrets
from balog._text import clip
from balog.exceptions import (
    AuthenticationError,
    BalogError,
    ConfigurationError,
    LeaseExpired,
    TopicMismatch,
    TransportConnectionError,
    TransportError,
)
from balog.transports.base import Capabilities, Delivery, Transport, dead_letter_headers

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "RedisTransport",
    "mask_url",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "balog:"
DEFAULT_MAX_BODY_SIZE = 256 * 1024
DEFAULT_LEASE = 30.0
MAX_BATCH = 1000
"""Most messages one receive claims."""

logger = logging.getLogger("balog.transports.redis")

# Server time in milliseconds, shared by every script.
_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""

# KEYS: ready list, delayed zset, leased zset. ARGV: message key prefix, max messages,
# lease in ms, token base. Returns a flat array: id, token, body, headers, count per message.
# An entry that is not a balog message comes back with a negative count and, in place of the
# headers, what is wrong with it (``missing``: no such key; ``nobody``: a hash without a body;
# ``type``: a key of another type); it is first kept, as it was pushed, in a hash of its own
# (``r``: the entry, ``f``: what is wrong), so that it is leased, settled and dead-lettered like
# any message and never dropped.
_CLAIM = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('RPUSH', KEYS[1], id)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for i = #expired, 1, -1 do
  local id = expired[i]
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', ARGV[1] .. id, 't')
  redis.call('LPUSH', KEYS[1], id)
end
local wanted = tonumber(ARGV[2])
local deadline = now + tonumber(ARGV[3])
local out = {}
local claimed = 0
while claimed < wanted do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local key = ARGV[1] .. id
  local fields = redis.pcall('HMGET', key, 'b', 'h')
  claimed = claimed + 1
  local body, headers, sign = fields[1], fields[2] or '', 1
  if not body then
    sign = -1
    local kept = nil
    if not fields.err then kept = redis.call('HMGET', key, 'r', 'f') end
    if kept and kept[1] then
      body, headers = kept[1], kept[2] or 'missing'
    else
      headers = 'missing'
      if fields.err then headers = 'type'
      elseif redis.call('EXISTS', key) == 1 then headers = 'nobody' end
      body = id
      id = ARGV[4] .. '.' .. claimed
      key = ARGV[1] .. id
      redis.call('HSET', key, 'r', body, 'f', headers, 'c', 0)
    end
  end
  local count = redis.call('HINCRBY', key, 'c', 1)
  local token = ARGV[4] .. ':' .. claimed
  redis.call('HSET', key, 't', token)
  redis.call('ZADD', KEYS[3], deadline, id)
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = body
  out[#out + 1] = headers
  out[#out + 1] = sign * count
end
return out
"""
)

# KEYS: leased zset. ARGV: message key, id, token. 1 when acked, 0 when the lease was lost.
_ACK = """
if redis.call('HGET', ARGV[1], 't') ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('DEL', ARGV[1])
return 1
"""

# KEYS: leased zset. ARGV: message key prefix, then id and token per message. Returns 1 (acked)
# or 0 (lease lost) per message.
_ACK_MANY = """
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 't') == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', key)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS: ready list, delayed zset, leased zset. ARGV: message key, id, token, delay ms,
# receive-count adjustment (-1 for a release).
_NACK = (
    _NOW
    + """
if redis.call('HGET', ARGV[1], 't') ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('HDEL', ARGV[1], 't')
local adjust = tonumber(ARGV[5])
if adjust ~= 0 then redis.call('HINCRBY', ARGV[1], 'c', adjust) end
local delay = tonumber(ARGV[4])
if delay > 0 then
  redis.call('ZADD', KEYS[2], now + delay, ARGV[2])
else
  redis.call('LPUSH', KEYS[1], ARGV[2])
end
return 1
"""
)

# KEYS: leased zset. ARGV: message key, id, token, lease ms.
_EXTEND = (
    _NOW
    + """
if redis.call('HGET', ARGV[1], 't') ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
return 1
"""
)

# KEYS: leased zset of the source, ready list of the dead-letter topic. ARGV: message key, id,
# token, headers JSON. A kept foreign entry becomes an ordinary message there, its entry the body.
_DEAD_LETTER = """
if redis.call('HGET', ARGV[1], 't') ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', ARGV[1], 't')
local kept = redis.call('HGET', ARGV[1], 'r')
if kept then
  redis.call('HSET', ARGV[1], 'b', kept)
  redis.call('HDEL', ARGV[1], 'r', 'f')
end
redis.call('HSET', ARGV[1], 'h', ARGV[4], 'c', 0)
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""


mask_url = _secrets.mask_url
"""The URL fit to show (``redis://:**@host:6379/0``, ``...?password=**``): an alias of
:func:`balog._secrets.mask_url`, which every part of balog uses."""

_HEX_ID = re.compile(rb"[0-9a-f]{32}")

_FOREIGN = {
    b"missing": "names no message hash",
    b"nobody": "names a hash without a body field",
    b"type": "names a key that is not a hash",
}
"""What the claim script found wrong with an entry, as the refusal says it."""


class RedisTransport(Transport):
    """A :class:`~balog.transports.base.Transport` on a Redis server, through redis-py.

    ``url`` is a redis-py URL (``redis://[[user]:password@]host:port/db``, ``rediss://`` for
    TLS). ``prefix`` starts every key the transport uses. ``lease`` is the default lease in
    seconds. ``poll_interval`` and ``max_poll_interval`` bound how often an idle :meth:`receive`
    asks again. ``socket_timeout`` and ``connect_timeout`` are redis-py's, in seconds. One client
    with its connection pool serves every thread; a forked child makes new connections.
    """

    capabilities = Capabilities(
        max_body_size=DEFAULT_MAX_BODY_SIZE,
        lease_expiry=True,
        lease_extension=True,
        receive_count=True,
        ordering=True,
        batch_ack=True,
    )
    """What a transport built with the default options can do; ``max_body_size`` follows the
    option on each instance."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease: float = DEFAULT_LEASE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        poll_interval: float = 0.01,
        max_poll_interval: float = 0.1,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("a redis URL starts with redis://, rediss:// or unix://")
        if lease < 0:
            raise ConfigurationError("lease must not be negative")
        if max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ConfigurationError("need 0 < poll_interval <= max_poll_interval")
        import redis

        self.url = mask_url(url)
        # Every spelling of the password (user info or ``?password=``), to scrub redis-py's text.
        self._scrub = _secrets.Scrubber.for_url(url)
        self.prefix = prefix
        self._message_prefix = self._message("").encode()
        self.default_lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.capabilities = dataclasses.replace(
            type(self).capabilities, max_body_size=max_body_size
        )
        try:
            self._client: Any = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                decode_responses=False,
            )
        except (ValueError, redis.RedisError) as exc:
            # Not chained: redis-py's message may quote the URL, password included.
            raise ConfigurationError(
                f"bad redis URL {self.url!r}: {self._scrub(str(exc))}"
            ) from None
        self._claim = self._client.register_script(_CLAIM)
        self._ack = self._client.register_script(_ACK)
        self._ack_many = self._client.register_script(_ACK_MANY)
        self._nack = self._client.register_script(_NACK)
        self._extend = self._client.register_script(_EXTEND)
        self._dead_letter = self._client.register_script(_DEAD_LETTER)
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisTransport(url={self.url!r}, prefix={self.prefix!r})"

    # -- keys and errors ----------------------------------------------------------------------

    def _ready(self, topic: str) -> str:
        return f"{self.prefix}q:{topic}"

    def _delayed(self, topic: str) -> str:
        return f"{self.prefix}d:{topic}"

    def _leased(self, topic: str) -> str:
        return f"{self.prefix}l:{topic}"

    def _message(self, message_id: str) -> str:
        return f"{self.prefix}m:{message_id}"

    @contextmanager
    def _errors(self, action: str, topic: str) -> Iterator[None]:
        """Turn redis-py errors into balog errors, chained to the original, secrets removed."""
        if self._closed:
            raise TransportError("the redis transport is closed")
        import redis.exceptions as rex

        try:
            yield
        except rex.RedisError as exc:
            detail = self._scrub(clip(f"{type(exc).__name__}: {exc}", 300))
            message = f"redis {action} on {topic!r} at {self.url} failed: {detail}"
            text = str(exc).upper()
            error: BalogError
            if isinstance(exc, (rex.AuthenticationError, rex.NoPermissionError)) or text.startswith(
                ("NOAUTH", "WRONGPASS", "NOPERM")
            ):
                error = AuthenticationError(message)
            elif text.startswith("WRONGTYPE"):
                error = TopicMismatch(
                    f"{message} (a key under the prefix {self.prefix!r} is not of the type "
                    "balog keeps there: another application uses it; give balog another prefix=)"
                )
            elif "DB INDEX IS OUT OF RANGE" in text or "INVALID DB INDEX" in text:
                error = ConfigurationError(f"{message} (the database number in the URL)")
            elif isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
                error = TransportConnectionError(message)
            else:
                error = TransportError(message)
            raise error from exc

    # -- the contract -------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        bodies: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Store each body and queue its id, in one ``MULTI``/``EXEC`` round trip."""
        self.check_body_sizes(bodies)
        if not bodies:
            return
        encoded = json.dumps(dict(headers)) if headers else None
        ids = [uuid.uuid4().hex for _ in bodies]
        with self._errors("send", topic):
            pipe = self._client.pipeline(transaction=True)
            for message_id, body in zip(ids, bodies, strict=True):
                fields: dict[str, Any] = {"b": bytes(body), "c": 0}
                if encoded is not None:
                    fields["h"] = encoded
                pipe.hset(self._message(message_id), mapping=fields)
            pipe.rpush(self._ready(topic), *ids)
            pipe.execute()

    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        """Claim up to ``max_messages``, polling with back-off for up to ``wait`` seconds."""
        wanted = max(1, min(int(max_messages), MAX_BATCH))
        lease_s = self.default_lease if lease is None else max(0.0, float(lease))
        deadline = time.monotonic() + max(0.0, wait)
        pause = self.poll_interval
        keys = [self._ready(topic), self._delayed(topic), self._leased(topic)]
        while True:
            token_base = uuid.uuid4().hex
            with self._errors("receive", topic):
                raw = self._claim(
                    keys=keys,
                    args=[self._message(""), wanted, int(lease_s * 1000), token_base],
                )
            if raw:
                return self._deliveries(topic, raw, lease_s)
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(pause, left))
            pause = min(pause * 2, self.max_poll_interval)

    def _deliveries(self, topic: str, raw: list[Any], lease: float) -> list[Delivery]:
        received_at = time.monotonic()
        out: list[Delivery] = []
        for n in range(0, len(raw), 5):
            # The handle keeps the id as the server gave it: an id that is not UTF-8 still acks.
            raw_id, token, body, headers_raw, count = raw[n : n + 5]
            if count > 0 and not headers_raw:  # the common case, kept cheap
                try:
                    message_id = raw_id.decode()
                except UnicodeDecodeError:
                    message_id = raw_id.decode("utf-8", "backslashreplace")
                out.append(
                    Delivery(
                        topic=topic,
                        body=body,
                        message_id=message_id,
                        receive_count=count,
                        headers={},
                        handle=(raw_id, token),
                        lease=lease,
                        received_at=received_at,
                    )
                )
                continue
            headers: dict[str, str] = {}
            if count < 0:
                refused: str | None = self._foreign(topic, body, headers_raw)
            else:
                headers, refused = _headers(headers_raw)
            out.append(
                Delivery(
                    topic=topic,
                    body=body,
                    message_id=raw_id.decode("utf-8", "backslashreplace"),
                    receive_count=abs(count),
                    headers=headers,
                    handle=(raw_id, token),
                    lease=lease,
                    received_at=received_at,
                    refused=refused,
                )
            )
        return out

    def _foreign(self, topic: str, entry: bytes, kind: bytes) -> str:
        """Why an entry of the ready list is not a balog message, in words."""
        ready = clip(self._ready(topic), 100)
        if kind == b"missing" and _HEX_ID.fullmatch(entry):
            return (
                f"not a balog message: id {entry.decode()} is on {ready} but its hash "
                "is gone (deleted, or expired, by another client)"
            )
        what = _FOREIGN.get(kind, "is not a balog message id")
        shown = clip(repr(entry[:60])[1:] + ("..." if len(entry) > 60 else ""), 100)
        return (
            f"not a balog message: the entry {shown} on {ready} {what} (pushed there by a "
            "client other than balog?)"
        )

    def _handle(self, delivery: Delivery) -> tuple[bytes, bytes]:
        handle = delivery.handle
        if not (
            isinstance(handle, tuple)
            and len(handle) == 2
            and all(isinstance(part, bytes) for part in handle)
        ):
            raise TransportError(f"{delivery!r} was not received from a redis transport")
        return handle[0], handle[1]

    def _key(self, message_id: bytes) -> bytes:
        return self._message_prefix + message_id

    def _lost(self, delivery: Delivery, action: str) -> LeaseExpired:
        return LeaseExpired(
            f"cannot {action} {delivery.message_id} on {delivery.topic!r}: its lease ran out "
            "and the message went back to the queue"
        )

    def ack(self, delivery: Delivery) -> None:
        message_id, token = self._handle(delivery)
        with self._errors("ack", delivery.topic):
            done = self._ack(
                keys=[self._leased(delivery.topic)],
                args=[self._key(message_id), message_id, token],
            )
        if not done:
            raise self._lost(delivery, "ack")

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Ack deliveries with one script call per topic; return one outcome per delivery.

        ``None`` means acked; :class:`~balog.exceptions.LeaseExpired` that the lease was lost;
        another :class:`~balog.exceptions.TransportError` that the call failed (the message
        stays leased and comes back). Never raises.
        """
        outcomes: list[BaseException | None] = [None] * len(deliveries)
        by_topic: dict[str, list[int]] = {}
        for i, delivery in enumerate(deliveries):
            by_topic.setdefault(delivery.topic, []).append(i)
        for topic, indexes in by_topic.items():
            for start in range(0, len(indexes), MAX_BATCH):
                chunk = indexes[start : start + MAX_BATCH]
                args: list[bytes | str] = [self._message("")]
                try:
                    for i in chunk:
                        args.extend(self._handle(deliveries[i]))
                    with self._errors("ack", topic):
                        done = self._ack_many(keys=[self._leased(topic)], args=args)
                except BalogError as exc:
                    for i in chunk:
                        outcomes[i] = exc
                    continue
                for i, acked in zip(chunk, done, strict=True):
                    if not acked:
                        outcomes[i] = self._lost(deliveries[i], "ack")
        return outcomes

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        self._give_back(delivery, delay, adjust=0, action="nack")

    def release(self, delivery: Delivery) -> None:
        """Give the delivery back at the head of the queue, without counting it as a receive."""
        self._give_back(delivery, 0.0, adjust=-1, action="release")

    def _give_back(self, delivery: Delivery, delay: float, *, adjust: int, action: str) -> None:
        message_id, token = self._handle(delivery)
        topic = delivery.topic
        with self._errors(action, topic):
            done = self._nack(
                keys=[self._ready(topic), self._delayed(topic), self._leased(topic)],
                args=[
                    self._key(message_id),
                    message_id,
                    token,
                    max(0, int(delay * 1000)),
                    adjust,
                ],
            )
        if not done:
            raise self._lost(delivery, action)

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        message_id, token = self._handle(delivery)
        with self._errors("extend_lease", delivery.topic):
            done = self._extend(
                keys=[self._leased(delivery.topic)],
                args=[self._key(message_id), message_id, token, max(0, int(lease * 1000))],
            )
        if not done:
            raise self._lost(delivery, "extend the lease of")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to the dead-letter topic in one step, keeping its body and id.

        The body is not sent again, so a dead letter fits whatever its size; a refused entry
        becomes an ordinary message there, the bytes that were pushed its body.
        """
        message_id, token = self._handle(delivery)
        headers = {**dict(delivery.headers), **dead_letter_headers(delivery, reason)}
        dead_topic = self.dead_letter_topic(delivery.topic)
        with self._errors("dead_letter", delivery.topic):
            done = self._dead_letter(
                keys=[self._leased(delivery.topic), self._ready(dead_topic)],
                args=[self._key(message_id), message_id, token, json.dumps(headers)],
            )
        if not done:
            raise self._lost(delivery, "dead-letter")

    def verify(self, topic: str) -> None:
        """Check that the server answers and accepts the credentials, and that the keys of
        ``topic`` and of its dead-letter topic are of the types this transport uses.

        A refused password, or a user not allowed the keys or the scripts, raises
        :class:`~balog.exceptions.AuthenticationError`; a key of another type (another
        application under the same prefix) :class:`~balog.exceptions.TopicMismatch`; a server
        that cannot be reached :class:`~balog.exceptions.TransportConnectionError`.
        """
        expected: dict[str, str] = {}
        for name in (topic, self.dead_letter_topic(topic)):
            expected[self._ready(name)] = "list"
            expected[self._delayed(name)] = "zset"
            expected[self._leased(name)] = "zset"
        with self._errors("verify", topic):
            self._client.ping()
            pipe = self._client.pipeline(transaction=False)
            for key in expected:
                pipe.type(key)
            found = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
        for (key, wanted), kind in zip(expected.items(), found, strict=True):
            if kind not in ("none", wanted):
                raise TopicMismatch(
                    f"redis key {key!r} at {self.url} is a {kind}, not the {wanted} balog keeps "
                    f"there: another application uses the prefix {self.prefix!r}; give balog "
                    "another prefix="
                )
        # The claim script with nothing to claim: the user may run scripts on these keys.
        with self._errors("verify", topic):
            self._claim(
                keys=[self._ready(topic), self._delayed(topic), self._leased(topic)],
                args=[self._message(""), 0, 0, uuid.uuid4().hex],
            )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._client.close()
        except Exception as exc:  # closing must not fail; say why at debug level
            logger.debug("closing the redis client failed: %s", self._scrub(clip(str(exc))))


def _headers(raw: bytes) -> tuple[dict[str, str], str | None]:
    """The headers stored as JSON, or none and why they cannot be read."""
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return {}, f"not a balog message: its headers field is not JSON ({clip(str(exc), 80)})"
    if not isinstance(parsed, dict):
        return {}, f"not a balog message: its headers field is a JSON {type(parsed).__name__}"
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}, None

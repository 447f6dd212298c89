"""In-memory transport: the unit-test backend and the model of balog's delivery semantics.

:class:`MemoryBroker` holds the queues; every :class:`MemoryTransport` and
:class:`~balog.engines.memory.MemoryEngine` handed the same broker sees the same queues. Bodies are
stored as bytes, exactly as a real transport carries them. Deliveries are leased, come back when
nacked or when the lease runs out, count their receives, and can be dead-lettered.

Use it in tests::

    broker = MemoryBroker()
    transport = MemoryTransport(broker=broker)
    engine = MemoryEngine(hub, broker=broker)
    ...
    engine.drain()
    assert broker.dead_letters("myproj-events") == []

When no broker is given, both use :data:`default_broker`; ``default_broker.reset()`` empties it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence

from balog.exceptions import LeaseExpired
from balog.transports.base import (
    Capabilities,
    DeadLetter,
    Delivery,
    Transport,
)

__all__ = ["DEFAULT_MAX_BODY_SIZE", "MemoryBroker", "MemoryTransport", "default_broker"]

DEFAULT_MAX_BODY_SIZE = 256 * 1024
DEFAULT_LEASE = 30.0


@dataclasses.dataclass(eq=False)
class _Message:
    message_id: str
    body: bytes
    headers: dict[str, str]
    receive_count: int = 0
    receipt: int = 0  # the receipt of the current lease; 0 when not leased
    visible_at: float = 0.0  # monotonic time when a lease expires or a delay ends


@dataclasses.dataclass
class _Queue:
    ready: deque[_Message] = dataclasses.field(default_factory=deque)
    delayed: list[tuple[float, int, _Message]] = dataclasses.field(default_factory=list)
    leased: dict[int, _Message] = dataclasses.field(default_factory=dict)


class MemoryBroker:
    """Queues held in this process. Thread-safe; share one between transports and engines."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)
        self._receipts = itertools.count(1)

    def reset(self) -> None:
        """Drop every queue and message."""
        with self._lock:
            self._queues.clear()

    # -- inspection helpers for tests -------------------------------------------------------

    def topics(self) -> list[str]:
        """Every topic that has held a message."""
        with self._lock:
            return sorted(self._queues)

    def queued(self, topic: str) -> list[bytes]:
        """Bodies on ``topic`` not yet acked: ready, delayed and leased, in that order."""
        with self._lock:
            q = self._queues.get(topic)
            if q is None:
                return []
            return (
                [m.body for m in q.ready]
                + [m.body for _, _, m in sorted(q.delayed, key=lambda e: e[:2])]
                + [m.body for m in q.leased.values()]
            )

    def size(self, topic: str) -> int:
        """How many messages on ``topic`` are not yet acked."""
        with self._lock:
            q = self._queues.get(topic)
            return 0 if q is None else len(q.ready) + len(q.delayed) + len(q.leased)

    def in_flight(self, topic: str) -> int:
        """How many messages on ``topic`` are leased right now."""
        with self._lock:
            q = self._queues.get(topic)
            return 0 if q is None else len(q.leased)

    def dead_letters(self, topic: str, *, suffix: str | None = None) -> list[DeadLetter]:
        """The dead letters of ``topic``, oldest first, without removing them."""
        from balog.transports.base import DEAD_LETTER_SUFFIX

        name = topic + (DEAD_LETTER_SUFFIX if suffix is None else suffix)
        with self._lock:
            q = self._queues.get(name)
            messages = [] if q is None else list(q.ready) + list(q.leased.values())
            return [
                DeadLetter.from_headers(
                    m.headers, topic=topic, body=m.body, message_id=m.message_id
                )
                for m in messages
            ]

    # -- operations used by MemoryTransport -------------------------------------------------

    def _queue(self, topic: str) -> _Queue:
        q = self._queues.get(topic)
        if q is None:
            q = self._queues[topic] = _Queue()
        return q

    def _promote(self, q: _Queue, now: float) -> None:
        """Move due delayed messages and expired leases back to ready."""
        while q.delayed and q.delayed[0][0] <= now:
            _, _, m = heapq.heappop(q.delayed)
            q.ready.append(m)
        if q.leased:
            expired = [r for r, m in q.leased.items() if m.visible_at <= now]
            for receipt in expired:
                m = q.leased.pop(receipt)
                m.receipt = 0
                q.ready.append(m)

    def _next_wakeup(self, q: _Queue, now: float) -> float | None:
        times = [m.visible_at for m in q.leased.values()]
        if q.delayed:
            times.append(q.delayed[0][0])
        return min(times) - now if times else None

    def put(self, topic: str, bodies: Sequence[bytes], headers: Mapping[str, str]) -> None:
        with self._lock:
            q = self._queue(topic)
            for body in bodies:
                q.ready.append(_Message(str(next(self._ids)), bytes(body), dict(headers)))
            self._lock.notify_all()

    def get(self, topic: str, max_messages: int, wait: float, lease: float) -> list[Delivery]:
        """Lease up to ``max_messages`` of ``topic``, as deliveries whose handle is the receipt.

        The broker never changes a message's body or headers once stored, so a delivery shares
        them rather than copying."""
        deadline = time.monotonic() + max(wait, 0.0)
        with self._lock:
            q = self._queue(topic)
            while True:
                now = time.monotonic()
                self._promote(q, now)
                if q.ready or now >= deadline:
                    break
                remaining = deadline - now
                wakeup = self._next_wakeup(q, now)
                self._lock.wait(remaining if wakeup is None else min(remaining, wakeup))
            taken: list[Delivery] = []
            ready, leased, receipts = q.ready, q.leased, self._receipts
            visible_at = now + lease
            for _ in range(min(max_messages, len(ready))):
                m = ready.popleft()
                m.receive_count += 1
                m.receipt = receipt = next(receipts)
                m.visible_at = visible_at
                leased[receipt] = m
                taken.append(
                    Delivery(
                        topic, m.body, m.message_id, m.receive_count, m.headers, receipt, lease, now
                    )
                )
            return taken

    def _leased(self, topic: str, receipt: int) -> tuple[_Queue, _Message]:
        q = self._queue(topic)
        m = q.leased.get(receipt)
        if m is None:
            raise LeaseExpired(f"lease on message of topic {topic!r} was lost")
        return q, m

    def remove(self, topic: str, receipt: int) -> None:
        with self._lock:
            q, _ = self._leased(topic, receipt)
            del q.leased[receipt]

    def remove_many(self, leases: Sequence[tuple[str, int]]) -> list[bool]:
        """Remove each leased message, given as (topic, receipt); ``False`` for one whose lease
        was lost."""
        with self._lock:
            queue = self._queue
            return [queue(topic).leased.pop(receipt, None) is not None for topic, receipt in leases]

    def requeue(self, topic: str, receipt: int, delay: float, count: bool) -> None:
        with self._lock:
            q, m = self._leased(topic, receipt)
            del q.leased[receipt]
            m.receipt = 0
            if not count:
                m.receive_count -= 1
            if delay > 0:
                m.visible_at = time.monotonic() + delay
                heapq.heappush(q.delayed, (m.visible_at, next(self._ids), m))
            else:
                q.ready.appendleft(m)
            self._lock.notify_all()

    def extend(self, topic: str, receipt: int, lease: float) -> None:
        with self._lock:
            _, m = self._leased(topic, receipt)
            m.visible_at = time.monotonic() + lease


default_broker = MemoryBroker()
"""The broker used by memory transports and engines given none. ``default_broker.reset()``
empties it between tests."""


class MemoryTransport(Transport):
    """A :class:`~balog.transports.base.Transport` over a :class:`MemoryBroker`."""

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
        broker: MemoryBroker | None = None,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        lease: float = DEFAULT_LEASE,
        record: bool = True,
    ) -> None:
        self.broker = default_broker if broker is None else broker
        self.default_lease = lease
        self.capabilities = dataclasses.replace(
            type(self).capabilities, max_body_size=max_body_size
        )
        self.record = record
        self.sent: list[tuple[str, bytes]] = []
        """Every (topic, body) this transport sent, in order, while ``record`` is true."""
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryTransport(broker=<MemoryBroker at {id(self.broker):#x}>)"

    def send(
        self,
        topic: str,
        bodies: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.check_body_sizes(bodies)
        self.broker.put(topic, bodies, headers or {})
        if self.record:
            self.sent.extend((topic, bytes(b)) for b in bodies)

    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        lease = self.default_lease if lease is None else lease
        return self.broker.get(topic, max_messages, wait, lease)

    def ack(self, delivery: Delivery) -> None:
        self.broker.remove(delivery.topic, delivery.handle)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Ack under one lock."""
        done = self.broker.remove_many([(d.topic, d.handle) for d in deliveries])
        return [
            None if ok else LeaseExpired(f"lease on message of topic {d.topic!r} was lost")
            for d, ok in zip(deliveries, done, strict=True)
        ]

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        self.broker.requeue(delivery.topic, delivery.handle, delay, count=True)

    def release(self, delivery: Delivery) -> None:
        self.broker.requeue(delivery.topic, delivery.handle, 0.0, count=False)

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        self.broker.extend(delivery.topic, delivery.handle, lease)

    def close(self) -> None:
        self._closed = True

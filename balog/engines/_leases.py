"""The lease keeper: every delivery the engine holds keeps its lease until it is settled.

A delivery is *held* from the moment it is received until the settler has acked, nacked,
released or dead-lettered it: while it runs, while it waits behind others of its batch, while its
ack waits to be batched, while a retry waits out its delay, and through a ``stop()`` while
handlers finish. Once a third of a held delivery's lease has gone, the keeper extends it
(where the transport has ``lease_extension``).

Extensions run on a small pool of threads, so one slow call (an SQS request waiting out its
read timeout) never holds up the others; an entry already being extended is not extended again,
and one that was settled meanwhile is never renewed.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable

from balog.engines._pipeline import describe
from balog.exceptions import LeaseExpired
from balog.transports.base import Delivery, Transport

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("balog.engine")

EXTENDERS = 4
"""Threads that extend leases side by side."""


class LeaseKeeper:
    """Keeps the leases of held deliveries; does nothing where the transport cannot extend."""

    def __init__(self, transport: Transport, *, lease: float) -> None:
        self.transport = transport
        self.enabled = transport.capabilities.lease_extension
        self.interval = max(0.05, min(lease / 6, 5.0))
        # Held deliveries by id(); a delivery's lease was last renewed at _renewed[id], or at
        # its receipt when it has no entry there. Workers add and remove entries with single
        # dict operations (atomic); the keeper reads copies.
        self._held: dict[int, Delivery] = {}
        self._renewed: dict[int, float] = {}
        self._extending: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- what the workers call ------------------------------------------------------------------

    def hold(self, deliveries: Iterable[Delivery]) -> None:
        """Keep the leases of ``deliveries`` from now until each is dropped."""
        if not self.enabled:
            return
        held = self._held
        for delivery in deliveries:
            if delivery.lease is not None:
                held[id(delivery)] = delivery

    def drop(self, delivery: Delivery) -> None:
        """``delivery`` is settled: never renew it again."""
        key = id(delivery)
        if self._held.pop(key, None) is not None:
            self._renewed.pop(key, None)

    def drop_many(self, deliveries: Iterable[Delivery]) -> None:
        """Every one of ``deliveries`` is settled."""
        pop = self._held.pop
        for delivery in deliveries:
            pop(id(delivery), None)
        if self._renewed:
            for delivery in deliveries:
                self._renewed.pop(id(delivery), None)

    def __len__(self) -> int:
        return len(self._held)

    # -- running --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the keeper's thread (idempotent); a no-op without ``lease_extension``."""
        if not self.enabled or self._thread is not None:
            return
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name="balog-lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the keeper once nothing it keeps is running any more; wait for its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._wake.set()
        thread.join()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._wake.wait(self.interval):
            try:
                self.renew_due()
            except Exception:  # the keeper must outlive its own bugs
                logger.exception("the lease keeper failed; it carries on")

    def renew_due(self) -> int:
        """Start an extension of every held lease that is a third gone; return how many. An
        extension is then started at most half a lease after the previous one, which leaves
        half a lease for the keeper's thread to be scheduled and the call to reach the broker
        on a loaded machine."""
        now = time.monotonic()
        started = 0
        renewed = self._renewed
        for key, delivery in list(self._held.items()):
            lease = delivery.lease
            if lease is None or key in self._extending:
                continue
            if now - renewed.get(key, delivery.received_at) < lease / 3:
                continue
            self._extending.add(key)
            self._executor().submit(self._extend, key, delivery)
            started += 1
        return started

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    EXTENDERS, thread_name_prefix="balog-lease"
                )
            return self._pool

    def _extend(self, key: int, delivery: Delivery) -> None:
        try:
            if self._held.get(key) is not delivery:
                return  # settled meanwhile
            started = time.monotonic()
            overdue = started - self._renewed.get(key, delivery.received_at) - (delivery.lease or 0)
            self.transport.extend_lease(delivery, delivery.lease or 0.0)
            if self._held.get(key) is delivery:
                self._renewed[key] = started
            if overdue > 0:
                logger.warning(
                    "the lease of message %s on %s was renewed %.1f s after it had run out (the "
                    "lease keeper was held up); it may have been delivered again meanwhile",
                    delivery.message_id,
                    delivery.topic,
                    overdue,
                )
        except LeaseExpired as exc:
            if self._held.get(key) is delivery:
                _warn(
                    "the lease of message %s on %s was lost (%s); it may be processed again",
                    delivery,
                    exc,
                )
                self.drop(delivery)
        except Exception as exc:
            if self._held.get(key) is delivery:
                _warn(
                    "could not extend the lease of message %s on %s (%s); trying again",
                    delivery,
                    exc,
                )
        finally:
            self._extending.discard(key)


def _warn(message: str, delivery: Delivery, exc: BaseException) -> None:
    logger.warning(message, delivery.message_id, delivery.topic, describe(exc))

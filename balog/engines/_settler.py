"""The settler: the one path by which a decision reaches the transport, and is counted.

One settler per worker thread, so every delivery is settled from the thread that received it
(transports with per-thread channels rely on this). It:

- acks processed and unrouted deliveries, at once or, with ``ack_delay``, in batches through
  :meth:`~balog.transports.base.Transport.ack_many` (the deliveries stay leased, their leases kept,
  until their ack goes out: a crash repeats them, never loses them);
- nacks retries with their delay; where the transport cannot delay (``capabilities.delay`` is
  false) it holds the delivery, still leased, and nacks it once the delay is over;
- dead-letters with the reason;
- counts every outcome only once the transport did what it was told, and counts an error when it
  could not (the message then comes back by itself: nothing is lost).

A fatal transport error (credentials revoked, a dead-letter place gone) is not swallowed: it is
handed to ``on_fatal`` so the engine stops.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from balog._text import clip
from balog.engines._leases import LeaseKeeper
from balog.engines._pipeline import Decision, Outcome, describe
from balog.exceptions import BalogError, LeaseExpired
from balog.transports.base import Delivery, Transport

__all__ = ["Counts", "EngineStats", "Settler"]

logger = logging.getLogger("balog.engine")

_PROCESSED = Outcome.PROCESSED
_UNROUTED = Outcome.UNROUTED

DEAD_LETTER_RETRY_DELAY = 5.0
"""Seconds before a message whose dead-lettering failed comes back to be dead-lettered again."""


@dataclasses.dataclass
class EngineStats:
    """Counts per topic since the engine was built. Read with
    :meth:`~balog.engines.base.TransportEngine.stats`.

    ``received`` deliveries taken from the transport; of those, ``processed`` (every matching
    consumer returned, acked), ``unrouted`` (no consumer matched, acked), ``retried`` (a consumer
    raised, given back with a delay) and ``dead_lettered`` (of which ``refused``: the transport
    could not hand them over as a body). ``errors`` counts transport calls that failed (the
    message then comes back by itself), ``restarts`` workers restarted after a crash.

    Each worker keeps its own for each topic, written by that worker alone (so no lock is
    needed); the engine's figures for a topic are the sum of its workers'.
    """

    received: int = 0
    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    unrouted: int = 0
    refused: int = 0
    errors: int = 0
    restarts: int = 0


Counts = EngineStats
"""One worker's :class:`EngineStats` for one topic."""


class Settler:
    """Settles the decisions of one worker thread on ``transport``."""

    def __init__(
        self,
        transport: Transport,
        counts: Counts,
        keeper: LeaseKeeper,
        *,
        ack_delay: float | None,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.transport = transport
        self.counts = counts
        self.keeper = keeper
        self.ack_delay = ack_delay
        self.on_fatal = on_fatal
        self._can_delay = transport.capabilities.delay
        self._can_expire = transport.capabilities.lease_expiry
        # Acks waiting for ack_many: processed and unrouted deliveries, since _pending_since.
        self._processed: list[Delivery] = []
        self._unrouted: list[Delivery] = []
        self._pending_since = 0.0
        self._held: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._troubles = 0

    # -- deciding where each decision goes ------------------------------------------------------

    def settle(self, delivery: Delivery, decision: Decision) -> None:
        """Carry out ``decision`` for ``delivery`` (or queue its ack); never raises but for a
        shutdown."""
        outcome = decision.outcome
        if outcome is _PROCESSED or outcome is _UNROUTED:
            if self.ack_delay is None:
                self._ack(delivery, outcome)
                return
            if not self._processed and not self._unrouted:
                self._pending_since = time.monotonic()
            (self._processed if outcome is _PROCESSED else self._unrouted).append(delivery)
            if time.monotonic() - self._pending_since >= self.ack_delay:
                self.flush_acks()
        elif outcome is Outcome.RETRY:
            self._retry(delivery, decision)
        else:
            self._dead_letter(delivery, decision)

    @property
    def queued(self) -> int:
        """How many acks wait for :meth:`flush_acks`."""
        return len(self._processed) + len(self._unrouted)

    def flush(self) -> None:
        """Send the acks that are due and nack the held retries whose delay is over."""
        if (self._processed or self._unrouted) and time.monotonic() - self._pending_since >= (
            self.ack_delay or 0.0
        ):
            self.flush_acks()
        if self._held and self._held[0][0] <= time.monotonic():
            self._nack_held(due_only=True)

    def next_due(self) -> float | None:
        """Seconds until :meth:`flush` has something to do (``None``: nothing is waiting)."""
        times = []
        if self._processed or self._unrouted:
            times.append(self._pending_since + (self.ack_delay or 0.0))
        if self._held:
            times.append(self._held[0][0])
        return max(0.0, min(times) - time.monotonic()) if times else None

    def close(self) -> None:
        """Send every queued ack and give back every held retry now (the worker is ending)."""
        self.flush_acks()
        self._nack_held(due_only=False)

    def trouble(self) -> int:
        """How many transport calls failed since the last call of this method. A worker pauses
        after failures, so that a broker refusing settles does not make it loop hot."""
        troubles, self._troubles = self._troubles, 0
        return troubles

    @property
    def waiting(self) -> int:
        """Deliveries this settler holds: acks not yet sent, retries not yet nacked."""
        return len(self._processed) + len(self._unrouted) + len(self._held)

    # -- acks -----------------------------------------------------------------------------------

    def _ack(self, delivery: Delivery, outcome: Outcome) -> None:
        try:
            self.transport.ack(delivery)
        except BaseException as exc:
            self._ack_failed(delivery, outcome, exc)
        else:
            self._count(outcome)
        finally:
            self.keeper.drop(delivery)

    def flush_acks(self) -> None:
        """Send every queued ack, in one ``ack_many`` call."""
        processed, unrouted = self._processed, self._unrouted
        if not processed and not unrouted:
            return
        self._processed, self._unrouted = [], []
        deliveries = processed + unrouted if unrouted else processed
        try:
            results = self.transport.ack_many(deliveries)
        except BaseException as exc:  # ack_many must not raise; a transport's bug then
            results = [exc] * len(deliveries)
        self.keeper.drop_many(deliveries)
        if results.count(None) == len(results):
            self.counts.processed += len(processed)
            self.counts.unrouted += len(unrouted)
            return
        for index, (delivery, error) in enumerate(zip(deliveries, results, strict=True)):
            outcome = _PROCESSED if index < len(processed) else _UNROUTED
            if error is None:
                self._count(outcome)
            else:
                self._ack_failed(delivery, outcome, error)

    def _ack_failed(self, delivery: Delivery, outcome: Outcome, exc: BaseException) -> None:
        if isinstance(exc, LeaseExpired):
            logger.warning(
                "message %s on %s was processed after its lease was lost; it may be processed "
                "again",
                delivery.message_id,
                delivery.topic,
            )
            self._count(outcome)
            return
        self.counts.errors += 1
        logger.warning(
            "ack of message %s on %s failed (%s); it will be delivered again",
            delivery.message_id,
            delivery.topic,
            describe(exc),
        )
        self._maybe_fatal(exc)

    # -- retries --------------------------------------------------------------------------------

    def _retry(self, delivery: Delivery, decision: Decision) -> None:
        if decision.delay > 0 and not self._can_delay:
            # The transport cannot delay: hold it (still leased, the keeper renews it) and nack
            # it once the delay is over.
            heapq.heappush(
                self._held, (time.monotonic() + decision.delay, next(self._seq), delivery)
            )
            self.counts.retried += 1
            return
        if self._nack(delivery, decision.delay):
            self.counts.retried += 1

    def _nack(self, delivery: Delivery, delay: float) -> bool:
        try:
            self.transport.nack(delivery, delay=delay)
            return True
        except BaseException as exc:
            self.counts.errors += 1
            logger.warning(
                "nack of message %s on %s failed (%s); %s",
                delivery.message_id,
                delivery.topic,
                describe(exc),
                "it comes back when its lease expires"
                if self._can_expire
                else "giving it back to the broker instead",
            )
            self._maybe_fatal(exc)
            if not self._can_expire:
                self._release(delivery)
            return False
        finally:
            self.keeper.drop(delivery)

    def _nack_held(self, *, due_only: bool) -> None:
        now = time.monotonic()
        while self._held and (not due_only or self._held[0][0] <= now):
            _, _, delivery = heapq.heappop(self._held)
            self._nack(delivery, 0.0)

    def release(self, deliveries: list[Delivery]) -> None:
        """Give back deliveries received but never started (the engine is stopping)."""
        for delivery in deliveries:
            self._release(delivery)

    def _release(self, delivery: Delivery) -> None:
        try:
            self.transport.release(delivery)
        except BaseException as exc:
            logger.warning(
                "could not release message %s on %s (%s); it comes back when its lease expires "
                "or its connection closes",
                delivery.message_id,
                delivery.topic,
                describe(exc),
            )
        finally:
            self.keeper.drop(delivery)

    # -- dead letters ---------------------------------------------------------------------------

    def _dead_letter(self, delivery: Delivery, decision: Decision) -> None:
        reason = decision.reason
        try:
            self.transport.dead_letter(delivery, reason)
        except BaseException as exc:
            self.counts.errors += 1
            logger.error(
                "could not dead-letter message %s on %s (%s); it will be delivered again and "
                "dead-lettered then",
                delivery.message_id,
                delivery.topic,
                describe(exc),
            )
            self._maybe_fatal(exc)
            # Back after a pause (where the transport can delay), to be dead-lettered then:
            # the pipeline sends a message past its attempts straight to its dead letters.
            self._nack(delivery, DEAD_LETTER_RETRY_DELAY if self._can_delay else 0.0)
            return
        self.keeper.drop(delivery)
        self.counts.dead_lettered += 1
        if decision.refused:
            self.counts.refused += 1
        logger.error(
            "message %s on %s dead-lettered: %s",
            delivery.message_id,
            delivery.topic,
            clip(reason, 1000),
        )

    # -- counting -------------------------------------------------------------------------------

    def _count(self, outcome: Outcome) -> None:
        if outcome is Outcome.PROCESSED:
            self.counts.processed += 1
        else:
            self.counts.unrouted += 1

    def _maybe_fatal(self, exc: BaseException) -> None:
        self._troubles += 1
        if isinstance(exc, BalogError) and exc.fatal:
            self.on_fatal(exc)
        elif not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and friends from inside a transport call

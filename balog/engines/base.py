"""The engine contract, and the one message pipeline every transport-backed engine shares.

:class:`Engine` is what a backend must provide: :meth:`~Engine.run` and :meth:`~Engine.stop`.
:class:`TransportEngine` implements both over any :class:`~balog.transports.base.Transport`, so a
package that ships only a transport gets a working engine. For each message it runs::

    decode -> validate -> route -> operator.process_event(consumer, event) for each match -> ack

- undecodable or invalid body: dead-lettered at once, with the error as the reason;
- a consumer raised: nacked with a backoff delay growing with the receive count; dead-lettered with
  the reason once ``max_attempts`` receives have failed;
- no consumer matched: acked, and handed to ``default_event_handler`` if one is set.

No exception ends a worker thread. While a consumer runs, a lease keeper extends the delivery's
lease before it runs out (where the transport can), so long work is not redelivered elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from balog._text import clip
from balog.consumers import Consumer, ConsumerHub, ConsumerOperator, DefaultConsumerOperator
from balog.events import DEFAULT_MAX_DEPTH, EventDict, SchemaRegistry, decode
from balog.exceptions import (
    ConfigurationError,
    ConsumerError,
    EventError,
    LeaseExpired,
    TransportError,
)
from balog.transports.base import Delivery, Transport

__all__ = ["Backoff", "Engine", "EngineStats", "TransportEngine"]

logger = logging.getLogger("balog.engine")

DefaultEventHandler = Callable[[EventDict], Any]

_Pending = list[tuple[Delivery, str, float]]
"""Deliveries processed but not yet acked: (delivery, outcome, when settled)."""


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after ``n`` failures: ``base * factor ** (n - 1)``.

    Capped at ``maximum`` seconds, then spread by up to ``jitter`` (a fraction) either way so that
    failed messages do not come back in lockstep.
    """

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.1

    def delay(self, failures: int) -> float:
        raw = min(self.maximum, self.base * self.factor ** max(failures - 1, 0))
        if self.jitter:
            raw *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return max(0.0, raw)


@dataclasses.dataclass
class EngineStats:
    """Counts per topic since the engine was built. Read with :meth:`Engine.stats`."""

    received: int = 0
    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    unrouted: int = 0
    errors: int = 0


class Engine(ABC):
    """Runs the consumers of a :class:`~balog.consumers.ConsumerHub` against a backend.

    ``consumer_operator`` decides each consumer's topic and how it is called; it defaults to
    :class:`~balog.consumers.DefaultConsumerOperator`.
    """

    def __init__(self, hub: ConsumerHub, consumer_operator: ConsumerOperator | None = None) -> None:
        if not isinstance(hub, ConsumerHub):
            raise ConfigurationError(f"hub must be a ConsumerHub, not {type(hub).__name__}")
        self.hub = hub
        self.consumer_operator: ConsumerOperator = consumer_operator or DefaultConsumerOperator()

    @abstractmethod
    def run(self) -> None:
        """Process events until :meth:`stop`, SIGTERM or Ctrl-C; return once in-flight work ends."""

    @abstractmethod
    def stop(self) -> None:
        """Ask :meth:`run` to return. Thread-safe; returns at once, without waiting."""

    def close(self) -> None:
        """Release the engine's resources. Idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Outcome:
    ACKED = "processed"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    UNROUTED = "unrouted"
    RELEASED = "released"


class TransportEngine(Engine):
    """An engine over any transport: one or more polling workers per topic.

    ``transport`` is a :class:`~balog.transports.base.Transport` or a transport name (built with
    ``transport_options``); the engine closes a transport it built, never one it was given.

    Options: ``max_attempts`` receives before a failing message is dead-lettered; ``backoff`` the
    retry delays; ``batch_size`` messages per receive; ``wait`` seconds a receive may wait (also
    how long :meth:`stop` may take to be noticed); ``lease`` seconds each delivery is leased for;
    ``concurrency`` worker threads per topic; ``default_event_handler`` called with events no
    consumer matched; ``max_event_size``/``max_depth`` limits on bodies; ``registry`` the payload
    schemas; ``handle_signals`` install SIGTERM/SIGINT handlers in :meth:`run` (main thread only);
    ``ack_delay`` ack the processed messages of a received batch together with
    :meth:`~balog.transports.base.Transport.ack_many`, at the latest this many seconds after the
    first of them (``None``: ack each at once). Until their ack goes out they stay leased and the
    lease keeper renews them, so a crash can repeat them but never lose them.
    """

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        *,
        transport: Transport | str = "memory",
        transport_options: Mapping[str, Any] | None = None,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        batch_size: int = 10,
        wait: float = 1.0,
        lease: float = 30.0,
        concurrency: int = 1,
        default_event_handler: DefaultEventHandler | None = None,
        max_event_size: int | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        registry: SchemaRegistry | None = None,
        handle_signals: bool = True,
        ack_delay: float | None = None,
    ) -> None:
        super().__init__(hub, consumer_operator)
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if isinstance(transport, Transport):
            if transport_options:
                raise ConfigurationError("transport_options need a transport name, not an instance")
            self.transport = transport
            self._owns_transport = False
        else:
            from balog.transports import create_transport

            self.transport = create_transport(transport, **dict(transport_options or {}))
            self._owns_transport = True
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.batch_size = batch_size
        self.wait = wait
        self.lease = lease
        self.concurrency = concurrency
        self.default_event_handler = default_event_handler
        limit = self.transport.capabilities.max_body_size
        self.max_event_size = max_event_size or limit or 256 * 1024
        self.max_depth = max_depth
        self.registry = registry
        self.handle_signals = handle_signals
        self.ack_delay = None if ack_delay is None else max(0.0, ack_delay)
        self._batch = threading.local()  # .pending: this worker's settled-but-unacked deliveries
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stats: dict[str, EngineStats] = {}
        # In-flight deliveries by id(): [delivery, monotonic time of the last lease renewal].
        # Workers add and remove entries without a lock (single dict operations are atomic);
        # the lease keeper reads a copy and renews an entry in place.
        self._in_flight: dict[int, list[Any]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={self.transport!r}, hub={self.hub!r})"

    # -- topics and stats ---------------------------------------------------------------------

    def routes(self) -> dict[str, list[Consumer]]:
        """The consumers of the hub by the topic the operator gives each."""
        return self.hub.by_topic(self.consumer_operator)

    def stats(self) -> dict[str, EngineStats]:
        """A snapshot of the counts per topic."""
        with self._lock:
            return {t: dataclasses.replace(s) for t, s in self._stats.items()}

    def _count(self, topic: str, field: str) -> None:
        stats = self._stats.get(topic) or self._topic_stats(topic)
        with self._lock:
            setattr(stats, field, getattr(stats, field) + 1)

    def _topic_stats(self, topic: str) -> EngineStats:
        with self._lock:
            stats = self._stats.get(topic)
            if stats is None:
                stats = self._stats[topic] = EngineStats()
            return stats

    # -- the pipeline -------------------------------------------------------------------------

    def handle(
        self,
        delivery: Delivery,
        consumers: list[Consumer],
        errors: list[BaseException] | None = None,
    ) -> str:
        """Run one delivery through the pipeline and settle it; return the outcome's name.

        Never raises. When ``errors`` is given, a consumer's exception is appended to it.
        """
        topic = delivery.topic
        stats = self._stats.get(topic) or self._topic_stats(topic)
        with self._lock:
            stats.received += 1
        try:
            event = decode(
                delivery.body,
                max_size=self.max_event_size,
                max_depth=self.max_depth,
                registry=self.registry,
            )
        except EventError as exc:
            return self._dead_letter(delivery, f"invalid event: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a decoder bug must not lose the message either
            logger.exception("unexpected error decoding message %s", delivery.message_id)
            return self._dead_letter(delivery, f"undecodable: {type(exc).__name__}: {exc}")
        matched = [c for c in consumers if c.match_event(event)]
        if not matched:
            if self.default_event_handler is not None:
                try:
                    self.default_event_handler(event)
                except Exception:
                    logger.exception("default_event_handler raised for %s", delivery.message_id)
            return self._settle(delivery, _Outcome.UNROUTED)
        self._track(delivery)
        try:
            for consumer in matched:
                try:
                    self.consumer_operator.process_event(consumer, event)
                except Exception as exc:
                    if errors is not None:
                        errors.append(exc)
                    return self._failed(delivery, consumer, exc)
        finally:
            self._untrack(delivery)
        return self._settle(delivery, _Outcome.ACKED)

    def _settle(self, delivery: Delivery, outcome: str) -> str:
        pending: _Pending | None = getattr(self._batch, "pending", None)
        if pending is not None:
            pending.append((delivery, outcome, time.monotonic()))
            # Until its ack goes out the message stays leased: have the keeper renew it at its
            # next round, as its last renewal is not known here.
            if delivery.lease is not None:
                self._track(delivery, since=time.monotonic() - delivery.lease / 2)
            return outcome
        try:
            self.transport.ack(delivery)
        except LeaseExpired:
            logger.warning(
                "message %s on %s was processed after its lease was lost; it may be processed "
                "again",
                delivery.message_id,
                delivery.topic,
            )
        except Exception as exc:
            logger.warning(
                "ack of message %s on %s failed (%s); it will be delivered again",
                delivery.message_id,
                delivery.topic,
                clip(f"{type(exc).__name__}: {exc}"),
            )
            self._count(delivery.topic, "errors")
            return outcome
        self._count(delivery.topic, outcome)
        return outcome

    def _failed(self, delivery: Delivery, consumer: Consumer, exc: Exception) -> str:
        # 900, not 1000: the dead-letter reason appends the attempts, and is clipped to 1000.
        reason = clip(f"consumer {consumer.name} raised {type(exc).__name__}: {exc}", 900)
        attempts = delivery.receive_count
        if attempts >= self.max_attempts:
            return self._dead_letter(delivery, f"{reason} (after {attempts} attempts)")
        logger.warning(
            "message %s on %s failed (attempt %d of %d): %s",
            delivery.message_id,
            delivery.topic,
            attempts,
            self.max_attempts,
            reason,
            exc_info=exc,
        )
        try:
            self.transport.nack(delivery, delay=self.backoff.delay(attempts))
        except Exception as nack_exc:
            # The lease runs out by itself and the message comes back; nothing is lost.
            logger.warning(
                "nack of message %s failed (%s); it comes back when its lease expires",
                delivery.message_id,
                clip(f"{type(nack_exc).__name__}: {nack_exc}"),
            )
            self._count(delivery.topic, "errors")
        self._count(delivery.topic, _Outcome.RETRIED)
        return _Outcome.RETRIED

    def _dead_letter(self, delivery: Delivery, reason: str) -> str:
        reason = clip(reason, 1000)
        try:
            self.transport.dead_letter(delivery, reason)
        except Exception as exc:
            logger.error(
                "could not dead-letter message %s on %s (%s); it will be delivered again",
                delivery.message_id,
                delivery.topic,
                clip(f"{type(exc).__name__}: {exc}"),
            )
            self._count(delivery.topic, "errors")
            try:
                self.transport.nack(delivery, delay=self.backoff.delay(delivery.receive_count))
            except Exception:
                pass  # the lease expiry brings it back
            return _Outcome.RETRIED
        logger.error(
            "message %s on %s dead-lettered: %s", delivery.message_id, delivery.topic, reason
        )
        self._count(delivery.topic, _Outcome.DEAD_LETTERED)
        return _Outcome.DEAD_LETTERED

    # -- lease keeping ------------------------------------------------------------------------

    def _track(self, delivery: Delivery, since: float | None = None) -> None:
        """Keep ``delivery``'s lease extended until :meth:`_untrack`.

        ``since`` is when its lease was last renewed (now, by default); a subclass that holds a
        processed delivery before settling it passes an earlier time to have it renewed sooner.
        """
        if delivery.lease is not None and self.transport.capabilities.lease_extension:
            self._in_flight[id(delivery)] = [delivery, time.monotonic() if since is None else since]

    def _untrack(self, delivery: Delivery) -> None:
        self._in_flight.pop(id(delivery), None)

    def _keep_leases(self) -> None:
        """Extend leases of deliveries being processed once half their lease has gone."""
        interval = max(0.05, min(self.lease / 4, 5.0))
        while not self._stopping.wait(interval):
            self.extend_due_leases()
        self.extend_due_leases()

    def extend_due_leases(self) -> None:
        now = time.monotonic()
        due = [
            (key, entry)
            for key, entry in self._in_flight.copy().items()
            if entry[0].lease is not None and now - entry[1] >= entry[0].lease / 2
        ]
        for _key, entry in due:
            delivery: Delivery = entry[0]
            try:
                self.transport.extend_lease(delivery, delivery.lease or self.lease)
            except Exception as exc:
                logger.warning(
                    "could not extend the lease of message %s (%s)",
                    delivery.message_id,
                    clip(f"{type(exc).__name__}: {exc}"),
                )
                continue
            entry[1] = time.monotonic()

    # -- running ------------------------------------------------------------------------------

    def _receive(self, topic: str, wait: float) -> list[Delivery]:
        return self.transport.receive(
            topic, max_messages=self.batch_size, wait=wait, lease=self.lease
        )

    def _release(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                self.transport.release(delivery)
            except Exception as exc:
                logger.warning(
                    "could not release message %s (%s); it comes back when its lease expires",
                    delivery.message_id,
                    clip(f"{type(exc).__name__}: {exc}"),
                )

    def _process_batch(
        self,
        batch: list[Delivery],
        consumers: list[Consumer],
        errors: list[BaseException] | None = None,
    ) -> int:
        pending: _Pending | None = None
        if self.ack_delay is not None:
            pending = self._batch.pending = []
        done = 0
        try:
            for i, delivery in enumerate(batch):
                if self._stopping.is_set():
                    self._release(batch[i:])
                    break
                self.handle(delivery, consumers, errors)
                done += 1
                if pending and time.monotonic() - pending[0][2] >= (self.ack_delay or 0.0):
                    self._ack_pending(pending)
        finally:
            if pending is not None:
                self._batch.pending = None
                self._ack_pending(pending)
        return done

    def _ack_pending(self, pending: _Pending) -> None:
        """Ack the deliveries settled so far in this batch, in one ``ack_many`` call."""
        if not pending:
            return
        for delivery, _, _ in pending:
            self._untrack(delivery)
        outcomes = self.transport.ack_many([d for d, _, _ in pending])
        for (delivery, outcome, _), error in zip(pending, outcomes, strict=True):
            if error is None:
                self._count(delivery.topic, outcome)
            elif isinstance(error, LeaseExpired):
                logger.warning(
                    "message %s on %s was processed after its lease was lost; it may be "
                    "processed again",
                    delivery.message_id,
                    delivery.topic,
                )
                self._count(delivery.topic, outcome)
            else:
                logger.warning(
                    "ack of message %s on %s failed (%s); it will be delivered again",
                    delivery.message_id,
                    delivery.topic,
                    clip(f"{type(error).__name__}: {error}"),
                )
                self._count(delivery.topic, "errors")
        pending.clear()

    def _worker(self, topic: str, consumers: list[Consumer]) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                batch = self._receive(topic, self.wait)
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures - 1, 6))
                level = logging.WARNING if isinstance(exc, TransportError) else logging.ERROR
                logger.log(
                    level,
                    "receive from %s failed (%s); retrying in %.1fs",
                    topic,
                    clip(f"{type(exc).__name__}: {exc}"),
                    delay,
                )
                self._stopping.wait(delay)
                continue
            failures = 0
            try:
                self._process_batch(batch, consumers)
            except Exception:  # handle() never raises; this guards against a bug all the same
                logger.exception("worker for %s hit an unexpected error", topic)

    def run(self) -> None:
        routes = self.routes()
        if not routes:
            raise ConfigurationError("the hub has no consumers to run")
        self._stopping.clear()
        threads = [
            threading.Thread(
                target=self._worker,
                args=(topic, consumers),
                name=f"balog-worker-{topic}-{n}",
                daemon=True,
            )
            for topic, consumers in routes.items()
            for n in range(self.concurrency)
        ]
        if self.transport.capabilities.lease_extension:
            threads.append(
                threading.Thread(target=self._keep_leases, name="balog-lease-keeper", daemon=True)
            )
        restore = self._install_signal_handlers()
        try:
            for thread in threads:
                thread.start()
            logger.info("engine running on %d topic(s): %s", len(routes), ", ".join(routes))
            while not self._stopping.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
        finally:
            for thread in threads:
                thread.join()
            restore()
            logger.info("engine stopped")

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received signal %d; stopping after in-flight events", signum)
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def drain(self, *, raise_errors: bool = False, timeout: float | None = None) -> int:
        """Process every message available now on every topic; return how many were handled.

        Messages delayed by a retry backoff are not "available now". With ``raise_errors``, the
        first exception a consumer raised is re-raised afterwards as
        :class:`~balog.exceptions.ConsumerError` (the message was still retried or
        dead-lettered as usual). ``timeout`` bounds the whole call.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        errors: list[BaseException] = []
        handled = 0
        progress = True
        while progress:
            progress = False
            for topic, consumers in self.routes().items():
                batch = self._receive(topic, 0.0)
                if batch:
                    progress = True
                    handled += self._process_batch(batch, consumers, errors)
                if deadline is not None and time.monotonic() >= deadline:
                    progress = False
                    break
        if raise_errors and errors:
            raise ConsumerError(f"a consumer raised: {type(errors[0]).__name__}") from errors[0]
        return handled

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._owns_transport:
            self.transport.close()

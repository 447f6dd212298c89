"""The pipeline: what happens to one delivery, decided in one place.

::

    refused by the transport? ──► dead letter
    decode (size, UTF-8, JSON, depth, duplicate keys, schemas) ──► invalid: dead letter
    upcast (old shapes to today's)
    route (the topic's consumers whose cls_type and version match) ──► none: unrouted (acked)
    past its attempts already? ──► dead letter
    call each consumer through the operator (awaiting what an async one returns)
        ──► all returned: processed (acked)
        ──► one raised: retry after a backoff, or dead letter once max_attempts is reached

The pipeline only *decides*: it returns a :class:`Decision` and never touches the transport.
Settling that decision (ack, nack, dead letter) is the settler's job, in ``_settler.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from balog._text import clip
from balog.consumers import Consumer, ConsumerOperator, DefaultConsumerOperator
from balog.events import EventDict, SchemaRegistry, decode
from balog.exceptions import EventError
from balog.transports.base import Delivery

__all__ = ["Decision", "Outcome", "Pipeline", "Prepared", "describe"]

logger = logging.getLogger("balog.engine")

REASON_LIMIT = 1000
"""Longest dead-letter reason, in characters; the attempts suffix is always kept."""


class Outcome(enum.Enum):
    """What the pipeline decided for a delivery; each is counted in ``EngineStats``."""

    PROCESSED = "processed"
    UNROUTED = "unrouted"
    RETRY = "retried"
    DEAD_LETTER = "dead_lettered"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """A decision for one delivery: the outcome, and for a retry or a dead letter the reason
    (and the delay before a retry); ``refused`` marks a dead letter of a delivery the transport
    could not hand over as a body."""

    outcome: Outcome
    reason: str = ""
    delay: float = 0.0
    refused: bool = False


PROCESSED = Decision(Outcome.PROCESSED)
UNROUTED = Decision(Outcome.UNROUTED)


@dataclasses.dataclass(slots=True)
class Prepared:
    """A delivery decoded and routed: the event and the consumers to call, in order."""

    delivery: Delivery
    event: EventDict
    consumers: list[Consumer]


def _safe_text(exc: BaseException) -> str:
    """``str(exc)``, whatever ``__str__`` does (raises, returns a non-string, recurses)."""
    try:
        text = str(exc)
    except BaseException:  # a hostile __str__ must not stop the reason being built
        try:
            text = repr(exc)
        except BaseException:
            return "<exception whose str() and repr() raise>"
    return text


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line, clipped; never raises."""
    try:
        name = type(exc).__name__
    except BaseException:  # pragma: no cover - type() of an object cannot really fail
        name = "exception"
    return clip(f"{name}: {_safe_text(exc)}", REASON_LIMIT)


def with_suffix(reason: str, suffix: str) -> str:
    """``reason`` clipped so that ``reason + suffix`` fits :data:`REASON_LIMIT`."""
    return clip(reason, max(REASON_LIMIT - len(suffix), 40)) + suffix


def is_shutdown(exc: BaseException) -> bool:
    """Whether ``exc`` is the process being stopped rather than a failure of one event.

    A ``KeyboardInterrupt`` reaches user code as a real Ctrl-C only in the main thread; in a
    worker thread (or raised by the consumer itself anywhere else) it is the consumer's own
    doing, like ``SystemExit`` there, and so a failure of that event.
    """
    return isinstance(exc, KeyboardInterrupt) and threading.current_thread() is (
        threading.main_thread()
    )


def _cancelled_from_outside(exc: BaseException) -> bool:
    """A ``CancelledError`` that is the awaiting task itself being cancelled (a shutdown), not
    one a consumer let out of its own work (a failure of that event)."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else True


class Pipeline:
    """Decides what happens to each delivery of a topic; shared by every worker of an engine.

    ``receive_limit(topic)`` gives the transport's own redrive limit (``None``: none), so a
    message is dead-lettered by balog, with its reason, before the backend moves it elsewhere.
    """

    def __init__(
        self,
        operator: ConsumerOperator,
        *,
        max_attempts: int,
        backoff: Callable[[int], float],
        max_event_size: int,
        max_depth: int,
        registry: SchemaRegistry | None,
        default_event_handler: Callable[[EventDict], Any] | None,
        receive_limit: Callable[[str], int | None],
    ) -> None:
        self.operator = operator
        self._default_operator = type(operator) is DefaultConsumerOperator
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_event_size = max_event_size
        self.max_depth = max_depth
        self.registry = registry
        self.default_event_handler = default_event_handler
        self._receive_limit = receive_limit
        self._limits: dict[str, int] = {}
        # Routing, cached: the consumers matching a (cls_type, schema version) pair, per list of
        # consumers. A stream carries a handful of pairs; they come off the wire, so the cache
        # is bounded.
        self._routes: dict[tuple[int, Any, Any], list[Consumer]] = {}
        self.errors: list[BaseException] | None = None
        """Where set (``drain(raise_errors=True)``), every exception a consumer raised."""

    # -- deciding before any consumer runs ------------------------------------------------------

    def prepare(self, delivery: Delivery, consumers: Sequence[Consumer]) -> Prepared | Decision:
        """Decode and route ``delivery``: a :class:`Prepared` to call, or a final decision."""
        routed = self.route(delivery, consumers)
        if isinstance(routed, Decision):
            return routed
        event, matched = routed
        return Prepared(delivery, event, matched)

    def route(
        self, delivery: Delivery, consumers: Sequence[Consumer]
    ) -> Decision | tuple[EventDict, list[Consumer]]:
        """:meth:`prepare` without the :class:`Prepared`: ``(event, consumers to call)``, or a
        final decision. The one-at-a-time path uses it with :meth:`call_routed`."""
        if delivery.refused is not None:
            return Decision(
                Outcome.DEAD_LETTER,
                clip(f"refused by the transport: {delivery.refused}", REASON_LIMIT),
                refused=True,
            )
        try:
            event = decode(
                delivery.body,
                max_size=self.max_event_size,
                max_depth=self.max_depth,
                registry=self.registry,
                upcast=True,
            )
        except EventError as exc:
            return Decision(Outcome.DEAD_LETTER, f"invalid event: {describe(exc)}")
        except Exception as exc:  # a decoder bug must not lose the message either
            logger.exception("unexpected error decoding message %s", delivery.message_id)
            return Decision(Outcome.DEAD_LETTER, f"undecodable: {describe(exc)}")
        payload = event["payload"]  # validated: the payload is an object with a cls_type
        key = (id(consumers), payload["cls_type"], event["schema"])
        matched = self._routes.get(key)
        if matched is None:
            matched = [c for c in consumers if c.match_event(event)]
            if len(self._routes) < 4096:
                self._routes[key] = matched
        if not matched:
            self._unrouted(delivery, event)
            return UNROUTED
        limit = self._limits.get(delivery.topic) or self.attempts_allowed(delivery.topic)
        if delivery.receive_count > limit:
            # An earlier dead-lettering of it failed; its consumers have had their attempts.
            return Decision(
                Outcome.DEAD_LETTER,
                f"received {delivery.receive_count} times, past the {limit} attempts allowed",
            )
        return event, matched

    def _unrouted(self, delivery: Delivery, event: EventDict) -> None:
        handler = self.default_event_handler
        if handler is None:
            return
        try:
            result = handler(event)
            if inspect.isawaitable(result):
                logger.error(
                    "default_event_handler returned an awaitable for %s; it must be a plain "
                    "function and the awaitable was not run",
                    delivery.message_id,
                )
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            logger.exception("default_event_handler raised for %s", delivery.message_id)

    def attempts_allowed(self, topic: str) -> int:
        """``max_attempts``, or the transport's redrive limit when that is lower."""
        limit = self._limits.get(topic)
        if limit is None:
            try:
                backend = self._receive_limit(topic)
            except Exception:
                backend = None
            limit = self.max_attempts if backend is None else min(self.max_attempts, backend)
            self._limits[topic] = limit
        return limit

    # -- calling the consumers ------------------------------------------------------------------

    def start(self, prepared: Prepared, index: int) -> Any:
        """Call consumer ``index`` of ``prepared`` through the operator; return what it returned
        (an awaitable for an async consumer, which the caller awaits)."""
        return self.operator.process_event(prepared.consumers[index], prepared.event)

    def call(self, prepared: Prepared, run_awaitable: Callable[[Awaitable[Any]], Any]) -> Decision:
        """Call every matched consumer in turn; ``run_awaitable`` runs what an async one returns
        to completion. Returns the decision; raises only for a shutdown (see
        :func:`is_shutdown`)."""
        routed = (prepared.event, prepared.consumers)
        return self.call_routed(prepared.delivery, routed, run_awaitable)

    def decide(
        self,
        delivery: Delivery,
        consumers: Sequence[Consumer],
        run_awaitable: Callable[[Awaitable[Any]], Any],
    ) -> Decision:
        """:meth:`route` and :meth:`call_routed` in one: the one-at-a-time path's decision."""
        routed = self.route(delivery, consumers)
        if isinstance(routed, Decision):
            return routed
        return self.call_routed(delivery, routed, run_awaitable)

    def call_routed(
        self,
        delivery: Delivery,
        routed: tuple[EventDict, list[Consumer]],
        run_awaitable: Callable[[Awaitable[Any]], Any],
    ) -> Decision:
        """:meth:`call` for what :meth:`route` returned."""
        event, matched = routed
        # DefaultConsumerOperator.process_event calls consumer.func(event): do so directly.
        default = self._default_operator
        process_event = self.operator.process_event
        for consumer in matched:
            try:
                result = consumer.func(event) if default else process_event(consumer, event)
                if result is not None and inspect.isawaitable(result):
                    run_awaitable(result)
            except BaseException as exc:
                if is_shutdown(exc):
                    raise
                return self.failed(delivery, consumer, exc)
        return PROCESSED

    async def acall(
        self,
        prepared: Prepared,
        start: Callable[[Prepared, int], Any] | None,
        finish: Callable[[Awaitable[Any]], Awaitable[Any]] | None,
    ) -> Decision:
        """:meth:`call` on an event loop. ``start(prepared, i)`` calls consumer ``i`` (``None``:
        inline, through the operator); it may instead return an :class:`asyncio.Future` of the
        call (run in a thread, for a sync consumer), awaited here. ``finish(awaitable)`` awaits
        what an async consumer returned (``None``: here; else on the application's loop)."""
        process_event = self.operator.process_event
        event = prepared.event
        for index, consumer in enumerate(prepared.consumers):
            try:
                result = process_event(consumer, event) if start is None else start(prepared, index)
                if isinstance(result, asyncio.Future):
                    result = await result
                if result is not None and inspect.isawaitable(result):
                    await (result if finish is None else finish(result))
            except BaseException as exc:
                if is_shutdown(exc) or _cancelled_from_outside(exc):
                    raise
                return self.failed(prepared.delivery, consumer, exc)
        return PROCESSED

    def failed(self, delivery: Delivery, consumer: Consumer, exc: BaseException) -> Decision:
        """The decision after ``consumer`` raised ``exc``: retry with a backoff, or dead-letter
        once the attempts allowed are used up."""
        if self.errors is not None:
            self.errors.append(exc)
        reason = f"consumer {consumer.name} raised {describe(exc)}"
        attempts = delivery.receive_count
        limit = self.attempts_allowed(delivery.topic)
        if attempts >= limit:
            suffix = f" (after {attempts} attempts)"
            if limit < self.max_attempts:
                suffix = f" (after {attempts} attempts; the queue's redrive policy allows {limit})"
            self._log_failure(delivery, exc, attempts, limit, final=True)
            return Decision(Outcome.DEAD_LETTER, with_suffix(reason, suffix))
        self._log_failure(delivery, exc, attempts, limit, final=False)
        return Decision(Outcome.RETRY, clip(reason, REASON_LIMIT), self.backoff(attempts))

    @staticmethod
    def _log_failure(
        delivery: Delivery, exc: BaseException, attempts: int, limit: int, *, final: bool
    ) -> None:
        try:
            logger.warning(
                "message %s on %s failed (attempt %d of %d)%s: %s",
                delivery.message_id,
                delivery.topic,
                attempts,
                limit,
                "; dead-lettering it" if final else "",
                describe(exc),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        except BaseException:  # a traceback that cannot be formatted must not matter
            logger.warning(
                "message %s on %s failed (attempt %d of %d)",
                delivery.message_id,
                delivery.topic,
                attempts,
                limit,
            )

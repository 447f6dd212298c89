"""Sending events from Python's ``logging``: :class:`EventHandler` and :class:`EventFormatter`.

The handler never blocks the logging thread beyond appending to a bounded buffer, and never raises
into it. A background thread encodes, validates and sends events in batches, retrying a failing
transport a bounded number of times; what it cannot send is counted in :attr:`EventHandler.stats`
and reported in balog's own log (logger ``balog.producer``), whose records are never turned into
events.

balog's own warnings are seen even where the application configured no handler that shows them:
:data:`last_resort`, attached to the ``balog`` logger, writes a warning or error of balog's to
stderr when no handler of the application would show it (as :data:`logging.lastResort` does when
there is no handler at all; an :class:`EventHandler`, which never sends balog's own records, does
not count). Give the ``balog`` logger a handler, or a level, to decide otherwise.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import logging
import os
import socket
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from balog._options import unknown_option
from balog._text import clip
from balog.events import EventDict, SchemaRegistry, encode, new_event
from balog.exceptions import ConfigurationError, EventError, MessageTooLarge, SendError
from balog.transports.base import Transport

__all__ = [
    "EventFormatter",
    "EventHandler",
    "LastResortHandler",
    "ProducerStats",
    "last_resort",
    "record_to_event",
    "split_options",
]

logger = logging.getLogger("balog.producer")

DEFAULT_TRANSPORT = "sqlite"
"""The transport used when none is named: the embedded one, which the default engine reads."""

EVENT_ATTR = "balog_event"
"""The LogRecord attribute that carries a balog event."""

TOPIC_ATTR = "balog_topic"
"""The LogRecord attribute that, when set, overrides the handler's topic for that event."""

_SEVERITY = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


def severity(levelno: int) -> str:
    """The ``log`` payload severity for a logging level number."""
    if levelno in _SEVERITY:
        return _SEVERITY[levelno]
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return _SEVERITY[threshold]
    return "debug"


def _is_own_record(record: logging.LogRecord) -> bool:
    return record.name == "balog" or record.name.startswith("balog.")


class LastResortHandler(logging.Handler):
    """Writes balog's own warnings to stderr when no handler of the application would show them.

    Attached to the ``balog`` logger. For each record it walks the loggers the record propagates
    through, as :meth:`logging.Logger.callHandlers` does; a handler whose level lets the record
    through counts (a :class:`logging.NullHandler` too, the usual way to silence a library),
    except an :class:`EventHandler`, which never sends balog's own records.
    """

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))

    def shown_elsewhere(self, record: logging.LogRecord) -> bool:
        """True if another handler on the record's way up would handle it."""
        node: logging.Logger | None = logging.getLogger(record.name)
        while node is not None:
            for handler in node.handlers:
                if handler is self or isinstance(handler, EventHandler):
                    continue
                if record.levelno >= handler.level:
                    return True
            if not node.propagate:
                return False
            node = node.parent
        return False

    def emit(self, record: logging.LogRecord) -> None:
        if self.shown_elsewhere(record):
            return
        try:
            stream = sys.stderr
            if stream is not None:  # pythonw, a daemon with stderr closed
                stream.write(self.format(record) + "\n")
                stream.flush()
        except Exception:
            self.handleError(record)

    def attach(self) -> None:
        """Attach to the ``balog`` logger, once (again after something removed it)."""
        target = logging.getLogger("balog")
        if self not in target.handlers:
            target.addHandler(self)


last_resort = LastResortHandler()
"""The one :class:`LastResortHandler`, attached to the ``balog`` logger when balog is imported
(and again by :func:`balog.testing.reset`)."""
last_resort.attach()


def record_to_event(record: logging.LogRecord) -> EventDict:
    """Turn a plain log record into a ``log`` event on the channel of the logger's name."""
    try:
        message = record.getMessage()
    except Exception:  # bad %-args must not lose the record
        message = str(record.msg)
    payload: dict[str, Any] = {
        "cls_type": "log",
        "message": message,
        "severity": severity(record.levelno),
    }
    if record.exc_info and record.exc_info[0] is not None:
        payload["exc_text"] = "".join(traceback.format_exception(*record.exc_info))
    elif record.exc_text:
        payload["exc_text"] = record.exc_text
    return new_event(
        record.name or "root",
        payload,
        context={"logger": record.name, "function": record.funcName, "line": record.lineno},
        timestamp=datetime.fromtimestamp(record.created, timezone.utc),
    )


class EventFormatter(logging.Formatter):
    """Formats a record as one line of event JSON: its balog event, or a ``log`` event."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, EVENT_ATTR, None)
        if event is None:
            event = record_to_event(record)
        return encode(event).decode("utf-8")


@dataclasses.dataclass
class ProducerStats:
    """What a handler did with the events it was given."""

    enqueued: int = 0
    sent: int = 0
    dropped_full: int = 0
    dropped_failed: int = 0
    invalid: int = 0
    retries: int = 0

    @property
    def dropped(self) -> int:
        """Events that will never be sent: buffer full, transport failing, or invalid."""
        return self.dropped_full + self.dropped_failed + self.invalid


def _default_context(application: str | None) -> dict[str, Any]:
    return {
        "fqdn": socket.getfqdn(),
        "application": application or os.path.basename(sys.argv[0] or "python") or "python",
        "pid": os.getpid(),
    }


_live_handlers: weakref.WeakSet[EventHandler] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for handler in list(_live_handlers):
        handler.close(timeout=handler.exit_timeout)


def split_options(
    transport: str | Transport, options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keywords into :class:`EventHandler` options and options of ``transport``.

    No guessing: a name :class:`EventHandler` takes is the handler's; any other must be a
    parameter of the transport class registered as ``transport`` (read from its signature), or it
    is a :class:`~balog.exceptions.ConfigurationError` naming the nearest valid name. A transport
    option that shares a handler option's name (kombu's ``max_retries``) goes in
    ``transport_options``. A transport instance takes no options.
    """
    handler_names = _HANDLER_OPTIONS
    handler_options = {k: v for k, v in options.items() if k in handler_names}
    rest = {k: v for k, v in options.items() if k not in handler_names}
    if not rest:
        return handler_options, {}
    if isinstance(transport, Transport):
        name = next(iter(rest))
        error = unknown_option("EventHandler", name, handler_names)
        raise ConfigurationError(
            f"{error}; options for the transport need a transport name, not an instance"
        )
    from balog import _plugins

    params, takes_any = _plugins.parameters(_plugins.load(_plugins.TRANSPORTS, transport))
    if not takes_any:
        for name in rest:
            if name not in params:
                raise unknown_option(
                    f"EventHandler on transport {transport!r}", name, [*handler_names, *params]
                )
    return handler_options, rest


class EventHandler(logging.Handler):
    """A logging handler that sends balog events to a transport topic.

    ``transport`` is a transport name (built with ``transport_options``) or an instance, by
    default the embedded ``sqlite`` one that the default engine reads; ``topic``
    a topic name or template (``"myproj-events-{env}"``) filled from ``topic_vars``. Records that
    carry a balog event are sent as they are; plain records become ``log`` events when
    ``capture_plain`` is true, and are ignored otherwise. balog's own records are never sent.

    ``buffer_size`` events wait at most; past that new events are dropped and counted.
    Up to ``batch_size`` events go per ``send``; the transport splits them into its own batch
    calls (SQS's ten), and fewer, larger sends mean fewer publisher-confirm round trips on AMQP.
    A failing send is retried ``max_retries`` times, waiting ``retry_delay`` seconds and
    doubling. ``validate`` checks events against their schemas before
    sending (invalid ones are dropped and counted). At interpreter exit the handler flushes for up
    to ``exit_timeout`` seconds. Works with ``logging.config.dictConfig``::

        {"class": "balog.EventHandler", "transport": "sqs", "topic": "events-{env}",
         "topic_vars": {"env": "prod"}, "transport_options": {"region": "us-west-2"}}

    Transport options may also be given as keywords (``region="us-west-2"``): see
    :func:`split_options`, which refuses any keyword neither the handler nor the transport takes.
    """

    def __init__(
        self,
        transport: str | Transport = DEFAULT_TRANSPORT,
        topic: str = "balog-events",
        *,
        transport_options: Mapping[str, Any] | None = None,
        topic_vars: Mapping[str, Any] | None = None,
        level: int = logging.NOTSET,
        capture_plain: bool = True,
        application: str | None = None,
        context: Mapping[str, Any] | None = None,
        buffer_size: int = 10_000,
        batch_size: int = 100,
        max_retries: int = 3,
        retry_delay: float = 0.2,
        validate: bool = True,
        registry: SchemaRegistry | None = None,
        exit_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        from balog.transports import create_transport

        _, keyword_options = split_options(transport, options)
        merged = dict(transport_options or {})
        for name, value in keyword_options.items():
            if name in merged:
                raise ConfigurationError(f"transport option {name!r} given twice")
            merged[name] = value
        # Built before logging.Handler.__init__ registers the handler for flushing at shutdown,
        # so that a transport that cannot be built leaves no half-made handler behind.
        self.transport = create_transport(transport, **merged)
        super().__init__(level)
        self._owns_transport = not isinstance(transport, Transport)
        self.topic = topic.format(**dict(topic_vars or {}))
        self.capture_plain = capture_plain
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.validate = validate
        self.registry = registry
        self.exit_timeout = exit_timeout
        self.context = {**_default_context(application), **dict(context or {})}
        self._stats = ProducerStats()
        self._buffer: deque[tuple[str, EventDict]] = deque()
        self._wake = threading.Event()
        self._count_lock = threading.Lock()
        self._settled = threading.Condition()
        self._closing = False
        self._closed = False
        self._abandoned = False
        self._sending = 0
        self._held_back: dict[str, tuple[float, int]] = {}
        self._last_report = 0.0
        self._reported_drops = 0
        self._dropped_at_flush = 0
        self._thread = threading.Thread(target=self._run, name="balog-producer", daemon=True)
        self._thread.start()
        _live_handlers.add(self)

    def __repr__(self) -> str:
        return f"EventHandler(transport={self.transport!r}, topic={self.topic!r})"

    @property
    def stats(self) -> ProducerStats:
        """A snapshot of what this handler did so far."""
        return dataclasses.replace(self._stats)

    # -- the application thread ---------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: appending to a deque is atomic, and emit() never does more.
        rv = self.filter(record)
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = getattr(record, EVENT_ATTR, None)
            if event is None:
                if not self.capture_plain or _is_own_record(record):
                    return
                event = record_to_event(record)
            topic = getattr(record, TOPIC_ATTR, None) or self.topic
            buffer = self._buffer
            with self._count_lock:
                if self._closed or len(buffer) >= self.buffer_size:
                    self._stats.dropped_full += 1
                    return
                buffer.append((topic, event))
                self._stats.enqueued += 1
                # The sender sleeps only once it found the buffer empty, so only the event that
                # makes it non-empty needs to wake it: Event.set() takes a lock and notifies, a
                # cost every call would otherwise pay while the sender is already busy.
                wake = len(buffer) == 1
            if wake:
                self._wake.set()
        except Exception:  # never raise into the application
            self._stats.dropped_full += 1

    def flush(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Wait until every event logged so far was handed to the transport (or dropped).

        Returns ``False`` if ``timeout`` seconds passed first, or if any event was dropped since
        the previous flush (buffer full, transport failing, invalid), which it says in balog's log
        with the count.
        """
        settled = self._wait(timeout)
        stats = self._stats
        dropped = stats.dropped - self._dropped_at_flush
        self._dropped_at_flush += dropped
        if dropped:
            logger.warning(
                "balog dropped %d event(s) since the previous flush (buffer full: %d, send "
                "failed: %d, invalid: %d so far)",
                dropped,
                stats.dropped_full,
                stats.dropped_failed,
                stats.invalid,
            )
        return settled and not dropped

    def _wait(self, timeout: float | None) -> bool:
        """Wait until every event logged so far was handed over or dropped; False on timeout."""
        target = self._stats.enqueued
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._settled:
            while self._done() < target:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._settled.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def _done(self) -> int:
        s = self._stats
        return s.sent + s.dropped_failed + s.invalid

    def close(self, timeout: float | None = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, stop the sender and close an owned transport."""
        if self._closed:
            return
        flushed = self._wait(timeout)
        self._closed = True
        self._closing = True
        # Out of time: the sender finishes the batch in hand (no more retries) and takes no
        # other, so what is left in the buffer is counted once, here, and not raced for.
        self._abandoned = not flushed
        self._wake.set()
        self._thread.join(timeout)
        with self._count_lock:
            leftover = len(self._buffer)
            self._buffer.clear()
        if leftover:
            self._stats.dropped_failed += leftover
        if self._thread.is_alive():
            logger.warning(
                "balog closed while a send of %d event(s) was still in progress", self._sending
            )
        self._report(force=True)
        if self._owns_transport:
            try:
                self.transport.close()
            except Exception as exc:
                logger.warning("closing the transport failed: %s", clip(str(exc)))
        _live_handlers.discard(self)
        super().close()

    # -- the sender thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            while self._buffer and not self._abandoned:
                batch = self._take()
                self._sending = len(batch)
                try:
                    self._send_batch(batch)
                except Exception:  # the sender must survive anything
                    logger.exception("balog producer failed to send a batch")
                    self._stats.dropped_failed += len(batch)
                finally:
                    self._sending = 0
                with self._settled:
                    self._settled.notify_all()
                self._report()
            if self._closing:
                return

    def _take(self) -> list[tuple[str, EventDict]]:
        batch: list[tuple[str, EventDict]] = []
        buffer = self._buffer
        while buffer and len(batch) < self.batch_size:
            batch.append(buffer.popleft())
        return batch

    def _prepare(self, topic: str, event: EventDict) -> bytes | None:
        try:
            header = event["header"]
            context = header.get("context")
            header["context"] = {**self.context, **context} if context else dict(self.context)
            if self.validate:
                from balog.events import validate

                validate(event, self.registry)
            body = encode(event)
            self.transport.check_body_sizes((body,))
            return body
        except (EventError, MessageTooLarge, TypeError, ValueError, KeyError) as exc:
            self._stats.invalid += 1
            self._log_held_back(
                logging.ERROR,
                "balog dropped an invalid event for %s: %s",
                topic,
                clip(f"{type(exc).__name__}: {exc}"),
            )
            return None

    def _send_batch(self, batch: list[tuple[str, EventDict]]) -> None:
        by_topic: dict[str, list[bytes]] = {}
        for topic, event in batch:
            body = self._prepare(topic, event)
            if body is not None:
                by_topic.setdefault(topic, []).append(body)
        for topic, bodies in by_topic.items():
            self._send_with_retries(topic, bodies)

    def _send_with_retries(self, topic: str, bodies: list[bytes]) -> None:
        pending = bodies
        delay = self.retry_delay
        for attempt in range(self.max_retries + 1):
            try:
                self.transport.send(topic, pending)
            except SendError as exc:
                failed = [pending[i] for i in exc.failed if 0 <= i < len(pending)]
                self._stats.sent += len(pending) - len(failed)
                pending = failed
                error: Exception = exc
            except Exception as exc:
                error = exc
            else:
                self._stats.sent += len(pending)
                return
            if attempt < self.max_retries and not self._closing:
                self._stats.retries += 1
                self._log_held_back(
                    logging.WARNING,
                    "sending %d event(s) to %s failed (%s); retry %d of %d in %.1fs",
                    len(pending),
                    topic,
                    clip(f"{type(error).__name__}: {error}"),
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
        self._stats.dropped_failed += len(pending)
        self._log_held_back(
            logging.ERROR,
            "balog dropped %d event(s) for %s after %d retries: %s",
            len(pending),
            topic,
            self.max_retries,
            clip(f"{type(error).__name__}: {error}"),
        )

    def _log_held_back(self, level: int, message: str, *args: Any) -> None:
        """Log from the sender thread, at most once a second per message; say how many were held.

        A broker that is down fails every batch: without this, each failure would be a log
        line, thousands a second. The running totals are in :meth:`_report` and :attr:`stats`.
        """
        now = time.monotonic()
        last, held = self._held_back.get(message, (-1e9, 0))
        if now - last < 1.0:
            self._held_back[message] = (last, held + 1)
            return
        self._held_back[message] = (now, 0)
        if held:
            message += " (%d more like this held back)"
            args = (*args, held)
        logger.log(level, message, *args)

    def _report(self, force: bool = False) -> None:
        dropped = self._stats.dropped
        if dropped == self._reported_drops:
            return
        now = time.monotonic()
        if force or now - self._last_report >= 10.0:
            logger.warning(
                "balog has dropped %d event(s) so far (buffer full: %d, send failed: %d, "
                "invalid: %d)",
                dropped,
                self._stats.dropped_full,
                self._stats.dropped_failed,
                self._stats.invalid,
            )
            self._reported_drops = dropped
            self._last_report = now


_HANDLER_OPTIONS: tuple[str, ...] = tuple(
    name for name in inspect.signature(EventHandler).parameters if name != "options"
)
"""The keywords :class:`EventHandler` takes itself."""

"""Capturing the events an application produces, with no transport and no broker."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from balog.events import EventDict, SchemaRegistry, encode, loads, validate
from balog.exceptions import EventError, InvalidEvent
from balog.handler import EVENT_ATTR, TOPIC_ATTR, record_to_event

__all__ = ["CapturedEvents", "CapturingHandler", "capture_events"]


class CapturedEvents(list[EventDict]):
    """The events captured so far, oldest first, as a consumer would decode them.

    A plain list of :data:`~balog.events.EventDict`, with a few filters. ``topics`` holds, for each
    event at the same index, the topic its log call asked for (``topic=``), or ``None``.
    ``invalid`` holds ``(event, error)`` for each event that failed validation or encoding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.topics: list[str | None] = []
        self.invalid: list[tuple[Any, Exception]] = []

    def channels(self) -> list[str]:
        """The channel of every captured event, in order."""
        return [e["header"]["channel"] for e in self]

    def payloads(self, cls_type: str | None = None) -> list[dict[str, Any]]:
        """The payload of every captured event (of ``cls_type`` when given), in order."""
        return [
            e["payload"] for e in self if cls_type is None or e["payload"]["cls_type"] == cls_type
        ]

    def filter(self, *, channel: str | None = None, cls_type: str | None = None) -> list[EventDict]:
        """The captured events on ``channel`` and of ``cls_type`` (each ``None``: any)."""
        return [
            e
            for e in self
            if (channel is None or e["header"]["channel"] == channel)
            and (cls_type is None or e["payload"]["cls_type"] == cls_type)
        ]


class CapturingHandler(logging.Handler):
    """A logging handler that records balog events in a :class:`CapturedEvents` list.

    Each event is encoded and decoded again, as the wire would do it, so a payload that could not
    be sent (not JSON-serialisable) shows up in ``invalid`` rather than as a Python object that no
    consumer would ever see. With ``validate``, events are also checked against their schemas.
    """

    def __init__(
        self,
        *,
        capture_plain: bool = False,
        validate: bool = True,
        registry: SchemaRegistry | None = None,
    ) -> None:
        super().__init__(logging.NOTSET)
        self.events = CapturedEvents()
        self.capture_plain = capture_plain
        self.validate = validate
        self.registry = registry
        self._events_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, EVENT_ATTR, None)
        if event is None:
            if not self.capture_plain or record.name.split(".", 1)[0] == "balog":
                return
            event = record_to_event(record)
        try:
            wire: EventDict = loads(encode(event))
            if self.validate:
                validate(wire, self.registry)
        except (EventError, TypeError, ValueError) as exc:
            with self._events_lock:
                self.events.invalid.append((event, exc))
            return
        with self._events_lock:
            self.events.append(wire)
            self.events.topics.append(getattr(record, TOPIC_ATTR, None))


@contextlib.contextmanager
def capture_events(
    *,
    logger: str | logging.Logger | None = None,
    capture_plain: bool = False,
    validate: bool = True,
    strict: bool = True,
    registry: SchemaRegistry | None = None,
) -> Iterator[CapturedEvents]:
    """Collect the balog events logged inside the block, without sending them anywhere::

        with capture_events() as events:
            checkout(order)
        assert ["shop.orders.paid"] == events.channels()

    The handler is attached to the root logger (or ``logger``) for the duration of the block, so
    events reach it as they reach any logging handler; a producer configured with
    :func:`balog.configure` keeps working beside it. ``capture_plain`` also turns plain log
    records into ``log`` events. With ``strict`` (the default), leaving the block raises
    :class:`~balog.exceptions.InvalidEvent` if any event failed validation or encoding, because
    a real handler would have dropped it.
    """
    handler = CapturingHandler(capture_plain=capture_plain, validate=validate, registry=registry)
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield handler.events
    finally:
        target.removeHandler(handler)
    if strict and handler.events.invalid:
        event, error = handler.events.invalid[0]
        channel = "?"
        if isinstance(event, dict) and isinstance(event.get("header"), dict):
            channel = str(event["header"].get("channel", "?"))
        raise InvalidEvent(
            f"{len(handler.events.invalid)} event(s) would have been dropped by the producer; "
            f"first on channel {channel!r}: {type(error).__name__}: {error}"
        ) from error

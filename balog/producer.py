"""Producing events: :func:`get_logger`, and :func:`configure`/:func:`flush` for the setup.

::

    from balog import get_logger
    balogger = get_logger(__name__)
    balogger.info("done", payload={"cls_type": "metrics", "values": [...]})

The event goes out as a :class:`logging.LogRecord` of the logger ``__name__`` carrying the event in
``record.balog_event``, so ordinary handlers, filters and ``dictConfig`` apply to it. Its channel is
the logger name plus ``"." + suffix`` unless ``channel=`` is given.

Levels: a balog logger emits an event when its level is at least the level set on the nearest
logger of its name's hierarchy that has one (``logging.getLogger("myapp").setLevel(...)`` or
``dictConfig``), the root logger excepted; when none has, at least the level given to
:func:`configure` (``DEBUG`` by default). An application that never touched its logging config
therefore still gets its events.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any

from balog.events import new_event
from balog.handler import DEFAULT_TRANSPORT, EVENT_ATTR, TOPIC_ATTR, EventHandler, severity
from balog.transports.base import Transport

__all__ = ["BalogLogger", "ProducerState", "configure", "flush", "get_logger", "state"]


class ProducerState:
    """The process-wide producer setup made by :func:`configure`. Tests reset it with
    :meth:`reset` (or by calling :func:`configure` again)."""

    def __init__(self) -> None:
        self.level = logging.DEBUG
        self.handler: EventHandler | None = None
        self.attached_to: logging.Logger | None = None
        self.lock = threading.Lock()

    def reset(self, timeout: float | None = 5.0) -> None:
        """Flush and remove the configured handler, if any, and restore the default level."""
        with self.lock:
            handler, target = self.handler, self.attached_to
            self.handler = None
            self.attached_to = None
            self.level = logging.DEBUG
        if handler is not None:
            if target is not None:
                target.removeHandler(handler)
            handler.close(timeout)


state = ProducerState()
"""The one process-wide producer setup."""


class BalogLogger:
    """Logs balog events through the standard logger of the same name."""

    __slots__ = ("logger", "name")

    def __init__(self, name: str, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.logger = logger or logging.getLogger(name)

    def __repr__(self) -> str:
        return f"BalogLogger({self.name!r})"

    def threshold(self) -> int:
        """The lowest level that emits an event (see the module docstring)."""
        node: logging.Logger | None = self.logger
        while node is not None and node is not logging.root:
            if node.level:
                return node.level
            node = node.parent
        return state.level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's spelling
        if self.logger.manager.disable >= level:
            return False
        return level >= self.threshold()

    def log(
        self,
        level: int,
        suffix: str,
        payload: Mapping[str, Any] | None = None,
        *,
        channel: str | None = None,
        context: Mapping[str, Any] | None = None,
        topic: str | None = None,
        exc_info: Any = None,
        stacklevel: int = 1,
    ) -> None:
        """Emit an event at ``level``: ``payload`` on channel ``<logger name>.<suffix>``.

        With no payload, the event is a ``log`` event whose message is ``suffix``. ``topic``
        overrides the handler's topic for this event. Never raises.
        """
        try:
            if not self.isEnabledFor(level):
                return
            if payload is None:
                payload = {"cls_type": "log", "message": suffix, "severity": severity(level)}
            if exc_info:
                if not isinstance(exc_info, tuple):
                    exc_info = sys.exc_info()
                if payload.get("cls_type") == "log" and exc_info[0] is not None:
                    exc_text = "".join(traceback.format_exception(*exc_info))
                    payload = {**payload, "exc_text": exc_text}
            event = new_event(
                channel or f"{self.name}.{suffix}",
                payload,
                context=context,
            )
            try:
                frame = sys._getframe(stacklevel + 1)
                code = frame.f_code
                pathname, lineno, func = code.co_filename, frame.f_lineno, code.co_name
            except ValueError:
                pathname, lineno, func = "(unknown file)", 0, "(unknown function)"
            extra: dict[str, Any] = {EVENT_ATTR: event}
            if topic is not None:
                extra[TOPIC_ATTR] = topic
            record = self.logger.makeRecord(
                self.name, level, pathname, lineno, suffix, (), exc_info or None, func, extra
            )
            self.logger.handle(record)
        except Exception:  # logging never raises into the application
            logging.getLogger("balog.producer").exception("balog could not log an event")

    def _at(self, level: int, suffix: str, payload: Mapping[str, Any] | None, kw: Any) -> None:
        kw["stacklevel"] = kw.get("stacklevel", 1) + 2
        self.log(level, suffix, payload, **kw)

    def debug(self, suffix: str, payload: Mapping[str, Any] | None = None, **kw: Any) -> None:
        self._at(logging.DEBUG, suffix, payload, kw)

    def info(self, suffix: str, payload: Mapping[str, Any] | None = None, **kw: Any) -> None:
        self._at(logging.INFO, suffix, payload, kw)

    def warning(self, suffix: str, payload: Mapping[str, Any] | None = None, **kw: Any) -> None:
        self._at(logging.WARNING, suffix, payload, kw)

    def error(self, suffix: str, payload: Mapping[str, Any] | None = None, **kw: Any) -> None:
        self._at(logging.ERROR, suffix, payload, kw)

    def critical(self, suffix: str, payload: Mapping[str, Any] | None = None, **kw: Any) -> None:
        self._at(logging.CRITICAL, suffix, payload, kw)

    def exception(self, suffix: str, payload: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Log at ERROR with the current exception; a ``log`` payload gets its ``exc_text``."""
        kw.setdefault("exc_info", True)
        self._at(logging.ERROR, suffix, payload, kw)


def get_logger(name: str) -> BalogLogger:
    """The balog logger for ``name`` (usually ``__name__``)."""
    return BalogLogger(name)


def configure(
    transport: str | Transport = DEFAULT_TRANSPORT,
    topic: str = "balog-events",
    *,
    level: int = logging.DEBUG,
    capture_logs: bool = False,
    logger: str | logging.Logger | None = None,
    **options: Any,
) -> EventHandler:
    """Send balog events to ``topic`` on ``transport`` from now on; return the handler.

    Attaches one :class:`~balog.handler.EventHandler` to the root logger (or ``logger``). With
    ``capture_logs``, plain log records reaching it become ``log`` events too. Handler options
    (``topic_vars``, ``buffer_size``, ``batch_size``, ``application``, ``context``, ...) are taken
    by name; every other keyword is a transport option. Calling it again flushes and replaces
    the previous setup.
    """
    import inspect

    handler_params = set(inspect.signature(EventHandler).parameters)
    handler_options = {k: v for k, v in options.items() if k in handler_params}
    transport_options = {k: v for k, v in options.items() if k not in handler_params}
    if transport_options:
        handler_options["transport_options"] = {
            **dict(handler_options.get("transport_options") or {}),
            **transport_options,
        }
    state.reset()
    handler = EventHandler(transport, topic, capture_plain=capture_logs, **handler_options)
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    with state.lock:
        state.level = level
        state.handler = handler
        state.attached_to = target
    target.addHandler(handler)
    return handler


def flush(timeout: float | None = None) -> bool:
    """Wait until every event logged so far was handed to the transport; ``False`` on timeout."""
    handler = state.handler
    return True if handler is None else handler.flush(timeout)

"""Producing events: :func:`get_logger`, and :func:`configure`/:func:`flush` for the setup.

::

    from balog import get_logger
    balogger = get_logger(__name__)
    balogger.info("done", payload={"cls_type": "metrics", "values": [...]})

The event goes out as a :class:`logging.LogRecord` of the logger ``__name__`` carrying the event in
``record.balog_event``, so ordinary handlers, filters and ``dictConfig`` apply to it. Its channel is
the logger name plus ``"." + suffix`` unless ``channel=`` is given.

Keywords: ``payload``, ``channel``, ``context``, ``topic``, ``raw_event`` and those of
:meth:`logging.Logger.log` (``exc_info``, ``stack_info``, ``stacklevel``, ``extra``) mean what they
say; any other keyword, structlog style (``balogger.info("done", user_id=5)``), is added to the
header's ``context``. A log call never raises: what it cannot handle (a payload that is not a
mapping, say) is reported once, on balog's own logger ``balog.producer``.

Levels: a balog logger emits an event when its level is at least the level set on the nearest
logger of its name's hierarchy that has one (``logging.getLogger("myapp").setLevel(...)`` or
``dictConfig``), the root logger excepted; when none has, at least the level given to
:func:`configure` (``DEBUG`` by default). An application that never touched its logging config
therefore still gets its events.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from balog._options import check_known
from balog._text import clip
from balog.events import dumps, new_event
from balog.exceptions import ConfigurationError
from balog.handler import (
    EVENT_ATTR,
    TOPIC_ATTR,
    EventHandler,
    severity,
    split_options,
)
from balog.transports.base import Transport

if TYPE_CHECKING:
    from balog.config import Config

__all__ = ["BalogLogger", "ProducerState", "configure", "flush", "get_logger", "state"]


class ProducerState:
    """The process-wide producer setup made by :func:`configure`. Tests reset it with
    :meth:`reset` (or by calling :func:`configure` again)."""

    def __init__(self) -> None:
        self.level = logging.DEBUG
        self.handler: EventHandler | None = None
        self.attached_to: logging.Logger | None = None
        self.lock = threading.Lock()
        self.reported: set[str] = set()
        """The problems of log calls reported so far: each is reported once."""

    def reset(self, timeout: float | None = 5.0) -> None:
        """Flush and remove the configured handler, if any, restore the default level, and
        forget which problems of log calls were reported."""
        with self.lock:
            handler, target = self.handler, self.attached_to
            self.handler = None
            self.attached_to = None
            self.level = logging.DEBUG
            self.reported.clear()
        if handler is not None:
            if target is not None:
                target.removeHandler(handler)
            handler.close(timeout)


state = ProducerState()
"""The one process-wide producer setup."""

_log = logging.getLogger("balog.producer")

_LOG_KEYWORDS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})
_EVENT_KEYWORDS = frozenset({"payload", "channel", "context", "topic", "raw_event"})


def _report_once(problem: str, message: str, *args: Any) -> None:
    """Log ``message`` on balog's logger the first time ``problem`` happens, never again."""
    with state.lock:
        if problem in state.reported or len(state.reported) >= 1000:
            return
        state.reported.add(problem)
    try:
        _log.warning(message + " (reported once)", *args)
    except Exception:  # a handler of the application that raises must not reach the caller
        pass


def _context_value(value: Any) -> Any:
    """A keyword's value as the header's context can carry it: JSON as it is, else its repr."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        dumps(value)
    except Exception:
        return clip(repr(value), 1000)
    return value


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
        /,
        level: int,
        suffix: str,
        payload: Mapping[str, Any] | None = None,
        **keywords: Any,
    ) -> None:
        """Emit an event at ``level``: ``payload`` on channel ``<logger name>.<suffix>``.

        With no payload, the event is a ``log`` event whose message is ``suffix``. Keywords:
        ``channel`` replaces the channel; ``context`` adds to the header's context; ``topic``
        overrides the handler's topic for this event; ``raw_event`` sends that mapping as the
        whole event, as balog 1.x did (it is still validated before it is sent); ``exc_info``,
        ``stack_info``, ``stacklevel`` and ``extra`` are :mod:`logging`'s. Any other keyword goes
        into the header's ``context``. Never raises.
        """
        self._emit(level, suffix, payload, keywords)

    def _emit(self, level: int, suffix: Any, payload: Any, kw: dict[str, Any]) -> None:
        """The log call, made one frame below the application's, every keyword in ``kw``."""
        try:
            if not self.isEnabledFor(level):
                return
            if suffix is None:  # structlog's name for it
                suffix = kw.pop("event", None)
                if suffix is None:
                    self._cannot("suffix", "a log call needs a suffix", suffix, "")
                    return
            channel = context = topic = exc_info = raw_event = extra = None
            stacklevel, stack_info = 1, False
            if kw:  # most calls give only payload=, a parameter: skip the lookups
                channel = kw.pop("channel", None)
                context = kw.pop("context", None)
                topic = kw.pop("topic", None)
                exc_info = kw.pop("exc_info", None)
                stacklevel = kw.pop("stacklevel", 1)
                raw_event = kw.pop("raw_event", None)
                extra = kw.pop("extra", None)
                stack_info = bool(kw.pop("stack_info", False))
                if topic is not None and (not isinstance(topic, str) or not topic):
                    # Sent to the handler's topic instead, it would be misrouted: drop it.
                    self._cannot("topic", "topic must be a non-empty string", topic, suffix)
                    return
                if context is not None and not isinstance(context, Mapping):
                    self._cannot("context", "context must be a mapping", context, suffix)
                    context = None
                if kw:
                    context = {
                        **dict(context or {}),
                        **{k: _context_value(v) for k, v in kw.items()},
                    }
            event: dict[str, Any] | None
            if raw_event is not None:
                if not isinstance(raw_event, Mapping):
                    self._cannot("raw_event", "raw_event must be a mapping", raw_event, suffix)
                    return
                event = dict(raw_event)
            else:
                event = self._event(suffix, payload, channel, context, exc_info, level)
                if event is None:
                    return
            if stacklevel.__class__ is not int:
                self._cannot("stacklevel", "stacklevel must be an int", stacklevel, suffix)
                stacklevel = 1
            try:
                frame = sys._getframe(stacklevel + 1 if stacklevel > 0 else 2)
                code = frame.f_code
                pathname, lineno, func = code.co_filename, frame.f_lineno, code.co_name
            except ValueError:
                frame = None
                pathname, lineno, func = "(unknown file)", 0, "(unknown function)"
            attrs: dict[str, Any] = {EVENT_ATTR: event}
            if topic is not None:
                attrs[TOPIC_ATTR] = topic
            if extra:
                attrs = self._with_extra(extra, attrs, suffix)
            if exc_info and not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            record = self.logger.makeRecord(
                self.name, level, pathname, lineno, suffix, (), exc_info or None, func, attrs
            )
            if stack_info and frame is not None:
                record.stack_info = "".join(traceback.format_stack(frame)).rstrip("\n")
            self.logger.handle(record)
        except Exception as exc:  # logging never raises into the application
            _report_once(
                f"error:{self.name}:{type(exc).__name__}",
                "balog could not log an event on %s: %s",
                self.name,
                clip(f"{type(exc).__name__}: {exc}"),
            )

    def _event(
        self,
        suffix: str,
        payload: Any,
        channel: str | None,
        context: Mapping[str, Any] | None,
        exc_info: Any,
        level: int,
    ) -> dict[str, Any] | None:
        if payload is None:
            payload = {"cls_type": "log", "message": str(suffix), "severity": severity(level)}
        elif not isinstance(payload, Mapping):
            self._cannot("payload", "the payload must be a mapping", payload, suffix)
            return None
        if exc_info:
            info = exc_info if isinstance(exc_info, tuple) else sys.exc_info()
            if payload.get("cls_type") == "log" and info[0] is not None:
                payload = {**payload, "exc_text": "".join(traceback.format_exception(*info))}
        return new_event(channel or f"{self.name}.{suffix}", payload, context=context)

    def _with_extra(self, extra: Any, attrs: dict[str, Any], suffix: str) -> dict[str, Any]:
        """``extra=`` as :mod:`logging` takes it: attributes added to the record."""
        if not isinstance(extra, Mapping):
            self._cannot("extra", "extra must be a mapping", extra, suffix)
            return attrs
        reserved = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
        clashes = sorted(k for k in extra if k in reserved or k in attrs)
        if clashes:
            self._cannot(
                "extra", f"extra would overwrite the record's {clashes[0]!r}", extra, suffix
            )
        return {**{k: v for k, v in extra.items() if k not in clashes}, **attrs}

    def _cannot(self, what: str, message: str, value: Any, suffix: str) -> None:
        _report_once(
            f"{what}:{self.name}:{type(value).__name__}",
            "balog could not use a log call's %s on %s (suffix %r): %s, not %s",
            what,
            self.name,
            clip(str(suffix), 80),
            message,
            type(value).__name__,
        )

    def debug(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        self._emit(logging.DEBUG, suffix, payload, kw)

    def info(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        self._emit(logging.INFO, suffix, payload, kw)

    def warning(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        self._emit(logging.WARNING, suffix, payload, kw)

    def warn(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        """The same as :meth:`warning`, as balog 1.x (through structlog) had it."""
        self._emit(logging.WARNING, suffix, payload, kw)

    def error(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        self._emit(logging.ERROR, suffix, payload, kw)

    def critical(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        self._emit(logging.CRITICAL, suffix, payload, kw)

    def fatal(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        """The same as :meth:`critical`, as in :mod:`logging` and balog 1.x."""
        self._emit(logging.CRITICAL, suffix, payload, kw)

    def exception(
        self, /, suffix: str | None = None, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        """Log at ERROR with the current exception; a ``log`` payload gets its ``exc_text``."""
        kw.setdefault("exc_info", True)
        self._emit(logging.ERROR, suffix, payload, kw)


def get_logger(name: str | None = None) -> BalogLogger:
    """The balog logger for ``name`` (usually ``__name__``); with none, the calling module's
    name, as balog 1.x (through structlog) gave it."""
    if name is None:
        try:
            name = sys._getframe(1).f_globals.get("__name__") or "root"
        except ValueError:  # pragma: no cover - no calling frame
            name = "root"
    return BalogLogger(str(name))


def configure(
    transport: str | Transport | None = None,
    topic: str | None = None,
    *,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    level: int = logging.DEBUG,
    capture_logs: bool = False,
    logger: str | logging.Logger | None = None,
    **options: Any,
) -> EventHandler:
    """Send balog events to ``topic`` on ``transport`` from now on; return the handler.

    Attaches one :class:`~balog.handler.EventHandler` to the root logger (or ``logger``). With
    ``capture_logs``, plain log records reaching it become ``log`` events too. Handler options
    (``topic_vars``, ``buffer_size``, ``batch_size``, ``application``, ``context``, ...) and
    transport options (``url``, ``region``, ...) are taken by keyword, told apart by
    :func:`~balog.handler.split_options`; an unknown keyword is a
    :class:`~balog.exceptions.ConfigurationError` naming the nearest valid one. Calling it again
    flushes and replaces the previous setup.

    With no ``transport``, the transport, its URL and options, the topic and its variables come
    from ``config`` (a TOML/INI file, or a mapping), ``BALOG_*`` variables and ``BALOG_CONFIG``,
    read by :func:`balog.config.load_config` as ``balog consume`` reads them, so that producer
    and consumers cannot silently disagree. Keywords given here win over the configuration.
    """
    configured: dict[str, Any] = {}
    if transport is None:
        loaded = load_producer_config(config)
        transport = loaded.transport_name
        configured = loaded.transport_kwargs()
        if topic is None:
            topic = loaded.topic
        if loaded.topic_vars:
            options.setdefault("topic_vars", dict(loaded.topic_vars))
    elif config is not None:
        raise ConfigurationError(
            "configure() takes a transport or a config, not both: name the transport in the "
            "configuration"
        )
    handler_options, keyword_options = split_options(transport, options)
    transport_options = dict(handler_options.pop("transport_options", None) or {})
    for name, value in keyword_options.items():
        if name in transport_options:
            raise ConfigurationError(f"transport option {name!r} given twice")
        transport_options[name] = value
    transport_options = {**configured, **transport_options}  # what is given here wins
    if transport_options:
        handler_options["transport_options"] = transport_options
    state.reset()
    handler = EventHandler(
        transport,
        "balog-events" if topic is None else topic,
        capture_plain=capture_logs,
        **handler_options,
    )
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    with state.lock:
        state.level = level
        state.handler = handler
        state.attached_to = target
    target.addHandler(handler)
    return handler


def load_producer_config(config: str | os.PathLike[str] | Mapping[str, Any] | None) -> Config:
    """The configuration :func:`configure` reads: ``config`` over ``BALOG_*`` over the file.

    ``config`` is a path to a TOML/INI file (as ``balog consume --config``), or a mapping with
    the keys of the ``[balog]`` table (``engine``, ``transport``, ``url``, ``options``, ``topic``,
    ``topic_vars``, ...), which then win over the environment as command-line values do.
    """
    from balog.config import KEYS, load_config

    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(file=None if config is None else os.fspath(config))
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"config must be a file path or a mapping, not {type(config).__name__}"
        )
    check_known("configure(config=...)", config, (*KEYS, "options", "topic_vars"))
    for key in ("options", "topic_vars"):
        if not isinstance(config.get(key) or {}, Mapping):
            raise ConfigurationError(f"config[{key!r}] must be a mapping")
    loaded = load_config(
        values={k: config[k] for k in KEYS if k in config}, options=config.get("options") or {}
    )
    loaded.topic_vars.update(config.get("topic_vars") or {})
    return loaded


def flush(timeout: float | None = None) -> bool:
    """Wait until every event logged so far was handed to the transport; ``False`` on timeout."""
    handler = state.handler
    return True if handler is None else handler.flush(timeout)

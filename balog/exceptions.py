"""balog's exceptions: one tree, rooted at :class:`BalogError`.

Backend errors (botocore, kombu, amqp, redis, sqlite3, ...) never leak: each backend translates
them at its boundary into one of these and chains the original with ``raise ... from exc``.
No message built here ever contains a credential.

Errors whose class has ``fatal = True`` are ones retrying cannot fix (a bad option, credentials
refused, a queue that does not exist, a queue declared with other arguments): an engine that meets
one at start-up or while running stops and :meth:`~balog.engines.base.Engine.run` raises it, and
``balog consume`` exits 1 naming it. Every other :class:`TransportError` is retried with backoff.

::

    BalogError
    ├── ConfigurationError             bad option, bad settings, bad specifier           (fatal)
    │   └── PluginError                 a named engine/transport cannot be used
    │       ├── PluginNotFound          no such name installed (lists the installed ones)
    │       └── PluginLoadError         installed but failed to import (says which package, why)
    ├── EventError                      bad input; ``.field`` names the part at fault
    │   ├── DecodeError                 not UTF-8, not JSON, not a JSON object
    │   ├── EventTooLarge               body over the size limit
    │   ├── EventTooDeep                nesting deeper than the limit
    │   └── InvalidEvent                facility layer fails its schema
    │       ├── UnsupportedSchemaVersion  schema major version balog cannot read
    │       └── InvalidPayload          application layer fails its registered schema
    ├── TransportError                  a backend operation failed
    │   ├── TransportConnectionError    broker unreachable, connection dropped
    │   ├── AuthenticationError         credentials refused, or not allowed       (fatal)
    │   ├── TopicNotFound               the queue/topic does not exist            (fatal)
    │   ├── TopicMismatch               the queue exists with other settings      (fatal)
    │   ├── ThrottledError              the backend asked us to slow down
    │   ├── MessageTooLarge             a body is over the transport's limit (nothing sent)
    │   ├── SendError                   some messages of a batch were not sent (``.failed``)
    │   ├── LeaseExpired                ack/nack/extend on a delivery whose lease was lost
    │   └── UnsupportedOperation        the transport lacks the capability asked for
    └── ConsumerError                   a consumer raised (used by test helpers to re-raise)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthenticationError",
    "BalogError",
    "ConfigurationError",
    "ConsumerError",
    "DecodeError",
    "EventError",
    "EventTooDeep",
    "EventTooLarge",
    "InvalidEvent",
    "InvalidPayload",
    "LeaseExpired",
    "MessageTooLarge",
    "PluginError",
    "PluginLoadError",
    "PluginNotFound",
    "SendError",
    "ThrottledError",
    "TopicMismatch",
    "TopicNotFound",
    "TransportConnectionError",
    "TransportError",
    "UnsupportedOperation",
    "UnsupportedSchemaVersion",
]


class BalogError(Exception):
    """Root of every error balog raises."""

    fatal: bool = False
    """Retrying cannot fix it: an engine stops on it (see the module docstring)."""


class ConfigurationError(BalogError):
    """An option, a settings value or a consumer declaration is invalid."""

    fatal = True


class PluginError(ConfigurationError):
    """A named engine or transport cannot be used."""


class PluginNotFound(PluginError):
    """No plugin of that name is installed in the namespace."""

    def __init__(self, namespace: str, name: str, installed: Sequence[str]) -> None:
        self.namespace = namespace
        self.name = name
        self.installed = tuple(installed)
        names = ", ".join(self.installed) or "none"
        super().__init__(f"no {namespace} plugin named {name!r}; installed: {names}")


class PluginLoadError(PluginError):
    """A plugin is installed but could not be imported or built."""

    def __init__(self, namespace: str, name: str, target: str, reason: str) -> None:
        self.namespace = namespace
        self.name = name
        self.target = target
        self.reason = reason
        super().__init__(f"{namespace} plugin {name!r} ({target}) failed to load: {reason}")


class EventError(BalogError):
    """An event body is not a valid balog event.

    ``field`` is a JSON-pointer-like path to the part at fault (``"header.channel"``), or ``None``
    when the whole body is at fault. Messages never echo the whole body.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message if field is None else f"{field}: {message}")


class DecodeError(EventError):
    """The body is not UTF-8, not JSON, or not a JSON object."""


class EventTooLarge(EventError):
    """The body is larger than the configured limit."""


class EventTooDeep(EventError):
    """The body nests deeper than the configured limit."""


class InvalidEvent(EventError):
    """The facility layer (schema, header) does not match its schema."""


class UnsupportedSchemaVersion(InvalidEvent):
    """The event's schema major version is not one balog can read."""


class InvalidPayload(InvalidEvent):
    """The application layer fails the JSON Schema registered for its ``cls_type``."""


class TransportError(BalogError):
    """A backend operation failed."""


class TransportConnectionError(TransportError):
    """The backend could not be reached, or the connection dropped."""


class AuthenticationError(TransportError):
    """The backend refused the credentials, or does not allow what was asked."""

    fatal = True


class TopicNotFound(TransportError):
    """The queue or topic (or its dead-letter place) does not exist on the backend."""

    fatal = True


class TopicMismatch(TransportError):
    """The queue exists with other settings than asked (RabbitMQ's 406 PRECONDITION_FAILED)."""

    fatal = True


class ThrottledError(TransportError):
    """The backend throttled the request (retries were exhausted)."""


class MessageTooLarge(TransportError):
    """A body is over the transport's size limit; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the transport limit of {limit} bytes")


class SendError(TransportError):
    """Some messages of a batch were not sent.

    ``failed`` holds the indexes (into the bodies given to ``send``) that were not sent; the
    others were.
    """

    def __init__(self, message: str, failed: Sequence[int]) -> None:
        self.failed = tuple(failed)
        super().__init__(message)


class LeaseExpired(TransportError):
    """The delivery's lease was lost (it may have been redelivered elsewhere)."""


class UnsupportedOperation(TransportError):
    """The transport does not have the capability this operation needs."""


class ConsumerError(BalogError):
    """A consumer raised while processing an event; the original is ``__cause__``."""

"""Transports carry event bodies to and from a backend; pick one by name or pass an instance.

Built-in names: ``memory``, ``sqs``, ``kombu``, ``sqlite``. Third-party packages add theirs under
the ``balog.transports`` entry point group.
"""

from __future__ import annotations

from typing import Any

from balog import _plugins
from balog.exceptions import ConfigurationError
from balog.transports.base import Capabilities, DeadLetter, Delivery, Transport

__all__ = ["Capabilities", "DeadLetter", "Delivery", "Transport", "available", "create_transport"]


def available() -> list[str]:
    """Names of the installed transports (nothing is imported)."""
    return _plugins.installed(_plugins.TRANSPORTS)


def create_transport(transport: str | Transport, **options: Any) -> Transport:
    """Build the transport registered as ``transport`` with ``options``, or return an instance.

    Raises :class:`~balog.exceptions.PluginNotFound` (listing the installed names) or
    :class:`~balog.exceptions.PluginLoadError`, and
    :class:`~balog.exceptions.ConfigurationError` for options the transport does not take.
    """
    if isinstance(transport, Transport):
        if options:
            raise ConfigurationError("options cannot be applied to a transport instance")
        return transport
    if not isinstance(transport, str):
        raise ConfigurationError(f"transport must be a name or a Transport, not {transport!r}")
    factory = _plugins.load(_plugins.TRANSPORTS, transport)
    instance = _plugins.build(factory, f"transport {transport!r}", **options)
    if not isinstance(instance, Transport):
        raise ConfigurationError(f"transport plugin {transport!r} did not build a Transport")
    return instance

"""Engines run a :class:`~balog.consumers.ConsumerHub` against a backend; pick one by name.

Built-in names: ``memory``, ``sqs``, ``kombu``, ``sqlite``. Third-party packages add theirs under
the ``balog.engines`` entry point group. A name registered only as a transport still works here:
it runs on the generic :class:`~balog.engines.base.TransportEngine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from balog import _plugins
from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import Backoff, Engine, EngineStats, TransportEngine
from balog.exceptions import ConfigurationError, PluginNotFound

__all__ = [
    "DEFAULT_ENGINE",
    "Backoff",
    "Engine",
    "EngineStats",
    "TransportEngine",
    "available",
    "create_engine",
    "engine_from_settings",
]

DEFAULT_ENGINE = "sqlite"
"""The engine used when settings name none: the embedded, durable one (and the producer's
default transport, :data:`balog.handler.DEFAULT_TRANSPORT`, so the two meet)."""


def available() -> list[str]:
    """Names usable with :func:`create_engine`: engines, and transports (on the generic engine)."""
    return sorted(
        set(_plugins.installed(_plugins.ENGINES)) | set(_plugins.installed(_plugins.TRANSPORTS))
    )


def create_engine(
    engine: str | Engine,
    *,
    hub: ConsumerHub | None = None,
    consumer_operator: ConsumerOperator | None = None,
    **options: Any,
) -> Engine:
    """Build the engine registered as ``engine`` for ``hub``, or return an engine instance.

    When ``engine`` names only a transport, it runs on
    :class:`~balog.engines.base.TransportEngine`, which takes its own options by name and passes
    the transport's to it; an option neither takes is a
    :class:`~balog.exceptions.ConfigurationError` naming the nearest valid one.
    """
    if isinstance(engine, Engine):
        if options or hub is not None:
            raise ConfigurationError("an engine instance takes no further hub or options")
        return engine
    if not isinstance(engine, str):
        raise ConfigurationError(f"engine must be a name or an Engine, not {engine!r}")
    if hub is None:
        raise ConfigurationError("create_engine needs hub=")
    if _plugins.entry_point(_plugins.ENGINES, engine) is not None:
        factory = _plugins.load(_plugins.ENGINES, engine)
        return _plugins.build(  # type: ignore[no-any-return]
            factory, f"engine {engine!r}", hub=hub, consumer_operator=consumer_operator, **options
        )
    if _plugins.entry_point(_plugins.TRANSPORTS, engine) is None:
        raise PluginNotFound(_plugins.ENGINES, engine, available())
    # Only a transport by that name: the generic engine, which tells its own options from the
    # transport's by name and refuses any that neither takes.
    return TransportEngine(hub, consumer_operator, transport=engine, **options)


def engine_from_settings(
    settings: Mapping[str, Any],
    *,
    hub: ConsumerHub,
    consumer_operator: ConsumerOperator | None = None,
    prefix: str = "balog.engine",
) -> Engine:
    """Build an engine from a flat settings mapping, as Paste/Pyramid-style apps keep them.

    ``settings[prefix]`` names the engine (default :data:`DEFAULT_ENGINE`); every
    ``settings[prefix + ".<option>"]`` is passed as that option, strings such as ``"10"`` or
    ``"true"`` turned into numbers and booleans::

        {"balog.engine": "sqs", "balog.engine.region": "us-west-2", "balog.engine.wait": "20"}
    """
    name = settings.get(prefix) or DEFAULT_ENGINE
    head = prefix + "."
    options = {
        k[len(head) :]: _plugins.coerce_option(v) for k, v in settings.items() if k.startswith(head)
    }
    return create_engine(str(name), hub=hub, consumer_operator=consumer_operator, **options)

"""Choosing, by name, the backend an application's tests run on (memory by default)."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from balog._plugins import coerce_option
from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import Engine
from balog.exceptions import ConfigurationError
from balog.transports.base import Transport
from balog.transports.memory import MemoryBroker

__all__ = ["ENGINE_ENV", "OPTIONS_ENV", "URL_ENV", "BackendChoice"]

ENGINE_ENV = "BALOG_TEST_ENGINE"
"""Environment variable naming the backend, as ``--balog-engine`` does."""

URL_ENV = "BALOG_TEST_URL"
"""Environment variable giving the backend's ``url`` option, as ``--balog-url`` does."""

OPTIONS_ENV = "BALOG_TEST_OPTIONS"
"""Environment variable of further options, ``KEY=VALUE`` separated by spaces."""


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """``["region=us-east-1", "wait=0.5"]`` -> ``{"region": "us-east-1", "wait": 0.5}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"backend option {item!r} is not KEY=VALUE")
        options[key.strip()] = coerce_option(value)
    return options


def _redact(url: str) -> str:
    """``amqp://guest:secret@host//`` -> ``amqp://guest:**@host//``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':**' if colon else ''}@{host}"


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """A backend chosen by name: ``memory`` (the default), or any installed engine/transport.

    ``url`` is passed to the transport and engine as the ``url`` option; ``options`` are passed
    as they are (engine options such as ``wait`` or ``max_attempts`` go to the engine only).
    """

    name: str = "memory"
    url: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        url = "" if self.url is None else f", url={_redact(self.url)!r}"
        return f"BackendChoice({self.name!r}{url})"

    def describe(self) -> str:
        """One line for a test report header; never shows a password."""
        url = "" if self.url is None else f" at {_redact(self.url)}"
        return f"{self.name}{url}"

    @property
    def is_memory(self) -> bool:
        return self.name == "memory"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackendChoice:
        """Read ``BALOG_TEST_ENGINE``, ``BALOG_TEST_URL`` and ``BALOG_TEST_OPTIONS``."""
        env = os.environ if environ is None else environ
        return cls(
            name=env.get(ENGINE_ENV) or "memory",
            url=env.get(URL_ENV) or None,
            options=parse_options(shlex.split(env.get(OPTIONS_ENV, ""))),
        )

    def transport_options(self) -> dict[str, Any]:
        from balog.engines import TransportEngine

        engine_only = set(TransportEngine.option_names())
        options = {k: v for k, v in self.options.items() if k not in engine_only}
        if self.url is not None:
            options["url"] = self.url
        return options

    def create_transport(self, broker: MemoryBroker | None = None) -> Transport:
        """Build the chosen transport (a memory one on ``broker`` for ``memory``)."""
        if self.is_memory:
            from balog.transports.memory import MemoryTransport

            return MemoryTransport(broker=broker, **self.transport_options())
        from balog.transports import create_transport

        return create_transport(self.name, **self.transport_options())

    def create_engine(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        *,
        broker: MemoryBroker | None = None,
        **engine_options: Any,
    ) -> Engine:
        """Build the chosen engine for ``hub`` (a memory one on ``broker`` for ``memory``)."""
        options = {**dict(self.options), **engine_options}
        if self.url is not None:
            options["url"] = self.url
        if self.is_memory:
            from balog.engines.memory import MemoryEngine

            options.pop("url", None)
            return MemoryEngine(hub, consumer_operator, broker, **options)
        from balog.engines import create_engine

        return create_engine(self.name, hub=hub, consumer_operator=consumer_operator, **options)

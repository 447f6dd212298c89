"""The SQLite engine: the embedded default, running a hub on a database file."""

from __future__ import annotations

import os
from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine
from balog.exceptions import ConfigurationError
from balog.transports.sqlite import DEFAULT_MAX_BODY_SIZE, SQLiteTransport

__all__ = ["SQLiteEngine"]


class SQLiteEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a :class:`SQLiteTransport`.

    ``path`` (or ``url="sqlite:///path"``) is the database file that producers write to; any
    number of engines in any number of processes on the machine may share it and split the work.
    ``poll_interval``, ``max_poll_interval``, ``timeout``, ``retries``, ``synchronous`` and
    ``max_body_size`` go to the transport, whose default lease is the engine's ``lease``; every
    other option is the engine's (``max_attempts``, ``backoff``, ``concurrency``, ...).
    """

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        poll_interval: float = 0.01,
        max_poll_interval: float = 0.05,
        timeout: float = 5.0,
        retries: int = 5,
        synchronous: str = "NORMAL",
        lease: float = 30.0,
        **options: Any,
    ) -> None:
        for name in ("transport", "transport_options"):
            if name in options:
                raise ConfigurationError(
                    f"SQLiteEngine builds its own transport; give path= or url=, not {name}="
                )
        transport = SQLiteTransport(
            path,
            url=url,
            lease=lease,
            max_body_size=max_body_size,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=timeout,
            retries=retries,
            synchronous=synchronous,
        )
        super().__init__(hub, consumer_operator, transport=transport, lease=lease, **options)
        # The engine built this transport, so it closes it too.
        self._owns_transport = True

    @property
    def path(self) -> str:
        """The database file, as an absolute path."""
        assert isinstance(self.transport, SQLiteTransport)
        return self.transport.path
